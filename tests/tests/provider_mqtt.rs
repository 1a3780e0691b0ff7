//! The MQTT provider against a real Mosquitto and a real nats-server: deliveries to a
//! component's handler (answered here as a host would answer them), publishes for a component,
//! a broker restart, link deletion, the provider as a process of its own, SIGKILLed mid-stream
//! (restarted here, and by a real host running the real messaging-echo guest) without losing a
//! reading, and brokers over TLS.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use lattice_protocol::envelope;
use lattice_protocol::names::{AppName, ComponentName, HostId, LatticeName};
use lattice_protocol::rpc::{RpcCall, RpcReply};
use lattice_protocol::subject::Subject;
use lattice_provider_mqtt::Mqtt;
use lattice_provider_sdk::{
    Call, CallKey, LinkDirection, LinkId, LinkInfo, Provider, ProviderError, Remote, Reply,
};
use lattice_tests::mosquitto::{Mosquitto, TestMqtt};
use lattice_tests::{NatsServer, TestLattice, eventually};
use rmpv::Value;
use tokio::sync::mpsc;

/// How long a message may take to arrive.
const ARRIVE: Duration = Duration::from_secs(20);

/// How long to watch for a message that must not arrive.
const QUIET: Duration = Duration::from_millis(1500);

fn lattice() -> LatticeName {
    LatticeName::new("test").expect("valid")
}

