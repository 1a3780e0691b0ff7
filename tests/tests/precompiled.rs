//! Precompiled code: `lattice compile` (the real CLI, running the real `lattice-host
//! precompile`) stores signed code per target in the lattice, and a real `lattice-host` that
//! never saw the component loads it instead of compiling; code it cannot trust or load is
//! ignored, and the host compiles as before.

use async_nats::jetstream;
use lattice_host::compile::target::{host_triple, precompile, target_fingerprint};
use lattice_host::compile::{CacheOutcome, CodeCache, LoadError};
use lattice_host::engine::{EngineConfig, Runtime};
use lattice_protocol::code::{self, Precompiled};
use lattice_protocol::digest::Digest;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::subject::Buckets;
use lattice_tests::cli::{Cli, arg};
use lattice_tests::edge::HostProcess;
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};
use tokio::io::AsyncReadExt as _;

/// The stored object `name` of `t`'s artifact store, if there is one.
async fn object(t: &TestLattice, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let js = jetstream::new(t.client.clone());
    let store = js
        .get_object_store(Buckets::new(&t.lattice).artifacts())
        .await?;
    let Ok(mut object) = store.get(name).await else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await?;
    Ok(Some(bytes))
}

/// Deploys `image` as app `name` and returns the first answer of its endpoint.
async fn deploy_and_get(t: &TestLattice, name: &str, image: &Digest) -> anyhow::Result<String> {
    t.ctl
        .deploy(&hello_manifest(
            name,
            "v1",
            &image.to_string(),
            "Hi",
            "127.0.0.1:0",
        ))
        .await?;
    let addr = endpoint(&t.wait_deployed(name).await?)?;
    let (code, body) = http_get(&addr, "/").await?;
    anyhow::ensure!(code == 200, "{name} answered {code}: {body}");
    Ok(body)
}

/// The log lines of `host` that mention `digest`'s component loading.
fn load_lines(host: &HostProcess, what: &str) -> Vec<String> {
    host.log_text()
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_host_loads_code_compiled_ahead_instead_of_compiling() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let cli = Cli::new(&t)?;
    let issuer = cli.file("issuer.nk", t.issuer.to_file_contents().as_bytes())?;
    let signed = t.sign(&hello_wasm(), "hello", "0.1.0");
    let file = cli.file("hello.wasm", &signed)?;
    let digest = Digest::of(&signed);

    // A file: stored too, with code for this machine's target and for aarch64 gateways.
    let printed = cli
        .ok(&[
            "compile",
            &arg(&file),
            "--issuer",
            &arg(&issuer),
            "--target",
            "host",
            "--target",
            "aarch64",
        ])
        .await?;
    assert_eq!(printed.trim(), digest.to_string());
    let ours = target_fingerprint(&host_triple(), false)?;
    let arm = target_fingerprint("aarch64-unknown-linux-gnu", false)?;
    let trust = lattice_protocol::claims::Trust::new(vec![t.issuer.public_key()]);
    for fingerprint in [&ours, &arm] {
        let stored = object(&t, &code::object_name(&digest, fingerprint))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no code stored for engine {fingerprint}"))?;
        let code = Precompiled::decode(&stored)?;
        code.open(&digest, fingerprint, &trust)?;
    }
    assert!(object(&t, digest.hex()).await?.is_some(), "the component");

    // A host that never saw it loads the code for its engine and compiles nothing.
    let dir = tempfile::tempdir()?;
    let host = HostProcess::start_direct(&t, "gateway", &dir.path().join("gateway"), &[])?;
    t.wait_for("the host to report", || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == "gateway"))
    })
    .await?;
    let body = deploy_and_get(&t, "hello", &digest).await?;
    assert_eq!(body, "Hi from Lattice (host gateway)\n");
    let loaded = load_lines(&host, "component loaded");
    assert!(
        loaded.len() == 1 && loaded[0].contains("outcome=Precompiled"),
        "{}",
        host.log_text()
    );
    assert!(
        load_lines(&host, "compiled component").is_empty(),
        "{}",
        host.log_text()
    );

    // Code signed by an issuer the host does not trust is refused; the host compiles.
    let other = KeyPair::generate(KeyRole::Issuer);
    let untrusted = cli.file("other.nk", other.to_file_contents().as_bytes())?;
    let second = t.sign(&hello_wasm(), "hello", "0.2.0");
    let second_file = cli.file("hello-2.wasm", &second)?;
    cli.ok(&[
        "compile",
        &arg(&second_file),
        "--issuer",
        &arg(&untrusted),
        "--target",
        "host",
    ])
    .await?;
    deploy_and_get(&t, "second", &Digest::of(&second)).await?;
    let refused = load_lines(&host, "precompiled code refused");
    assert!(
        refused.len() == 1 && refused[0].contains(other.public_key().as_str()),
        "{}",
        host.log_text()
    );
    assert_eq!(load_lines(&host, "compiled component").len(), 1);

    // Code whose bytes changed after signing is refused too.
    let third = t.sign(&hello_wasm(), "hello", "0.3.0");
    let third_digest = t.push(&third).await?;
    cli.ok(&[
        "compile",
        &third_digest.to_string(),
        "--issuer",
        &arg(&issuer),
    ])
    .await?;
    let name = code::object_name(&third_digest, &ours);
    let mut stored = object(&t, &name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no code for {third_digest}"))?;
    let last = stored.len() - 1;
    stored[last] ^= 1;
    let js = jetstream::new(t.client.clone());
    let store = js
        .get_object_store(Buckets::new(&t.lattice).artifacts())
        .await?;
    store.put(name.as_str(), &mut stored.as_slice()).await?;
    deploy_and_get(&t, "third", &third_digest).await?;
    let refused = load_lines(&host, "precompiled code refused");
    assert!(
        refused.len() == 2 && refused[1].contains("changed after signing"),
        "{}",
        host.log_text()
    );
    assert_eq!(load_lines(&host, "compiled component").len(), 2);
    Ok(())
}

