//! Queued messages (`delivery: queued` on a component's `wasmcloud:messaging/consumer` link to
//! `builtin:messaging-nats`) across a cut edge link.
//!
//! The app `relay` runs the `messenger` example three times: `sender` on the edge host, served
//! over HTTP (`GET /publish?subject=..&body=..` publishes through its queued link), and `sink`
//! (subscribed to `readings.>`) and `audit` (subscribed to `readings.*`) on the cloud host.
//! What counts as handled: messenger logs `handled <subject>: <body>` through `wasi:logging` for
//! every message, tagged `component=relay/<name>`, captured in-process as
//! [`lattice_tests::queued`] describes: a duplicate shows twice, a loss not at all.

use std::collections::BTreeSet;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use lattice_protocol::digest::Digest;
use lattice_protocol::queue::{QUEUE_SUBJECT_HEADER, deadletter_stream, queue_stream};
use lattice_tests::edge::EdgeTopology;
use lattice_tests::queued::names::{dead_letter_subject, message_consumer, message_subject};
use lattice_tests::queued::{captured, log_text, numbered, start_cloud_host, start_edge_host};
use lattice_tests::{QUIET, TestHost, WAIT, endpoint, eventually, http_get};

const APP: &str = "relay";
/// The subject the sender publishes on; both subscriptions match it.
const SUBJECT: &str = "readings.edge";

fn manifest(messenger: &Digest) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {APP}
  annotations:
    version: v1
spec:
  components:
    - name: sender
      type: component
      properties:
        image: {messenger}
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
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
            target: nats
            delivery: queued
            max_attempts: 3
    - name: sink
      type: component
      properties:
        image: {messenger}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
            spread:
              - name: cloud
                requirements:
                  role: cloud
    - name: audit
      type: component
      properties:
        image: {messenger}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
            spread:
              - name: cloud
                requirements:
                  role: cloud
    - name: nats
      type: capability
      properties:
        image: builtin:messaging-nats
      traits:
        - type: link
          properties:
            namespace: wasmcloud
            package: messaging
            interfaces: [handler]
            target:
              name: sink
            source:
              config:
                - name: sink-subjects
                  properties:
                    subscriptions: readings.>
        - type: link
          properties:
            namespace: wasmcloud
            package: messaging
            interfaces: [handler]
            name: audit
            target:
              name: audit
            source:
              config:
                - name: audit-subjects
                  properties:
                    subscriptions: readings.*
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
              name: sender
            source:
              config:
                - name: http
                  properties:
                    address: 127.0.0.1:0
"#
    )
}

/// A cloud and an edge host, the app deployed; returns them and the sender's HTTP address.
async fn setup(e: &EdgeTopology) -> anyhow::Result<(TestHost, TestHost, String)> {
    let cloud = start_cloud_host(e).await?;
    let edge = start_edge_host(e).await?;
    e.hub
        .wait_for("both hosts to report", || async {
            Ok(e.hub.ctl.hosts().await?.len() == 2)
        })
        .await?;
    let messenger = e
        .hub
        .push_example(env!("LATTICE_MESSENGER_WASM"), "messenger")
        .await?;
    e.hub.ctl.deploy(&manifest(&messenger)).await?;
    let addr = endpoint(&e.hub.wait_deployed(APP).await?)?;
    Ok((cloud, edge, addr))
}

/// Publishes `body` on [`SUBJECT`] through the sender's queued link.
async fn publish(addr: &str, body: &str) -> anyhow::Result<(u16, String)> {
    http_get(addr, &format!("/publish?subject={SUBJECT}&body={body}")).await
}

/// The messages `component` handled with bodies `<prefix>-<n>.`, in order (→ n).
fn handled(component: &str, prefix: &str) -> Vec<u32> {
    let (tag, needle) = (
        format!("component={APP}/{component} "),
        format!("handled {SUBJECT}: {prefix}-"),
    );
    numbered(
        log_text().lines().filter(|line| line.contains(&tag)),
        &needle,
    )
}

/// Waits until both subscribers handled `n` messages with `prefix`.
async fn wait_handled(prefix: &str, n: usize) -> anyhow::Result<()> {
    let both = || handled("sink", prefix).len() >= n && handled("audit", prefix).len() >= n;
    eventually(
        WAIT * 2,
        &format!("{n} `{prefix}` messages handled twice"),
        || async { Ok(both()) },
    )
    .await
    .with_context(|| {
        format!(
            "sink handled {:?}, audit {:?}; log:\n{}",
            handled("sink", prefix),
            handled("audit", prefix),
            log_text()
        )
    })
}

