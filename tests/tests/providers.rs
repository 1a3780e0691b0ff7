//! Capability providers as processes, end to end: a real nats-server, the control plane, a host
//! that starts and supervises `lattice-provider-keyvalue-nats` (the same provider code the host
//! runs in-process for `builtin:keyvalue-nats`), and the real `kv-counter` guest.
//! `cargo build --bins` first: the host starts the provider program from beside the tests.

use futures::StreamExt as _;
use lattice_protocol::digest::Digest;
use lattice_protocol::envelope;
use lattice_protocol::names::{AppName, ComponentName, HostId};
use lattice_protocol::provider::auth::{CALL_AUTH_HEADER, CallKey};
use lattice_protocol::provider::{Call, ProviderError, ProviderRequest, ProviderResponse};
use lattice_protocol::subject::Subject;
use lattice_tests::{TestLattice, WAIT, endpoint, http_get, kv_counter_manifest};

/// kv-counter of app `app`, linked to the keyvalue-nats provider *process*, bucket `bucket`.
fn manifest(app: &str, image: &Digest, bucket: &str) -> String {
    kv_counter_manifest(app, image, "provider:keyvalue-nats", bucket)
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
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
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

/// A provider process makes the buckets it needs as its host makes its own: with the host's
/// copies (`--js-replicas`, three on a clustered hub) and byte limit (`--kv-max-bytes`), which
/// the host passes in its environment. One server here, so the limit shows it.
#[tokio::test]
async fn a_provider_process_makes_buckets_with_its_hosts_limits() -> anyhow::Result<()> {
    const KV_BYTES: i64 = 8 * 1024 * 1024;
    let t = TestLattice::start().await?;
    let mut config = t.host_config("edge-1");
    config.storage.kv_max_bytes = KV_BYTES;
    let _host = t.start_host(config).await?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    t.ctl.deploy(&manifest("counter", &image, "sized")).await?;
    let addr = endpoint(&t.wait_deployed("counter").await?)?;
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 1\n".into()));
    let host = host_id(&t, "edge-1").await?;
    assert_eq!(
        provider_pids("keyvalue-nats", &host).len(),
        1,
        "made by the process"
    );
    let js = async_nats::jetstream::new(t.client.clone());
    let mut stream = js.get_stream("KV_sized").await?;
    let made = stream.info().await?.config.clone();
    assert_eq!(made.max_bytes, KV_BYTES, "{made:?}");
    assert_eq!(made.num_replicas, 1, "{made:?}");
    Ok(())
}

#[tokio::test]
async fn two_apps_share_one_provider_and_undeploying_one_keeps_it() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let host = host_id(&t, "edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
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
    Ok(())
}

/// kv-counter opens its bucket on every request; the host asks the provider process once per
/// link and identifier, and asks again after a refusal. Seen on the provider's own subject, where
/// the test's subscription receives a copy of every request the host sends.
#[tokio::test]
async fn the_host_asks_a_provider_process_to_open_a_bucket_once() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let host = HostId::new(host_id(&t, "edge-1").await?)?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    t.ctl.deploy(&manifest("counter", &image, "opens")).await?;
    let addr = endpoint(&t.wait_deployed("counter").await?)?;
    // Subscribed once the provider answers (a subscriber that never answers would hold the
    // host's start-up pings until they time out).
    let subject = Subject::provider(&t.lattice, &host, &ComponentName::new("keyvalue-nats")?);
    let mut requests = wiretap(&t.client, &subject.to_string()).await?;
    for n in 1..=5 {
        assert_eq!(
            http_get(&addr, "/").await?,
            (200, format!("Hello hits: {n}\n"))
        );
    }
    // A refused bucket is refused every time, with the provider's answer, and never remembered.
    for _ in 0..2 {
        assert_eq!(
            http_get(&addr, "/_open/elsewhere").await?,
            (500, "Error::NoSuchStore\n".into())
        );
    }
    // The host sends its requests in order on one connection: once the last refused open is
    // here, everything before it is.
    let (mut opens, mut refused, mut increments) = (Vec::new(), 0, 0);
    while refused < 2 {
        let message = tokio::time::timeout(WAIT, requests.next())
            .await?
            .expect("the subscription lives");
        match envelope::decode::<ProviderRequest>(&message.payload)? {
            ProviderRequest::Call {
                call: Call::KvOpen { identifier },
                ..
            } if identifier == "elsewhere" => refused += 1,
            ProviderRequest::Call {
                call: Call::KvOpen { identifier },
                ..
            } => opens.push(identifier),
            ProviderRequest::Call {
                call: Call::KvIncrement { .. },
                ..
            } => increments += 1,
            _ => {}
        }
    }
    assert_eq!(increments, 5, "every request counted through the provider");
    assert_eq!(opens, ["default"], "one open for five requests");
    Ok(())
}

