//! Queued delivery (`delivery: queued` links) across a cut edge link: greeter-client on an edge
//! host calls greeter's one-way `notifier.notify` on a cloud host. Deliveries are observed as
//! [`lattice_tests::queued`] describes (greeter's log lines, captured in-process).
//! Faults (duplicates forced past the dedup window, a SIGKILLed sender, a full outbox) are in
//! `queued_faults.rs`.

use anyhow::Context as _;
use lattice_protocol::envelope;
use lattice_protocol::lease::LeaseRecord;
use lattice_protocol::queue::{
    CALL_ID_HEADER, ERROR_HEADER, LANE_COUNT_HEADER, MSG_ID_HEADER, Queued, QueuedItem,
    deadletter_stream, leases_bucket,
};
use lattice_tests::edge::EdgeTopology;
use lattice_tests::queued::names::call_consumer;
use lattice_tests::queued::{
    QueuedLink, captured, delivered, deploy, setup, start_cloud_host, start_edge_host,
    stream_messages, wait_delivered, warm_up,
};
use lattice_tests::{QUIET, TestHost, http_get};

#[tokio::test]
async fn queued_calls_wait_out_a_cut_link_and_arrive_once_in_order() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;

    // Linked: a queued call arrives.
    warm_up(&addr).await?;

    // Cut: every call is accepted (it is on the edge host's disk; a direct call would fail
    // now), none arrives.
    e.cut().await?;
    const N: u32 = 20;
    for i in 0..N {
        let answer = http_get(&addr, &format!("/notify?msg=cut-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(delivered("cut"), Vec::<u32>::new());

    // Healed: all of them, in order, once each.
    let before = stream_messages(&e).await?;
    e.heal().await?;
    wait_delivered("cut", N as usize).await?;
    tokio::time::sleep(QUIET).await;
    assert_eq!(delivered("cut"), (0..N).collect::<Vec<_>>());
    assert_eq!(delivered("warmup"), vec![0]);
    // The backlog travelled bundled: fewer stream messages than calls.
    let sent = stream_messages(&e).await? - before;
    assert!(sent < u64::from(N), "{N} calls took {sent} stream messages");
    Ok(())
}

/// A backlog travels bundled (consecutive calls of one lane in one stream message). A call in
/// the middle of a bundle that keeps failing is dead-lettered alone, as the call it is (so that
/// `requeue` puts back that call and no other), and the calls around it run in order.
#[tokio::test]
async fn a_failing_call_inside_a_bundle_is_dead_lettered_alone() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;
    warm_up(&addr).await?;

    e.cut().await?;
    for msg in ["around-0.", "fail-bundled-0.", "around-1."] {
        let answer = http_get(&addr, &format!("/notify?msg={msg}")).await?;
        assert_eq!(answer, (200, "ok".into()), "{msg}");
    }
    let before = stream_messages(&e).await?;
    e.heal().await?;
    wait_delivered("around", 2).await?;
    assert_eq!(delivered("around"), vec![0, 1]);
    let sent = stream_messages(&e).await? - before;
    assert!(sent < 3, "3 calls took {sent} stream messages: not bundled");

    // In lane order, the failed call was dead-lettered before `around-1.` ran.
    let js = async_nats::jetstream::new(e.hub.client.clone());
    let mut dlq = js.get_stream(deadletter_stream(&e.hub.lattice)).await?;
    let state = dlq.info().await?.state.clone();
    assert_eq!(state.messages, 1, "{state:?}");
    let dead = dlq.get_raw_message(state.first_sequence).await?;
    let header = |name| dead.headers.get(name).map(ToString::to_string);
    let error = header(ERROR_HEADER).unwrap_or_default();
    assert!(error.contains("asked to fail: fail-bundled-0."), "{error}");
    assert_eq!(header(LANE_COUNT_HEADER), None, "{:?}", dead.headers);
    let call_id = header(CALL_ID_HEADER).context("the dead letter's call id")?;
    assert_eq!(header(MSG_ID_HEADER).as_deref(), Some(call_id.as_str()));
    // Its body is that one call, as the sender queued it.
    let queued: Queued = envelope::decode(&dead.payload)?;
    let QueuedItem::Call(call) = queued.item else {
        anyhow::bail!("a call was dead-lettered as {:?}", queued.item);
    };
    let (msg,): (String,) = rmp_serde::from_slice(&call.args)?;
    assert_eq!(msg, "fail-bundled-0.");
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

/// Two hosts run the target: only the holder of the consumer's lease pulls, with many items in
/// flight, so the order holds (both pulling would hand neighbours to different hosts at once).
#[tokio::test]
async fn with_the_target_on_two_hosts_queued_calls_still_arrive_once_in_order() -> anyhow::Result<()>
{
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _second, _edge, addr) = greeter_on_two_cloud_hosts(&e).await?;
    e.hub
        .wait_for("greeter running on both cloud hosts", || async {
            let hosts = e.hub.ctl.hosts().await?;
            Ok(["cloud-1", "cloud-2"]
                .iter()
                .all(|n| hosts.iter().any(|h| h.name == *n && h.workloads >= 1)))
        })
        .await?;

    // A backlog, released at once to both consumers' hosts.
    e.cut().await?;
    const N: u32 = 30;
    for i in 0..N {
        let answer = http_get(&addr, &format!("/notify?msg=both-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
    }
    e.heal().await?;
    wait_delivered("both", N as usize).await?;
    tokio::time::sleep(QUIET).await;
    assert_eq!(delivered("both"), (0..N).collect::<Vec<_>>());
    Ok(())
}

/// The host delivering a target's queued calls stops: the other host running the target takes
/// its lease over and goes on from where the lane stopped: the calls queued later arrive once
/// each, in order, after the earlier ones, none run again.
#[tokio::test]
async fn when_the_delivering_host_stops_another_takes_over_its_lanes() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (cloud, second, _edge, addr) = greeter_on_two_cloud_hosts(&e).await?;
    const N: u32 = 20;
    for i in 0..N {
        let answer = http_get(&addr, &format!("/notify?msg=over-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
    }
    wait_delivered("over", N as usize).await?;

    // Which host delivers: the lease names it.
    let js = async_nats::jetstream::new(e.hub.client.clone());
    let leases = js.get_key_value(leases_bucket(&e.hub.lattice)).await?;
    let record = leases
        .get(call_consumer("greeter", "greeter"))
        .await?
        .context("the consumer's lease")?;
    let record: LeaseRecord = envelope::decode(&record)?;
    let hosts = e.hub.ctl.hosts().await?;
    let holder = hosts
        .iter()
        .find(|h| record.holder.starts_with(&h.id.to_string()))
        .with_context(|| format!("no host holds {record:?}"))?;
    let stays = if holder.name == "cloud-1" {
        cloud.stop().await?;
        second
    } else {
        second.stop().await?;
        cloud
    };

    // More calls, queued while the hub is away, then released to the remaining host.
    e.cut().await?;
    for i in N..2 * N {
        let answer = http_get(&addr, &format!("/notify?msg=over-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
    }
    e.heal().await?;
    wait_delivered("over", 2 * N as usize).await?;
    tokio::time::sleep(QUIET).await;
    assert_eq!(delivered("over"), (0..2 * N).collect::<Vec<_>>());
    let now: LeaseRecord = envelope::decode(
        &leases
            .get(call_consumer("greeter", "greeter"))
            .await?
            .context("the consumer's lease")?,
    )?;
    assert_ne!(now.holder, record.holder, "the lease changed hands");
    drop(stays);
    Ok(())
}

/// Starts `cloud-1`, `cloud-2` and the edge host, deploys the app with greeter on both cloud
/// hosts; returns the hosts and the client's HTTP address.
async fn greeter_on_two_cloud_hosts(
    e: &EdgeTopology,
) -> anyhow::Result<(TestHost, TestHost, TestHost, String)> {
    let cloud = start_cloud_host(e).await?;
    let mut second = e.hub.host_config("cloud-2");
    second.labels.insert("role".into(), "cloud".into());
    let second = e.hub.start_host(second).await?;
    let edge = start_edge_host(e).await?;
    let link = QueuedLink {
        greeter_everywhere: true,
        ..QueuedLink::default()
    };
    let addr = deploy(e, 3, &link).await?;
    Ok((cloud, second, edge, addr))
}