#[tokio::test]
async fn compile_says_what_is_wrong() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let cli = Cli::new(&t)?;
    let issuer = cli.file("issuer.nk", t.issuer.to_file_contents().as_bytes())?;
    let unsigned = cli.file("unsigned.wasm", &hello_wasm())?;
    let said = cli
        .refused(&["compile", &arg(&unsigned), "--issuer", &arg(&issuer)])
        .await?;
    assert!(said.contains("is not signed"), "{said}");
    let said = cli
        .refused(&["compile", "missing:1.0.0", "--issuer", &arg(&issuer)])
        .await?;
    assert!(
        said.contains("neither a file nor in the lattice") && said.contains("lattice push"),
        "{said}"
    );
    let signed = cli.file("hello.wasm", &t.sign(&hello_wasm(), "hello", "0.1.0"))?;
    let said = cli
        .refused(&[
            "compile",
            &arg(&signed),
            "--issuer",
            &arg(&issuer),
            "--target",
            "mips-unknown-linux-gnu",
        ])
        .await?;
    assert!(
        said.contains("compiling for `mips-unknown-linux-gnu` failed")
            && said.contains("this build makes no code for target"),
        "{said}"
    );
    Ok(())
}

#[test]
fn code_for_this_target_loads_and_code_for_another_does_not() -> anyhow::Result<()> {
    // The host's own engine, with the CPU features of this machine: baseline code still fits.
    let runtime = Runtime::new(&EngineConfig::default())?;
    let dir = tempfile::tempdir()?;
    let cache = CodeCache::new(dir.path().into())?;
    let bytes = hello_wasm();
    let digest = Digest::of(&bytes);
    let max = runtime.config().max_component_bytes;
    let ours = precompile(&bytes, &host_triple(), max, false)?;
    assert_eq!(
        Some(ours.fingerprint.clone()),
        runtime.baseline_fingerprint()
    );

    let arm = precompile(&bytes, "aarch64-unknown-linux-gnu", max, false)?;
    let err = cache
        .install(&runtime, &bytes, &arm.code)
        .err()
        .ok_or_else(|| anyhow::anyhow!("aarch64 code loaded on {}", host_triple()))?;
    assert!(matches!(err, LoadError::Compiler(_)), "{err:?}");
    assert!(!cache.has(&runtime, &digest), "nothing kept");

    let (_, outcome) = cache.install(&runtime, &bytes, &ours.code)?;
    assert_eq!(outcome, CacheOutcome::Precompiled);
    assert!(!cache.has(&runtime, &digest), "kept only when asked");
    cache.keep(&runtime, &digest, &ours.code);
    assert!(cache.has(&runtime, &digest));
    // Kept as this host's own code: the next load is a cache hit.
    let (_, outcome) = cache.load(&runtime, &digest, &bytes)?;
    assert_eq!(outcome, CacheOutcome::Hit);
    Ok(())
}
