//! The edge topology: a hub NATS (JetStream, control plane) and a leaf NATS joined through a
//! proxy the test cuts; edge hosts on the leaf.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use lattice_protocol::messages::{AppState, HostState};
use lattice_tests::edge::{EdgeTopology, HUB_DOMAIN};
use lattice_tests::free_port;
use lattice_tests::{WAIT, endpoint, hello_manifest, hello_wasm, http_get, kv_counter_manifest};

#[tokio::test]
async fn the_hubs_jetstream_is_reachable_from_the_leaf() -> anyhow::Result<()> {
    let e = EdgeTopology::start().await?;
    let hub_js = jetstream::new(e.hub.client.clone());
    let kv = lattice_protocol::jetstream::ensure_kv(&hub_js, "probe", 1, "probe").await?;
    kv.put("k", "v".into()).await?;
    // With the domain.
    let with_domain = jetstream::with_domain(e.leaf_client.clone(), HUB_DOMAIN);
    let kv = with_domain.get_key_value("probe").await?;
    assert_eq!(kv.get("k").await?.as_deref(), Some(&b"v"[..]));
    kv.put("k2", "v2".into()).await?;
    // Through the leaf's default_js_domain mapping.
    let default = jetstream::new(e.leaf_client.clone());
    let kv = default.get_key_value("probe").await?;
    assert_eq!(kv.get("k2").await?.as_deref(), Some(&b"v2"[..]));
    Ok(())
}

/// The hello app, pinned to `zone=edge` hosts, served on `addr`, saying `greeting`.
fn pinned_hello(image: &str, version: &str, greeting: &str, addr: &str) -> String {
    hello_manifest("hello", version, image, greeting, addr).replace(
        "            instances: 1\n",
        "            instances: 1\n            spread:\n              - name: edge\n                pinned: true\n                requirements:\n                  zone: edge\n",
    )
}

/// Deploys the pinned hello app (v1, "Online") on a fixed port and waits until it serves.
async fn deploy_pinned_hello(e: &EdgeTopology) -> anyhow::Result<(String, String)> {
    let image = e
        .hub
        .push(&e.hub.sign(&hello_wasm(), "hello", "0.1.0"))
        .await?
        .to_string();
    let addr = format!("127.0.0.1:{}", free_port()?);
    e.hub
        .ctl
        .deploy(&pinned_hello(&image, "v1", "Online", &addr))
        .await?;
    let status = e
        .hub
        .wait_status("hello", "hello to be deployed and serving", |s| {
            s.status == AppState::Deployed && endpoint(s).is_ok()
        })
        .await?;
    assert_eq!(endpoint(&status)?, addr);
    assert_eq!(
        http_get(&addr, "/").await?,
        (200, "Online from Lattice (host edge-1)\n".to_string())
    );
    Ok((image, addr))
}

async fn host_state(e: &EdgeTopology, name: &str) -> anyhow::Result<Option<HostState>> {
    Ok(e.hub
        .ctl
        .hosts()
        .await?
        .into_iter()
        .find(|h| h.name == name)
        .map(|h| h.state))
}

