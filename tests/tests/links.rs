//! Links and capabilities end to end, in-process: a real nats-server, the control plane, hosts,
//! and real guest components written for the standard interfaces (`examples/kv-counter`,
//! `greeter`, `greeter-client`, `messaging-echo`).

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt as _;
use lattice_protocol::digest::Digest;
use lattice_tests::{TestLattice, endpoint, http_get, http_request};

const ANY_PORT: &str = "127.0.0.1:0";

/// The HTTP server capability serving `target`.
fn http_server(target: &str) -> String {
    format!(
        r#"
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
              name: {target}
            source:
              config:
                - name: http
                  properties:
                    address: {ANY_PORT}
"#
    )
}

fn header(app: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {app}
  annotations:
    version: v1
spec:
  rollout:
    healthy_for: 0s
  components:"#
    )
}

/// kv-counter, linked to NATS KV bucket `bucket` when given.
fn kv_manifest(app: &str, image: &Digest, bucket: Option<&str>) -> String {
    let link = bucket.map_or(String::new(), |bucket| {
        format!(
            r#"
        - type: link
          properties:
            namespace: wasi
            package: keyvalue
            interfaces: [store, atomics, batch]
            target:
              name: kvnats
              config:
                - name: bucket
                  properties:
                    bucket: {bucket}"#
        )
    });
    let capability = if bucket.is_some() {
        "
    - name: kvnats
      type: capability
      properties:
        image: builtin:keyvalue-nats"
    } else {
        ""
    };
    format!(
        r#"{}
    - name: counter
      type: component
      properties:
        image: {image}
        config:
          - name: greeting
            properties:
              greeting: Hi
      traits:
        - type: spreadscaler
          properties:
            instances: 1{link}{capability}{}"#,
        header(app),
        http_server("counter")
    )
}

#[tokio::test]
async fn keyvalue_config_and_logging_from_a_real_guest() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    t.ctl
        .deploy(&kv_manifest("counter", &image, Some("counts")))
        .await?;
    let addr = endpoint(&t.wait_deployed("counter").await?)?;

    // atomics.increment, with the greeting from wasi:config.
    assert_eq!(http_get(&addr, "/").await?, (200, "Hi hits: 1\n".into()));
    assert_eq!(http_get(&addr, "/").await?, (200, "Hi hits: 2\n".into()));
    assert_eq!(
        http_get(&addr, "/apples").await?,
        (200, "Hi apples: 1\n".into())
    );

    // The values are in the NATS KV bucket the link names, readable by anyone with NATS.
    let js = async_nats::jetstream::new(t.client.clone());
    let kv = js.get_key_value("counts").await?;
    assert_eq!(kv.get("hits").await?.as_deref(), Some(&b"2"[..]));

    // store: set, get, delete; list-keys; batch.
    assert_eq!(
        http_request(&addr, "PUT", "/_kv/color", "blue").await?.0,
        200
    );
    assert_eq!(http_get(&addr, "/_kv/color").await?, (200, "blue".into()));
    assert_eq!(kv.get("color").await?.as_deref(), Some(&b"blue"[..]));
    let (code, keys) = http_get(&addr, "/_keys").await?;
    assert_eq!(code, 200);
    let keys: BTreeSet<&str> = keys.lines().collect();
    assert_eq!(keys, BTreeSet::from(["apples", "color", "hits"]));
    assert_eq!(
        http_request(&addr, "POST", "/_batch", "a=1\nb=2").await?.0,
        200
    );
    let (code, batch) = http_get(&addr, "/_batch?keys=a,b,missing").await?;
    assert_eq!(code, 200, "{batch}");
    assert!(batch.contains("a=1") && batch.contains("b=2"), "{batch}");
    assert_eq!(
        http_request(&addr, "DELETE", "/_kv/color", "").await?.0,
        200
    );
    assert_eq!(http_get(&addr, "/_kv/color").await?.0, 404);
    assert_eq!(kv.get("color").await?, None);

    // An identifier the link does not name is no store at all.
    let (code, body) = http_get(&addr, "/_open/elsewhere").await?;
    assert_eq!(code, 500);
    assert!(body.contains("NoSuchStore"), "{body}");
    Ok(())
}

#[tokio::test]
async fn an_unlinked_capability_fails_at_once_with_a_wit_error() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    t.ctl.deploy(&kv_manifest("counter", &image, None)).await?;
    let addr = endpoint(&t.wait_deployed("counter").await?)?;
    let started = std::time::Instant::now();
    let (code, body) = http_get(&addr, "/").await?;
    assert_eq!(code, 500);
    assert!(body.contains("not linked"), "{body}");
    // "At once": far below any timeout a hang would run into.
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

