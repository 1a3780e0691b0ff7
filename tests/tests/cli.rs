//! The real `lattice` binary, as an operator uses it: keys, sign, inspect, `up`, push, deploy,
//! status, get, and the errors a user sees.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use lattice_tests::cli::UpProcess;
use lattice_tests::{hello_manifest, hello_wasm, http_get, lattice_bin};

fn lattice(args: &[&str], state: &Path) -> anyhow::Result<Output> {
    let out = Command::new(lattice_bin())
        .args(args)
        .env("LATTICE_STATE_DIR", state)
        .env_remove("LATTICE_NATS_URL")
        .env_remove("LATTICE_LATTICE")
        .env_remove("LATTICE_KEY")
        .env_remove("LATTICE_CONTROL_KEY")
        .stdin(Stdio::null())
        .output()?;
    Ok(out)
}

fn ok(args: &[&str], state: &Path) -> anyhow::Result<String> {
    let out = lattice(args, state)?;
    ensure!(
        out.status.success(),
        "lattice {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `lattice up` in the background with its stderr in `<state>.log`.
fn start_up(state: &Path) -> anyhow::Result<UpProcess> {
    UpProcess::spawn(
        state,
        std::fs::File::create(state.with_extension("log"))?,
        |_| {},
    )
}

/// The last lines `lattice up` (started by [`start_up`]) wrote, to say why it is not answering.
fn up_log(state: &Path) -> String {
    let log = std::fs::read_to_string(state.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs `lattice` until `done` accepts its output, for at most a minute (the lattice is starting).
fn until(args: &[&str], state: &Path, done: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = lattice(args, state)?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && done(&stdout) {
            return Ok(stdout);
        }
        ensure!(
            Instant::now() < deadline,
            "`lattice {args:?}` never gave what was expected; last: {stdout} {}\n`lattice up` said:\n{}",
            String::from_utf8_lossy(&out.stderr),
            up_log(state)
        );
        // Each try is a new process: there is no event to wait on from outside.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn an_operator_walks_through_the_whole_cycle() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let p = |name: &str| dir.path().join(name).display().to_string();

    // Keys: public key on stdout, seed only in a 0600 file.
    let public = ok(&["keys", "gen", "issuer", "-o", &p("issuer.nk")], &state)?;
    assert!(public.trim().starts_with('A'), "{public}");
    let mode = std::fs::metadata(p("issuer.nk"))?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = lattice(&["keys", "gen", "issuer", "-o", &p("issuer.nk")], &state)?;
    assert!(
        !again.status.success(),
        "an existing key file is never overwritten"
    );

    // Sign and inspect.
    std::fs::write(p("hello.wasm"), hello_wasm())?;
    ok(
        &[
            "sign",
            &p("hello.wasm"),
            "-o",
            &p("hello.signed.wasm"),
            "--issuer",
            &p("issuer.nk"),
            "--name",
            "hello",
            "--version",
            "1.2.3",
        ],
        &state,
    )?;
    let inspected: serde_json::Value = serde_json::from_str(&ok(
        &["inspect", &p("hello.signed.wasm"), "-o", "json"],
        &state,
    )?)?;
    assert_eq!(inspected["claims"]["name"], "hello");
    assert_eq!(inspected["claims"]["issuer"], public.trim());
    assert!(
        inspected["signature"]
            .as_str()
            .unwrap_or("")
            .starts_with("valid")
    );
    assert!(
        inspected["exports"]
            .to_string()
            .contains("wasi:http/incoming-handler"),
        "{inspected}"
    );

    // Bring a lattice up, then sign with its dev issuer, push and deploy.
    let up = start_up(&state)?;
    until(&["ctl", "get", "hosts", "-o", "json"], &state, |s| {
        serde_json::from_str::<serde_json::Value>(s)
            .is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    })?;
    let dev_issuer = state.join("keys/issuer.nk").display().to_string();
    ok(
        &[
            "sign",
            &p("hello.wasm"),
            "-o",
            &p("dev.wasm"),
            "--issuer",
            &dev_issuer,
            "--name",
            "hello",
            "--version",
            "0.1.0",
        ],
        &state,
    )?;
    let reference = ok(&["push", &p("dev.wasm")], &state)?;
    assert!(reference.trim().starts_with("sha256:"), "{reference}");
    assert_eq!(
        ok(&["push", &p("dev.wasm")], &state)?,
        reference,
        "pushing twice is a no-op"
    );

    std::fs::write(
        p("app.yaml"),
        hello_manifest("hello", "v1", "hello:0.1.0", "Hello", "127.0.0.1:0"),
    )?;
    ok(&["ctl", "deploy", &p("app.yaml"), "--wait"], &state)?;
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["ctl", "status", "hello", "-o", "json"], &state)?)?;
    assert_eq!(status["status"], "Deployed");
    assert_eq!(status["version"], "v1");
    let component = &status["components"][0];
    for field in ["name", "host", "instances", "state", "message"] {
        assert!(
            component.get(field).is_some(),
            "status lacks {field}: {status}"
        );
    }
    let endpoint = component["endpoint"].as_str().context("an endpoint")?;
    let (code, body) = http_get(endpoint, "/").await?;
    assert_eq!(code, 200);
    assert!(body.starts_with("Hello from Lattice (host "), "{body}");

    let hosts: serde_json::Value =
        serde_json::from_str(&ok(&["ctl", "get", "hosts", "-o", "json"], &state)?)?;
    let host = &hosts[0];
    for field in ["id", "name", "labels", "state"] {
        assert!(host.get(field).is_some(), "hosts lack {field}: {hosts}");
    }
    assert_eq!(host["state"], "ready");
    assert!(host["labels"]["arch"].is_string());
    let components: serde_json::Value =
        serde_json::from_str(&ok(&["ctl", "get", "components", "-o", "json"], &state)?)?;
    assert_eq!(components[0]["app"], "hello");
    assert_eq!(components[0]["state"], "running");
    let host_name = host["name"].as_str().context("a host name")?;
    let inventory = ok(&["ctl", "get", "inventory", host_name], &state)?;
    assert!(
        inventory.contains("hello") && inventory.contains("running"),
        "{inventory}"
    );
    let history: serde_json::Value =
        serde_json::from_str(&ok(&["ctl", "history", "hello", "-o", "json"], &state)?)?;
    assert_eq!(history[0]["version"], "v1");
    assert_eq!(history[0]["current"], true);
    let again = lattice(&["ctl", "deploy", "hello", "--version", "v1"], &state)?;
    assert!(String::from_utf8_lossy(&again.stderr).contains("already the deployed version"));
    let apps: serde_json::Value =
        serde_json::from_str(&ok(&["ctl", "get", "apps", "-o", "json"], &state)?)?;
    assert_eq!(apps[0]["name"], "hello");
    assert_eq!(apps[0]["status"], "Deployed");

    // `deploy --wait` of a component the host refuses exits non-zero with the reason.
    ok(
        &["push", &p("hello.wasm"), "--tag", "unsigned:0.1.0"],
        &state,
    )?;
    std::fs::write(
        p("unsigned.yaml"),
        hello_manifest("unsigned", "v1", "unsigned:0.1.0", "x", "127.0.0.1:0"),
    )?;
    let failed = lattice(
        &[
            "ctl",
            "deploy",
            &p("unsigned.yaml"),
            "--wait",
            "--timeout",
            "60s",
        ],
        &state,
    )?;
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("failed") && stderr.contains("unsigned component"),
        "{stderr}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["ctl", "status", "unsigned", "-o", "json"], &state)?)?;
    assert_eq!(
        status["components"][0]["reason"], "refused_signature",
        "{status}"
    );

    // A malformed manifest: every problem, with file and line, and nothing deployed.
    std::fs::write(
        p("bad.yaml"),
        "apiVersion: core.oam.dev/v1beta1\nkind: Aplication\nmetadata:\n  name: bad\nspec:\n  components: []\n",
    )?;
    let bad = lattice(&["ctl", "deploy", &p("bad.yaml")], &state)?;
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("bad.yaml:2:7: kind:"), "{stderr}");
    assert!(stderr.contains("bad.yaml:6:"), "{stderr}");

    // A second `lattice up` on the same state directory comes back with the app.
    let stopped = up.stop()?;
    assert!(
        stopped.success(),
        "lattice up stops cleanly on SIGTERM: {stopped}"
    );
    // Its log went to a file: no terminal colour codes in it.
    let log = std::fs::read_to_string(state.with_extension("log"))?;
    assert!(!log.is_empty() && !log.contains('\u{1b}'), "{log}");
    let _up = start_up(&state)?;
    until(&["ctl", "status", "hello", "-o", "json"], &state, |s| {
        s.contains("\"Deployed\"")
    })?;
    Ok(())
}

/// JetStream reserves Lattice's stream limits (about 6 GiB) up front, within 75 % of the disk's
/// free space unless the server declares its room: `lattice up` declares it, so that a local
/// lattice comes up on a machine with little free disk (it ended with "insufficient storage").
#[tokio::test]
async fn a_local_lattice_comes_up_on_a_small_disk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = lattice_tests::tmpfs::Tmpfs::mount(&dir.path().join("disk"), "512m")?;
    let state = disk.dir().join("state");
    let up = start_up(&state)?;
    until(&["ctl", "get", "hosts", "-o", "json"], &state, |s| {
        serde_json::from_str::<serde_json::Value>(s)
            .is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    })?;
    let status = up.stop()?;
    ensure!(
        status.success(),
        "`lattice up` ended with {status}: {}",
        up_log(&state)
    );
    Ok(())
}

