//! Hosts coming and going: a lost host's movable work moves and is trimmed when it returns, a
//! stopping host hands its work over at once, and pinned work stays on a silent gateway.

use std::time::Duration;

use lattice_protocol::messages::{AppState, AppStatus, FailureReason, HostState, WorkloadState};
use lattice_tests::{TestLattice, hello_wasm};

/// A one-instance HTTP app whose single spread entry requires `role` and may be pinned.
fn manifest(image: &str, role: &str, pinned: bool, tolerance: Option<&str>) -> String {
    let tolerance = tolerance.map_or(String::new(), |t| format!("\n            tolerance: {t}"));
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: app
spec:
  components:
    - name: hello
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1{tolerance}
            spread:
              - name: {role}s
                pinned: {pinned}
                requirements:
                  role: {role}
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
            target: hello
            source_config:
              - name: http
                properties:
                  address: 127.0.0.1:0
"#
    )
}

/// Host names that run the app's component now, per the control plane.
fn running_on(status: &AppStatus, names: &[(String, String)]) -> Vec<String> {
    status
        .components
        .iter()
        .filter(|c| c.state == WorkloadState::Running)
        .filter_map(|c| c.host.as_ref())
        .filter_map(|h| names.iter().find(|(id, _)| id == h.as_str()))
        .map(|(_, name)| name.clone())
        .collect()
}

async fn host_names(t: &TestLattice) -> anyhow::Result<Vec<(String, String)>> {
    Ok(t.ctl
        .hosts()
        .await?
        .into_iter()
        .map(|h| (h.id.to_string(), h.name))
        .collect())
}

async fn labelled_host(
    t: &TestLattice,
    name: &str,
    role: &str,
) -> anyhow::Result<lattice_tests::TestHost> {
    let mut config = t.host_config(name);
    config.labels.insert("role".into(), role.into());
    let host = t.start_host(config).await?;
    t.wait_for(&format!("{name} to report"), || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == name))
    })
    .await?;
    Ok(host)
}

/// Deploys and returns the name of the host the instance landed on.
async fn deploy_and_find(t: &TestLattice, yaml: &str) -> anyhow::Result<String> {
    t.ctl.deploy(yaml).await?;
    let status = t.wait_deployed("app").await?;
    let on = running_on(&status, &host_names(t).await?);
    anyhow::ensure!(on.len() == 1, "one placement expected: {status:?}");
    Ok(on[0].clone())
}

/// Two worker hosts `a` and `b`, and a one-instance app placed on one of them.
struct TwoWorkers {
    /// The host running the instance, and its name.
    holder: lattice_tests::TestHost,
    holder_name: String,
    /// The other host's name (its host keeps running while this lives).
    other: String,
    _other_host: lattice_tests::TestHost,
}

async fn two_workers_one_instance(t: &TestLattice) -> anyhow::Result<TwoWorkers> {
    let mut hosts = vec![
        ("a", labelled_host(t, "a", "worker").await?),
        ("b", labelled_host(t, "b", "worker").await?),
    ];
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let first = deploy_and_find(t, &manifest(&image.to_string(), "worker", false, None)).await?;
    let index = hosts
        .iter()
        .position(|(n, _)| *n == first)
        .expect("a known host");
    let (_, holder) = hosts.remove(index);
    let (other, other_host) = hosts.remove(0);
    Ok(TwoWorkers {
        holder,
        holder_name: first,
        other: other.to_string(),
        _other_host: other_host,
    })
}

/// Waits until the app's one instance runs on `host` only.
async fn wait_running_only_on(t: &TestLattice, host: &str) -> anyhow::Result<()> {
    let names = host_names(t).await?;
    t.wait_for(&format!("the instance to run on {host} only"), || async {
        Ok(running_on(&t.ctl.status(&"app".parse()?).await?, &names) == vec![host.to_string()])
    })
    .await
}

#[tokio::test]
async fn a_lost_hosts_work_moves_and_is_trimmed_when_it_returns() -> anyhow::Result<()> {
    let t = TestLattice::start_with(|c| c.host_tolerance = Duration::from_secs(2)).await?;
    let w = two_workers_one_instance(&t).await?;
    let (first, other) = (w.holder_name.clone(), w.other.clone());
    let state_dir = w.holder.state_dir.clone();
    w.holder.kill().await;
    wait_running_only_on(&t, &other).await?;
    let names = host_names(&t).await?;

    // The lost host comes back with its saved assignment, which still runs the instance: the
    // newer assignment it finds trims that surplus.
    let mut config = t.host_config(&first);
    config.labels.insert("role".into(), "worker".into());
    config.state_dir = state_dir;
    let _back = t.start_host(config).await?;
    t.wait_for("the returning host to run nothing", || async {
        let hosts = t.ctl.hosts().await?;
        Ok(hosts
            .iter()
            .any(|h| h.name == first && h.state == HostState::Ready && h.workloads == 0))
    })
    .await?;
    let status = t.ctl.status(&"app".parse()?).await?;
    assert_eq!(running_on(&status, &names), vec![other]);
    Ok(())
}

