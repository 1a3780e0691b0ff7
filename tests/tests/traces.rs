//! OpenTelemetry traces across the lattice, with real `lattice-host` processes (each its own
//! tracer, configured by the standard `OTEL_*` variables) exporting to an OTLP/HTTP receiver in
//! the test ([`OtlpReceiver`]): one trace spans an HTTP request on an edge host, its call to a
//! component on a cloud host, and a queued call made while the edge's link was cut and
//! delivered after it healed. The hosts sample with `parentbased_traceidratio` at 0, so only
//! the traces the test starts (with a sampled `traceparent`) may be exported at all. A guest's
//! `wasi:logging` line names the trace it was written in.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use lattice_protocol::messages::AppState;
use lattice_tests::cli::UpProcess;
use lattice_tests::edge::{EdgeTopology, HUB_DOMAIN};
use lattice_tests::otlp::{ExportedSpan, OtlpReceiver};
use lattice_tests::{TestLattice, WAIT, endpoint, eventually, http_get, lattice_bin};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The trace the cross-host call runs in, and the caller's span the edge host continues.
const CALL_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The trace the queued call runs in.
const QUEUED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
/// The test's own span, the parent of each request it makes.
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A `lattice-host` process exporting its spans to the test's receiver; SIGKILLed on drop.
struct TracedHost {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for TracedHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TracedHost {
    /// Starts host `name` (label `role=<role>`) on the hub, or on the leaf when `edge`.
    fn start(
        e: &EdgeTopology,
        otlp: &OtlpReceiver,
        name: &str,
        edge: bool,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let url = if edge { &e.leaf.url } else { &e.hub.nats.url };
        Self::spawn(&e.hub, url, otlp, name, edge, dir)
    }

    /// Starts host `name` (label `role=cloud`) on the NATS of `t`.
    fn on(t: &TestLattice, otlp: &OtlpReceiver, name: &str, dir: &Path) -> anyhow::Result<Self> {
        Self::spawn(t, &t.nats.url, otlp, name, false, dir)
    }

    fn spawn(
        t: &TestLattice,
        url: &str,
        otlp: &OtlpReceiver,
        name: &str,
        edge: bool,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let state_dir = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log)?;
        let role = if edge { "edge" } else { "cloud" };
        let mut command = Command::new(lattice_bin().with_file_name("lattice-host"));
        command
            .args(["--nats-url", url])
            .args(["--lattice", t.lattice.as_str(), "--name", name])
            .args(["--label", &format!("role={role}")])
            .args(["--trust-issuer", t.issuer.public_key().as_str()])
            .args(["--trust-operator", t.operator.public_key().as_str()])
            .args(["--heartbeat-secs", "1", "--state-dir"])
            .arg(&state_dir)
            .env("LATTICE_JOIN_TOKEN", t.join_token())
            // Guests' log lines too: they name their trace.
            .env("RUST_LOG", "warn,guest=info")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
            .env("OTEL_SERVICE_NAME", name)
            // New traces are never sampled; a caller's sampled trace is followed.
            .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
            .env("OTEL_TRACES_SAMPLER_ARG", "0")
            // Exported within 100 ms rather than the default 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if edge {
            command.args(["--js-domain", HUB_DOMAIN]);
        }
        let child = command
            .spawn()
            .context("starting lattice-host (`cargo build --bins` builds it)")?;
        Ok(Self { child, log })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Greeter on the cloud host; the client, served over HTTP, pinned to the edge host, its
/// `greet` linked to greeter directly and its `notifier` with queued delivery.
fn manifest(client: &str, greeter: &str) -> String {
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
            interfaces: [greet]
            target: greeter
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

/// GET `path` with a sampled `traceparent` naming `trace` and the test's span: status and body
/// (its one line, without the line end).
async fn traced_get(addr: &str, path: &str, trace: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\ntraceparent: 00-{trace}-{CALLER_SPAN}-01\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no status code")?;
        // The answers here are one short line: a chunked body is its size, the line, the end.
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body.lines().nth(1).unwrap_or_default()
        } else {
            body
        };
        let body = body.trim_end().to_string();
        anyhow::Ok((code, body))
    };
    tokio::time::timeout(WAIT, exchange).await?
}

/// The one span named `name` from `service` in `trace`, once exported.
async fn span(
    otlp: &OtlpReceiver,
    service: &str,
    name: &str,
    trace: &str,
) -> anyhow::Result<ExportedSpan> {
    span_where(otlp, service, name, trace, |_| true).await
}

