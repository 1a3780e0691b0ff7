//! Builds the example components (`examples/`, their own workspace) for `wasm32-wasip2` in
//! release mode and tells the tests where they are.
//!
//! For every member crate `<name>` of the examples workspace that produces
//! `<name>.wasm`, the tests get `env!("LATTICE_<NAME>_WASM")`, the absolute path of the
//! component (`-` in the name becomes `_`, letters are upper-cased); for example
//! `LATTICE_HELLO_WASM`. `LATTICE_WASM_COMPONENTS_DIR` is the directory that holds them.
//!
//! The build uses its own target directory, `target/wasm-components`, so that it never waits
//! on the lock of the outer build, and runs again only when the examples' sources change.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let repo = manifest_dir
        .parent()
        .unwrap_or_else(|| fail("tests/ has no parent directory"))
        .to_path_buf();
    let examples = repo.join("examples");
    let target_dir = repo.join("target").join("wasm-components");

    let members = members(&examples);
    watch(&examples, &members);
    check_wasm_target();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--manifest-path",
        ])
        .arg(examples.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // Our stdout is read by cargo as `cargo:` instructions: keep the child's output off it.
        .stdout(Stdio::from(std::io::stderr()));
    clear_outer_build_env(&mut command);
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "building the example components failed ({status}); to see why, run\n  \
             cargo build --release --target {WASM_TARGET} --manifest-path examples/Cargo.toml"
        )),
        Err(err) => fail(&format!(
            "could not run cargo to build the example components: {err}"
        )),
    }

    let out = target_dir.join(WASM_TARGET).join("release");
    println!(
        "cargo:rustc-env=LATTICE_WASM_COMPONENTS_DIR={}",
        out.display()
    );
    for name in &members {
        let file = name.replace('-', "_");
        let wasm = out.join(format!("{file}.wasm"));
        if wasm.is_file() {
            let var = format!("LATTICE_{}_WASM", file.to_uppercase());
            println!("cargo:rustc-env={var}={}", wasm.display());
        }
    }
    if !out.join("hello.wasm").is_file() {
        fail(&format!(
            "the examples build did not produce {}",
            out.join("hello.wasm").display()
        ));
    }
}

/// The member crates of the examples workspace: every directory of `examples/` with a
/// `Cargo.toml` and a `[package]` name.
fn members(examples: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(examples)
        .unwrap_or_else(|err| fail(&format!("cannot read {}: {err}", examples.display())));
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let toml = std::fs::read_to_string(entry.path().join("Cargo.toml")).ok()?;
            package_name(&toml)
        })
        .collect();
    names.sort();
    names
}

/// The `name` of the `[package]` table of a Cargo.toml, read without a TOML parser: the
/// examples' manifests are ours and keep `name = "..."` on one line.
fn package_name(toml: &str) -> Option<String> {
    let mut in_package = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some(value) = line.strip_prefix("name")
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// Reruns this script only when the examples' sources change.
fn watch(examples: &Path, members: &[String]) {
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", examples.join(file).display());
    }
    // The components' bindings are generated from the repository's WIT.
    if let Some(repo) = examples.parent() {
        println!("cargo:rerun-if-changed={}", repo.join("wit").display());
    }
    let Ok(entries) = std::fs::read_dir(examples) else {
        return;
    };
    for dir in entries.filter_map(Result::ok).map(|e| e.path()) {
        if dir.join("Cargo.toml").is_file() {
            println!(
                "cargo:rerun-if-changed={}",
                dir.join("Cargo.toml").display()
            );
            // A directory is watched recursively.
            println!("cargo:rerun-if-changed={}", dir.join("src").display());
            if dir.join("wit").is_dir() {
                println!("cargo:rerun-if-changed={}", dir.join("wit").display());
            }
        }
    }
    if members.is_empty() {
        fail(&format!(
            "no example crates found in {}",
            examples.display()
        ));
    }
}

/// Fails with what to do when the toolchain has no `wasm32-wasip2` standard library.
fn check_wasm_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let Some(sysroot) = sysroot else {
        // Cannot tell; let the build itself report.
        return;
    };
    if !sysroot
        .join("lib")
        .join("rustlib")
        .join(WASM_TARGET)
        .is_dir()
    {
        fail(&format!(
            "the Rust target {WASM_TARGET} is not installed (needed to build the example \
             components the tests run).\n  Install it with: rustup target add {WASM_TARGET}\n  \
             or run `make test`, which installs it."
        ));
    }
}

/// Removes what the outer build passes down that would break or pollute a wasm build:
/// flags and settings meant for the host target, its target directory, and wrappers such as
/// clippy's.
fn clear_outer_build_env(command: &mut Command) {
    const EXACT: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_MANIFEST_PATH",
    ];
    const PREFIXES: &[&str] = &["CARGO_BUILD_", "CARGO_TARGET_", "CARGO_PROFILE_"];
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if EXACT.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p)) {
            command.env_remove(key);
        }
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set (run through cargo)")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
