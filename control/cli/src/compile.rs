//! `lattice compile`: a component's native code, made ahead for the hosts of each target, signed
//! and stored in the lattice beside the component (`lattice_protocol::code`).
//!
//! The CLI links no wasmtime: the code is made by `lattice-host precompile` (found as `lattice
//! host` finds it), which also says the engine fingerprint hosts of that target look the code
//! up by. The code only fits hosts of the same `lattice-host` build (same wasmtime, same
//! settings): a host of another build finds nothing under its fingerprint and compiles, as it
//! would have without it.

use std::path::Path;
use std::process::Stdio;

use anyhow::Context as _;
use lattice_protocol::code::{self, CodeClaim, Precompiled};
use lattice_protocol::digest::Digest;
use lattice_protocol::keys::{KeyPair, KeyRole};
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

use crate::args::CompileArgs;
use crate::progress::Progress;
use crate::push;

/// The targets compiled for when none is named: the gateways and servers Lattice runs on.
const DEFAULT_TARGETS: [&str; 2] = ["x86_64", "aarch64"];

/// What `lattice-host precompile` prints.
#[derive(Debug, Deserialize)]
struct Made {
    target: String,
    fingerprint: String,
}

/// Compiles, signs and stores; prints the component's digest.
pub async fn compile(args: &CompileArgs) -> anyhow::Result<()> {
    let issuer = crate::keys::read(&args.issuer, KeyRole::Issuer)?;
    let program = crate::serve::host_program()?;
    let (client, lattice) =
        push::connect(&args.nats, args.state_dir.as_deref(), "lattice compile").await?;
    let registry = push::open(&client, &lattice).await?;
    let component = if Path::new(&args.component).is_file() {
        let bytes = std::fs::read(&args.component)
            .with_context(|| format!("reading {}", args.component))?;
        let tag = push::check(&args.component, &bytes)?;
        // Code is of use only beside its component: store that too.
        registry.push(&bytes, Some(&tag)).await?;
        bytes
    } else {
        let digest = registry.resolve(&args.component).await.with_context(|| {
            format!("`{}` is neither a file nor in the lattice", args.component)
        })?;
        registry.get(&digest).await?
    };
    let digest = Digest::of(&component);
    let targets: Vec<&str> = if args.targets.is_empty() {
        DEFAULT_TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    for target in targets {
        let progress = Progress::spinner(format!("compiling {digest} for {target}..."));
        let (made, code) = precompile(&program, target, args.wasi_p3, &component).await?;
        let name = code::object_name(&digest, &made.fingerprint);
        let object = sign(&digest, &made, code, &issuer);
        registry
            .put_code(&name, &object)
            .await
            .with_context(|| format!("storing the code for {}", made.target))?;
        progress.finish();
        eprintln!(
            "{}: {} KiB of code for engine {}, stored as {name}",
            made.target,
            object.len().div_ceil(1024),
            made.fingerprint
        );
    }
    client.flush().await?;
    println!("{digest}");
    Ok(())
}

/// The code, with its claim signed by `issuer`, as stored.
fn sign(digest: &Digest, made: &Made, code: Vec<u8>, issuer: &KeyPair) -> Vec<u8> {
    let claim = CodeClaim::new(digest, &made.target, &made.fingerprint, &code);
    Precompiled::sign(claim, code, issuer).encode()
}

/// Runs `lattice-host precompile` for `target` on `component`.
async fn precompile(
    program: &Path,
    target: &str,
    wasi_p3: bool,
    component: &[u8],
) -> anyhow::Result<(Made, Vec<u8>)> {
    let output = std::env::temp_dir().join(format!(
        "lattice-compile-{}-{}.cwasm",
        std::process::id(),
        target.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let mut command = tokio::process::Command::new(program);
    command.arg("precompile").arg("--target").arg(target);
    if wasi_p3 {
        command.arg("--wasi-p3");
    }
    let mut child = command
        .arg("-")
        .arg(&output)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut stdin = child
        .stdin
        .take()
        .context("the compiler's standard input")?;
    let write = async move {
        stdin.write_all(component).await?;
        stdin.shutdown().await
    };
    let (written, result) = tokio::join!(write, child.wait_with_output());
    let result = result.with_context(|| format!("running {}", program.display()))?;
    let code = std::fs::read(&output);
    let _ = std::fs::remove_file(&output);
    if !result.status.success() {
        let said = String::from_utf8_lossy(&result.stderr);
        let said = said.trim();
        anyhow::bail!(
            "compiling for `{target}` failed: {}",
            said.strip_prefix("error: ").unwrap_or(said)
        );
    }
    written.context("giving the component to the compiler")?;
    let made: Made = serde_json::from_slice(&result.stdout).with_context(|| {
        format!(
            "{} printed what this `lattice` does not read; install the two from one build",
            program.display()
        )
    })?;
    let code = code.with_context(|| format!("reading the code for `{target}`"))?;
    Ok((made, code))
}
