//! Metrics, end to end: what a test did to a real host (real nats-server, control plane,
//! wasmtime and components) is what the host's and the control plane's Prometheus scrapes say.
//! Each scrape is parsed line by line (`name{labels} value`, comments, `# EOF` last), so a
//! malformed exposition fails the test too.

use std::collections::BTreeMap;
use std::time::Duration;

use lattice_control::metrics::MetricsEndpoint;
use lattice_test_guests::{bombs, greedy, looping, trapping};
use lattice_tests::edge::EdgeTopology;
use lattice_tests::guest_apps::{deploy_guest, get};
use lattice_tests::queued::{
    QueuedLink, captured, deploy, start_edge_host_with, wait_delivered, warm_up,
};
use lattice_tests::{
    TestLattice, WAIT, endpoint, eventually, hello_manifest, hello_wasm, http_get, lattice_bin,
};
use tokio::io::AsyncBufReadExt as _;

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses OpenMetrics text: comments are `# HELP`, `# TYPE` or `# UNIT`, the last line is
/// `# EOF`, every other line `name{label="value",...} number`.
fn parse(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut lines: Vec<&str> = text.lines().collect();
    anyhow::ensure!(
        lines.pop() == Some("# EOF"),
        "no `# EOF` at the end:\n{text}"
    );
    let mut samples = Vec::new();
    for line in lines {
        if let Some(comment) = line.strip_prefix("# ") {
            anyhow::ensure!(
                ["HELP ", "TYPE ", "UNIT "]
                    .iter()
                    .any(|k| comment.starts_with(k)),
                "an unknown comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow::anyhow!("no value: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .ok_or_else(|| anyhow::anyhow!("unclosed labels: {line}"))?;
                let mut labels = BTreeMap::new();
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    let (key, value) = pair
                        .split_once("=\"")
                        .ok_or_else(|| anyhow::anyhow!("a malformed label in {line}"))?;
                    labels.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
                }
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        anyhow::ensure!(
            name.starts_with("lattice_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "a metric outside lattice_*: {line}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: value
                .parse()
                .map_err(|e| anyhow::anyhow!("`{value}` is not a number ({e}): {line}"))?,
        });
    }
    Ok(samples)
}

/// Scrapes `addr` and parses the exposition.
async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<Scrape> {
    let (code, body) = http_get(&addr.to_string(), "/metrics").await?;
    anyhow::ensure!(code == 200, "the scrape answered {code}: {body}");
    Ok(Scrape(parse(&body)?))
}

#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The value of `name` with exactly `labels`, if present.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .map(|s| s.value)
    }

    /// [`Scrape::get`], which must be there.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        self.get(name, labels)
            .ok_or_else(|| anyhow::anyhow!("no {name}{labels:?} in {:#?}", self.0))
    }
}

/// A lattice whose control plane serves metrics, and a host `edge-1` that does too: their
/// bound metrics addresses.
async fn lattice_with_metrics() -> anyhow::Result<(
    TestLattice,
    lattice_tests::TestHost,
    std::net::SocketAddr,
    std::net::SocketAddr,
)> {
    let control = MetricsEndpoint::new("127.0.0.1:0".parse()?);
    let t = TestLattice::start_with(|c| c.metrics = Some(control.clone())).await?;
    let mut config = t.host_config("edge-1");
    let host_endpoint = MetricsEndpoint::new("127.0.0.1:0".parse()?);
    config.metrics = Some(host_endpoint.clone());
    let host = t.start_host(config).await?;
    t.wait_for("edge-1 to report", || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == "edge-1"))
    })
    .await?;
    let host_addr = tokio::time::timeout(WAIT, host_endpoint.bound()).await?;
    let control_addr = tokio::time::timeout(WAIT, control.bound()).await?;
    Ok((t, host, host_addr, control_addr))
}