/// [`span`] with `parent` as its parent: for a trace that holds several spans of one name (a
/// handler that publishes in its turn), in whatever order they were exported.
async fn child_span(
    otlp: &OtlpReceiver,
    service: &str,
    name: &str,
    trace: &str,
    parent: &ExportedSpan,
) -> anyhow::Result<ExportedSpan> {
    span_where(otlp, service, name, trace, |s| {
        s.parent_span_id == parent.span_id
    })
    .await
    .with_context(|| format!("no `{name}` under {parent:?}"))
}

async fn span_where(
    otlp: &OtlpReceiver,
    service: &str,
    name: &str,
    trace: &str,
    which: impl Fn(&ExportedSpan) -> bool,
) -> anyhow::Result<ExportedSpan> {
    let find = || {
        otlp.spans()
            .into_iter()
            .find(|s| s.service == service && s.name == name && s.trace_id == trace && which(s))
    };
    eventually(
        WAIT,
        &format!("{service} to export `{name}` in trace {trace}"),
        || async { Ok(find().is_some()) },
    )
    .await
    .with_context(|| format!("exported: {:#?}", otlp.spans()))?;
    find().context("found a moment ago")
}

#[tokio::test]
async fn one_trace_spans_a_cross_host_call_and_a_queued_call_across_an_outage() -> anyhow::Result<()>
{
    let otlp = OtlpReceiver::start().await?;
    let e = EdgeTopology::start().await?;
    let dir = tempfile::tempdir()?;
    let cloud = TracedHost::start(&e, &otlp, "cloud-1", false, dir.path())?;
    let edge = TracedHost::start(&e, &otlp, "edge-1", true, dir.path())?;
    let logs = || {
        format!(
            "cloud-1:\n{}\nedge-1:\n{}",
            cloud.log_text(),
            edge.log_text()
        )
    };
    e.hub
        .wait_for("both host processes to report", || async {
            Ok(e.hub.ctl.hosts().await?.len() == 2)
        })
        .await
        .with_context(logs)?;
    let greeter = e
        .hub
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await?;
    let client = e
        .hub
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await?;
    e.hub
        .ctl
        .deploy(&manifest(&client.to_string(), &greeter.to_string()))
        .await?;
    let status = e
        .hub
        .wait_status("greeter", "greeter to be deployed, with an endpoint", |s| {
            s.status == AppState::Deployed && s.components.iter().any(|c| c.endpoint.is_some())
        })
        .await
        .with_context(logs)?;
    let addr = endpoint(&status)?;

    // Requests without a trace: at ratio 0 none of them starts one.
    for _ in 0..3 {
        assert_eq!(
            http_get(&addr, "/greet?name=Ada").await?,
            (200, "Hello, Ada!".into())
        );
    }

    // (a) A cross-host call: the edge host continues the test's trace for the request, calls
    // greeter on the cloud host in a child span, and the cloud host serves it in a child of
    // that.
    assert_eq!(
        traced_get(&addr, "/greet?name=Ada", CALL_TRACE).await?,
        (200, "Hello, Ada!".into())
    );
    let request = span(&otlp, "edge-1", "lattice.http.request", CALL_TRACE).await?;
    let call = span(&otlp, "edge-1", "lattice.call", CALL_TRACE).await?;
    let served = span(&otlp, "cloud-1", "lattice.call.serve", CALL_TRACE).await?;
    assert_eq!(request.parent_span_id, CALLER_SPAN, "{request:?}");
    assert_eq!(call.parent_span_id, request.span_id, "{call:?}");
    assert_eq!(served.parent_span_id, call.span_id, "{served:?}");

    // (b) A queued call made while the edge is cut off: queued on the edge host in the
    // test's trace, delivered on the cloud host after the link heals, in the same trace.
    e.cut().await?;
    assert_eq!(
        traced_get(&addr, "/notify?msg=cut-0.", QUEUED_TRACE).await?,
        (200, "ok".into())
    );
    let enqueued = span(&otlp, "edge-1", "lattice.call.enqueue", QUEUED_TRACE).await?;
    assert!(
        !otlp
            .spans()
            .iter()
            .any(|s| s.service == "cloud-1" && s.trace_id == QUEUED_TRACE),
        "delivered while the link was cut: {:#?}",
        otlp.spans()
    );
    e.heal().await?;
    let delivered = span(&otlp, "cloud-1", "lattice.queue.deliver", QUEUED_TRACE)
        .await
        .with_context(logs)?;
    assert_eq!(delivered.parent_span_id, enqueued.span_id, "{delivered:?}");
    // Greeter logged the message (`wasi:logging`) during that delivery, naming the trace.
    let log = cloud.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("cut-0."))
        .with_context(|| format!("greeter logged no `cut-0.`:\n{log}"))?;
    assert!(
        line.contains(&format!("trace_id={QUEUED_TRACE}")),
        "the guest's log line names no trace: {line}"
    );

    // (c) Sampling at 0: nothing outside the two traces the test started was exported (the
    // untraced requests ended before the traced ones, so their spans, had they been sampled,
    // would have been exported by now).
    let strays: Vec<ExportedSpan> = otlp
        .spans()
        .into_iter()
        .filter(|s| s.trace_id != CALL_TRACE && s.trace_id != QUEUED_TRACE)
        .collect();
    assert!(
        strays.is_empty(),
        "exported outside the test's traces: {strays:#?}"
    );
    Ok(())
}

