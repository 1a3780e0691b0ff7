//! Capability providers as processes, end to end: a real nats-server, the control plane, a host
//! that starts and supervises `lattice-provider-keyvalue-nats` (the same provider code the host
//! runs in-process for `builtin:keyvalue-nats`), and the real `kv-counter` guest.
//! `cargo build --bins` first: the host starts the provider program from beside the tests.

use std::time::Duration;

use lattice_protocol::digest::Digest;
use lattice_protocol::names::AppName;
use lattice_tests::{TestLattice, endpoint, http_get};

/// kv-counter of app `app`, linked to the keyvalue-nats provider *process*, bucket `bucket`.
fn manifest(app: &str, image: &Digest, bucket: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {app}
  annotations:
    version: v1
spec:
  components:
    - name: counter
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            namespace: wasi
            package: keyvalue
            interfaces: [store, atomics]
            target:
              name: kv
              config:
                - name: bucket
                  properties:
                    bucket: {bucket}
    - name: kv
      type: capability
      properties:
        image: provider:keyvalue-nats
    - name: httpserver
      type: capability
      properties:
        image: builtin:http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            target:
              name: counter
            source:
              config:
                - name: http
                  properties:
                    address: 127.0.0.1:0
"#
    )
}

/// Pids of provider `name` processes started by host `host` (their environment says which).
fn provider_pids(name: &str, host: &str) -> Vec<u32> {
    let program = format!("lattice-provider-{name}");
    let wanted = format!("LATTICE_HOST_ID={host}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmd.split(|b| *b == 0).next().unwrap_or_default();
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            String::from_utf8_lossy(argv0).ends_with(&program)
                && env.split(|b| *b == 0).any(|v| v == wanted.as_bytes())
        })
        .collect()
}

async fn host_id(t: &TestLattice, name: &str) -> anyhow::Result<String> {
    let hosts = t.ctl.hosts().await?;
    Ok(hosts
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.id.to_string())
        .expect("the host reported"))
}

#[tokio::test]
async fn a_killed_provider_is_restarted_and_calls_resume() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let host = host_id(&t, "edge-1").await?;
    let image = t
        .push(&t.sign(
            &std::fs::read(env!("LATTICE_KV_COUNTER_WASM"))?,
            "kv-counter",
            "0.1.0",
        ))
        .await?;
    t.ctl.deploy(&manifest("counter", &image, "procs")).await?;
    let addr = endpoint(&t.wait_deployed("counter").await?)?;
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 1\n".into()));
    let pids = provider_pids("keyvalue-nats", &host);
    assert_eq!(pids.len(), 1, "one provider process: {pids:?}");

    // SIGKILL the provider: the host starts it again, gives it its link, and calls resume with
    // the state intact (it lives in NATS KV).
    std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()?;
    let body = t
        .wait_until("calls to resume after the provider was killed", || async {
            let (code, body) = http_get(&addr, "/").await?;
            Ok((code == 200).then_some(body))
        })
        .await?;
    let n: u64 = body
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(n >= 2, "{body}");
    let now = provider_pids("keyvalue-nats", &host);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], pids[0], "a new process");
    Ok(())
}

#[tokio::test]
async fn two_apps_share_one_provider_and_undeploying_one_keeps_it() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let host = host_id(&t, "edge-1").await?;
    let image = t
        .push(&t.sign(
            &std::fs::read(env!("LATTICE_KV_COUNTER_WASM"))?,
            "kv-counter",
            "0.1.0",
        ))
        .await?;
    t.ctl.deploy(&manifest("first", &image, "first")).await?;
    t.ctl.deploy(&manifest("second", &image, "second")).await?;
    let first = endpoint(&t.wait_deployed("first").await?)?;
    let second = endpoint(&t.wait_deployed("second").await?)?;
    assert_eq!(http_get(&first, "/").await?.0, 200);
    assert_eq!(http_get(&second, "/").await?.0, 200);
    let pids = provider_pids("keyvalue-nats", &host);
    assert_eq!(pids.len(), 1, "one process serves both apps: {pids:?}");

    t.ctl.undeploy(&AppName::new("first")?).await?;
    t.wait_for("the first app to stop serving", || async {
        Ok(tokio::net::TcpStream::connect(&first).await.is_err())
    })
    .await?;
    // The second app still counts, through the same process.
    assert_eq!(
        http_get(&second, "/").await?,
        (200, "Hello hits: 2\n".into())
    );
    assert_eq!(provider_pids("keyvalue-nats", &host), pids);

    // The last link gone, the process stops.
    t.ctl.undeploy(&AppName::new("second")?).await?;
    t.wait_for("the provider process to stop", || async {
        Ok(provider_pids("keyvalue-nats", &host).is_empty())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