/// N requests to hello: its workload's request counter says exactly N, its latency histogram
/// counted N; the control plane's scrape shows the host ready and the app deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_requests_are_n_in_the_scrape_and_the_control_plane_sees_its_lattice()
-> anyhow::Result<()> {
    const N: usize = 25;
    let (t, _host, host_metrics, control_metrics) = lattice_with_metrics().await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = hello_manifest("shop", "v1", &image.to_string(), "Hi", "127.0.0.1:0");
    t.ctl.deploy(&manifest).await?;
    let addr = endpoint(&t.wait_deployed("shop").await?)?;
    for _ in 0..N {
        let (code, body) = http_get(&addr, "/").await?;
        anyhow::ensure!(code == 200, "hello answered {code}: {body}");
    }

    let workload = [("workload", "shop/hello")];
    let scraped = scrape(host_metrics).await?;
    let ok = [("workload", "shop/hello"), ("outcome", "ok")];
    assert_eq!(
        scraped.value("lattice_host_http_requests_total", &ok)?,
        N as f64
    );
    for outcome in ["error", "busy", "rejected"] {
        let labels = [("workload", "shop/hello"), ("outcome", outcome)];
        assert_eq!(
            scraped.value("lattice_host_http_requests_total", &labels)?,
            0.0
        );
    }
    assert_eq!(
        scraped.value(
            "lattice_host_http_request_duration_seconds_count",
            &workload
        )?,
        N as f64
    );
    let inf = [("workload", "shop/hello"), ("le", "+Inf")];
    assert_eq!(
        scraped.value("lattice_host_http_request_duration_seconds_bucket", &inf)?,
        N as f64
    );
    assert_eq!(scraped.value("lattice_host_traps_total", &workload)?, 0.0);
    assert!(
        scraped
            .get("lattice_host_heartbeat_age_seconds", &[])
            .is_some(),
        "the host has heartbeated: {scraped:?}"
    );
    // The guest's task ends just after its response: wait for the gauge to fall back.
    eventually(WAIT, "no instance in use", || async {
        let s = scrape(host_metrics).await?;
        Ok(s.value("lattice_host_instances_in_use", &workload)? == 0.0)
    })
    .await?;

    eventually(
        WAIT,
        "the control plane's scrape to show the lattice",
        || async {
            let s = scrape(control_metrics).await?;
            Ok(
                s.value("lattice_control_hosts", &[("state", "ready")])? == 1.0
                    && s.value("lattice_control_apps", &[("status", "deployed")])? == 1.0,
            )
        },
    )
    .await?;
    let s = scrape(control_metrics).await?;
    assert_eq!(s.value("lattice_control_leading", &[])?, 1.0);
    assert_eq!(s.value("lattice_control_hosts", &[("state", "lost")])?, 0.0);
    assert!(
        s.value(
            "lattice_control_assignment_writes_total",
            &[("outcome", "written")]
        )? >= 1.0
    );
    assert!(s.value("lattice_control_reconcile_duration_seconds_count", &[])? >= 1.0);
    Ok(())
}

/// A trapping request counts as an error and a trap; requests refused at a workload's
/// concurrency count as busy and as concurrency-limit hits, one for each 503 a client saw; a
/// growth past the manifest's `memory` and a run past its `timeout` are limit hits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trap_is_an_error_and_a_refusal_at_the_concurrency_a_limit_hit() -> anyhow::Result<()> {
    let (t, _host, host_metrics, _) = lattice_with_metrics().await?;
    let trapper = deploy_guest(&t, "trapper", &trapping(), &[]).await?;
    let reply = get(&trapper, Duration::from_secs(20)).await?;
    assert_eq!(reply.status, 500, "{reply:?}");

    // Six requests at once to a workload that runs one at a time, each for a second (then
    // returns without a response: 500, an error).
    let crowded = deploy_guest(&t, "crowded", &bombs::sleepy(1000), &["concurrency: 1"]).await?;
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let addr = crowded.clone();
            tokio::spawn(async move { get(&addr, Duration::from_secs(20)).await })
        })
        .collect();
    let (mut ran, mut busy) = (0.0, 0.0);
    for request in requests {
        match request.await??.status {
            500 => ran += 1.0,
            503 => busy += 1.0,
            other => anyhow::bail!("the crowded guest answered {other}"),
        }
    }
    assert!(
        busy >= 1.0,
        "six requests at once to one slot: some are refused"
    );
    assert!(ran >= 1.0, "one of them runs");

    let tight = deploy_guest(&t, "tight", &greedy(32), &["memory: 1Mi"]).await?;
    assert_eq!(get(&tight, Duration::from_secs(20)).await?.status, 500);
    let spinner = deploy_guest(&t, "spinner", &looping(), &["timeout: 300ms"]).await?;
    assert_eq!(get(&spinner, Duration::from_secs(20)).await?.status, 500);

    let s = scrape(host_metrics).await?;
    let limit = |app: &'static str, limit: &'static str| [("workload", app), ("limit", limit)];
    assert_eq!(
        s.value(
            "lattice_host_limit_hits_total",
            &limit("tight/guest", "memory")
        )?,
        1.0
    );
    assert_eq!(
        s.value(
            "lattice_host_limit_hits_total",
            &limit("spinner/guest", "timeout")
        )?,
        1.0
    );
    assert_eq!(
        s.value(
            "lattice_host_limit_hits_total",
            &limit("spinner/guest", "memory")
        )?,
        0.0
    );
    let trapper = |k: &'static str, v: &'static str| [("workload", "trapper/guest"), (k, v)];
    assert_eq!(
        s.value(
            "lattice_host_http_requests_total",
            &trapper("outcome", "error")
        )?,
        1.0
    );
    assert_eq!(
        s.value("lattice_host_traps_total", &[("workload", "trapper/guest")])?,
        1.0
    );
    let crowded = |k: &'static str, v: &'static str| [("workload", "crowded/guest"), (k, v)];
    assert_eq!(
        s.value(
            "lattice_host_http_requests_total",
            &crowded("outcome", "busy")
        )?,
        busy
    );
    assert_eq!(
        s.value(
            "lattice_host_http_requests_total",
            &crowded("outcome", "error")
        )?,
        ran
    );
    assert_eq!(
        s.value(
            "lattice_host_limit_hits_total",
            &crowded("limit", "concurrency")
        )?,
        busy
    );
    assert_eq!(
        s.value(
            "lattice_host_limit_hits_total",
            &crowded("limit", "timeout")
        )?,
        0.0
    );
    Ok(())
}

