//! WASI 0.3 HTTP components (`examples/hello-p3`, `wasi:http/handler@0.3.0`) on a real host:
//! instances reused across requests up to the manifest's `limits.instance.requests`, several
//! requests at once in one instance, a fresh instance after a trap, a timeout or the idle
//! time; a capability (`wasi:keyvalue`) called by requests running at once. (WASI 0.2
//! components keep a fresh instance per request: the other suites.)

use std::time::Duration;

use lattice_control::metrics::MetricsEndpoint;
use lattice_protocol::digest::Digest;
use lattice_tests::{TestHost, TestLattice, endpoint, http_get};

/// Host `edge-1` with WASI 0.3 on (`lattice-host --wasi-p3`), serving HTTP on one thread:
/// each HTTP thread has instances of its own, and one thread makes which instance serves a
/// request something the test can expect.
async fn wasi_p3_host(t: &TestLattice) -> anyhow::Result<TestHost> {
    let mut config = t.host_config("edge-1");
    config.engine.wasi_p3 = true;
    config.http.worker_threads = 1;
    t.add_host_with(config).await
}

/// A `wasi:keyvalue` link from hello-p3 to `builtin:keyvalue-nats` (bucket `<app>-counts`), as
/// `manifest`'s `more` (the `kv` capability included).
fn kv_link(app: &str) -> String {
    format!(
        r#"        - type: link
          properties:
            namespace: wasi
            package: keyvalue
            interfaces: [store, atomics]
            target:
              name: kv
              config:
                - name: bucket
                  properties:
                    bucket: {app}-counts
    - name: kv
      type: capability
      properties:
        image: builtin:keyvalue-nats"#
    )
}

/// hello-p3 behind the HTTP server, with `limits` (YAML, indented for `properties`) and `more`
/// after its traits (more traits, more components).
fn manifest(app: &str, image: &Digest, limits: &str, more: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {app}
spec:
  components:
    - name: hello
      type: component
      properties:
        image: {image}
        config:
          - name: greeting
            properties:
              GREETING: "Hej"
{limits}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
{more}
    - name: httpserver
      type: capability
      properties:
        image: builtin:http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [handler]
            target:
              name: hello
            source:
              config:
                - name: default-http
                  properties:
                    address: 127.0.0.1:0
"#
    )
}

/// What `/instance` and `/wait` answer: the instance's id and the number after it.
fn instance(body: &str) -> anyhow::Result<(String, u64)> {
    let mut words = body.split_whitespace();
    let id = words
        .next()
        .and_then(|w| w.strip_prefix("instance="))
        .ok_or_else(|| anyhow::anyhow!("no instance id in {body:?}"))?;
    let n = words
        .next()
        .and_then(|w| w.split_once('=').map(|(_, n)| n))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no count in {body:?}"))?;
    Ok((id.to_string(), n))
}

/// GET `path`, which must answer 200; its instance and count.
async fn get(addr: &str, path: &str) -> anyhow::Result<(String, u64)> {
    let (code, body) = http_get(addr, path).await?;
    anyhow::ensure!(code == 200, "GET {path}: {code} {body}");
    instance(&body)
}

