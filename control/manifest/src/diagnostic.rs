//! What a manifest problem looks like: a position, a path, a message and maybe a hint.
//!
//! Every check in this crate ends in a [`Diagnostic`]; [`parse`](crate::parse) gathers them all
//! into one [`Diagnostics`] so a user fixes a manifest in one pass instead of one error per run.

use std::fmt;

/// One problem found in a manifest.
///
/// Displays as `line 12, column 7: spec.components[0].name: <message>`, followed by a second line
/// `  help: <hint>` when there is a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Line of the offending node, 1-based.
    pub line: usize,
    /// Column of the offending node, 1-based, counted in characters.
    pub column: usize,
    /// Where in the document the problem is, e.g. `spec.components[0].traits[1].properties`.
    /// Empty for problems with the document as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
}

/// A position in the source text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Pos {
    /// The first character of the document.
    pub(crate) const START: Pos = Pos { line: 1, column: 1 };
}

impl Diagnostic {
    pub(crate) fn new(pos: Pos, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            line: pos.line,
            column: pos.column,
            path: path.into(),
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: ", self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in a manifest, in source order. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    /// Wraps diagnostics, sorting them by position (stable, so problems at one spot keep the
    /// order in which they were found).
    pub(crate) fn new(mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by_key(|d| (d.line, d.column));
        Diagnostics(diagnostics)
    }

    /// The diagnostics, in source order.
    pub fn as_slice(&self) -> &[Diagnostic] {
        &self.0
    }

    /// Iterates over the diagnostics in source order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no problem was found (never the case for an error returned by [`parse`](crate::parse)).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes the diagnostics out.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.0
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The candidate closest to `unknown`, if any is close enough to be a likely typo.
pub(crate) fn closest<'c>(unknown: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let unknown_lower = unknown.to_ascii_lowercase();
    candidates
        .iter()
        .map(|&candidate| {
            let lower = candidate.to_ascii_lowercase();
            let score = strsim::jaro_winkler(&unknown_lower, &lower);
            let edits = strsim::levenshtein(&unknown_lower, &lower);
            (candidate, score, edits)
        })
        .filter(|&(_, score, edits)| score >= 0.85 || (edits <= 2 && unknown.len() > 3))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(candidate, _, _)| candidate)
}

/// `` `a`, `b`, `c` `` for a help line.
pub(crate) fn backticked(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "did you mean `x`?" when a candidate is close, else "expected one of ...".
pub(crate) fn suggest(unknown: &str, candidates: &[&str], what: &str) -> String {
    match closest(unknown, candidates) {
        Some(candidate) => format!("did you mean `{candidate}`?"),
        None => format!("{what}: {}", backticked(candidates)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_without_path_or_help() {
        let d = Diagnostic::new(Pos::START, "", "the manifest is empty");
        assert_eq!(d.to_string(), "line 1, column 1: the manifest is empty");
    }

    #[test]
    fn display_with_path_and_help() {
        let d = Diagnostic::new(
            Pos {
                line: 12,
                column: 7,
            },
            "spec.x",
            "bad",
        )
        .with_help("fix it");
        assert_eq!(
            d.to_string(),
            "line 12, column 7: spec.x: bad\n  help: fix it"
        );
    }

    #[test]
    fn diagnostics_are_sorted_by_position() {
        let ds = Diagnostics::new(vec![
            Diagnostic::new(Pos { line: 3, column: 1 }, "", "c"),
            Diagnostic::new(Pos { line: 1, column: 5 }, "", "b"),
            Diagnostic::new(Pos { line: 1, column: 2 }, "", "a"),
        ]);
        let messages: Vec<_> = ds.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages, ["a", "b", "c"]);
    }

    #[test]
    fn suggests_close_names_only() {
        let fields = ["instances", "spread"];
        assert_eq!(closest("instance", &fields), Some("instances"));
        assert_eq!(closest("Instances", &fields), Some("instances"));
        assert_eq!(closest("sprad", &fields), Some("spread"));
        assert_eq!(closest("zone", &fields), None);
        assert_eq!(
            suggest("zone", &fields, "allowed fields"),
            "allowed fields: `instances`, `spread`"
        );
    }
}
