//! Shared by the queued-delivery suites (`queued.rs`, `queued_faults.rs`, `queue_ops.rs`): the
//! greeter app with a queued link, its setup on an [`EdgeTopology`], and how deliveries are
//! observed.
//!
//! The app: greeter on `role: cloud` hosts; greeter-client, served over HTTP, pinned to
//! `role: edge` hosts, its `notifier` linked to greeter with queued delivery. `GET
//! /notify?msg=...` on the client makes one queued `notify` call.
//!
//! What counts as delivered: greeter's `notify` logs its message through `wasi:logging`, which
//! the host turns into a `tracing` event (target `guest`). With the greeter's host in the test
//! process, the subscriber [`captured`] installs sees every real invocation of the guest's
//! function, in the order they ran: a duplicate shows twice, a loss not at all. Messages are
//! written `<prefix>-<n>.` so that [`delivered`] can read the numbers back.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use lattice_host::HostConfig;
use lattice_protocol::digest::Digest;
use lattice_protocol::messages::AppState;

use crate::edge::EdgeTopology;
use anyhow::Context as _;

use crate::{TestHost, WAIT, endpoint, eventually};

/// Everything the captured tracing targets printed.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test process) the global subscriber capturing the `guest` target and the
/// host's queue logs (`lattice_host::queue`, debug); call it first in every test.
pub fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("guest=info,lattice_host::queue=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        captured
    })
}

/// Everything captured so far, as text.
pub fn log_text() -> String {
    String::from_utf8_lossy(&captured().0.lock().expect("not poisoned")).into_owned()
}

/// The numbers `n` of the lines holding `<needle><n>.`, in order.
pub fn numbered<'a>(lines: impl IntoIterator<Item = &'a str>, needle: &str) -> Vec<u32> {
    lines
        .into_iter()
        .filter_map(|line| {
            let rest = &line[line.find(needle)? + needle.len()..];
            rest[..rest.find('.')?].parse().ok()
        })
        .collect()
}

/// The notifications greeter logged with `prefix`, in order (`prefix-<n>.` → n).
pub fn delivered(prefix: &str) -> Vec<u32> {
    numbered(log_text().lines(), &format!("{prefix}-"))
}

/// Waits until greeter logged `n` notifications with `prefix`.
pub async fn wait_delivered(prefix: &str, n: usize) -> anyhow::Result<()> {
    eventually(
        WAIT * 2,
        &format!("{n} `{prefix}` notifications"),
        || async { Ok(delivered(prefix).len() >= n) },
    )
    .await
    .with_context(|| format!("only {:?} arrived; log:\n{}", delivered(prefix), log_text()))
}

/// The queued link's properties.
#[derive(Debug, Clone)]
pub struct QueuedLink {
    /// `max_attempts`.
    pub max_attempts: u32,
    /// `capacity`, when set.
    pub capacity: Option<u32>,
    /// `on_full` (`refuse` or `drop_oldest`), when set.
    pub on_full: Option<&'static str>,
    /// `ttl` (a duration such as `1h`), when set.
    pub ttl: Option<&'static str>,
    /// Where the client listens for HTTP (not a link property; default `127.0.0.1:0`, a port
    /// picked anew each time the client starts).
    pub http_address: Option<String>,
    /// Greeter on every `role: cloud` host (a daemon) rather than one instance.
    pub greeter_everywhere: bool,
}

impl Default for QueuedLink {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            capacity: None,
            on_full: None,
            ttl: None,
            http_address: None,
            greeter_everywhere: false,
        }
    }
}

impl QueuedLink {
    /// The link trait's delivery properties, as manifest lines.
    fn properties(&self) -> String {
        let mut lines = format!(
            "            delivery: queued\n            max_attempts: {}\n",
            self.max_attempts
        );
        if let Some(capacity) = self.capacity {
            lines += &format!("            capacity: {capacity}\n");
        }
        if let Some(on_full) = self.on_full {
            lines += &format!("            on_full: {on_full}\n");
        }
        if let Some(ttl) = self.ttl {
            lines += &format!("            ttl: {ttl}\n");
        }
        lines
    }
}