/// Polls `addr` every 5 ms until it answers 200 (for at most [`WAIT`]); returns how long that
/// took from `since`.
async fn first_200(addr: &str, since: Instant) -> anyhow::Result<Duration> {
    while since.elapsed() < WAIT {
        let answer = tokio::time::timeout(Duration::from_millis(500), http_get(addr, "/")).await;
        if let Ok(Ok((200, _))) = answer {
            return Ok(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("{addr} did not answer 200 within {WAIT:?}")
}

const EDGE: &[(&str, &str)] = &[("zone", "edge")];

#[tokio::test]
async fn an_edge_host_serves_through_a_cut_and_reconciles_after_heal() -> anyhow::Result<()> {
    let e = EdgeTopology::start_with(|c| c.host_tolerance = Duration::from_secs(2)).await?;
    let _host = e.add_edge_host("edge-1", EDGE).await?;
    let (image, addr) = deploy_pinned_hello(&e).await?;

    // The link goes: the edge host keeps serving from its leaf.
    e.cut().await?;
    e.hub
        .wait_for("the control plane to call the edge host lost", || async {
            Ok(host_state(&e, "edge-1").await? == Some(HostState::Lost))
        })
        .await?;
    assert_eq!(
        http_get(&addr, "/").await?,
        (200, "Online from Lattice (host edge-1)\n".to_string())
    );
    // Pinned work stays with its silent host; the app is not failed.
    let status = e.hub.ctl.status(&"hello".parse()?).await?;
    assert_ne!(status.status, AppState::Failed, "{status:?}");
    let edge_id = e
        .hub
        .ctl
        .hosts()
        .await?
        .into_iter()
        .find(|h| h.name == "edge-1")
        .map(|h| h.id)
        .expect("listed");
    assert!(
        status
            .components
            .iter()
            .any(|c| c.name.as_str() == "hello" && c.host.as_ref() == Some(&edge_id)),
        "{status:?}"
    );

    // A new version deployed while cut cannot arrive yet.
    e.hub
        .ctl
        .deploy(&pinned_hello(&image, "v2", "Healed", &addr))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        http_get(&addr, "/").await?,
        (200, "Online from Lattice (host edge-1)\n".to_string())
    );
    let status = e.hub.ctl.status(&"hello".parse()?).await?;
    assert_ne!(status.status, AppState::Failed, "{status:?}");

    // Heal: the host rejoins and converges on v2.
    let healed = Instant::now();
    e.heal().await?;
    e.hub
        .wait_status("hello", "v2 deployed after the heal", |s| {
            s.version == "v2" && s.status == AppState::Deployed
        })
        .await?;
    e.hub
        .wait_for("v2 to serve", || async {
            Ok(http_get(&addr, "/").await?.1 == "Healed from Lattice (host edge-1)\n")
        })
        .await?;
    assert_eq!(host_state(&e, "edge-1").await?, Some(HostState::Ready));
    println!("heal to v2 serving: {:?}", healed.elapsed());
    Ok(())
}

#[tokio::test]
async fn an_edge_host_restarted_while_cut_serves_from_disk() -> anyhow::Result<()> {
    let e = EdgeTopology::start_with(|c| c.host_tolerance = Duration::from_secs(2)).await?;
    let host = e.add_edge_host("edge-1", EDGE).await?;
    let (_, addr) = deploy_pinned_hello(&e).await?;
    let state_dir = host.state_dir.clone();

    e.cut().await?;
    host.stop().await?;
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "the stopped host closed its port"
    );
    let mut config = e.edge_host_config("edge-1");
    config.state_dir = state_dir;
    config.labels = [("zone".to_string(), "edge".to_string())].into();
    let started = Instant::now();
    let host = e.start_edge_host(config).await?;
    let took = first_200(&addr, started).await?;
    println!("in-process edge host restarted while cut: first 200 after {took:?}");
    assert_eq!(
        http_get(&addr, "/").await?.1,
        "Online from Lattice (host edge-1)\n"
    );

    // Heal: it reports again and the app is deployed on it.
    e.heal().await?;
    e.hub
        .wait_for("the edge host to be ready again", || async {
            Ok(host_state(&e, "edge-1").await? == Some(HostState::Ready))
        })
        .await?;
    e.hub.wait_deployed("hello").await?;
    host.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_sigkilled_edge_host_process_restarts_while_cut_and_serves() -> anyhow::Result<()> {
    let e = EdgeTopology::start_with(|c| c.host_tolerance = Duration::from_secs(2)).await?;
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("edge-1");
    let first = e.start_host_process("edge-1", EDGE, &state_dir)?;
    e.hub
        .wait_for("the edge host process to report", || async {
            Ok(host_state(&e, "edge-1").await? == Some(HostState::Ready))
        })
        .await?;
    let (_, addr) = deploy_pinned_hello(&e).await?;

    e.cut().await?;
    drop(first); // SIGKILL
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "the killed host's port is closed"
    );
    let started = Instant::now();
    let _second = e.start_host_process("edge-1", EDGE, &state_dir)?;
    let took = first_200(&addr, started).await?;
    println!("lattice-host process restarted while cut: first 200 after {took:?}");
    assert_eq!(
        http_get(&addr, "/").await?.1,
        "Online from Lattice (host edge-1)\n"
    );

    e.heal().await?;
    e.hub
        .wait_for("the restarted process to be ready", || async {
            Ok(host_state(&e, "edge-1").await? == Some(HostState::Ready))
        })
        .await?;
    e.hub.wait_deployed("hello").await?;
    Ok(())
}

/// greeter-client (HTTP on `addr`) linked to greeter, both pinned to `zone=edge` hosts.
fn pinned_greeter(client: &str, greeter: &str, addr: &str) -> String {
    let pinned = |name: &str, image: &str| {
        format!(
            r#"
    - name: {name}
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
            spread:
              - name: edge
                pinned: true
                requirements:
                  zone: edge"#
        )
    };
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: greeter
  annotations:
    version: v1
spec:
  rollout:
    healthy_for: 0s
  components:{}{}
        - type: link
          properties:
            namespace: example
            package: greeter
            interfaces: [greet]
            target:
              name: greeter
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
                    address: {addr}
"#,
        pinned("greeter", greeter),
        pinned("client", client),
    )
}

