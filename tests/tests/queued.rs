//! Queued delivery (`delivery: queued` links) across a cut edge link: greeter-client on an edge
//! host calls greeter's one-way `notifier.notify` on a cloud host.
//!
//! What counts as delivered: greeter's `notify` logs its message through `wasi:logging`, which
//! the host turns into a `tracing` event (target `guest`). Both hosts run in this test process,
//! so a tracing subscriber capturing those events sees every real invocation of the guest's
//! function, in the order they ran: a duplicate would show twice, a loss not at all.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lattice_protocol::digest::Digest;
use lattice_tests::edge::EdgeTopology;
use lattice_tests::{TestHost, WAIT, endpoint, http_get};

/// Everything the `guest` tracing target printed.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("guest=info,lattice_host::caps::queue=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        captured
    })
}

/// The notifications greeter logged with `prefix`, in order (`prefix-<n>.` → n).
fn delivered(prefix: &str) -> Vec<u32> {
    let text = String::from_utf8_lossy(&captured().0.lock().expect("not poisoned")).into_owned();
    text.lines()
        .filter_map(|line| {
            let at = line.find(&format!("{prefix}-"))? + prefix.len() + 1;
            let rest = &line[at..];
            rest[..rest.find('.')?].parse().ok()
        })
        .collect()
}

/// greeter on `role: cloud` hosts; greeter-client, served over HTTP, pinned to `role: edge`
/// hosts, its `notifier` linked to greeter with queued delivery.
fn manifest(client: &Digest, greeter: &Digest) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: greeter
  annotations:
    version: v1
spec:
  components:
    - name: greeter
      type: component
      properties:
        image: {greeter}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
            spread:
              - name: cloud
                requirements:
                  role: cloud
    - name: client
      type: component
      properties:
        image: {client}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
            spread:
              - name: edge
                pinned: true
                requirements:
                  role: edge
        - type: link
          properties:
            namespace: example
            package: greeter
            interfaces: [notifier]
            target: greeter
            delivery: queued
            max_attempts: 3
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
              name: client
            source:
              config:
                - name: http
                  properties:
                    address: 127.0.0.1:0
"#
    )
}

/// Hub, leaf, a cloud host on the hub and an edge host on the leaf, the app deployed; returns
/// the client's HTTP address.
async fn setup(e: &EdgeTopology) -> anyhow::Result<(TestHost, TestHost, String)> {
    let mut cloud = e.hub.host_config("cloud-1");
    cloud.labels.insert("role".into(), "cloud".into());
    let cloud = e.hub.start_host(cloud).await?;
    let mut edge = e.edge_host_config("edge-1");
    edge.labels.insert("role".into(), "edge".into());
    let edge = e.start_edge_host(edge).await?;
    e.hub
        .wait_for("both hosts to report", || async {
            Ok(e.hub.ctl.hosts().await?.len() == 2)
        })
        .await?;
    let greeter = e
        .hub
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await?;
    let client = e
        .hub
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await?;
    e.hub.ctl.deploy(&manifest(&client, &greeter)).await?;
    let addr = endpoint(&e.hub.wait_deployed("greeter").await?)?;
    Ok((cloud, edge, addr))
}

/// Waits until greeter logged `n` notifications with `prefix`.
async fn wait_delivered(prefix: &str, n: usize) -> anyhow::Result<()> {
    let since = Instant::now();
    while delivered(prefix).len() < n {
        if since.elapsed() > WAIT * 2 {
            let log =
                String::from_utf8_lossy(&captured().0.lock().expect("not poisoned")).into_owned();
            anyhow::bail!(
                "only {:?} of {n} `{prefix}` notifications arrived; log:\n{log}",
                delivered(prefix)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn queued_calls_wait_out_a_cut_link_and_arrive_once_in_order() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;

    // Linked: a queued call arrives.
    assert_eq!(
        http_get(&addr, "/notify?msg=warmup-0.").await?,
        (200, "ok".into())
    );
    wait_delivered("warmup", 1).await?;

    // Cut: every call is accepted at once (it is on the edge host's disk), none arrives.
    e.cut().await?;
    const N: u32 = 20;
    for i in 0..N {
        let started = Instant::now();
        let answer = http_get(&addr, &format!("/notify?msg=cut-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "call {i} waited {:?}",
            started.elapsed()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered("cut"), Vec::<u32>::new());

    // Healed: all of them, in order, once each.
    e.heal().await?;
    wait_delivered("cut", N as usize).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered("cut"), (0..N).collect::<Vec<_>>());
    assert_eq!(delivered("warmup"), vec![0]);
    Ok(())
}

#[tokio::test]
async fn a_failing_queued_call_is_retried_then_dead_lettered() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;
    // greeter's `notify` returns an error for messages starting with `fail`.
    assert_eq!(
        http_get(&addr, "/notify?msg=fail-0.").await?,
        (200, "ok".into())
    );
    // The calls behind it wait (one at a time per target), then go on.
    assert_eq!(
        http_get(&addr, "/notify?msg=after-0.").await?,
        (200, "ok".into())
    );
    wait_delivered("after", 1).await?;
    let js = async_nats::jetstream::new(e.hub.client.clone());
    let mut dlq = js
        .get_stream(format!("LATTICE_{}_deadletter", e.hub.lattice))
        .await?;
    let state = dlq.info().await?.state.clone();
    assert_eq!(state.messages, 1, "{state:?}");
    let dead = dlq.get_raw_message(state.first_sequence).await?;
    let error = dead
        .headers
        .get("Lattice-Error")
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(error.contains("asked to fail: fail-0."), "{error}");
    Ok(())
}
