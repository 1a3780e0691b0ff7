//! UI tests: every `tests/ui/*.yaml` is parsed and the result compared with the `.stderr` file
//! beside it, which holds the Display of the diagnostics, or `ok` for a valid manifest.
//!
//! Refresh the expected files after an intended change with
//! `LATTICE_BLESS=1 cargo test -p lattice-manifest --test ui`, then review the diff.

use std::fs;
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("tests/ui exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    cases
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// What a case produces: `ok` or the diagnostics, one per line, ending in a newline.
fn outcome(source: &str) -> String {
    match lattice_manifest::parse(source) {
        Ok(manifest) => {
            // A valid manifest also survives a trip through serde_json in the YAML's shape.
            let json = serde_json::to_string(&manifest).expect("serializes");
            let back: lattice_manifest::Manifest =
                serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, manifest, "serde_json round trip of {json}");
            "ok\n".to_string()
        }
        Err(diagnostics) => format!("{diagnostics}\n"),
    }
}

#[test]
fn ui() {
    let bless = std::env::var_os("LATTICE_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for case in cases() {
        let actual = outcome(&read(&case));
        let expected_path = case.with_extension("stderr");
        if bless {
            fs::write(&expected_path, &actual)
                .unwrap_or_else(|e| panic!("writing {}: {e}", expected_path.display()));
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "--- {}\n=== expected\n{expected}=== actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ (LATTICE_BLESS=1 rewrites the expected files):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every `.stderr` has its `.yaml`, so a renamed case does not leave a stale expectation.
#[test]
fn no_orphan_expectations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    for entry in fs::read_dir(&dir).expect("tests/ui exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|ext| ext == "stderr") {
            assert!(
                path.with_extension("yaml").exists(),
                "{} has no .yaml case",
                path.display()
            );
        }
    }
}

/// The several-problems case reports each of its problems at once, not just the first.
#[test]
fn several_problems_are_reported_together() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/several_problems.yaml");
    let diagnostics = lattice_manifest::parse(&read(&path)).expect_err("the case is invalid");
    let found: Vec<(usize, &str, &str)> = diagnostics
        .iter()
        .map(|d| (d.line, d.path.as_str(), d.message.as_str()))
        .collect();
    let expected: &[(usize, &str, &str)] = &[
        (5, "metadata.name", "app name `hello.world`"),
        (
            12,
            "spec.components[0].properties.confg",
            "unknown field `confg`",
        ),
        (
            17,
            "spec.components[0].traits[0].properties.instances",
            "expected a whole number",
        ),
        (
            18,
            "spec.components[1].name",
            "duplicate component name `hello`",
        ),
        (
            21,
            "spec.components[1].properties.image",
            "must not be empty",
        ),
        (
            23,
            "spec.components[1].traits[0].type",
            "unknown trait type `lnk`",
        ),
        (
            34,
            "spec.components[2].traits[0].properties.interfaces",
            "at least one interface",
        ),
        (
            35,
            "spec.components[2].traits[0].properties.target",
            "no component named `missing`",
        ),
    ];
    for (line, path, message) in expected {
        assert!(
            found
                .iter()
                .any(|(l, p, m)| l == line && p == path && m.contains(message)),
            "missing `{path}: {message}` at line {line} in:\n{diagnostics}"
        );
    }
    assert_eq!(
        found.len(),
        expected.len(),
        "unexpected extra problems:\n{diagnostics}"
    );
    let lines: Vec<usize> = found.iter().map(|(line, _, _)| *line).collect();
    assert!(
        lines.is_sorted(),
        "diagnostics come in source order: {lines:?}"
    );
}