#[tokio::test]
async fn local_calls_between_edge_components_work_while_cut() -> anyhow::Result<()> {
    let e = EdgeTopology::start_with(|c| c.host_tolerance = Duration::from_secs(2)).await?;
    let host = e.add_edge_host("edge-1", EDGE).await?;
    let push = |path: &'static str, name: &'static str| {
        let e = &e;
        async move {
            let bytes = std::fs::read(path)?;
            anyhow::Ok(
                e.hub
                    .push(&e.hub.sign(&bytes, name, "0.1.0"))
                    .await?
                    .to_string(),
            )
        }
    };
    let greeter = push(env!("LATTICE_GREETER_WASM"), "greeter").await?;
    let client = push(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client").await?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    e.hub
        .ctl
        .deploy(&pinned_greeter(&client, &greeter, &addr))
        .await?;
    e.hub.wait_deployed("greeter").await?;
    let hello_bob = (200, "Hello, Bob!".to_string());
    e.hub
        .wait_for("the client to serve", || async {
            Ok(http_get(&addr, "/greet?name=Bob").await? == hello_bob)
        })
        .await?;

    // Cut: the call from client to greeter stays on the host.
    e.cut().await?;
    assert_eq!(http_get(&addr, "/greet?name=Bob").await?, hello_bob);

    // Restarted while cut: both components come back from disk and call each other.
    let state_dir = host.state_dir.clone();
    host.stop().await?;
    let mut config = e.edge_host_config("edge-1");
    config.state_dir = state_dir;
    config.labels = [("zone".to_string(), "edge".to_string())].into();
    let started = Instant::now();
    let host = e.start_edge_host(config).await?;
    e.hub
        .wait_for("the restarted client to call greeter", || async {
            Ok(http_get(&addr, "/greet?name=Bob").await.ok() == Some(hello_bob.clone()))
        })
        .await?;
    println!(
        "greeter-client → greeter answered after a restart while cut: {:?}",
        started.elapsed()
    );
    e.heal().await?;
    e.hub.wait_deployed("greeter").await?;
    host.stop().await?;
    Ok(())
}

/// kv-counter on an edge host, counting through the `keyvalue-nats` provider *process*, on a leaf
/// that does not map the default JetStream prefix to the hub: the process reaches the hub's
/// JetStream only in the domain its host gives it.
#[tokio::test]
async fn an_edge_hosts_provider_process_uses_the_hosts_jetstream_domain() -> anyhow::Result<()> {
    let e = EdgeTopology::start_without_default_domain().await?;
    let _host = e.add_edge_host("edge-1", EDGE).await?;
    let image = e
        .hub
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    let manifest = kv_counter_manifest("counter", &image, "provider:keyvalue-nats", "edge-counts");
    e.hub.ctl.deploy(&manifest).await?;
    let addr = endpoint(&e.hub.wait_deployed("counter").await?)?;
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 1\n".into()));
    assert_eq!(http_get(&addr, "/").await?, (200, "Hello hits: 2\n".into()));
    // The count is in the hub's JetStream.
    let kv = jetstream::new(e.hub.client.clone())
        .get_key_value("edge-counts")
        .await?;
    assert_eq!(kv.get("hits").await?.as_deref(), Some(&b"2"[..]));
    Ok(())
}