#[tokio::test]
async fn a_stopping_host_hands_its_work_over_at_once() -> anyhow::Result<()> {
    // A tolerance of an hour: only the host's own "stopping" can move the work in this test.
    let t = TestLattice::start_with(|c| c.host_tolerance = Duration::from_secs(3600)).await?;
    let w = two_workers_one_instance(&t).await?;
    let first = w.holder_name.clone();
    w.holder.stop().await?;
    wait_running_only_on(&t, &w.other).await?;
    let stopped = t.ctl.hosts().await?.into_iter().find(|h| h.name == first);
    assert_eq!(stopped.map(|h| h.state), Some(HostState::Stopped));
    Ok(())
}

#[tokio::test]
async fn pinned_work_stays_on_a_silent_gateway() -> anyhow::Result<()> {
    let t = TestLattice::start_with(|c| c.host_tolerance = Duration::from_secs(1)).await?;
    let gateway = labelled_host(&t, "gateway", "gateway").await?;
    let _cloud = labelled_host(&t, "cloud", "cloud").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let on = deploy_and_find(
        &t,
        &manifest(&image.to_string(), "gateway", true, Some("1s")),
    )
    .await?;
    assert_eq!(on, "gateway");
    let names = host_names(&t).await?;
    let gateway_id = names
        .iter()
        .find(|(_, n)| n == "gateway")
        .map(|(id, _)| id.clone());
    gateway.kill().await;
    t.wait_for("the gateway to be seen as lost", || async {
        Ok(t.ctl
            .hosts()
            .await?
            .iter()
            .any(|h| h.name == "gateway" && h.state == HostState::Lost))
    })
    .await?;
    // Well past the tolerance, the work is still assigned to the gateway and nowhere else.
    let status = t.ctl.status(&"app".parse()?).await?;
    let placed: Vec<_> = status
        .components
        .iter()
        .filter_map(|c| c.host.as_ref().map(ToString::to_string))
        .collect();
    assert_eq!(
        placed,
        vec![gateway_id.expect("gateway known")],
        "{status:?}"
    );
    assert!(
        status.components[0]
            .message
            .contains("host disconnected for"),
        "{status:?}"
    );
    Ok(())
}

#[tokio::test]
async fn ctl_stop_host_drains_it_and_its_work_moves() -> anyhow::Result<()> {
    let t = TestLattice::start_with(|c| c.host_tolerance = Duration::from_secs(3600)).await?;
    let w = two_workers_one_instance(&t).await?;
    t.ctl.stop_host(&w.holder_name).await?;
    w.holder.finished().await?;
    wait_running_only_on(&t, &w.other).await?;
    Ok(())
}

#[tokio::test]
async fn labels_set_by_the_operator_steer_placement() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _a = labelled_host(&t, "a", "worker").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    // Nothing has role=gpu yet; the app says to wait rather than fail.
    let yaml = manifest(&image.to_string(), "gpu", false, None).replace(
        "  name: app\n",
        "  name: app\n  annotations:\n    lattice.wait-for-hosts: \"true\"\n",
    );
    t.ctl.deploy(&yaml).await?;
    let waiting = t
        .wait_status("app", "the app to wait", |s| s.status == AppState::Waiting)
        .await?;
    assert!(waiting.message.contains("role=gpu"), "{}", waiting.message);
    let reasons: Vec<_> = waiting.components.iter().map(|c| c.reason).collect();
    assert_eq!(reasons, [Some(FailureReason::Unplaced)], "{waiting:?}");

    let labels = t
        .ctl
        .label(
            "a",
            [("role".to_string(), "gpu".to_string())].into(),
            Vec::new(),
        )
        .await?;
    assert_eq!(labels.get("role").map(String::as_str), Some("gpu"));
    t.wait_deployed("app").await?;
    let hosts = t.ctl.hosts().await?;
    assert_eq!(hosts[0].labels.get("role").map(String::as_str), Some("gpu"));
    Ok(())
}

#[tokio::test]
async fn scaling_deploys_a_new_version_with_the_new_count() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _a = labelled_host(&t, "a", "worker").await?;
    let _b = labelled_host(&t, "b", "worker").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    deploy_and_find(&t, &manifest(&image.to_string(), "worker", false, None)).await?;
    let reply = t.ctl.scale(&"app".parse()?, &"hello".parse()?, 2).await?;
    assert!(reply.version.ends_with("+hello=2"), "{}", reply.version);
    let status = t
        .wait_status("app", "two instances running", |s| {
            s.status == AppState::Deployed
                && s.components.iter().map(|c| c.instances).sum::<u32>() == 2
        })
        .await?;
    assert_eq!(status.version, reply.version);
    let history = t.ctl.history(&"app".parse()?).await?;
    assert_eq!(history.len(), 2, "scaling added a version: {history:?}");
    assert_eq!(
        t.ctl
            .scale(&"app".parse()?, &"hello".parse()?, 0)
            .await
            .unwrap_err()
            .code,
        lattice_protocol::error::ErrorCode::InvalidInput
    );
    Ok(())
}