#[tokio::test]
async fn queued_messages_wait_out_a_cut_link_and_arrive_once_in_order() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;

    // Linked: a queued message reaches both subscribers.
    assert_eq!(publish(&addr, "warmup-0.").await?, (200, "ok".into()));
    wait_handled("warmup", 1).await?;

    // Cut: every publish is accepted (it is on the edge host's disk), none arrives.
    e.cut().await?;
    const N: u32 = 25;
    for i in 0..N {
        let answer = publish(&addr, &format!("cut-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "publish {i}");
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(handled("sink", "cut"), Vec::<u32>::new());

    // Healed: all of them, in order, once per subscribed component.
    e.heal().await?;
    wait_handled("cut", N as usize).await?;
    // Room for a duplicate to show up.
    tokio::time::sleep(QUIET).await;
    let all: Vec<u32> = (0..N).collect();
    assert_eq!(handled("sink", "cut"), all);
    assert_eq!(handled("audit", "cut"), all);
    assert_eq!(handled("sink", "warmup"), vec![0]);
    assert_eq!(handled("audit", "warmup"), vec![0]);
    Ok(())
}

#[tokio::test]
async fn a_request_on_a_queued_messaging_link_is_refused() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;
    let (status, body) = http_get(&addr, &format!("/request?subject={SUBJECT}")).await?;
    assert_eq!(status, 500, "{body}");
    for part in [
        "request on `readings.edge`",
        "link `default` to messaging-nats has `delivery: queued`",
        "publish instead",
        "make the link `delivery: direct`",
    ] {
        assert!(body.contains(part), "{part:?} not in {body:?}");
    }
    // Reserved subjects stay refused on a queued link; nothing is queued for them.
    let (status, body) = http_get(&addr, "/publish?subject=lattice.x.ctl.deploy&body=x").await?;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("reserved for the lattice itself"), "{body}");
    let (status, body) = http_get(&addr, "/publish?subject=readings.*&body=x").await?;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("is not one subject"), "{body}");
    Ok(())
}

#[tokio::test]
async fn only_queue_targets_consume() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;
    // Everything runs and a message went round: any consumer a workload makes exists by now.
    assert_eq!(publish(&addr, "probe-0.").await?, (200, "ok".into()));
    wait_handled("probe", 1).await?;

    let js = async_nats::jetstream::new(e.hub.client.clone());
    let stream = js.get_stream(queue_stream(&e.hub.lattice)).await?;
    let names: BTreeSet<String> = stream.consumer_names().try_collect().await?;
    // The subscribers, one per subscription; not the sender (it exports the handler and
    // serves HTTP, but nothing is queued to it), and no call consumer (no queued call link).
    let expected: BTreeSet<String> = [
        message_consumer(APP, "sink", "readings.>"),
        message_consumer(APP, "audit", "readings.*"),
    ]
    .into();
    assert_eq!(names, expected);
    let info = stream
        .consumer_info(message_consumer(APP, "sink", "readings.>"))
        .await?;
    assert_eq!(
        info.config.filter_subject,
        message_subject(&e.hub.lattice, "readings.>")
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_queued_message_is_retried_then_dead_lettered() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;
    // messenger refuses bodies starting with `fail`: both subscribers try 3 times, then
    // dead-letter it; the message behind it waits (one at a time), then goes on.
    assert_eq!(publish(&addr, "fail-0.").await?, (200, "ok".into()));
    assert_eq!(publish(&addr, "after-0.").await?, (200, "ok".into()));
    wait_handled("after", 1).await?;
    assert_eq!(handled("sink", "fail"), vec![0, 0, 0]);
    assert_eq!(handled("audit", "fail"), vec![0, 0, 0]);

    let js = async_nats::jetstream::new(e.hub.client.clone());
    let mut dlq = js.get_stream(deadletter_stream(&e.hub.lattice)).await?;
    let state = dlq.info().await?.state.clone();
    assert_eq!(state.messages, 2, "one per subscriber: {state:?}");
    let mut subjects = BTreeSet::new();
    for seq in state.first_sequence..=state.last_sequence {
        let dead = dlq.get_raw_message(seq).await?;
        let header = |name| {
            dead.headers
                .get(name)
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        assert!(
            header("Lattice-Error").contains("asked to fail: fail-0."),
            "{:?}",
            dead.headers
        );
        assert_eq!(
            header(QUEUE_SUBJECT_HEADER),
            message_subject(&e.hub.lattice, SUBJECT)
        );
        subjects.insert(dead.subject.to_string());
    }
    let expected: BTreeSet<String> = ["sink", "audit"]
        .map(|c| dead_letter_subject(&e.hub.lattice, APP, c))
        .into();
    assert_eq!(subjects, expected);
    Ok(())
}