/// The trace a message published by a guest runs in.
const MESSAGE_TRACE: &str = "5cd3a2f1e0b94c7d8a6f1e2d3c4b5a69";

/// `sender` (messenger) served over HTTP, publishing through a direct `messaging-nats` link;
/// `sink` (messaging-echo) subscribed to `traced.orders` through that capability's handler
/// link. (Two images: a host fetching one image for two workloads at once fails one of them
/// until its retry, 30 s later.)
fn messaging_manifest(messenger: &str, echo: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: relay
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
        - type: link
          properties:
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
            target: nats
    - name: sink
      type: component
      properties:
        image: {echo}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
            target: nats
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
                    subscriptions: traced.orders
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

/// A message a guest publishes carries its trace (`traceparent` in the NATS headers): the
/// handler of the component subscribed to its subject runs in a child of the publish, in the
/// trace of the HTTP request that published it, and the handler's log line names that trace.
#[tokio::test]
async fn a_message_a_guest_publishes_is_handled_in_its_trace() -> anyhow::Result<()> {
    let otlp = OtlpReceiver::start().await?;
    let t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let host = TracedHost::on(&t, &otlp, "cloud-1", dir.path())?;
    t.wait_for("the host process to report", || async {
        Ok(t.ctl.hosts().await?.len() == 1)
    })
    .await
    .with_context(|| host.log_text())?;
    let messenger = t
        .push_example(env!("LATTICE_MESSENGER_WASM"), "messenger")
        .await?;
    let echo = t
        .push_example(env!("LATTICE_MESSAGING_ECHO_WASM"), "messaging-echo")
        .await?;
    t.ctl
        .deploy(&messaging_manifest(
            &messenger.to_string(),
            &echo.to_string(),
        ))
        .await?;
    let status = t
        .wait_status("relay", "relay to be deployed, with an endpoint", |s| {
            s.status == AppState::Deployed && s.components.iter().any(|c| c.endpoint.is_some())
        })
        .await
        .with_context(|| host.log_text())?;
    let addr = endpoint(&status)?;

    assert_eq!(
        traced_get(
            &addr,
            "/publish?subject=traced.orders&body=traced-1",
            MESSAGE_TRACE
        )
        .await?,
        (200, "ok".into())
    );
    // The echo handler publishes in its turn: the trace holds two publishes, exported in
    // either order. The chain asked for is request -> its publish -> that publish's handler.
    let request = span(&otlp, "cloud-1", "lattice.http.request", MESSAGE_TRACE).await?;
    assert_eq!(request.parent_span_id, CALLER_SPAN, "{request:?}");
    let publish = child_span(
        &otlp,
        "cloud-1",
        "lattice.messaging.publish",
        MESSAGE_TRACE,
        &request,
    )
    .await?;
    child_span(
        &otlp,
        "cloud-1",
        "lattice.messaging.handle",
        MESSAGE_TRACE,
        &publish,
    )
    .await
    .with_context(|| host.log_text())?;
    // The sink logged the message (`wasi:logging`) while handling it, naming the trace.
    let log = host.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("message on traced.orders"))
        .with_context(|| format!("the sink logged no message on traced.orders:\n{log}"))?;
    assert!(
        line.contains(&format!("trace_id={MESSAGE_TRACE}")),
        "the handler's log line names no trace: {line}"
    );
    Ok(())
}