fn link_id(component: &str, direction: LinkDirection) -> LinkId {
    LinkId {
        app: AppName::new("sensors").expect("valid"),
        component: ComponentName::new(component).expect("valid"),
        name: "default".into(),
        package: "wasmcloud:messaging".into(),
        direction,
    }
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A handler link: `component` gets what matches `subscriptions` on `broker`.
fn handler_link(component: &str, subscriptions: &str, broker: &Mosquitto) -> LinkInfo {
    LinkInfo {
        id: link_id(component, LinkDirection::Export),
        interfaces: vec!["handler".into()],
        direction: LinkDirection::Export,
        source_config: config(&[("subscriptions", subscriptions), ("uri", &broker.uri())]),
        target_config: BTreeMap::new(),
    }
}

/// A consumer link: `component` publishes on `broker`.
fn consumer_link(component: &str, broker: &Mosquitto) -> LinkInfo {
    LinkInfo {
        id: link_id(component, LinkDirection::Import),
        interfaces: vec!["consumer".into()],
        direction: LinkDirection::Import,
        source_config: BTreeMap::new(),
        // `tcp://` is accepted as well as `mqtt://`.
        target_config: config(&[("uri", &format!("tcp://127.0.0.1:{}", broker.port))]),
    }
}

/// Stands in for the hosts running `component`: answers its handler calls as a host does
/// (`[{"ok": nil}]`: the handler returned `ok`), and passes on each message's topic and body.
async fn component(
    nats: &async_nats::Client,
    component: &str,
) -> anyhow::Result<mpsc::UnboundedReceiver<(String, Vec<u8>)>> {
    let subject = Subject::rpc(
        &lattice(),
        &AppName::new("sensors")?,
        &ComponentName::new(component)?,
    );
    let mut calls = nats.subscribe(subject.to_string()).await?;
    lattice_tests::synced(nats).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let nats = nats.clone();
    tokio::spawn(async move {
        while let Some(message) = calls.next().await {
            let call: RpcCall = envelope::decode(&message.payload).expect("an RpcCall");
            assert_eq!(
                (call.interface.as_str(), call.function.as_str()),
                ("wasmcloud:messaging/handler", "handle-message")
            );
            let args = rmpv::decode::read_value(&mut &call.args[..]).expect("MessagePack");
            let fields = args[0].as_map().expect("the broker-message record");
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(name))
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Nil)
            };
            let topic = field("subject").as_str().expect("a subject").to_string();
            let body = field("body").as_slice().expect("a body").to_vec();
            let mut ok = Vec::new();
            rmpv::encode::write_value(
                &mut ok,
                &Value::Array(vec![Value::Map(vec![(Value::from("ok"), Value::Nil)])]),
            )
            .expect("encodes");
            let reply = envelope::encode(&RpcReply::Ok(ok));
            if let Some(reply_to) = message.reply {
                let _ = nats.publish(reply_to, reply.into()).await;
            }
            if tx.send((topic, body)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>) -> (String, String) {
    let (topic, body) = tokio::time::timeout(ARRIVE, rx.recv())
        .await
        .expect("a delivery within the time limit")
        .expect("the component stand-in runs");
    (topic, String::from_utf8(body).expect("UTF-8"))
}

async fn quiet(rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    if let Ok(Some((topic, body))) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!(
            "unexpected delivery on {topic}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[tokio::test]
async fn handler_links_get_matching_messages_in_order() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start().await?;
    let client = nats.client().await?;
    let provider = Mqtt::new(client.clone(), lattice());
    let mut temps = component(&client, "temps").await?;

    let link = handler_link("temps", "sensors/+/temp, alarms/#", &broker);
    provider.link_put(link.clone()).await?;

    let sensor = TestMqtt::connect(&broker, "sensor-1").await;
    let mut sent = Vec::new();
    for i in 0..30 {
        let room = ["kitchen", "attic", "cellar"][i % 3];
        let topic = format!("sensors/{room}/temp");
        // Neither matches: another measure, and a deeper topic than `+` covers.
        sensor
            .publish(&format!("sensors/{room}/humidity"), "55")
            .await;
        sensor
            .publish(&format!("sensors/{room}/temp/raw"), "0x1f")
            .await;
        sensor.publish(&topic, &format!("{}", 20 + i)).await;
        sent.push((topic, format!("{}", 20 + i)));
    }
    sensor.publish("alarms/fire/kitchen", "smoke").await;
    sent.push(("alarms/fire/kitchen".into(), "smoke".into()));

    for expected in &sent {
        assert_eq!(&next(&mut temps).await, expected);
    }
    quiet(&mut temps).await;
    let stats = provider.stats(&link.id).expect("the link is served");
    assert_eq!((stats.delivered, stats.failed), (sent.len() as u64, 0));
    Ok(())
}

#[tokio::test]
async fn failed_deliveries_are_counted_and_do_not_stop_the_link() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start().await?;
    let client = nats.client().await?;
    let provider =
        Mqtt::new(client.clone(), lattice()).with_delivery_timeout(Duration::from_secs(2));
    let link = handler_link("late", "sensors/#", &broker);
    provider.link_put(link.clone()).await?;

    // No instance of the component yet: both deliveries fail (no responders), and are dropped.
    let sensor = TestMqtt::connect(&broker, "sensor-1").await;
    sensor.publish("sensors/a/temp", "lost-1").await;
    sensor.publish("sensors/a/temp", "lost-2").await;
    eventually(ARRIVE, "both failures to be counted", || async {
        Ok(provider.stats(&link.id).expect("served").failed >= 2)
    })
    .await?;

    // Once the component runs, the next message arrives: nothing is stuck on the failed ones.
    let mut late = component(&client, "late").await?;
    sensor.publish("sensors/a/temp", "kept").await;
    assert_eq!(
        next(&mut late).await,
        ("sensors/a/temp".into(), "kept".into())
    );
    quiet(&mut late).await;
    Ok(())
}

#[tokio::test]
async fn consumer_links_publish_to_mqtt() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start().await?;
    let provider = Mqtt::new(nats.client().await?, lattice());
    let link = consumer_link("controller", &broker);
    provider.link_put(link.clone()).await?;

    let mut valve = TestMqtt::connect(&broker, "valve-1").await;
    valve.subscribe("actuators/#").await;

    for body in ["open", "close"] {
        let reply = provider
            .call(
                &link.id,
                Call::Publish {
                    subject: "actuators/valve/1".into(),
                    body: body.as_bytes().to_vec(),
                    reply_to: None,
                    headers: Vec::new(),
                },
            )
            .await?;
        assert_eq!(reply, Reply::Unit);
    }
    assert_eq!(
        valve.next_publish().await,
        ("actuators/valve/1".into(), "open".into())
    );
    assert_eq!(
        valve.next_publish().await,
        ("actuators/valve/1".into(), "close".into())
    );

    // MQTT has no request/reply, and a wildcard is no topic to publish to.
    let request = Call::Request {
        subject: "actuators/valve/1".into(),
        body: b"status?".to_vec(),
        timeout_ms: 1000,
    };
    match provider.call(&link.id, request).await {
        Err(ProviderError::Unsupported(why)) => assert!(why.contains("request/reply"), "{why}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let wildcard = Call::Publish {
        subject: "actuators/+".into(),
        body: Vec::new(),
        reply_to: None,
        headers: Vec::new(),
    };
    assert!(provider.call(&link.id, wildcard).await.is_err());
    Ok(())
}

#[tokio::test]
async fn deliveries_resume_after_the_broker_restarts() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let mut broker = Mosquitto::start().await?;
    let client = nats.client().await?;
    let provider = Mqtt::new(client.clone(), lattice());
    let mut temps = component(&client, "temps").await?;
    provider
        .link_put(handler_link("temps", "sensors/+/temp", &broker))
        .await?;

    let sensor = TestMqtt::connect(&broker, "sensor-1").await;
    sensor.publish("sensors/a/temp", "before").await;
    assert_eq!(
        next(&mut temps).await,
        ("sensors/a/temp".into(), "before".into())
    );
    drop(sensor);

    // Down for a while (the provider's attempts are refused), then back knowing nothing of the
    // provider's subscriptions: it must connect and subscribe again.
    broker.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.restart().await?;
    let sensor = TestMqtt::connect(&broker, "sensor-2").await;
    // Published until one arrives: the provider reconnects on its own schedule.
    let deadline = tokio::time::Instant::now() + ARRIVE;
    let arrived = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after the broker restarted"
        );
        sensor.publish("sensors/a/temp", "after").await;
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(250), temps.recv()).await
        {
            break message;
        }
    };
    assert_eq!(arrived, ("sensors/a/temp".into(), b"after".to_vec()));

    // And keep coming, in order.
    while let Ok(Some(_)) = tokio::time::timeout(QUIET, temps.recv()).await {}
    for i in 0..5 {
        sensor.publish("sensors/b/temp", &i.to_string()).await;
    }
    for i in 0..5 {
        assert_eq!(
            next(&mut temps).await,
            ("sensors/b/temp".into(), i.to_string())
        );
    }
    Ok(())
}