#[test]
fn ctl_without_nats_says_where_it_looked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = lattice(
        &["ctl", "get", "hosts", "--nats-url", "nats://127.0.0.1:1"],
        dir.path(),
    )?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach NATS at nats://127.0.0.1:1"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    Ok(())
}

#[test]
fn bad_names_never_become_subjects() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = lattice(
        &[
            "ctl",
            "get",
            "apps",
            "--lattice",
            "prod.eu",
            "--nats-url",
            "nats://127.0.0.1:1",
        ],
        dir.path(),
    )?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lattice name `prod.eu`"), "{stderr}");
    let out = lattice(&["host", "--label", "my zone=x"], dir.path())?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("whitespace"));
    Ok(())
}

#[tokio::test]
async fn nkey_authentication_is_used_when_given() -> anyhow::Result<()> {
    let user = nkeys::KeyPair::new_user();
    let nats = lattice_tests::NatsServer::start_with_config(&format!(
        "authorization: {{ users: [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    ))
    .await?;
    let dir = tempfile::tempdir()?;
    let seed = dir.path().join("user.nk");
    std::fs::write(&seed, user.seed()?)?;
    let seed = seed.display().to_string();

    let without = lattice(
        &["ctl", "get", "hosts", "--nats-url", &nats.url],
        dir.path(),
    )?;
    assert!(!without.status.success());
    let stderr = String::from_utf8_lossy(&without.stderr).to_lowercase();
    assert!(
        stderr.contains("cannot reach nats") && stderr.contains("authorization"),
        "{stderr}"
    );

    // Authenticated, the request reaches the lattice: there is simply no control plane yet.
    // (Signed by a user key, as every `lattice ctl` request is.)
    use lattice_protocol::keys::{KeyPair, KeyRole};
    let user_key = dir.path().join("operator-user.nk");
    std::fs::write(
        &user_key,
        KeyPair::generate(KeyRole::User).to_file_contents(),
    )?;
    let control_key = KeyPair::generate(KeyRole::Operator)
        .public_key()
        .to_string();
    let with = lattice(
        &[
            "ctl",
            "get",
            "hosts",
            "--nats-url",
            &nats.url,
            "--nkey",
            &seed,
            "--key",
            &user_key.display().to_string(),
            "--control-key",
            &control_key,
        ],
        dir.path(),
    )?;
    let stderr = String::from_utf8_lossy(&with.stderr);
    assert!(stderr.contains("no control plane is running"), "{stderr}");
    Ok(())
}
