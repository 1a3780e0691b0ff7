//! Printing for people (aligned tables, dates with how long ago) and for scripts (JSON, YAML).

use serde::Serialize;

use crate::args::Output;

/// Prints `rows` under `headers` with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n") + "\n"
}

/// Prints `value` as JSON or YAML, or calls `human` for a table.
pub fn print<T: Serialize>(output: Output, value: &T, human: impl FnOnce(&T) -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_string())
        ),
        Output::Yaml => print!(
            "{}",
            serde_norway::to_string(value).unwrap_or_else(|_| "null\n".to_string())
        ),
        Output::Table => print!("{}", human(value)),
    }
}

/// Whether `output` is for scripts (JSON or YAML) rather than people.
pub fn for_scripts(output: Output) -> bool {
    output != Output::Table
}

/// `2026-12-06T17:19:09Z (3d 2h ago)`: unix seconds as an RFC 3339 date in UTC, with how long
/// ago (or how far ahead) that is.
pub fn when(unix_secs: u64) -> String {
    when_at(unix_secs, lattice_protocol::unix_now())
}

/// [`when`], seen from `now` (unix seconds).
pub fn when_at(unix_secs: u64, now: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs);
    let date = humantime::format_rfc3339_seconds(time);
    match unix_secs.cmp(&now) {
        std::cmp::Ordering::Less => format!("{date} ({} ago)", ago(now - unix_secs)),
        std::cmp::Ordering::Equal => format!("{date} (now)"),
        std::cmp::Ordering::Greater => format!("{date} (in {})", ago(unix_secs - now)),
    }
}

/// The first 12 characters of a key or id: enough to tell them apart in a table.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// `2h 5m`, `42s`: a short duration for tables.
pub fn ago(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "ready".into()],
                vec!["long-name".into(), "lost".into()],
            ],
        );
        assert_eq!(t, "NAME       STATE\na          ready\nlong-name  lost\n");
    }

    #[test]
    fn dates_say_when_and_how_long_ago() {
        let issued = 1_796_577_549;
        assert_eq!(
            when_at(issued, issued + 3 * 86400 + 60),
            "2026-12-06T17:19:09Z (3d 0h ago)"
        );
        assert_eq!(when_at(issued, issued), "2026-12-06T17:19:09Z (now)");
        assert_eq!(
            when_at(issued + 7200, issued),
            "2026-12-06T19:19:09Z (in 2h 0m)"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(125), "2m 5s");
        assert_eq!(ago(7300), "2h 1m");
    }
}
