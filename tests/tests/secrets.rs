//! Secrets end to end: a manifest's secret value reaches the component that reads it, and
//! nothing else holds it in clear — no message on NATS, no KV bucket, stream or object store
//! of the lattice, no file in the host's state directory; a host that is not its recipient
//! cannot open it; `ctl get manifest` shows it redacted. A link's secret (a Redis password in
//! `target.secrets`) reaches its provider the same way, and only through its host's
//! authenticated provider call.

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use lattice_protocol::assignment::SignedAssignment;
use lattice_protocol::digest::Digest;
use lattice_protocol::envelope;
use lattice_protocol::messages::{FailureReason, WorkloadState};
use lattice_protocol::names::AppName;
use lattice_protocol::names::ComponentName;
use lattice_protocol::secret::{REDACTED, SEALED_PREFIX};
use lattice_protocol::subject::{Buckets, Subject};
use lattice_tests::redis::RedisServer;
use lattice_tests::{
    TestLattice, endpoint, hello_manifest, hello_wasm, http_get, kv_counter_manifest, lattice_bin,
};

const ANY_PORT: &str = "127.0.0.1:0";

/// The hello app with its `GREETING` given as a secret instead of config.
fn secret_manifest(image: &str, version: &str, greeting: &str) -> String {
    let manifest = hello_manifest("hello", version, image, greeting, ANY_PORT);
    let secret = manifest.replace(
        "        config:\n          - name: greeting\n",
        "        secrets:\n          - name: greeting\n",
    );
    assert_ne!(secret, manifest, "the hello manifest's config block moved");
    secret
}

/// A value no other part of a test run holds.
fn plaintext() -> String {
    format!("Sesame-{}", uuid::Uuid::new_v4().simple())
}

/// Every message of every stream on the server: KV buckets, object stores, queues, events.
async fn all_stream_messages(client: &async_nats::Client) -> anyhow::Result<Vec<Vec<u8>>> {
    let js = async_nats::jetstream::new(client.clone());
    let names: Vec<String> = js
        .stream_names()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!names.is_empty(), "the server has no streams");
    let mut messages = Vec::new();
    for name in names {
        let mut stream = js.get_stream(&name).await?;
        let state = stream.info().await?.state.clone();
        if state.messages == 0 {
            continue;
        }
        for seq in state.first_sequence..=state.last_sequence {
            // Deleted or purged sequences have nothing to hold.
            if let Ok(m) = stream.get_raw_message(seq).await {
                let mut bytes = m.subject.as_bytes().to_vec();
                bytes.extend_from_slice(&m.payload);
                bytes.extend_from_slice(format!("{:?}", m.headers).as_bytes());
                messages.push(bytes);
            }
        }
    }
    Ok(messages)
}

