//! Rollouts: a new version goes host by host behind a health gate, and a version that fails
//! is rolled back automatically while the old one keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use lattice_protocol::messages::{AppState, WorkloadState};
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};

/// Deploys a good v1, then `bad` as v2, polling HTTP all along: v2 is rolled back with a
/// message containing `why`, and the poller only ever sees v1 answer.
async fn rolled_back_while_the_old_one_serves(
    make_bad: impl FnOnce(&TestLattice) -> Vec<u8>,
    why: &str,
) -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("h").await?;
    let good = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v1",
            &good.to_string(),
            "Old",
            "127.0.0.1:0",
        ))
        .await?;
    let addr = endpoint(&t.wait_deployed("hello").await?)?;

    // A client polls all along; it must only ever see the old version answer.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let poller = tokio::spawn({
        let (stop, ok, bad, addr) = (stop.clone(), ok.clone(), bad.clone(), addr.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                match http_get(&addr, "/").await {
                    Ok((200, body)) if body == "Old from Lattice (host h)\n" => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    });

    // The host refuses v2 or cannot start it; the control plane rolls back to v1.
    let image = t.push(&make_bad(&t)).await?;
    let v2 = hello_manifest("hello", "v2", &image.to_string(), "New", &addr);
    t.ctl.deploy(&v2).await?;
    let status = t
        .wait_status("hello", "the rollback", |s| {
            s.status == AppState::Failed && s.message.contains("rolled back")
        })
        .await?;
    assert!(
        status
            .message
            .contains("version v2 failed and was rolled back to v1"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("hello on host"),
        "{}",
        status.message
    );
    assert!(status.message.contains(why), "{}", status.message);
    assert_eq!(status.version, "v1");
    t.wait_for("v1 to be reported running again", || async {
        let s = t.ctl.status(&"hello".parse()?).await?;
        Ok(s.components
            .iter()
            .all(|c| c.state == WorkloadState::Running))
    })
    .await?;

    stop.store(true, Ordering::Relaxed);
    poller.await?;
    assert!(ok.load(Ordering::Relaxed) > 0, "the poller got answers");
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "no error and no other answer during the rollout"
    );
    Ok(())
}

#[tokio::test]
async fn an_unsigned_version_is_rolled_back_while_the_old_one_serves() -> anyhow::Result<()> {
    rolled_back_while_the_old_one_serves(|_| hello_wasm(), "unsigned component").await
}

#[tokio::test]
async fn a_version_that_traps_at_start_is_rolled_back_while_the_old_one_serves()
-> anyhow::Result<()> {
    rolled_back_while_the_old_one_serves(
        |t| t.sign(&lattice_test_guests::trapping_at_start(), "trap", "0.1.0"),
        "traps at start",
    )
    .await
}

#[tokio::test]
async fn a_rollout_goes_one_host_at_a_time() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _a = t.add_host("a").await?;
    let _b = t.add_host("b").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = |version: &str| {
        hello_manifest("hello", version, &image.to_string(), version, "127.0.0.1:0")
            .replace("healthy_for: 0s", "batch: 1\n    healthy_for: 2s")
            .replace("instances: 1", "instances: 2")
    };
    t.ctl.deploy(&manifest("v1")).await?;
    t.wait_deployed("hello").await?;
    t.ctl.deploy(&manifest("v2")).await?;

    // For a while (the health period), one host runs v2 and the other still v1.
    t.wait_for("one host on v2 and the other on v1", || async {
        let mut versions = Vec::new();
        for host in ["a", "b"] {
            let inventory = t.ctl.inventory(host).await?;
            versions.extend(
                inventory
                    .workloads
                    .iter()
                    .filter(|w| w.state == WorkloadState::Running)
                    .map(|w| w.app_version.clone()),
            );
        }
        versions.sort();
        Ok(versions == ["v1", "v2"])
    })
    .await?;
    let status = t.ctl.status(&"hello".parse()?).await?;
    assert_eq!(status.status, AppState::Reconciling);
    assert!(
        status.message.contains("rolling out v2"),
        "{}",
        status.message
    );

    let status = t
        .wait_status("hello", "v2 everywhere", |s| {
            s.version == "v2" && s.status == AppState::Deployed
        })
        .await?;
    assert_eq!(status.components.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_version_whose_requests_keep_failing_is_rolled_back() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("h").await?;
    let good = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = |version: &str, image: &str, addr: &str, healthy: &str| {
        hello_manifest("hello", version, image, "Old", addr)
            .replace("healthy_for: 0s", &format!("healthy_for: {healthy}"))
    };
    // v1 takes any port; v1b pins that port, so that every later version serves on it.
    t.ctl
        .deploy(&manifest("v1", &good.to_string(), "127.0.0.1:0", "0s"))
        .await?;
    let addr = endpoint(&t.wait_deployed("hello").await?)?;
    t.ctl
        .deploy(&manifest("v1b", &good.to_string(), &addr, "0s"))
        .await?;
    t.wait_status("hello", "v1b deployed", |s| {
        s.version == "v1b" && s.status == AppState::Deployed
    })
    .await?;

    // v2 starts fine but traps on every request. Requests are what reveal it: send them.
    let trapping = t
        .push(&t.sign(&lattice_test_guests::trapping(), "trap", "0.1.0"))
        .await?;
    // A long health period: only v2's failures can end its rollout early.
    t.ctl
        .deploy(&manifest("v2", &trapping.to_string(), &addr, "60s"))
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let client = tokio::spawn({
        let (stop, addr) = (stop.clone(), addr.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = http_get(&addr, "/").await;
            }
        }
    });
    let status = t
        .wait_status("hello", "the rollback", |s| {
            s.status == AppState::Failed && s.message.contains("rolled back")
        })
        .await?;
    stop.store(true, Ordering::Relaxed);
    client.await?;
    assert!(
        status.message.contains("requests failed"),
        "{}",
        status.message
    );
    assert_eq!(status.version, "v1b");
    t.wait_for("v1b to answer again", || async {
        Ok(http_get(&addr, "/")
            .await
            .is_ok_and(|(code, body)| code == 200 && body == "Old from Lattice (host h)\n"))
    })
    .await?;
    Ok(())
}