/// greeter-client (HTTP) linked to greeter, each placed on hosts labelled `role`.
fn greeter_manifest(
    client: &Digest,
    greeter: &Digest,
    greeters: u32,
    client_role: &str,
    greeter_role: &str,
    linked: bool,
) -> String {
    let link = if linked {
        "
        - type: link
          properties:
            namespace: example
            package: greeter
            interfaces: [greet]
            target:
              name: greeter"
    } else {
        ""
    };
    format!(
        r#"{}
    - name: greeter
      type: component
      properties:
        image: {greeter}
      traits:
        - type: spreadscaler
          properties:
            instances: {greeters}
            spread:
              - name: cloud
                requirements:
                  role: {greeter_role}
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
                requirements:
                  role: {client_role}{link}{}"#,
        header("greeter"),
        http_server("client")
    )
}

#[tokio::test]
async fn components_call_each_other_across_hosts_with_load_spread() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _edge = t.add_labelled_host("edge-1", "role", "edge").await?;
    let _cloud1 = t.add_labelled_host("cloud-1", "role", "cloud").await?;
    let _cloud2 = t.add_labelled_host("cloud-2", "role", "cloud").await?;
    let greeter = t
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await?;
    let client = t
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await?;
    t.ctl
        .deploy(&greeter_manifest(
            &client, &greeter, 2, "edge", "cloud", true,
        ))
        .await?;
    let status = t.wait_deployed("greeter").await?;
    let addr = endpoint(&status)?;
    let cloud_hosts: BTreeSet<String> = status
        .components
        .iter()
        .filter(|c| c.name.as_str() == "greeter")
        .filter_map(|c| c.host.as_ref().map(ToString::to_string))
        .collect();
    assert_eq!(cloud_hosts.len(), 2, "{status:?}");

    assert_eq!(
        http_get(&addr, "/greet?name=Ada").await?,
        (200, "Hello, Ada!".into())
    );
    // Every WIT value type crosses the wire and comes back equal.
    let (code, body) = http_get(&addr, "/echo").await?;
    assert_eq!((code, body.as_str()), (200, "same"), "{body}");
    // The target's own error is an ordinary result; a trap in the target is a trap error.
    let (code, body) = http_get(&addr, "/fail/err").await?;
    assert_eq!((code, body.as_str()), (500, "err: asked to fail"));
    let (code, body) = http_get(&addr, "/fail/trap").await?;
    assert_eq!(code, 500);
    assert!(body.starts_with("err: trap:"), "{body}");
    // The caller still works after the target trapped.
    assert_eq!(http_get(&addr, "/fail/no").await?.0, 200);

    // Calls are spread over both hosts running greeter.
    let mut served = BTreeSet::new();
    for _ in 0..40 {
        let (code, host) = http_get(&addr, "/where").await?;
        assert_eq!(code, 200);
        served.insert(host);
        if served.len() == 2 {
            break;
        }
    }
    assert_eq!(served, cloud_hosts, "calls went only to {served:?}");
    Ok(())
}

#[tokio::test]
async fn calls_stay_in_process_when_the_target_runs_on_the_same_host() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _both = t.add_labelled_host("gateway", "role", "gateway").await?;
    let greeter = t
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await?;
    let client = t
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await?;
    t.ctl
        .deploy(&greeter_manifest(
            &client, &greeter, 1, "gateway", "gateway", true,
        ))
        .await?;
    let addr = endpoint(&t.wait_deployed("greeter").await?)?;
    // Watch the call subjects: a same-host call must not appear there.
    let mut rpc = t.client.subscribe("lattice.test.rpc.>").await?;
    lattice_tests::synced(&t.client).await?;
    assert_eq!(
        http_get(&addr, "/greet?name=Bob").await?,
        (200, "Hello, Bob!".into())
    );
    assert_eq!(http_get(&addr, "/echo").await?, (200, "same".into()));
    let over_nats = tokio::time::timeout(Duration::from_millis(500), rpc.next()).await;
    assert!(over_nats.is_err(), "a same-host call went over NATS");
    Ok(())
}

#[tokio::test]
async fn an_unlinked_component_import_fails_as_not_linked() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_labelled_host("gateway", "role", "gateway").await?;
    let greeter = t
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await?;
    let client = t
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await?;
    t.ctl
        .deploy(&greeter_manifest(
            &client, &greeter, 1, "gateway", "gateway", false,
        ))
        .await?;
    let addr = endpoint(&t.wait_deployed("greeter").await?)?;
    // A function with a string error gets it; one without traps the caller: both at once.
    let (code, body) = http_get(&addr, "/fail/err").await?;
    assert_eq!(code, 500);
    assert!(body.starts_with("err: not-linked:"), "{body}");
    assert_eq!(http_get(&addr, "/greet?name=Ada").await?.0, 500);
    Ok(())
}

#[tokio::test]
async fn a_call_to_a_component_running_nowhere_is_no_instance() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_labelled_host("edge-1", "role", "edge").await?;
    let greeter = t
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await?;
    let client = t
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await?;
    // No host has role=cloud: greeter runs nowhere, the client runs.
    t.ctl
        .deploy(&greeter_manifest(
            &client, &greeter, 1, "edge", "cloud", true,
        ))
        .await?;
    let status = t
        .wait_status("greeter", "the client running", |s| {
            s.components.iter().any(|c| c.endpoint.is_some())
        })
        .await?;
    let addr = endpoint(&status)?;
    let (code, body) = http_get(&addr, "/fail/err").await?;
    assert_eq!(code, 500);
    assert!(body.starts_with("err: no-instance:"), "{body}");
    Ok(())
}

