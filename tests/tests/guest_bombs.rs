//! Guest bombs stay local (issue 14, item 7): deep recursion, an endless loop, memory growth
//! and a huge table each fail only their own request, and `hello` deployed beside them on the
//! same host keeps answering. Real nats-server, control plane and host; the bombs are the
//! hand-made guests of `lattice-test-guests`, signed and deployed like any component.
//! (Oversized heads and bodies and slowloris clients: `host/tests/http.rs`.)

use std::time::{Duration, Instant};

use lattice_test_guests::{bombs, looping};
use lattice_tests::TestLattice;
use lattice_tests::guest_apps::{Reply, deploy_guest, deploy_neighbour, get, neighbour_answers};

const REQUEST: Duration = Duration::from_secs(20);

/// Deploys `bomb` with `limits` beside the neighbour, sets it off twice (the host must survive
/// the first to answer the second) and returns its last answer; the neighbour answers after each.
async fn set_off(bomb: &[u8], limits: &[&str]) -> anyhow::Result<Reply> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let neighbour = deploy_neighbour(&t).await?;
    let addr = deploy_guest(&t, "bomb", bomb, limits).await?;
    let mut last = None;
    for _ in 0..2 {
        last = Some(get(&addr, REQUEST).await?);
        neighbour_answers(&neighbour).await?;
    }
    last.ok_or_else(|| anyhow::anyhow!("no answer"))
}

fn assert_failed(reply: &Reply, body: &str) {
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, body),
        "{reply:?}"
    );
}

#[tokio::test]
async fn deep_recursion_fails_only_its_own_request() -> anyhow::Result<()> {
    let reply = set_off(&bombs::recursing(), &[]).await?;
    assert_failed(&reply, "component failed\n");
    Ok(())
}

#[tokio::test]
async fn memory_growth_stops_at_the_component_limit() -> anyhow::Result<()> {
    let reply = set_off(&bombs::memory_hog(), &["memory: 16Mi"]).await?;
    assert_failed(&reply, "component failed\n");
    Ok(())
}

#[tokio::test]
async fn a_huge_table_is_refused() -> anyhow::Result<()> {
    // 100 million elements (800 MB of table): refused by the store's limiter.
    let reply = set_off(&bombs::table_hog(100_000_000), &[]).await?;
    assert_failed(&reply, "component failed\n");
    Ok(())
}

/// The loop runs until its own timeout; the neighbour answers while it runs, not only after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endless_loop_fails_at_its_time_limit() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let neighbour = deploy_neighbour(&t).await?;
    let addr = deploy_guest(&t, "bomb", &looping(), &["timeout: 2s"]).await?;
    let started = Instant::now();
    let spinning = tokio::spawn(async move { get(&addr, REQUEST).await });
    neighbour_answers(&neighbour).await?;
    assert!(
        !spinning.is_finished(),
        "the neighbour answered only after the loop ended"
    );
    let reply = tokio::time::timeout(REQUEST, spinning).await???;
    assert_failed(&reply, "component timed out\n");
    // Ended by its own 2 s, not the host's minute.
    assert!(started.elapsed() < Duration::from_secs(15), "{started:?}");
    neighbour_answers(&neighbour).await?;
    Ok(())
}