/// The bytes of every file under `dir`.
fn all_files(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(all_files(&path)?);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path)?));
        }
    }
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_secret_reaches_its_component_and_is_nowhere_in_clear() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    // Everything said on NATS from here on, the deploy and the assignment included.
    let wire = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let mut all = t.client.subscribe(">").await?;
    let captured = wire.clone();
    let capture = tokio::spawn(async move {
        while let Some(m) = all.next().await {
            let mut bytes = m.subject.as_bytes().to_vec();
            bytes.extend_from_slice(&m.payload);
            captured.lock().expect("not poisoned").push(bytes);
        }
    });
    lattice_tests::synced(&t.client).await?;

    let host = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let secret = plaintext();
    let manifest = secret_manifest(&image.to_string(), "v1", &secret);
    assert!(t.ctl.deploy(&manifest).await?.changed);
    let status = t.wait_deployed("hello").await?;

    // The component reads it, as it read the same value as config.
    let (code, body) = http_get(&endpoint(&status)?, "/").await?;
    assert_eq!(
        (code, body),
        (200, format!("{secret} from Lattice (host edge-1)\n"))
    );

    // Deployed again (sealed anew, so another ciphertext), it is the same version.
    assert!(!t.ctl.deploy(&manifest).await?.changed);
    // Another value under the same version is another manifest: refused as such.
    let other = secret_manifest(&image.to_string(), "v1", &plaintext());
    let clash = t.ctl.deploy(&other).await.expect_err("a changed secret");
    assert!(clash.message.contains("different manifest"), "{clash}");

    // Shown redacted, to a reader of the stored manifest.
    let shown = t.ctl.manifest(&AppName::new("hello")?, None).await?;
    assert_eq!(shown.version, "v1");
    assert!(shown.manifest.contains(REDACTED), "{}", shown.manifest);
    assert!(!shown.manifest.contains(&secret), "{}", shown.manifest);
    assert!(
        !shown.manifest.contains(SEALED_PREFIX),
        "{}",
        shown.manifest
    );

    // At rest on the hub: every stream (KV buckets and object stores are streams) holds the
    // manifest and the assignment, but the value only sealed.
    let stored = all_stream_messages(&t.client).await?;
    let sealed = stored
        .iter()
        .filter(|m| contains(m, SEALED_PREFIX.as_bytes()))
        .count();
    assert!(
        sealed >= 2,
        "the manifest and the assignment hold it sealed"
    );
    assert!(stored.iter().any(|m| contains(m, b"GREETING")));
    assert!(
        !stored.iter().any(|m| contains(m, secret.as_bytes())),
        "a stream holds the secret in clear"
    );

    // At rest on the host: the saved assignment keeps it sealed.
    let files = all_files(&host.state_dir)?;
    assert!(
        files
            .iter()
            .any(|(_, bytes)| contains(bytes, SEALED_PREFIX.as_bytes())),
        "the saved assignment is in the state directory"
    );
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, secret.as_bytes()),
            "{path} holds the secret in clear"
        );
    }

    // On the wire: the capture saw the deploy and the assignment go by, sealed.
    t.client.flush().await?;
    capture.abort();
    let wire = wire.lock().expect("not poisoned");
    assert!(
        wire.iter().any(|m| contains(m, SEALED_PREFIX.as_bytes())),
        "the capture saw the sealed value"
    );
    assert!(
        !wire.iter().any(|m| contains(m, secret.as_bytes())),
        "a NATS message carried the secret in clear"
    );
    Ok(())
}

#[tokio::test]
async fn a_host_that_is_not_the_recipient_cannot_open_the_secret() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _gateway = t.add_labelled_host("gateway", "zone", "edge").await?;
    let _other = t.add_labelled_host("other", "zone", "cloud").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let secret = plaintext();
    let manifest = secret_manifest(&image.to_string(), "v1", &secret).replace(
        "            instances: 1\n    - name: httpserver",
        "            instances: 1\n            spread:\n              - name: edge\n                requirements:\n                  zone: edge\n    - name: httpserver",
    );
    assert!(manifest.contains("zone: edge"), "the spread went in");
    t.ctl.deploy(&manifest).await?;
    let status = t.wait_deployed("hello").await?;
    let (_, body) = http_get(&endpoint(&status)?, "/").await?;
    assert!(body.starts_with(&secret));

    // The gateway's genuine assignment, sent to the other host: signed by the control plane,
    // so the host takes it, but the secret was sealed to the gateway's key.
    let hosts = t.ctl.hosts().await?;
    let id = |name: &str| {
        hosts
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.id.clone())
            .ok_or_else(|| anyhow::anyhow!("no host {name}"))
    };
    let (gateway, other) = (id("gateway")?, id("other")?);
    let js = async_nats::jetstream::new(t.client.clone());
    let kv = js
        .get_key_value(Buckets::new(&t.lattice).assignments())
        .await?;
    let entry = kv
        .get(gateway.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the gateway has no assignment"))?;
    let mut moved = envelope::decode::<SignedAssignment>(&entry)?.decode_unverified()?;
    assert!(
        moved.workloads.iter().any(|w| !w.secrets.is_empty()),
        "the gateway's assignment carries the secret"
    );
    let current = match kv.get(other.as_str()).await? {
        Some(bytes) => {
            envelope::decode::<SignedAssignment>(&bytes)?
                .decode_unverified()?
                .revision
        }
        None => 0,
    };
    moved.host = other.clone();
    moved.revision = current + 100;
    kv.put(
        other.as_str(),
        envelope::encode(&SignedAssignment::sign(&moved, &t.operator)).into(),
    )
    .await?;

    // The other host refuses the workload, naming the secret and why.
    let refused = t
        .wait_until("the other host to refuse the secret", || async {
            let hb = t.ctl.inventory(other.as_str()).await?;
            Ok(hb.workloads.into_iter().find(|w| {
                w.state == WorkloadState::Failed && w.reason == Some(FailureReason::SecretRefused)
            }))
        })
        .await?;
    assert!(
        refused.message.contains("secret `GREETING`")
            && refused.message.contains("sealed to another key"),
        "{}",
        refused.message
    );
    // The gateway keeps serving it.
    let (_, body) = http_get(&endpoint(&status)?, "/").await?;
    assert!(body.starts_with(&secret));
    Ok(())
}