/// The greeter app (named `greeter`) with `link` as the client's queued link to greeter.
pub fn manifest(client: &Digest, greeter: &Digest, link: &QueuedLink) -> String {
    let address = link.http_address.as_deref().unwrap_or("127.0.0.1:0");
    let scaler = if link.greeter_everywhere {
        "daemonscaler"
    } else {
        "spreadscaler"
    };
    let link = link.properties();
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
        - type: {scaler}
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
{link}    - name: httpserver
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
                    address: {address}
"#
    )
}

/// Starts the in-process cloud host (`cloud-1`, `role: cloud`) on the hub.
pub async fn start_cloud_host(e: &EdgeTopology) -> anyhow::Result<TestHost> {
    let mut cloud = e.hub.host_config("cloud-1");
    cloud.labels.insert("role".into(), "cloud".into());
    e.hub.start_host(cloud).await
}

/// Starts the in-process edge host (`edge-1`, `role: edge`) on the leaf.
pub async fn start_edge_host(e: &EdgeTopology) -> anyhow::Result<TestHost> {
    start_edge_host_with(e, |_| {}).await
}

/// [`start_edge_host`], its configuration changed by `configure` first (e.g. its outbox limits).
pub async fn start_edge_host_with(
    e: &EdgeTopology,
    configure: impl FnOnce(&mut HostConfig),
) -> anyhow::Result<TestHost> {
    let mut edge = e.edge_host_config("edge-1");
    edge.labels.insert("role".into(), "edge".into());
    configure(&mut edge);
    e.start_edge_host(edge).await
}

/// Waits until `n` hosts report, pushes greeter and greeter-client, deploys the app with
/// `link` and returns the client's HTTP address once it is deployed.
pub async fn deploy(e: &EdgeTopology, hosts: usize, link: &QueuedLink) -> anyhow::Result<String> {
    deploy_only(e, hosts, link).await?;
    // A host reports a workload running, then (a moment later, in another report) its HTTP
    // address: the app can be deployed without an endpoint for a heartbeat.
    let status = e
        .hub
        .wait_status("greeter", "greeter to be deployed, with an endpoint", |s| {
            s.status == AppState::Deployed && s.components.iter().any(|c| c.endpoint.is_some())
        })
        .await?;
    endpoint(&status)
}

/// [`deploy`] without waiting for the app to be deployed (e.g. while greeter has no host).
pub async fn deploy_only(e: &EdgeTopology, hosts: usize, link: &QueuedLink) -> anyhow::Result<()> {
    e.hub
        .wait_for(&format!("{hosts} hosts to report"), || async {
            Ok(e.hub.ctl.hosts().await?.len() == hosts)
        })
        .await?;
    let (client, greeter) = push_images(e).await?;
    e.hub.ctl.deploy(&manifest(&client, &greeter, link)).await?;
    Ok(())
}

/// Signs and pushes greeter-client and greeter; returns their digests, in that order.
pub async fn push_images(e: &EdgeTopology) -> anyhow::Result<(Digest, Digest)> {
    let greeter = e
        .hub
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await?;
    let client = e
        .hub
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await?;
    Ok((client, greeter))
}

/// A cloud and an edge host (both in-process) and the app deployed with `link`; returns the
/// hosts and the client's HTTP address.
pub async fn setup_with(
    e: &EdgeTopology,
    link: &QueuedLink,
) -> anyhow::Result<(TestHost, TestHost, String)> {
    setup_with_edge(e, link, |_| {}).await
}

/// [`setup_with`], the edge host's configuration changed by `configure`.
pub async fn setup_with_edge(
    e: &EdgeTopology,
    link: &QueuedLink,
    configure: impl FnOnce(&mut HostConfig),
) -> anyhow::Result<(TestHost, TestHost, String)> {
    let cloud = start_cloud_host(e).await?;
    let edge = start_edge_host_with(e, configure).await?;
    let addr = deploy(e, 2, link).await?;
    Ok((cloud, edge, addr))
}

/// Makes one queued call (`warmup-0.`) through the client at `addr` and waits for its delivery:
/// the link works end to end, and the target's consumer exists.
pub async fn warm_up(addr: &str) -> anyhow::Result<()> {
    let answer = crate::http_get(addr, "/notify?msg=warmup-0.").await?;
    anyhow::ensure!(
        answer == (200, "ok".into()),
        "the warm-up call was answered {answer:?}"
    );
    wait_delivered("warmup", 1).await
}

