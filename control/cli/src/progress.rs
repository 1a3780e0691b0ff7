//! Progress of long operations (`push`, `pull`, `push --oci`, `ctl deploy --wait`), drawn on
//! stderr with indicatif only when stderr is a terminal. Anywhere else (a script, a pipe, a log
//! file) nothing is drawn and the plain lines are printed as they always were, so output
//! captured by a program carries no escape codes or carriage returns.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner or a bar on a terminal; nothing elsewhere.
#[derive(Debug)]
pub struct Progress {
    /// `None` when stderr is not a terminal.
    bar: Option<ProgressBar>,
    /// What a spinner is doing, printed as a line where nothing is drawn (and kept on a
    /// terminal); empty for a bar.
    what: String,
}

impl Progress {
    /// A spinner saying `what` with the time it has taken, for work of unknown length.
    pub fn spinner(what: impl Into<String>) -> Self {
        let what = what.into();
        let bar = drawn().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(what.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        if bar.is_none() {
            eprintln!("{what}");
        }
        Self { bar, what }
    }

    /// A bar of `len` steps (components running of all) saying `what`.
    pub fn bar(len: u64, what: impl Into<String>) -> Self {
        let what = what.into();
        let bar = drawn().then(|| {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} running [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        // The changes printed above the bar say what happened: nothing is left after it.
        Self {
            bar,
            what: String::new(),
        }
    }

    /// Moves the bar to `pos` of `len`.
    pub fn set(&self, pos: u64, len: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(len);
            bar.set_position(pos);
        }
    }

    /// Prints `line` (above the bar on a terminal).
    pub fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the spinner or bar, leaving a spinner's line on a terminal (as elsewhere).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
            if !self.what.is_empty() {
                eprintln!("{}", self.what);
            }
        }
    }
}

/// Whether progress is drawn: only on a terminal.
fn drawn() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_drawn_off_a_terminal() {
        // Tests run with stderr captured: a pipe, as a script's would be.
        if std::io::stderr().is_terminal() {
            eprintln!("skipped: stderr is a terminal here");
            return;
        }
        let spinner = Progress::spinner("pushing");
        assert!(spinner.bar.is_none());
        let bar = Progress::bar(3, "hello v1");
        bar.set(1, 3);
        assert!(bar.bar.is_none());
        bar.finish();
        spinner.finish();
    }
}