/// `lattice ctl ARGS` against `t`, signing as its admin; stdout, or the failure's stderr. Run
/// without blocking: the control plane answering it runs on the test's own runtime.
async fn ctl(t: &TestLattice, key_file: &Path, args: &[&str]) -> anyhow::Result<String> {
    let run = tokio::process::Command::new(lattice_bin())
        .arg("ctl")
        .args(args)
        .args(["--nats-url", &t.nats.url, "--lattice", t.lattice.as_str()])
        .arg("--key")
        .arg(key_file)
        .args(["--control-key", t.operator.public_key().as_str()])
        .env_remove("LATTICE_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run).await??;
    anyhow::ensure!(
        out.status.success(),
        "lattice ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn the_cli_seals_on_deploy_and_shows_secrets_redacted() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("admin.nk");
    std::fs::write(&key_file, t.admin.to_file_contents())?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let secret = plaintext();
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, secret_manifest(&image.to_string(), "v1", &secret))?;

    let app_arg = app.display().to_string();
    ctl(&t, &key_file, &["deploy", &app_arg, "--wait"]).await?;
    let status = t.wait_deployed("hello").await?;
    let (_, body) = http_get(&endpoint(&status)?, "/").await?;
    assert!(body.starts_with(&secret), "{body}");

    let table = ctl(&t, &key_file, &["get", "manifest", "hello"]).await?;
    assert!(
        table.contains("GREETING") && table.contains(REDACTED),
        "{table}"
    );
    let json = ctl(&t, &key_file, &["get", "manifest", "hello", "-o", "json"]).await?;
    let json: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(json["version"], "v1");
    let shown = &json["manifest"]["spec"]["components"][0]["properties"]["secrets"][0];
    assert_eq!(shown["properties"]["GREETING"], REDACTED, "{json}");
    for text in [table, json.to_string()] {
        assert!(
            !text.contains(&secret) && !text.contains(SEALED_PREFIX),
            "{text}"
        );
    }
    Ok(())
}

/// kv-counter linked to the `keyvalue-redis` provider process, the Redis URL (with its
/// password) given as the link's target secret, beside the bucket in its target config.
fn redis_secret_manifest(image: &Digest, url: &str) -> String {
    let manifest = kv_counter_manifest("counter", image, "provider:keyvalue-redis", "counts");
    let with_secret = manifest.replace(
        "                    bucket: counts\n",
        &format!(
            "                    bucket: counts\n              secrets:\n                - name: redis\n                  properties:\n                    url: {url}\n"
        ),
    );
    assert_ne!(
        with_secret, manifest,
        "the kv-counter manifest's bucket moved"
    );
    with_secret
}

/// What Redis answers to `commands` (its inline protocol), read until it closes (`QUIT`).
async fn redis_says(redis: &RedisServer, commands: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let talk = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", redis.port)).await?;
        conn.write_all(format!("{commands}QUIT\r\n").as_bytes())
            .await?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await?;
        anyhow::Ok(answer)
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), talk).await?
}