#[tokio::test]
async fn deleted_links_get_nothing_more() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start().await?;
    let client = nats.client().await?;
    let provider = Mqtt::new(client.clone(), lattice());
    let mut all = component(&client, "all").await?;
    let mut temps = component(&client, "temps").await?;
    // Two links on one broker (one client), sharing the topics of `sensors/+/temp`.
    let all_link = handler_link("all", "sensors/#", &broker);
    let temps_link = handler_link("temps", "sensors/+/temp", &broker);
    provider.link_put(all_link.clone()).await?;
    provider.link_put(temps_link.clone()).await?;

    let sensor = TestMqtt::connect(&broker, "sensor-1").await;
    sensor.publish("sensors/a/temp", "1").await;
    assert_eq!(next(&mut all).await, ("sensors/a/temp".into(), "1".into()));
    assert_eq!(
        next(&mut temps).await,
        ("sensors/a/temp".into(), "1".into())
    );

    provider.link_del(&all_link.id).await;
    assert_eq!(provider.stats(&all_link.id), None);
    sensor.publish("sensors/a/humidity", "40").await;
    sensor.publish("sensors/a/temp", "2").await;
    // The other link still gets its topics.
    assert_eq!(
        next(&mut temps).await,
        ("sensors/a/temp".into(), "2".into())
    );
    quiet(&mut all).await;
    quiet(&mut temps).await;

    provider.link_del(&temps_link.id).await;
    sensor.publish("sensors/a/temp", "3").await;
    quiet(&mut temps).await;
    quiet(&mut all).await;
    Ok(())
}

