//! Component references as wasmCloud users write them, end to end against a real OCI registry
//! (Debian's `docker-registry`) and the real `lattice` binary: `lattice push --oci` publishes,
//! `lattice ctl deploy` pulls OCI references and pushes `file://` ones into the lattice, hosts
//! fetch from the lattice only; and each refusal names the reference and what to do.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::ensure;
use lattice_cli::args::RegistryArgs;
use lattice_cli::oci::{Oci, OciRef};
use lattice_control::registry::Registry;
use lattice_protocol::digest::Digest;
use lattice_protocol::error::ErrorCode;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::messages::{AppState, FailureReason};
use lattice_tests::registry::OciRegistry;
use lattice_tests::{
    TestLattice, WAIT, endpoint, hello_manifest, hello_wasm, http_get, lattice_bin,
};

const ANY_PORT: &str = "127.0.0.1:0";

/// The `lattice` binary pointed at a test lattice, signing as its admin.
struct Cli {
    dir: tempfile::TempDir,
    nats_url: String,
    lattice: String,
    key: PathBuf,
    control_key: String,
}

impl Cli {
    fn new(t: &TestLattice) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("admin.nk");
        std::fs::write(&key, t.admin.to_file_contents())?;
        Ok(Self {
            nats_url: t.nats.url.clone(),
            lattice: t.lattice.to_string(),
            key,
            control_key: t.operator.public_key().to_string(),
            dir,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `lattice ARGS` (with the lattice's connection, and for `ctl` the admin's key) and
    /// returns (success, stdout, stderr).
    async fn run(
        &self,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> anyhow::Result<(bool, String, String)> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--nats-url".into(), self.nats_url.clone()]);
        all.extend(["--lattice".into(), self.lattice.clone()]);
        if args.first() == Some(&"ctl") {
            all.extend(["--key".into(), self.key.display().to_string()]);
            all.extend(["--control-key".into(), self.control_key.clone()]);
        }
        let mut command = tokio::process::Command::new(lattice_bin());
        command
            .args(&all)
            // Away from the manifest: `file://` paths are the manifest's, not the caller's.
            .current_dir(std::env::temp_dir())
            .env("LATTICE_STATE_DIR", self.dir.path())
            // No developer's docker credentials: each test gives its own.
            .env("DOCKER_CONFIG", self.path("no-docker-config"))
            .env_remove("LATTICE_INSECURE_REGISTRIES")
            .env_remove("LATTICE_REGISTRY_USER")
            .env_remove("LATTICE_REGISTRY_PASSWORD")
            .env_remove("LATTICE_REGISTRY_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let out = tokio::time::timeout(WAIT, command.output()).await??;
        Ok((
            out.status.success(),
            String::from_utf8(out.stdout)?,
            String::from_utf8(out.stderr)?,
        ))
    }

    async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let (success, stdout, stderr) = self.run(args, &[]).await?;
        ensure!(success, "lattice {args:?} failed: {stderr}");
        Ok(stdout)
    }

    /// Runs a command that must fail; returns its stderr.
    async fn refused(&self, args: &[&str]) -> anyhow::Result<String> {
        let (success, stdout, stderr) = self.run(args, &[]).await?;
        ensure!(!success, "lattice {args:?} succeeded: {stdout}");
        Ok(stderr)
    }

    /// Writes `bytes` as `name` in the test's directory; returns its path as text.
    fn file(&self, name: &str, bytes: &[u8]) -> anyhow::Result<String> {
        let path = self.path(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, bytes)?;
        Ok(path.display().to_string())
    }
}

fn assert_says(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "`{needle}` not in: {text}");
    }
}