/// The hub's queue stream's message count.
pub async fn stream_messages(e: &EdgeTopology) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(e.hub.client.clone());
    let mut stream = js
        .get_stream(lattice_protocol::queue::queue_stream(&e.hub.lattice))
        .await?;
    Ok(stream.info().await?.state.messages)
}

/// The key of `host` (its id is the public key), as it keeps it in its state directory: what
/// signs the queued items its forwarder sends.
pub fn host_key(host: &TestHost) -> anyhow::Result<lattice_protocol::keys::KeyPair> {
    let path = host.state_dir.join("host.nk");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(lattice_protocol::keys::KeyPair::from_seed_role(
        &text,
        lattice_protocol::keys::KeyRole::Host,
    )?)
}

/// [`setup_with`] the default link (`max_attempts: 3`).
pub async fn setup(e: &EdgeTopology) -> anyhow::Result<(TestHost, TestHost, String)> {
    setup_with(e, &QueuedLink::default()).await
}

/// The suites' names of queued delivery, from the plain app and component names they use, built
/// by the protocol's typed [`Subject`] and keys (nothing here formats a subject).
pub mod names {
    use lattice_protocol::keys::PublicKey;
    use lattice_protocol::names::{AppName, ComponentName, LatticeName};
    use lattice_protocol::queue::ops::QueueLink;
    use lattice_protocol::queue::{ConsumerName, Lane, LaneId, LaneKey};
    use lattice_protocol::subject::Subject;

    fn app(name: &str) -> AppName {
        AppName::new(name).expect("a valid app name")
    }

    fn component(name: &str) -> ComponentName {
        ComponentName::new(name).expect("a valid component name")
    }

    /// `app`'s `component`'s call consumer.
    pub fn call_consumer(a: &str, c: &str) -> String {
        ConsumerName::calls(&app(a), &component(c)).to_string()
    }

    /// `app`'s `component`'s consumer of the messages on `subscription`.
    pub fn message_consumer(a: &str, c: &str, subscription: &str) -> String {
        ConsumerName::messages(&app(a), &component(c), subscription).to_string()
    }

    /// The subject of queued calls to `app`'s `component`.
    pub fn call_subject(lattice: &LatticeName, a: &str, c: &str) -> String {
        Subject::queued_calls(lattice, &app(a), &component(c)).to_string()
    }

    /// The subject of messages queued for NATS subject `subject`.
    pub fn message_subject(lattice: &LatticeName, subject: &str) -> String {
        Subject::queued_messages(lattice, subject).to_string()
    }

    /// The subject of `app`'s `component`'s dead letters.
    pub fn dead_letter_subject(lattice: &LatticeName, a: &str, c: &str) -> String {
        Subject::dead_letters(lattice, &app(a), &component(c)).to_string()
    }

    /// The queue stream's subjects.
    pub fn all_queued(lattice: &LatticeName) -> String {
        Subject::all_queued(lattice).to_string()
    }

    /// The lane of `link`'s (`app/source -> target`) calls to `app`'s `target`, as the outbox
    /// stores it.
    pub fn call_lane(lattice: &LatticeName, link: &str) -> String {
        let link: QueueLink = link.parse().expect("a queued link");
        let subject = Subject::queued_calls(lattice, &link.app, &link.target);
        Lane::new(subject, link).to_string()
    }

    /// The key of lane `lane` (as the outbox stores it) of outbox `outbox` at `consumer`, sent
    /// by the host whose public key is `sender`.
    pub fn lane_key(consumer: &str, sender: &str, outbox: &str, lane: &str) -> String {
        let consumer: ConsumerName = consumer.parse().expect("a consumer name");
        let sender = PublicKey::parse(sender).expect("a public key");
        LaneKey::new(&consumer, &sender, &LaneId::of_text(outbox, lane)).to_string()
    }

    /// Lane `lane`'s id in outbox `outbox`.
    pub fn lane_id(outbox: &str, lane: &str) -> String {
        LaneId::of_text(outbox, lane).to_string()
    }
}