fn echo_manifest(image: &Digest, subject: &str) -> String {
    format!(
        r#"{}
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
                - name: subscriptions
                  properties:
                    subscriptions: {subject}
"#,
        header("echo")
    )
}

#[tokio::test]
async fn messages_reach_the_handler_and_it_publishes_and_requests() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_MESSAGING_ECHO_WASM"), "messaging-echo")
        .await?;
    t.ctl.deploy(&echo_manifest(&image, "demo.in")).await?;
    t.wait_deployed("echo").await?;
    let client = t.client.clone();

    // A request: the handler publishes its answer to the reply subject.
    let reply = t
        .wait_until("the handler to answer", || {
            let client = client.clone();
            async move {
                Ok(tokio::time::timeout(
                    Duration::from_secs(2),
                    client.request("demo.in", "hello".into()),
                )
                .await
                .ok()
                .and_then(Result::ok))
            }
        })
        .await?;
    assert_eq!(&reply.payload[..], b"HELLO");

    // A plain message: the answer goes to `<subject>.echo`.
    let mut echoes = client.subscribe("demo.in.echo").await?;
    lattice_tests::synced(&client).await?;
    client.publish("demo.in", "quiet".into()).await?;
    let echo = tokio::time::timeout(Duration::from_secs(10), echoes.next())
        .await?
        .expect("an echo");
    assert_eq!(&echo.payload[..], b"QUIET");

    // The guest's own request (consumer.request) to a responder this test runs.
    let mut pings = client.subscribe("demo.pong").await?;
    lattice_tests::synced(&client).await?;
    let responder = client.clone();
    tokio::spawn(async move {
        if let Some(m) = pings.next().await
            && let Some(reply) = m.reply
        {
            let _ = responder.publish(reply, "pong".into()).await;
        }
    });
    client
        .publish("demo.in", "request:demo.pong".into())
        .await?;
    let echo = tokio::time::timeout(Duration::from_secs(10), echoes.next())
        .await?
        .expect("an echo");
    assert_eq!(&echo.payload[..], b"pong");
    Ok(())
}

/// http-fetch, linked to the http-client capability allowing `allowed` when given.
fn fetch_manifest(image: &Digest, allowed: Option<&str>) -> String {
    let link = allowed.map_or(String::new(), |allowed| {
        format!(
            r#"
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [outgoing-handler]
            target:
              name: httpclient
              config:
                - name: allow
                  properties:
                    allowed_hosts: "{allowed}"
    - name: httpclient
      type: capability
      properties:
        image: builtin:http-client"#
        )
    });
    format!(
        r#"{}
    - name: fetch
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1{link}{}"#,
        header("fetch"),
        http_server("fetch")
    )
}

/// A one-route HTTP server answering `pong` on an ephemeral port.
async fn pong_server() -> anyhow::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong",
                    )
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn outgoing_http_goes_only_where_the_link_allows() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_HTTP_FETCH_WASM"), "http-fetch")
        .await?;
    let allowed = pong_server().await?;
    let other = pong_server().await?;

    t.ctl
        .deploy(&fetch_manifest(&image, Some(&allowed.to_string())))
        .await?;
    let addr = endpoint(&t.wait_deployed("fetch").await?)?;
    assert_eq!(
        http_get(&addr, &format!("/?url=http://{allowed}/ping")).await?,
        (200, "200 pong".into())
    );
    let (code, body) = http_get(&addr, &format!("/?url=http://{other}/ping")).await?;
    assert_eq!(code, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // Without a link nothing goes out.
    t.ctl
        .deploy(&fetch_manifest(&image, None).replace("version: v1", "version: v2"))
        .await?;
    let status = t
        .wait_status("fetch", "v2 deployed", |s| {
            s.version == "v2" && s.status == lattice_protocol::messages::AppState::Deployed
        })
        .await?;
    let addr = endpoint(&status)?;
    let (code, body) = http_get(&addr, &format!("/?url=http://{allowed}/ping")).await?;
    assert_eq!(code, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    Ok(())
}

/// Everything this test process logs, as text: a `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn guest_logs_reach_the_host_log_tagged_with_the_component() -> anyhow::Result<()> {
    // Each test runs in its own process (nextest), so the global subscriber is this test's.
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("guest=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    t.ctl
        .deploy(&kv_manifest("logs", &image, Some("logged")))
        .await?;
    let addr = endpoint(&t.wait_deployed("logs").await?)?;
    assert_eq!(http_get(&addr, "/").await?.0, 200);
    let text = String::from_utf8(captured.0.lock().expect("not poisoned").clone())?;
    let line = text
        .lines()
        .find(|l| l.contains("hits is now 1"))
        .unwrap_or_else(|| panic!("no guest log line in:\n{text}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("component=logs/counter"), "{line}");
    assert!(line.contains("context=kv-counter"), "{line}");
    Ok(())
}