#[tokio::test]
async fn instances_serve_many_requests_and_several_at_once() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = wasi_p3_host(&t).await?;
    let image = t
        .push_example(env!("LATTICE_HELLO_P3_WASM"), "hello-p3")
        .await?;
    let limits = "        limits:\n          instance:\n            concurrency: 8\n            requests: 5\n            idle: 1m";
    t.ctl
        .deploy(&manifest("reused", &image, limits, &kv_link("reused")))
        .await?;
    let addr = endpoint(&t.wait_deployed("reused").await?)?;

    // Its config reaches it, as a WASI 0.2 component's does.
    assert_eq!(
        http_get(&addr, "/").await?,
        (200, "Hej from Lattice (host edge-1)\n".to_string())
    );
    // One after another: one instance serves until it has served `requests` (5, the request
    // above included), then a fresh one takes over.
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(get(&addr, "/instance").await?);
    }
    let first = &seen[0].0;
    assert_eq!(
        seen[..4].iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [2, 3, 4, 5],
        "{seen:?}"
    );
    assert!(seen[..4].iter().all(|(id, _)| id == first), "{seen:?}");
    assert_ne!(
        &seen[4].0, first,
        "a fresh instance after 5 requests: {seen:?}"
    );
    assert_eq!((seen[4].1, seen[5].1), (1, 2), "{seen:?}");

    // At once: a request waits in the instance, and the next one runs beside it.
    let long = tokio::spawn({
        let addr = addr.clone();
        async move { get(&addr, "/wait?ms=1500").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let beside = get(&addr, "/wait?ms=10").await?;
    let long = long.await??;
    assert_eq!(beside.0, long.0, "the same instance served both");
    assert!(beside.1 >= 2 && long.1 >= 2, "{beside:?} {long:?}");

    // Capabilities answer async guests: requests at once, each counting in the linked bucket.
    let counts = futures::future::try_join_all((0..12).map(|_| {
        let addr = addr.clone();
        async move { http_get(&addr, "/count/apples").await }
    }))
    .await?;
    let mut seen: Vec<u64> = counts
        .iter()
        .map(|(code, body)| {
            anyhow::ensure!(*code == 200, "{code} {body}");
            body.trim()
                .strip_prefix("apples: ")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("{body:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    seen.sort_unstable();
    assert_eq!(seen, (1..=12).collect::<Vec<_>>(), "each counted once");
    Ok(())
}

#[tokio::test]
async fn a_trap_a_timeout_or_idleness_ends_an_instance_and_the_next_request_gets_a_fresh_one()
-> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = wasi_p3_host(&t).await?;
    let image = t
        .push_example(env!("LATTICE_HELLO_P3_WASM"), "hello-p3")
        .await?;
    let limits =
        "        limits:\n          timeout: 500ms\n          instance:\n            idle: 700ms";
    t.ctl.deploy(&manifest("fresh", &image, limits, "")).await?;
    let addr = endpoint(&t.wait_deployed("fresh").await?)?;

    let (before, _) = get(&addr, "/instance").await?;
    let (code, body) = http_get(&addr, "/trap").await?;
    assert_eq!((code, body.as_str()), (500, "component failed\n"));
    let (after_trap, served) = get(&addr, "/instance").await?;
    assert_ne!(after_trap, before, "the trapped instance is gone");
    assert_eq!(served, 1);

    // Past the time limit: the request is answered, and its instance ended.
    let (code, body) = http_get(&addr, "/wait?ms=5000").await?;
    assert_eq!((code, body.as_str()), (500, "component timed out\n"));
    let (after_timeout, served) = get(&addr, "/instance").await?;
    assert_ne!(after_timeout, after_trap, "the timed-out instance is gone");
    assert_eq!(served, 1);

    // Kept while busy, dropped once idle past its idle time.
    let (same, served) = get(&addr, "/instance").await?;
    assert_eq!((same.as_str(), served), (after_timeout.as_str(), 2));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (after_idle, served) = get(&addr, "/instance").await?;
    assert_ne!(after_idle, after_timeout, "the idle instance was dropped");
    assert_eq!(served, 1);
    Ok(())
}

/// The host's `lattice_host_instances_kept` for `workload`, from its metrics at `metrics`.
async fn kept(metrics: std::net::SocketAddr, workload: &str) -> anyhow::Result<u64> {
    let (code, body) = http_get(&metrics.to_string(), "/metrics").await?;
    anyhow::ensure!(code == 200, "the scrape answered {code}: {body}");
    let series = format!("lattice_host_instances_kept{{workload=\"{workload}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .ok_or_else(|| anyhow::anyhow!("no {series} in {body}"))?
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{series}: {e}"))
}

#[tokio::test]
async fn a_new_version_ends_the_old_versions_idle_instances_at_once() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let mut config = t.host_config("edge-1");
    config.engine.wasi_p3 = true;
    config.http.worker_threads = 1;
    let metrics = MetricsEndpoint::new("127.0.0.1:0".parse()?);
    config.metrics = Some(metrics.clone());
    let _host = t.add_host_with(config).await?;
    let metrics = tokio::time::timeout(Duration::from_secs(30), metrics.bound()).await?;
    let image = t
        .push_example(env!("LATTICE_HELLO_P3_WASM"), "hello-p3")
        .await?;
    // Idle instances are kept ten minutes: only the new version can end the old one's.
    let limits = "        limits:\n          instance:\n            idle: 10m";
    let v1 = manifest("swap", &image, limits, "");
    t.ctl.deploy(&v1).await?;
    let addr = endpoint(&t.wait_deployed("swap").await?)?;
    get(&addr, "/instance").await?;
    assert_eq!(kept(metrics, "swap/hello").await?, 1);

    t.ctl.deploy(&v1.replace("Hej", "Hallo")).await?;
    // The new version listens on a port of its own (the manifest asks for any).
    let addr = t
        .wait_until("the new version to answer", || async {
            let addr = endpoint(&t.wait_deployed("swap").await?)?;
            let (_, body) = http_get(&addr, "/").await?;
            Ok(body.starts_with("Hallo").then_some(addr))
        })
        .await?;
    // The new version's instance is kept; the old one's, idle, has ended.
    t.wait_for("the old version's instance to end", || async {
        Ok(kept(metrics, "swap/hello").await? == 1)
    })
    .await?;
    let (_, served) = get(&addr, "/instance").await?;
    assert_eq!(served, 2, "the new version's instance serves on");
    Ok(())
}

#[tokio::test]
async fn a_host_without_wasi_0_3_refuses_the_component_saying_what_to_do() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_HELLO_P3_WASM"), "hello-p3")
        .await?;
    t.ctl.deploy(&manifest("plain", &image, "", "")).await?;
    let failure = t
        .wait_until("the workload to fail", || async {
            let status = t.ctl.status(&"plain".parse()?).await?;
            Ok(status
                .components
                .iter()
                .find(|c| !c.message.is_empty() && c.reason.is_some())
                .map(|c| c.message.clone()))
        })
        .await?;
    assert!(failure.contains("--wasi-p3"), "{failure}");
    Ok(())
}