/// Publishes `bytes` without the CLI's checks, as a careless publisher could.
async fn publish_raw(registry: &OciRegistry, reference: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let args = RegistryArgs {
        insecure: vec![registry.host.clone()],
        ..Default::default()
    };
    Oci::new(&args)
        .push(&OciRef::parse(reference)?, bytes)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_component_published_to_a_registry_deploys_from_its_reference() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let registry = OciRegistry::start().await?;
    let cli = Cli::new(&t)?;
    let signed = t.sign(&hello_wasm(), "hello", "0.1.0");
    let file = cli.file("hello.wasm", &signed)?;
    let host = registry.host.as_str();
    let reference = format!("{host}/lattice/hello:0.1.0");

    let push = [
        "push",
        "--oci",
        &reference,
        &file,
        "--insecure-registry",
        host,
    ];
    let (success, printed, stderr) = cli.run(&push, &[]).await?;
    assert!(success, "{stderr}");
    assert_eq!(printed.trim(), Digest::of(&signed).to_string());
    // It says the reference pinned to the manifest's digest, which pulls the same bytes.
    let pinned = stderr
        .lines()
        .find_map(|l| l.strip_prefix("published "))
        .expect("the pinned reference is printed")
        .to_string();
    assert!(
        pinned.starts_with(&format!("{host}/lattice/hello@sha256:")),
        "{pinned}"
    );

    // The manifest names the registry reference; deploy pulls it into the lattice.
    let manifest = hello_manifest("hello", "v1", &reference, "Hello", ANY_PORT);
    let app = cli.file("app.yaml", manifest.as_bytes())?;
    cli.ok(&["ctl", "deploy", &app, "--insecure-registry", host])
        .await?;
    let status = t.wait_deployed("hello").await?;
    let (code, body) = http_get(&endpoint(&status)?, "/").await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "Hello from Lattice (host edge-1)\n")
    );

    // `lattice pull` fetches the same bytes into the lattice (with `oci://`, and by digest).
    for written in [format!("oci://{reference}"), pinned] {
        let pulled = cli
            .ok(&["pull", &written, "--insecure-registry", host])
            .await?;
        assert_eq!(pulled.trim(), Digest::of(&signed).to_string(), "{written}");
    }

    // The control plane itself never reads a registry: a manifest sent with the reference
    // unresolved is refused with what to do.
    let raw = hello_manifest("raw", "v1", &reference, "Hello", ANY_PORT);
    let refused = t
        .ctl
        .deploy(&raw)
        .await
        .expect_err("an OCI image is refused");
    assert_eq!(refused.code, ErrorCode::InvalidInput);
    assert_says(&refused.message, &[&reference, "lattice ctl deploy"]);
    Ok(())
}