/// The real `lattice-host` binary with `--metrics-addr 127.0.0.1:0` logs the address it bound,
/// and serves its metrics there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_binary_logs_its_metrics_address() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let state = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(lattice_bin().with_file_name("lattice-host"))
        .args(["--nats-url", &t.nats.url, "--lattice", t.lattice.as_str()])
        .args(["--name", "metered", "--heartbeat-secs", "1"])
        .args(["--trust-operator", t.operator.public_key().as_str()])
        .args(["--metrics-addr", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("serving metrics")
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("addr="))
            {
                return Ok(addr.parse::<std::net::SocketAddr>()?);
            }
        }
        anyhow::bail!("lattice-host ended without saying where it serves metrics")
    })
    .await??;
    assert_ne!(addr.port(), 0);
    // Its first heartbeat goes out right after the start.
    eventually(WAIT, "the host's heartbeat age in its scrape", || async {
        Ok(scrape(addr)
            .await?
            .get("lattice_host_heartbeat_age_seconds", &[])
            .is_some())
    })
    .await?;
    child.kill().await?;
    Ok(())
}

/// Calls queued across a cut leaf link are the edge host's backlog (entries, bytes, the oldest
/// one's age); once healed, each is forwarded by the edge host and delivered on the cloud host,
/// once.
#[tokio::test]
async fn a_queued_backlog_is_scraped_then_forwarded_and_delivered() -> anyhow::Result<()> {
    const N: usize = 5;
    captured();
    let e = EdgeTopology::start().await?;
    let cloud_endpoint = MetricsEndpoint::new("127.0.0.1:0".parse()?);
    let edge_endpoint = MetricsEndpoint::new("127.0.0.1:0".parse()?);
    let mut cloud = e.hub.host_config("cloud-1");
    cloud.labels.insert("role".into(), "cloud".into());
    cloud.metrics = Some(cloud_endpoint.clone());
    let _cloud = e.hub.start_host(cloud).await?;
    let _edge = start_edge_host_with(&e, |c| c.metrics = Some(edge_endpoint.clone())).await?;
    let addr = deploy(&e, 2, &QueuedLink::default()).await?;
    warm_up(&addr).await?;
    let cloud_metrics = tokio::time::timeout(WAIT, cloud_endpoint.bound()).await?;
    let edge_metrics = tokio::time::timeout(WAIT, edge_endpoint.bound()).await?;

    e.cut().await?;
    for i in 0..N {
        let answer = http_get(&addr, &format!("/notify?msg=cut-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
    }
    let link = [("link", "greeter/client->greeter")];
    let s = scrape(edge_metrics).await?;
    assert_eq!(
        s.value("lattice_host_queue_backlog_entries", &link)?,
        N as f64
    );
    assert_eq!(s.value("lattice_host_outbox_entries", &[])?, N as f64);
    assert!(s.value("lattice_host_outbox_bytes", &[])? > 0.0);
    assert!(s.value("lattice_host_queue_oldest_age_seconds", &link)? >= 0.0);
    assert_eq!(s.value("lattice_host_queue_forwarded_total", &link)?, 1.0);

    e.heal().await?;
    wait_delivered("cut", N).await?;
    // The warm-up call and the N queued across the cut, each once.
    let all = (N + 1) as f64;
    eventually(WAIT, "the backlog forwarded", || async {
        let s = scrape(edge_metrics).await?;
        Ok(s.value("lattice_host_queue_forwarded_total", &link)? == all
            && s.value("lattice_host_queue_backlog_entries", &link)? == 0.0)
    })
    .await?;
    let greeter = [("workload", "greeter/greeter")];
    eventually(WAIT, "every call counted delivered", || async {
        let s = scrape(cloud_metrics).await?;
        Ok(s.value("lattice_host_queue_delivered_total", &greeter)? == all)
    })
    .await?;
    let s = scrape(cloud_metrics).await?;
    assert_eq!(
        s.value("lattice_host_queue_dead_lettered_total", &greeter)?,
        0.0
    );
    Ok(())
}

#[test]
fn the_parser_refuses_what_is_not_an_exposition() {
    assert!(parse("lattice_up 1\n# EOF").is_ok());
    assert!(parse("lattice_up 1").is_err(), "no EOF");
    assert!(parse("lattice_up one\n# EOF").is_err(), "not a number");
    assert!(
        parse("lattice_up{a=\"b\" 1\n# EOF").is_err(),
        "unclosed labels"
    );
    assert!(parse("up 1\n# EOF").is_err(), "not lattice_*");
    let samples = parse("lattice_x_total{a=\"1\",b=\"two\"} 3\n# EOF").expect("parses");
    assert_eq!(samples[0].labels.get("b").map(String::as_str), Some("two"));
    assert_eq!(samples[0].value, 3.0);
}