#[tokio::test]
async fn a_link_put_again_follows_its_new_filters() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start().await?;
    let client = nats.client().await?;
    let provider = Mqtt::new(client.clone(), lattice());
    let mut readings = component(&client, "readings").await?;
    provider
        .link_put(handler_link("readings", "sensors/+/temp", &broker))
        .await?;
    provider
        .link_put(handler_link("readings", "sensors/+/humidity", &broker))
        .await?;

    let sensor = TestMqtt::connect(&broker, "sensor-1").await;
    sensor.publish("sensors/a/temp", "21").await;
    sensor.publish("sensors/a/humidity", "40").await;
    assert_eq!(
        next(&mut readings).await,
        ("sensors/a/humidity".into(), "40".into())
    );
    quiet(&mut readings).await;
    Ok(())
}

/// The provider process, killed on drop.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The provider binary built next to this test, as `lattice_bin()` finds `lattice`.
fn provider_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    // target/<profile>/deps/<test> -> target/<profile>/lattice-provider-mqtt
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("lattice-provider-mqtt"))
        .expect("a target directory");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` first (`make test` does)",
        bin.display()
    );
    bin
}

/// Starts the provider process for `host`, as a host does (its environment, its call key on
/// standard input), and waits until it answers.
async fn start_provider(
    nats: &NatsServer,
    client: &async_nats::Client,
    host: &HostId,
) -> anyhow::Result<(Process, Remote)> {
    let mut process = Process(
        std::process::Command::new(provider_bin())
            .env("LATTICE_NATS_URL", &nats.url)
            .env("LATTICE_LATTICE", lattice().to_string())
            .env("LATTICE_HOST_ID", host.to_string())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .spawn()?,
    );
    // Its call key, as a host hands it over.
    let key = CallKey::generate();
    std::io::Write::write_all(
        process.0.stdin.as_mut().expect("piped"),
        key.to_line().as_bytes(),
    )?;
    let subject = Subject::provider(&lattice(), host, &ComponentName::new("mqtt")?);
    let remote = Remote::new(
        "mqtt",
        client.clone(),
        subject.to_string(),
        Duration::from_secs(10),
        key,
    );
    // Ready once it answers (no responders until it subscribed).
    eventually(ARRIVE, "the provider to answer", || async {
        Ok(remote.ping().await.is_ok())
    })
    .await?;
    Ok((process, remote))
}

#[tokio::test]
async fn the_provider_runs_as_a_process() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start().await?;
    let client = nats.client().await?;
    let host = HostId::new("NTESTHOST")?;
    let (_process, remote) = start_provider(&nats, &client, &host).await?;

    let mut temps = component(&client, "temps").await?;
    remote
        .link_put(handler_link("temps", "sensors/+/temp", &broker))
        .await?;
    assert_eq!(remote.ping().await?, 1);
    let sensor = TestMqtt::connect(&broker, "sensor-1").await;
    sensor.publish("sensors/roof/temp", "-3").await;
    assert_eq!(
        next(&mut temps).await,
        ("sensors/roof/temp".into(), "-3".into())
    );

    // Requests reach it too, with the provider's own answer.
    let consumer = consumer_link("controller", &broker);
    remote.link_put(consumer.clone()).await?;
    let request = Call::Request {
        subject: "x".into(),
        body: Vec::new(),
        timeout_ms: 100,
    };
    assert!(matches!(
        remote.call(&consumer.id, request).await,
        Err(ProviderError::Unsupported(_))
    ));
    Ok(())
}

/// Collects deliveries until every body of `wanted` arrived; returns how many arrived in all
/// (duplicates included: QoS 1 is at least once).
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    wanted: std::ops::Range<u32>,
    seen: &mut std::collections::BTreeSet<u32>,
) -> usize {
    let mut arrived = 0;
    let deadline = tokio::time::Instant::now() + ARRIVE * 2;
    while !wanted.clone().all(|n| seen.contains(&n)) {
        let missing = wanted.clone().filter(|n| !seen.contains(n)).count();
        let (_, body) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{missing} readings of {wanted:?} never arrived"))
            .expect("the component stand-in runs");
        let n: u32 = String::from_utf8(body)
            .expect("UTF-8")
            .parse()
            .expect("a sequence number");
        seen.insert(n);
        arrived += 1;
    }
    arrived
}

#[tokio::test]
async fn a_sigkilled_provider_loses_nothing_a_sensor_published() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start().await?;
    let client = nats.client().await?;
    let host = HostId::new("NTESTHOST")?;
    let mut readings = component(&client, "meter").await?;
    let link = handler_link("meter", "meters/+/seq", &broker);
    let (process, remote) = start_provider(&nats, &client, &host).await?;
    remote.link_put(link.clone()).await?;

    let sensor = TestMqtt::connect(&broker, "meter-1").await;
    let mut seen = std::collections::BTreeSet::new();
    // A first stretch, and the provider is SIGKILLed as soon as part of it has arrived: the
    // rest is in flight (queued at the provider, being delivered, or not yet acknowledged).
    for n in 0..150u32 {
        sensor.publish("meters/m1/seq", &n.to_string()).await;
    }
    while seen.len() < 20 {
        let (_, body) = next(&mut readings).await;
        seen.insert(body.parse::<u32>()?);
    }
    drop(process); // SIGKILL
    // Published while no provider runs: the broker keeps them for the persistent session.
    for n in 150..300u32 {
        sensor.publish("meters/m1/seq", &n.to_string()).await;
    }

    // The host starts the process again and puts its links again.
    let (_process, remote) = start_provider(&nats, &client, &host).await?;
    remote.link_put(link.clone()).await?;
    for n in 300..350u32 {
        sensor.publish("meters/m1/seq", &n.to_string()).await;
    }
    let arrived = seen.len() + collect(&mut readings, 0..350, &mut seen).await;
    // At least once: what was delivered but not acknowledged before the kill comes again.
    println!("350 readings, {arrived} deliveries");
    assert!(arrived >= 350);
    Ok(())
}

/// A handler link to a TLS broker, with `extra` config (e.g. `tls_ca`).
fn tls_handler_link(component: &str, broker: &Mosquitto, extra: &[(&str, &str)]) -> LinkInfo {
    let mut link = handler_link(component, "sensors/#", broker);
    link.source_config.extend(config(extra));
    link
}

#[tokio::test]
async fn tls_brokers_are_reached_with_the_links_ca() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start_tls().await?;
    assert!(broker.uri().starts_with("mqtts://"), "{}", broker.uri());
    let ca = broker
        .ca_file()
        .expect("a TLS broker")
        .display()
        .to_string();
    let client = nats.client().await?;
    let provider = Mqtt::new(client.clone(), lattice());
    let mut temps = component(&client, "temps").await?;
    let link = tls_handler_link("temps", &broker, &[("tls_ca", &ca)]);
    provider.link_put(link.clone()).await?;

    let sensor = TestMqtt::connect(&broker, "sensor-1").await;
    sensor.publish("sensors/a/temp", "21").await;
    assert_eq!(
        next(&mut temps).await,
        ("sensors/a/temp".into(), "21".into())
    );

    // A CA file that is not there is refused at once, naming the key to fix.
    let missing = tls_handler_link("other", &broker, &[("tls_ca", "/nonexistent/ca.pem")]);
    match provider.link_put(missing).await {
        Err(ProviderError::Other(why)) => assert!(why.contains("tls_ca"), "{why}"),
        other => panic!("expected a refusal naming tls_ca, got {other:?}"),
    }
    // And TLS files on a plain `mqtt://` broker are a mistake, not ignored.
    let mut plain = handler_link("plain", "sensors/#", &broker);
    plain.source_config = config(&[
        ("subscriptions", "sensors/#"),
        ("uri", &format!("mqtt://127.0.0.1:{}", broker.port)),
        ("tls_ca", &ca),
    ]);
    match provider.link_put(plain).await {
        Err(ProviderError::Other(why)) => assert!(why.contains("mqtts://"), "{why}"),
        other => panic!("expected a refusal suggesting mqtts://, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_tls_broker_the_system_does_not_trust_is_not_used() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start_tls().await?;
    let provider = Mqtt::new(nats.client().await?, lattice());
    // No `tls_ca`: the system's roots, which do not include the test's CA.
    let mut link = consumer_link("controller", &broker);
    link.target_config = config(&[("uri", &broker.uri())]);
    if let Err(e) = provider.link_put(link.clone()).await {
        // A machine without any system roots refuses at once, saying to name a CA.
        assert!(e.to_string().contains("tls_ca"), "{e}");
        return Ok(());
    }
    let publish = Call::Publish {
        subject: "actuators/valve/1".into(),
        body: b"open".to_vec(),
        reply_to: None,
        headers: Vec::new(),
    };
    match provider.call(&link.id, publish).await {
        Err(ProviderError::Unavailable(why)) => assert!(why.contains("not connected"), "{why}"),
        other => panic!("expected the broker to stay unconnected, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn messages_for_a_link_put_after_the_restart_are_held_for_it() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start().await?;
    let client = nats.client().await?;
    let host = HostId::new("NTESTHOST")?;
    let mut first = component(&client, "first").await?;
    let mut second = component(&client, "second").await?;
    // Two links on one broker: one client, one session.
    let first_link = handler_link("first", "meters/first", &broker);
    let second_link = handler_link("second", "meters/second", &broker);
    let (process, remote) = start_provider(&nats, &client, &host).await?;
    remote.link_put(first_link.clone()).await?;
    remote.link_put(second_link.clone()).await?;
    drop(process); // SIGKILL

    // While it is down: the second link's readings first (fewer than the broker's in-flight
    // window of 20), then the first's.
    let sensor = TestMqtt::connect(&broker, "meter-1").await;
    for n in 0..10u32 {
        sensor.publish("meters/second", &n.to_string()).await;
    }
    for n in 0..10u32 {
        sensor.publish("meters/first", &n.to_string()).await;
    }
    // Started again, the first link connects the session, and the broker sends everything at
    // once: the second link's readings arrive before that link is put again.
    let (_process, remote) = start_provider(&nats, &client, &host).await?;
    remote.link_put(first_link).await?;
    let mut seen = std::collections::BTreeSet::new();
    collect(&mut first, 0..10, &mut seen).await;
    remote.link_put(second_link).await?;
    let mut seen = std::collections::BTreeSet::new();
    collect(&mut second, 0..10, &mut seen).await;
    Ok(())
}

#[tokio::test]
async fn a_tls_broker_requiring_client_certificates_gets_the_links() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = Mosquitto::start_tls_requiring_client_certs().await?;
    let ca = broker
        .ca_file()
        .expect("a TLS broker")
        .display()
        .to_string();
    let (cert, key) = broker.client_cert_files().expect("a client certificate");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let client = nats.client().await?;
    let provider = Mqtt::new(client.clone(), lattice());
    let mut temps = component(&client, "temps").await?;
    let link = tls_handler_link(
        "temps",
        &broker,
        &[("tls_ca", &ca), ("tls_cert", &cert), ("tls_key", &key)],
    );
    provider.link_put(link).await?;
    let sensor = TestMqtt::connect(&broker, "sensor-1").await;
    sensor.publish("sensors/a/temp", "19").await;
    assert_eq!(
        next(&mut temps).await,
        ("sensors/a/temp".into(), "19".into())
    );

    // Without its certificate the provider's client is turned away: a publish finds no
    // connection.
    let mut anonymous = consumer_link("controller", &broker);
    anonymous.target_config = config(&[("uri", &broker.uri()), ("tls_ca", &ca)]);
    provider.link_put(anonymous.clone()).await?;
    let publish = Call::Publish {
        subject: "actuators/valve/1".into(),
        body: b"open".to_vec(),
        reply_to: None,
        headers: Vec::new(),
    };
    // Same broker address, so the same client (the first link's settings): a second provider
    // shows the refusal instead.
    let other = Mqtt::new(client.clone(), lattice());
    other.link_put(anonymous.clone()).await?;
    match other.call(&anonymous.id, publish.clone()).await {
        Err(ProviderError::Unavailable(why)) => assert!(why.contains("not connected"), "{why}"),
        other => panic!("expected no connection without a client certificate, got {other:?}"),
    }
    // While the provider with the certificate publishes on it.
    assert_eq!(provider.call(&anonymous.id, publish).await?, Reply::Unit);
    Ok(())
}

/// messaging-echo fed by the `mqtt` provider process from `meters/#` of `broker`; its echoes go
/// to NATS (`builtin:messaging-nats`), so they do not depend on the provider being up.
fn meter_manifest(image: &lattice_protocol::digest::Digest, broker: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: meters
  annotations:
    version: v1
spec:
  components:
    - name: echo
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
            target:
              name: nats
    - name: nats
      type: capability
      properties:
        image: builtin:messaging-nats
    - name: mqtt
      type: capability
      properties:
        image: provider:mqtt
      traits:
        - type: link
          properties:
            namespace: wasmcloud
            package: messaging
            interfaces: [handler]
            target:
              name: echo
            source:
              config:
                - name: topics
                  properties:
                    subscriptions: meters/#
                    uri: {broker}
"#
    )
}

/// Pids of `lattice-provider-mqtt` processes started by host `host` (their environment says
/// which).
fn mqtt_provider_pids(host: &str) -> Vec<u32> {
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
            String::from_utf8_lossy(argv0).ends_with("lattice-provider-mqtt")
                && env.split(|b| *b == 0).any(|v| v == wanted.as_bytes())
        })
        .collect()
}

