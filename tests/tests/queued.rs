//! Queued delivery (`delivery: queued` links) across a cut edge link: greeter-client on an edge
//! host calls greeter's one-way `notifier.notify` on a cloud host. Deliveries are observed as
//! [`lattice_tests::queued`] describes (greeter's log lines, captured in-process).
//! Faults (duplicates forced past the dedup window, a SIGKILLed sender, a full outbox) are in
//! `queued_faults.rs`.

use std::time::{Duration, Instant};

use lattice_protocol::queue::deadletter_stream;
use lattice_tests::edge::EdgeTopology;
use lattice_tests::http_get;
use lattice_tests::queued::{captured, delivered, setup, wait_delivered};

#[tokio::test]
async fn queued_calls_wait_out_a_cut_link_and_arrive_once_in_order() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;

    // Linked: a queued call arrives.
    assert_eq!(
        http_get(&addr, "/notify?msg=warmup-0.").await?,
        (200, "ok".into())
    );
    wait_delivered("warmup", 1).await?;

    // Cut: every call is accepted at once (it is on the edge host's disk), none arrives.
    e.cut().await?;
    const N: u32 = 20;
    for i in 0..N {
        let started = Instant::now();
        let answer = http_get(&addr, &format!("/notify?msg=cut-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "call {i} waited {:?}",
            started.elapsed()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered("cut"), Vec::<u32>::new());

    // Healed: all of them, in order, once each.
    e.heal().await?;
    wait_delivered("cut", N as usize).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered("cut"), (0..N).collect::<Vec<_>>());
    assert_eq!(delivered("warmup"), vec![0]);
    Ok(())
}

#[tokio::test]
async fn a_failing_queued_call_is_retried_then_dead_lettered() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;
    // greeter's `notify` returns an error for messages starting with `fail`.
    assert_eq!(
        http_get(&addr, "/notify?msg=fail-0.").await?,
        (200, "ok".into())
    );
    // The calls behind it wait (one at a time per target), then go on.
    assert_eq!(
        http_get(&addr, "/notify?msg=after-0.").await?,
        (200, "ok".into())
    );
    wait_delivered("after", 1).await?;
    let js = async_nats::jetstream::new(e.hub.client.clone());
    let mut dlq = js.get_stream(deadletter_stream(&e.hub.lattice)).await?;
    let state = dlq.info().await?.state.clone();
    assert_eq!(state.messages, 1, "{state:?}");
    let dead = dlq.get_raw_message(state.first_sequence).await?;
    let error = dead
        .headers
        .get("Lattice-Error")
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(error.contains("asked to fail: fail-0."), "{error}");
    Ok(())
}