#[tokio::test]
async fn a_file_reference_deploys_relative_to_the_manifest() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let cli = Cli::new(&t)?;
    let signed = t.sign(&hello_wasm(), "hello", "0.1.0");
    cli.file("app/build/hello.wasm", &signed)?;
    let manifest = hello_manifest("hello", "v1", "file://build/hello.wasm", "Howdy", ANY_PORT);
    let app = cli.file("app/wadm.yaml", manifest.as_bytes())?;

    cli.ok(&["ctl", "deploy", &app]).await?;
    let status = t.wait_deployed("hello").await?;
    let (code, body) = http_get(&endpoint(&status)?, "/").await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "Howdy from Lattice (host edge-1)\n")
    );
    // Stored by digest and tagged from its claims, as `lattice push` does.
    let store = Registry::open(&async_nats::jetstream::new(t.client.clone()), &t.lattice).await?;
    assert_eq!(store.resolve("hello:0.1.0").await?, Digest::of(&signed));

    let missing = hello_manifest("gone", "v1", "file://build/gone.wasm", "Hi", ANY_PORT);
    let app = cli.file("app/gone.yaml", missing.as_bytes())?;
    let stderr = cli.refused(&["ctl", "deploy", &app]).await?;
    assert_says(
        &stderr,
        &[
            "file://build/gone.wasm",
            "gone.wasm",
            "relative to the manifest",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn a_registry_with_basic_auth_needs_credentials() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let registry = OciRegistry::start_with_user("ops", "s3cret").await?;
    let cli = Cli::new(&t)?;
    let signed = t.sign(&hello_wasm(), "hello", "0.1.0");
    let file = cli.file("hello.wasm", &signed)?;
    let host = registry.host.as_str();
    let reference = format!("{host}/private/hello:0.1.0");
    let push = [
        "push",
        "--oci",
        &reference,
        &file,
        "--insecure-registry",
        host,
    ];

    let stderr = cli.refused(&push).await?;
    assert_says(&stderr, &[&reference, "--registry-user", "docker login"]);
    let wrong = [
        &push[..],
        &["--registry-user", "ops", "--registry-password", "nope"],
    ]
    .concat();
    let stderr = cli.refused(&wrong).await?;
    assert_says(&stderr, &[&reference, "refused", "--registry-password"]);

    let right = [
        &push[..],
        &["--registry-user", "ops", "--registry-password", "s3cret"],
    ]
    .concat();
    cli.ok(&right).await?;

    // `docker login`'s credentials serve `lattice pull`.
    let docker = cli.path("docker");
    std::fs::create_dir_all(&docker)?;
    let auths = serde_json::json!({"auths": {host: {"username": "ops", "password": "s3cret"}}});
    std::fs::write(docker.join("config.json"), auths.to_string())?;
    let pull = ["pull", &reference, "--insecure-registry", host];
    let (success, stdout, stderr) = cli.run(&pull, &[("DOCKER_CONFIG", &docker)]).await?;
    assert!(success, "{stderr}");
    assert_eq!(stdout.trim(), Digest::of(&signed).to_string());
    Ok(())
}

#[tokio::test]
async fn refusals_name_the_reference_and_what_to_do() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let registry = OciRegistry::start().await?;
    let cli = Cli::new(&t)?;
    let host = registry.host.as_str();
    let deploy = |image: &str, name: &str| -> anyhow::Result<String> {
        let manifest = hello_manifest(name, "v1", image, "Hi", ANY_PORT);
        cli.file(&format!("{name}.yaml"), manifest.as_bytes())
    };

    // Unreachable: nothing listens on port 1.
    let gone = "127.0.0.1:1/lattice/hello:0.1.0";
    let app = deploy(gone, "unreachable")?;
    let stderr = cli
        .refused(&["ctl", "deploy", &app, "--insecure-registry", "127.0.0.1:1"])
        .await?;
    assert_says(&stderr, &[gone, "cannot reach registry 127.0.0.1:1"]);

    // A plain-HTTP registry not named insecure: the hint says how.
    let hello = format!("{host}/lattice/hello:0.1.0");
    publish_raw(&registry, &hello, &t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let stderr = cli.refused(&["pull", &hello]).await?;
    assert_says(&stderr, &[&hello, &format!("--insecure-registry {host}")]);

    // Not a wasm component; unsigned; changed after signing.
    let cases: [(&str, Vec<u8>, &[&str]); 3] = [
        (
            "junk",
            b"not wasm at all".to_vec(),
            &["is not a wasm component", "wasm32-wasip2"],
        ),
        ("unsigned", hello_wasm(), &["is not signed", "lattice sign"]),
        (
            "tampered",
            tamper(t.sign(&hello_wasm(), "hello", "0.1.0")),
            &["signature does not verify"],
        ),
    ];
    for (name, bytes, needles) in cases {
        let reference = format!("{host}/lattice/{name}:1");
        publish_raw(&registry, &reference, &bytes).await?;
        let app = deploy(&reference, name)?;
        let stderr = cli
            .refused(&["ctl", "deploy", &app, "--insecure-registry", host])
            .await?;
        assert_says(&stderr, &[&reference]);
        assert_says(&stderr, needles);
    }
    // `lattice push --oci` will not publish what hosts would refuse.
    let unsigned = cli.file("unsigned.wasm", &hello_wasm())?;
    let reference = format!("{host}/lattice/unsigned:2");
    let stderr = cli
        .refused(&[
            "push",
            "--oci",
            &reference,
            &unsigned,
            "--insecure-registry",
            host,
        ])
        .await?;
    assert_says(&stderr, &["is not signed"]);
    Ok(())
}

#[tokio::test]
async fn an_untrusted_issuer_pulled_from_a_registry_is_refused_by_the_host() -> anyhow::Result<()> {
    // The CLI cannot know each host's trust list; the host refuses before compiling.
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let registry = OciRegistry::start().await?;
    let cli = Cli::new(&t)?;
    let stranger = KeyPair::generate(KeyRole::Issuer);
    let options = lattice_protocol::claims::ClaimsOptions::named("hello", "0.1.0");
    let bytes = lattice_protocol::claims::sign_component(
        &hello_wasm(),
        &stranger,
        &options,
        lattice_protocol::unix_now(),
    )?;
    let host = registry.host.as_str();
    let reference = format!("{host}/lattice/stranger:1");
    publish_raw(&registry, &reference, &bytes).await?;
    let manifest = hello_manifest("stranger", "v1", &reference, "Hi", ANY_PORT);
    let app = cli.file("stranger.yaml", manifest.as_bytes())?;
    cli.ok(&["ctl", "deploy", &app, "--insecure-registry", host])
        .await?;
    let status = t
        .wait_status("stranger", "the app to fail", |s| {
            s.status == AppState::Failed
        })
        .await?;
    let reasons: Vec<_> = status.components.iter().map(|c| c.reason).collect();
    assert_eq!(
        reasons,
        [Some(FailureReason::RefusedSignature)],
        "{status:?}"
    );
    assert_says(
        &status.message,
        &["untrusted issuer", stranger.public_key().as_str()],
    );
    Ok(())
}

/// One byte of the greeting changed after signing: still a component, its hash no longer
/// matches its claims.
fn tamper(mut bytes: Vec<u8>) -> Vec<u8> {
    let what = b"from Lattice";
    let at = bytes
        .windows(what.len())
        .position(|w| w == what)
        .expect("the greeting is in the component");
    bytes[at] ^= 0x20;
    bytes
}