/// A subscription to `subject` that the server surely holds before the host's next request.
async fn wiretap(
    client: &async_nats::Client,
    subject: &str,
) -> anyhow::Result<async_nats::Subscriber> {
    let tap = client.subscribe(subject.to_string()).await?;
    lattice_tests::synced(client).await?;
    Ok(tap)
}

/// What a provider process answers to `payload` sent with `headers` by `client` on `subject`.
async fn ask(
    client: &async_nats::Client,
    subject: &Subject,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> anyhow::Result<ProviderResponse> {
    let reply = tokio::time::timeout(
        WAIT,
        client.request_with_headers(subject.to_string(), headers, payload),
    )
    .await??;
    Ok(envelope::decode(&reply.payload)?)
}

/// Being able to publish on a host's provider subject is not enough (dev mode: no NATS
/// permissions stop anyone here): a well-formed call from another client, one with a tag under
/// another key, and a replay of a request the host really sent are each refused, before they
/// reach the provider, and the host's own calls keep counting, one by one.
#[tokio::test]
async fn a_provider_process_answers_only_its_host() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let host = HostId::new(host_id(&t, "edge-1").await?)?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    t.ctl
        .deploy(&manifest("counter", &image, "guarded"))
        .await?;
    let addr = endpoint(&t.wait_deployed("counter").await?)?;
    let subject = Subject::provider(&t.lattice, &host, &ComponentName::new("keyvalue-nats")?);
    let mut requests = wiretap(&t.client, &subject.to_string()).await?;
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 1\n".into()));
    // The host's increment, captured with its headers.
    let captured = loop {
        let message = tokio::time::timeout(WAIT, requests.next())
            .await?
            .expect("the subscription lives");
        if let ProviderRequest::Call {
            call: Call::KvIncrement { .. },
            ..
        } = envelope::decode(&message.payload)?
        {
            break message;
        }
    };
    let ProviderRequest::Call { link, call } = envelope::decode(&captured.payload)? else {
        unreachable!("matched above");
    };

    // An outsider's well-formed call, on a connection of its own.
    let outsider = async_nats::connect(&t.nats.url).await?;
    let forged = envelope::encode(&ProviderRequest::Call { link, call });
    let refused = |answer: ProviderResponse, what: &str| match answer {
        ProviderResponse::Err(ProviderError::Unauthenticated(reason)) => {
            assert!(reason.contains(what), "{reason}");
        }
        other => panic!("expected a refusal naming `{what}`, got {other:?}"),
    };
    refused(
        ask(
            &outsider,
            &subject,
            async_nats::HeaderMap::new(),
            forged.clone().into(),
        )
        .await?,
        "no Lattice-Provider-Auth header",
    );
    // A tag under a key of its own.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        CALL_AUTH_HEADER,
        CallKey::generate().sign(1 << 40, &forged).as_str(),
    );
    refused(
        ask(&outsider, &subject, headers, forged.into()).await?,
        "tag is wrong",
    );
    // The host's own request, replayed whole.
    refused(
        ask(
            &outsider,
            &subject,
            captured.headers.clone().expect("the host authenticates"),
            captured.payload.clone(),
        )
        .await?,
        "a replay",
    );

    // None of them counted; the host's calls still do.
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 2\n".into()));
    Ok(())
}

/// messaging-echo fed by the `mqtt` provider process from topics `sensors/#` of `broker`, and
/// publishing its answers back through it.
fn mqtt_manifest(image: &Digest, broker: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: sensors
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
              name: mqtt
              config:
                - name: broker
                  properties:
                    uri: {broker}
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
                    subscriptions: sensors/#
                    uri: {broker}
"#
    )
}