#[tokio::test]
async fn a_link_secret_reaches_its_provider_and_is_nowhere_else_in_clear() -> anyhow::Result<()> {
    let password = plaintext();
    let redis = RedisServer::start_with_password(&password).await?;
    let t = TestLattice::start().await?;
    let wire = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let mut all = t.client.subscribe(">").await?;
    let captured = wire.clone();
    let capture = tokio::spawn(async move {
        while let Some(m) = all.next().await {
            let subject = m.subject.to_string();
            let mut bytes = m.subject.as_bytes().to_vec();
            bytes.extend_from_slice(&m.payload);
            captured
                .lock()
                .expect("not poisoned")
                .push((subject, bytes));
        }
    });
    lattice_tests::synced(&t.client).await?;

    let host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    let manifest = redis_secret_manifest(&image, &redis.url_with_password());
    assert!(t.ctl.deploy(&manifest).await?.changed);
    let addr = endpoint(&t.wait_deployed("counter").await?)?;

    // The provider reached the Redis that requires the password: it counts there.
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 1\n".into()));
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 2\n".into()));
    let unauthenticated = redis_says(&redis, "GET counts:hits\r\n").await?;
    assert!(
        unauthenticated.starts_with("-NOAUTH"),
        "{unauthenticated:?}"
    );
    let counted = redis_says(&redis, &format!("AUTH {password}\r\nGET counts:hits\r\n")).await?;
    assert!(counted.starts_with("+OK\r\n$1\r\n2\r\n"), "{counted:?}");

    // Deployed again (sealed anew), it is the same version.
    assert!(!t.ctl.deploy(&manifest).await?.changed);

    // Shown redacted.
    let shown = t.ctl.manifest(&AppName::new("counter")?, None).await?;
    let text = &shown.manifest;
    assert!(text.contains(REDACTED) && text.contains("url"), "{text}");
    assert!(
        !text.contains(&password) && !text.contains(SEALED_PREFIX),
        "{text}"
    );

    // At rest on the hub and on the host: sealed only.
    let stored = all_stream_messages(&t.client).await?;
    assert!(
        stored
            .iter()
            .filter(|m| contains(m, SEALED_PREFIX.as_bytes()))
            .count()
            >= 2,
        "the manifest and the assignment hold it sealed"
    );
    assert!(
        !stored.iter().any(|m| contains(m, password.as_bytes())),
        "a stream holds the link's password in clear"
    );
    for (path, bytes) in &all_files(&host.state_dir)? {
        assert!(
            !contains(bytes, password.as_bytes()),
            "{path} holds the link's password in clear"
        );
    }

    // On the wire: sealed in the deploy and the assignment, and in the host's call that gives
    // the provider process its link (sealed under the key only that process holds): in clear
    // nowhere.
    t.client.flush().await?;
    capture.abort();
    let wire = std::mem::take(&mut *wire.lock().expect("not poisoned"));
    assert!(
        wire.iter()
            .any(|(_, m)| contains(m, SEALED_PREFIX.as_bytes())),
        "the capture saw the sealed value"
    );
    let host_id = t
        .ctl
        .hosts()
        .await?
        .into_iter()
        .find(|h| h.name == "edge-1")
        .map(|h| h.id)
        .ok_or_else(|| anyhow::anyhow!("edge-1 reported no heartbeat"))?;
    let provider_call =
        Subject::provider(&t.lattice, &host_id, &ComponentName::new("keyvalue-redis")?).to_string();
    assert!(
        wire.iter().any(|(subject, _)| *subject == provider_call),
        "the capture saw the host's calls to its provider"
    );
    let clear: Vec<&String> = wire
        .iter()
        .filter(|(_, m)| contains(m, password.as_bytes()))
        .map(|(subject, _)| subject)
        .collect();
    assert!(clear.is_empty(), "the password went in clear on {clear:?}");
    Ok(())
}
