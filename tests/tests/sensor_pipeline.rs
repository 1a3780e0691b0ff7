//! The sensor-pipeline example end to end (`examples/manifests/sensor-pipeline.yaml`): a real
//! Mosquitto, a real nats-server, the control plane, an edge host and a cloud host in-process,
//! the `mqtt` provider process, and the real `sensor-filter` and `sensor-aggregator` guests.
//!
//! Readings published over MQTT reach `filter` on the edge host through the provider; the good
//! ones are recorded by `aggregator` on the cloud host through a call over NATS; the aggregator's
//! HTTP summary shows exactly those. `cargo build --bins` first: the host starts the provider
//! program from beside the tests.

use std::time::Duration;

use futures::StreamExt as _;
use lattice_control::registry::Registry;
use lattice_protocol::claims::{ClaimsOptions, sign_component};
use lattice_protocol::unix_now;
use lattice_tests::mosquitto::{Mosquitto, TestMqtt};
use lattice_tests::{TestLattice, endpoint, http_get};

/// The example's manifest, deployed as it is apart from the two addresses below.
const MANIFEST: &str = include_str!("../../examples/manifests/sensor-pipeline.yaml");

/// Replaces `from` in `text`, which must be there: the test must not drift from the manifest.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the manifest no longer has `{from}`");
    text.replace(from, to)
}

/// The example manifest with the test's broker and any free HTTP port.
fn manifest(broker: &str) -> String {
    let text = replaced(
        MANIFEST,
        "uri: mqtt://127.0.0.1:1883",
        &format!("uri: {broker}"),
    );
    replaced(&text, "address: 127.0.0.1:8083", "address: 127.0.0.1:0")
}

/// Signs `path` as the manifest header does (with the same allow lists, so they are checked
/// too) and pushes it under the tag the manifest names.
async fn push(t: &TestLattice, path: &str, name: &str, allow: &[&str]) -> anyhow::Result<()> {
    let options = ClaimsOptions {
        allow: allow.iter().map(ToString::to_string).collect(),
        ..ClaimsOptions::named(name, "0.1.0")
    };
    let signed = sign_component(&std::fs::read(path)?, &t.issuer, &options, unix_now())?;
    let registry =
        Registry::open(&async_nats::jetstream::new(t.client.clone()), &t.lattice).await?;
    registry
        .push(&signed, Some(&format!("{name}:0.1.0")))
        .await?;
    Ok(())
}

#[tokio::test]
async fn mqtt_readings_are_filtered_on_the_edge_and_aggregated_in_the_cloud() -> anyhow::Result<()>
{
    // The guests' log records (drops, recordings) show when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("lattice_host=info,warn")
        .try_init();
    let broker = Mosquitto::start().await?;
    let t = TestLattice::start().await?;
    let _edge = t.add_labelled_host("edge-1", "role", "edge").await?;
    let _cloud = t.add_labelled_host("cloud-1", "role", "cloud").await?;
    push(
        &t,
        env!("LATTICE_SENSOR_FILTER_WASM"),
        "sensor-filter",
        &["wasmcloud:messaging", "example:sensors", "wasi:logging"],
    )
    .await?;
    push(
        &t,
        env!("LATTICE_SENSOR_AGGREGATOR_WASM"),
        "sensor-aggregator",
        &["wasi:http", "wasi:keyvalue", "wasi:logging"],
    )
    .await?;
    t.ctl.deploy(&manifest(&broker.uri())).await?;
    let status = t.wait_deployed("sensor-pipeline").await?;
    let addr = endpoint(&status)?;

    // Each component runs where its spread entry says.
    let hosts = t.ctl.hosts().await?;
    let host_of = |component: &str| {
        let id = status
            .components
            .iter()
            .find(|c| c.name.as_str() == component)
            .and_then(|c| c.host.clone())
            .unwrap_or_else(|| panic!("{component} is placed: {status:?}"));
        hosts
            .iter()
            .find(|h| h.id == id)
            .map(|h| h.name.clone())
            .unwrap_or_else(|| panic!("{component}'s host {id} is known: {hosts:?}"))
    };
    assert_eq!(host_of("filter"), "edge-1");
    assert_eq!(host_of("aggregator"), "cloud-1");

    // Watch the aggregator's call subject: the filter's calls must cross over NATS.
    let mut calls = t
        .client
        .subscribe("lattice.test.rpc.sensor-pipeline.aggregator")
        .await?;
    lattice_tests::synced(&t.client).await?;

    // Until the provider has subscribed, readings may go nowhere: send a probe's reading until
    // the summary shows it, so that what follows is all counted.
    let sensor = TestMqtt::connect(&broker, "sensor").await;
    t.wait_for("a probe reading to reach the aggregator", || async {
        sensor.publish("sensors/probe/temperature", "0").await;
        let (code, body) = http_get(&addr, "/").await?;
        Ok(code == 200 && body.starts_with("probe count="))
    })
    .await?;

    for (topic, body) in [
        ("sensors/t1/temperature", "20.5"),
        ("sensors/t1/temperature", "22"),
        // Dropped by the filter: not a number, and a broken sensor.
        ("sensors/t1/temperature", "warm"),
        ("sensors/t1/temperature", "999"),
        ("sensors/t2/temperature", "-5.25"),
        ("sensors/t1/temperature", " 21\n"),
        ("sensors/t2/temperature", "-51"),
    ] {
        sensor.publish(topic, body).await;
    }
    let expected =
        "t1 count=3 min=20.5 max=22 last=21\nt2 count=1 min=-5.25 max=-5.25 last=-5.25\n";
    let last = std::sync::Mutex::new(String::new());
    let outcome = t
        .wait_for("the aggregator to show the good readings", || async {
            let (code, body) = http_get(&addr, "/").await?;
            // The probe's line first (sorted), with however many probes it took.
            let rest = body
                .split_once('\n')
                .map_or("", |(_, rest)| rest)
                .to_owned();
            *last.lock().expect("not poisoned") = body;
            Ok(code == 200 && rest == expected)
        })
        .await;
    let last = last.into_inner().expect("not poisoned");
    outcome.map_err(|e| e.context(format!("last summary:\n{last}")))?;
    assert!(last.starts_with("probe count="), "{last}");

    // Nothing more arrives later: the dropped readings stay dropped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, body) = http_get(&addr, "/").await?;
    assert_eq!(code, 200);
    assert_eq!(body.split_once('\n').map(|(_, rest)| rest), Some(expected));

    let crossed = tokio::time::timeout(Duration::from_secs(5), calls.next()).await;
    assert!(
        matches!(crossed, Ok(Some(_))),
        "no call to the aggregator went over NATS"
    );
    Ok(())
}