#[tokio::test]
async fn mqtt_messages_reach_a_component_and_its_answers_go_back_to_mqtt() -> anyhow::Result<()> {
    use lattice_tests::mosquitto::{Mosquitto, TestMqtt};
    let _ = tracing_subscriber::fmt()
        .with_env_filter("lattice_host=debug,warn")
        .try_init();
    let broker = Mosquitto::start().await?;
    let t = TestLattice::start().await?;
    let _host = t.add_host("gateway").await?;
    let image = t
        .push_example(env!("LATTICE_MESSAGING_ECHO_WASM"), "messaging-echo")
        .await?;
    t.ctl.deploy(&mqtt_manifest(&image, &broker.uri())).await?;
    t.wait_deployed("sensors").await?;

    let mut sensor = TestMqtt::connect(&broker, "sensor").await;
    // The guest answers on `<topic>.echo`, which `sensors/#` also matches.
    sensor.subscribe("sensors/#").await;
    for body in ["hello", "world"] {
        sensor.publish("sensors/t1", body).await;
    }
    let mut echoes = Vec::new();
    while echoes.len() < 2 {
        let (topic, body) = sensor.next_publish().await;
        if topic == "sensors/t1.echo" {
            echoes.push(body);
        }
    }
    assert_eq!(
        echoes,
        ["HELLO", "WORLD"],
        "in order, through the component"
    );
    Ok(())
}

/// kv-counter linked to the `keyvalue-redis` provider process at `url`.
fn redis_manifest(image: &Digest, url: &str) -> String {
    manifest("counter", image, "redis-counts")
        .replace(
            "image: provider:keyvalue-nats",
            "image: provider:keyvalue-redis",
        )
        .replace(
            "                    bucket: redis-counts",
            &format!("                    bucket: redis-counts\n                    url: {url}"),
        )
}

#[tokio::test]
async fn a_component_counts_in_redis_through_the_provider_process() -> anyhow::Result<()> {
    let redis = lattice_tests::redis::RedisServer::start().await?;
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    t.ctl.deploy(&redis_manifest(&image, &redis.url)).await?;
    let addr = endpoint(&t.wait_deployed("counter").await?)?;
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 1\n".into()));
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 2\n".into()));
    // The count is in Redis, under `<bucket>:<key>` (asked in Redis's inline protocol).
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", redis.port)).await?;
    conn.write_all(b"GET redis-counts:hits\r\nQUIT\r\n").await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    assert!(answer.starts_with("$1\r\n2\r\n"), "{answer:?}");
    Ok(())
}

/// A provider process never outlives its host: a `lattice-host` process that starts one is
/// SIGKILLed, and the provider exits by itself (its standard input, the host's pipe, closes),
/// instead of running on beside the next host.
#[tokio::test]
async fn a_provider_exits_when_its_host_is_killed() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let state = tempfile::tempdir()?;
    let mut host =
        std::process::Command::new(lattice_tests::lattice_bin().with_file_name("lattice-host"))
            .args(["--nats-url", &t.nats.url, "--lattice", t.lattice.as_str()])
            .args(["--name", "doomed", "--heartbeat-secs", "1"])
            .args(["--trust-issuer", t.issuer.public_key().as_str()])
            .args(["--trust-operator", t.operator.public_key().as_str()])
            .arg("--state-dir")
            .arg(state.path())
            .env("LATTICE_JOIN_TOKEN", t.join_token())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
    t.wait_for("the host process to report", || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == "doomed"))
    })
    .await?;
    let host_key = host_id(&t, "doomed").await?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    t.ctl.deploy(&manifest("orphan", &image, "orphans")).await?;
    t.wait_deployed("orphan").await?;
    let pids = provider_pids("keyvalue-nats", &host_key);
    assert_eq!(
        pids.len(),
        1,
        "the host started one provider process: {pids:?}"
    );

    host.kill()?; // SIGKILL: no chance to stop its children
    host.wait()?;
    t.wait_for("the provider process to exit after its host", || async {
        Ok(provider_pids("keyvalue-nats", &host_key).is_empty())
    })
    .await?;
    Ok(())
}
