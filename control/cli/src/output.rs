//! Printing for people (aligned tables) and for scripts (JSON).

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

/// Prints `value` as JSON, or calls `human` for a table.
pub fn print<T: Serialize>(output: Output, value: &T, human: impl FnOnce(&T) -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_string())
        ),
        Output::Table => print!("{}", human(value)),
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
    fn durations_are_short() {
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(125), "2m 5s");
        assert_eq!(ago(7300), "2h 1m");
    }
}
