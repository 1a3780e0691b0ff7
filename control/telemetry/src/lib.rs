//! How every Lattice process reports: `lattice`, `lattice-host` and every
//! `lattice-provider-*` binary call [`init`] first thing, so their logs read alike and obey
//! the same switches.
//!
//! Layout: [`init`] sets up logging; [`run`] runs a binary's async main and reports how it
//! ended, the same way for every binary. Metrics and OTLP traces belong here too when they come, so that
//! a process keeps one line of setup and the switches stay in one place.
//!
//! The switches:
//! - `RUST_LOG` chooses what is logged (an [`EnvFilter`] directive); without it, the level the
//!   binary asks for.
//! - Colours only when stderr is a terminal and `NO_COLOR` is unset or empty: a log redirected
//!   to a file, or a provider's stderr piped through its host, carries no escape codes.
//!
//! ```no_run
//! lattice_telemetry::init("info");
//! ```
#![deny(missing_docs)]

use std::io::IsTerminal as _;

/// Serving a Prometheus scrape endpoint (`--metrics-addr`), for hosts and control planes.
#[cfg(feature = "metrics")]
pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the process's subscriber: logs to stderr, `RUST_LOG` or else `default_filter`.
/// A second call does nothing (the first subscriber stays).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_target(false)
        .try_init();
}

/// Runs `main` on a new multi-threaded tokio runtime and turns its outcome into the process's
/// exit code, printing an error (with its causes) the way every Lattice binary does.
pub fn run<F>(main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether to colour: on a terminal, unless `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(
            !colour(false, None),
            "a file or a pipe gets no escape codes"
        );
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