#[tokio::test]
async fn the_host_restarts_a_sigkilled_provider_and_every_reading_reaches_the_component()
-> anyhow::Result<()> {
    let broker = Mosquitto::start().await?;
    let t = TestLattice::start().await?;
    let _host = t.add_host("gateway").await?;
    let host = t
        .ctl
        .hosts()
        .await?
        .into_iter()
        .find(|h| h.name == "gateway")
        .map(|h| h.id.to_string())
        .expect("the host reported");
    let image = t
        .push_example(env!("LATTICE_MESSAGING_ECHO_WASM"), "messaging-echo")
        .await?;
    t.ctl.deploy(&meter_manifest(&image, &broker.uri())).await?;
    t.wait_deployed("meters").await?;
    let mut echoes = t.client.subscribe("meters/m1.echo").await?;
    lattice_tests::synced(&t.client).await?;
    let mut seen = std::collections::BTreeSet::new();
    let mut next_echo = async || -> u32 {
        let message = tokio::time::timeout(ARRIVE * 2, echoes.next())
            .await
            .expect("an echo within the time limit")
            .expect("subscribed");
        std::str::from_utf8(&message.payload)
            .expect("UTF-8")
            .parse()
            .expect("a sequence number")
    };

    let sensor = TestMqtt::connect(&broker, "meter-1").await;
    for n in 0..100u32 {
        sensor.publish("meters/m1", &n.to_string()).await;
    }
    while seen.len() < 10 {
        seen.insert(next_echo().await);
    }
    let pids = mqtt_provider_pids(&host);
    assert_eq!(pids.len(), 1, "one provider process: {pids:?}");
    std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()?;
    // Published while the host brings the provider back.
    for n in 100..200u32 {
        sensor.publish("meters/m1", &n.to_string()).await;
    }
    let mut deliveries = seen.len();
    while (0..200).any(|n| !seen.contains(&n)) {
        seen.insert(next_echo().await);
        deliveries += 1;
    }
    println!("200 readings, {deliveries} echoes");
    let now = mqtt_provider_pids(&host);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], pids[0], "a new process");
    Ok(())
}