/// Runs `lattice args` against the lattice of `state`, exporting as `lattice-cli` when `otlp`.
async fn cli(
    args: &[&str],
    state: &Path,
    otlp: Option<&OtlpReceiver>,
) -> anyhow::Result<std::process::Output> {
    let mut command = tokio::process::Command::new(lattice_bin());
    command
        .args(args)
        .env("LATTICE_STATE_DIR", state)
        .env_remove("LATTICE_NATS_URL")
        .env_remove("LATTICE_LATTICE")
        .env_remove("LATTICE_KEY")
        .env_remove("LATTICE_CONTROL_KEY")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null());
    if let Some(otlp) = otlp {
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
            .env("OTEL_SERVICE_NAME", "lattice-cli");
    }
    let out = tokio::time::timeout(WAIT, command.output()).await??;
    Ok(out)
}

/// `lattice ctl deploy` is one trace from the CLI to the component serving on the host: the
/// CLI's `lattice.deploy` (flushed as the CLI exits) is the parent of the control plane's,
/// which is the parent of the `lattice.assign` that writes the host's assignment; the host's
/// `lattice.apply` continues that (the trace travels inside the signed assignment), and loads
/// and puts the component in service (`lattice.load`, `lattice.serve`) inside it. A traced
/// request reaches the provider process the component's key-value link goes to, in the same
/// trace. `lattice up --metrics-addr --host-metrics-addr` serves the control plane's and the
/// host's metrics, which count what happened.
#[tokio::test]
async fn a_deploy_continues_into_the_control_plane_and_a_request_into_a_provider_process()
-> anyhow::Result<()> {
    let otlp = OtlpReceiver::start().await?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let p = |name: &str| dir.path().join(name).display().to_string();
    let log = std::fs::File::create(dir.path().join("up.log"))?;
    // `lattice up` exporting its spans (control plane and host in one process, service
    // `lattice-up`).
    let _up = UpProcess::spawn(&state, log, |up| {
        up.args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--host-metrics-addr", "127.0.0.1:0"])
            // For the lines that say where metrics are served.
            .env("RUST_LOG", "info")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
            .env("OTEL_SERVICE_NAME", "lattice-up")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    })?;
    let up_log = || std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();
    // Each try is a new process: there is no event to wait on from outside.
    eventually(WAIT, "`lattice up` to have a host", || async {
        let out = cli(&["ctl", "get", "hosts", "-o", "json"], &state, None).await?;
        Ok(out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty())))
    })
    .await
    .with_context(up_log)?;
    let wasm = std::fs::read(env!("LATTICE_KV_COUNTER_WASM"))?;
    std::fs::write(p("counter.wasm"), wasm)?;
    let issuer = state.join("keys/issuer.nk").display().to_string();
    let sign = [
        "sign",
        &p("counter.wasm"),
        "-o",
        &p("signed.wasm"),
        "--issuer",
        &issuer,
        "--name",
        "kv-counter",
        "--version",
        "0.1.0",
    ];
    anyhow::ensure!(cli(&sign, &state, None).await?.status.success(), "sign");
    let push = cli(&["push", &p("signed.wasm")], &state, None).await?;
    anyhow::ensure!(push.status.success(), "push: {push:?}");
    let image = lattice_protocol::digest::Digest::parse(String::from_utf8(push.stdout)?.trim())?;
    // kv-counter, its key-value link served by the `keyvalue-nats` provider *process*.
    std::fs::write(
        p("app.yaml"),
        lattice_tests::kv_counter_manifest("counter", &image, "provider:keyvalue-nats", "traced"),
    )?;
    let deploy = cli(&["ctl", "deploy", &p("app.yaml")], &state, Some(&otlp)).await?;
    anyhow::ensure!(deploy.status.success(), "deploy: {deploy:?}");

    // Exported by the CLI before it exited.
    let sent = otlp
        .spans()
        .into_iter()
        .find(|s| s.service == "lattice-cli" && s.name == "lattice.deploy")
        .with_context(|| format!("the CLI exported no lattice.deploy: {:#?}", otlp.spans()))?;
    assert_eq!(sent.parent_span_id, "", "the CLI's deploy starts the trace");
    let served = span(&otlp, "lattice-up", "lattice.deploy", &sent.trace_id).await?;
    assert_eq!(served.parent_span_id, sent.span_id, "{served:?}");
    // On into the assignment and the host: one trace from the operator to the component.
    let assigned = span(&otlp, "lattice-up", "lattice.assign", &sent.trace_id).await?;
    assert_eq!(assigned.parent_span_id, served.span_id, "{assigned:?}");
    let applied = span(&otlp, "lattice-up", "lattice.apply", &sent.trace_id).await?;
    assert_eq!(applied.parent_span_id, assigned.span_id, "{applied:?}");
    let loaded = span(&otlp, "lattice-up", "lattice.load", &sent.trace_id).await?;
    assert_eq!(loaded.parent_span_id, applied.span_id, "{loaded:?}");
    let serving = span(&otlp, "lattice-up", "lattice.serve", &sent.trace_id).await?;
    assert_eq!(serving.parent_span_id, applied.span_id, "{serving:?}");
    // A request with a trace: the host serves it and calls the provider process, which
    // continues the trace under its own name.
    let status = eventually_status(&state).await.with_context(up_log)?;
    assert_eq!(
        traced_get(&status, "/", CALL_TRACE).await?,
        (200, "Hello hits: 1".into())
    );
    let request = span(&otlp, "lattice-up", "lattice.http.request", CALL_TRACE).await?;
    assert_eq!(request.parent_span_id, CALLER_SPAN, "{request:?}");
    let provided = span(
        &otlp,
        "lattice-provider-keyvalue-nats",
        "lattice.provider.serve",
        CALL_TRACE,
    )
    .await?;
    assert!(
        otlp.spans().iter().any(|s| s.service == "lattice-up"
            && s.trace_id == CALL_TRACE
            && s.span_id == provided.parent_span_id),
        "{provided:?} is no child of a host span: {:#?}",
        otlp.spans()
    );

    // Every load, in whatever trace, is inside a `lattice.apply`.
    let named = |name: &str| {
        otlp.spans()
            .into_iter()
            .filter(|s| s.service == "lattice-up" && s.name == name)
            .collect::<Vec<_>>()
    };
    eventually(
        WAIT,
        "lattice up to export lattice.assign and lattice.load",
        || async { Ok(!named("lattice.assign").is_empty() && !named("lattice.load").is_empty()) },
    )
    .await
    .with_context(|| format!("exported: {:#?}", otlp.spans()))?;
    let applies = named("lattice.apply");
    for load in named("lattice.load") {
        assert!(
            applies
                .iter()
                .any(|a| a.span_id == load.parent_span_id && a.trace_id == load.trace_id),
            "{load:?} is no child of a lattice.apply: {applies:#?}"
        );
    }

    // `lattice up`'s metrics: the control plane's and the host's, each where it said. The
    // control plane's gauges are set at its next tick.
    let has = |scrapes: &[String], prefix: &str, parts: &[&str], value: &str| {
        scrapes.iter().any(|s| {
            s.lines().any(|l| {
                l.starts_with(prefix)
                    && parts.iter().all(|p| l.contains(p))
                    && l.ends_with(&format!(" {value}"))
            })
        })
    };
    let counted = |scrapes: &[String]| {
        has(
            scrapes,
            "lattice_control_apps{",
            &[r#"status="deployed""#],
            "1",
        ) && has(
            scrapes,
            "lattice_host_http_requests_total{",
            &[r#"workload="counter/counter""#, r#"outcome="ok""#],
            "1",
        )
    };
    eventually(
        WAIT,
        "lattice up's metrics to show the app deployed and its one request",
        || async { Ok(counted(&metrics_of_up(&up_log()).await?)) },
    )
    .await
    .with_context(up_log)?;
    Ok(())
}

/// The metrics of each address `lattice up` logged (`serving metrics addr=...`): the control
/// plane's and the host's, once both are bound.
async fn metrics_of_up(log: &str) -> anyhow::Result<Vec<String>> {
    let addrs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("serving metrics"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        .collect();
    anyhow::ensure!(
        addrs.len() == 2,
        "`lattice up` logged {} metrics addresses, not 2 (control plane and host):\n{log}",
        addrs.len()
    );
    let mut scrapes = Vec::new();
    for addr in addrs {
        let (code, body) = http_get(addr, "/metrics").await?;
        anyhow::ensure!(code == 200, "{addr} answered {code}: {body}");
        scrapes.push(body);
    }
    Ok(scrapes)
}

/// The HTTP endpoint of `counter` in the lattice of `state`, once it is deployed.
async fn eventually_status(state: &Path) -> anyhow::Result<String> {
    let endpoint = || async {
        let out = cli(&["ctl", "status", "counter", "-o", "json"], state, None).await?;
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        anyhow::Ok(
            status["components"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|c| c["endpoint"].as_str().map(str::to_owned)),
        )
    };
    eventually(WAIT, "counter to be served", || async {
        Ok(endpoint().await?.is_some())
    })
    .await?;
    endpoint().await?.context("an endpoint a moment ago")
}
