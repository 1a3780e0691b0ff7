//! The hub's storage is bounded: the streams and buckets the lattice makes carry byte and age
//! limits and refuse new messages at them (`discard: new`), and those an older release made
//! without limits get them, in place, when the control plane or a host starts.
//!
//! A queue stream at its limit refuses what the forwarder publishes: the items wait in the
//! sending host's outbox (its heartbeat says how many), a `queue-stream-full` event says why,
//! and they are delivered, in order and once, when room returns.

use async_nats::jetstream::{self, stream};
use futures::StreamExt as _;
use lattice_protocol::envelope;
use lattice_protocol::error::ErrorCode;
use lattice_protocol::jetstream::Storage;
use lattice_protocol::messages::{Event, EventKind};
use lattice_protocol::queue::ops::LinkQueue;
use lattice_protocol::queue::queue_stream;
use lattice_protocol::subject::{Buckets, Subject};
use lattice_tests::edge::EdgeTopology;
use lattice_tests::queued::names::{all_queued, call_subject};
use lattice_tests::queued::{
    QueuedLink, captured, delivered, deploy, log_text, start_edge_host_with, wait_delivered,
    warm_up,
};
use lattice_tests::{NatsServer, QUIET, TestLattice, WAIT, http_get};

/// The queue stream's byte limit in the test: room for a few of the forwarder's largest
/// messages (a bundle is at most 128 KiB), little enough to fill quickly.
const QUEUE_BYTES: i64 = 512 * 1024;

/// The client's queued link to greeter, as `get queues` names it.
const LINK: &str = "greeter/client->greeter";

/// The edge host's pending calls on the link, from its heartbeat (`get queues`).
fn edge_pending(l: &LinkQueue) -> Option<u64> {
    let h = l.hosts.iter().find(|h| h.name == "edge-1")?;
    Some(h.stats.pending)
}

/// Publishes on `filler` until the stream refuses even a byte; the first refusal's text.
async fn fill(js: &jetstream::Context, filler: &str) -> anyhow::Result<String> {
    let mut first = None;
    for size in [16 * 1024, 1024, 64, 1] {
        let chunk = bytes::Bytes::from(vec![b'x'; size]);
        loop {
            match js.publish(filler.to_string(), chunk.clone()).await?.await {
                Ok(_) => continue,
                Err(e) => {
                    first.get_or_insert(e.to_string());
                    break;
                }
            }
        }
    }
    first.ok_or_else(|| anyhow::anyhow!("never refused"))
}

#[tokio::test]
async fn a_full_queue_stream_refuses_and_its_items_wait_in_the_outbox_until_room_returns()
-> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    // The queue stream as a release without limits made it, holding a message already.
    let js = jetstream::new(e.hub.client.clone());
    let stream_name = queue_stream(&e.hub.lattice);
    js.create_stream(stream::Config {
        name: stream_name.clone(),
        subjects: vec![all_queued(&e.hub.lattice)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let filler = call_subject(&e.hub.lattice, "filler", "filler");
    js.publish(filler.clone(), "from before".into())
        .await?
        .await?;

    let small = |c: &mut lattice_host::HostConfig| c.storage.queue_max_bytes = QUEUE_BYTES;
    let mut cloud = e.hub.host_config("cloud-1");
    cloud.labels.insert("role".into(), "cloud".into());
    small(&mut cloud);
    let _cloud = e.hub.start_host(cloud).await?;
    let _edge = start_edge_host_with(&e, small).await?;
    let addr = deploy(&e, 2, &QueuedLink::default()).await?;
    warm_up(&addr).await?;

    // The hosts gave the existing stream its limits, in place: its message is still there.
    let mut queue = js.get_stream(&stream_name).await?;
    let info = queue.info().await?.clone();
    assert_eq!(info.config.max_bytes, QUEUE_BYTES, "{:?}", info.config);
    assert_eq!(info.config.discard, stream::DiscardPolicy::New);
    assert_eq!(info.config.max_age, Storage::QUEUE_MAX_AGE);
    let kept = queue.get_last_raw_message_by_subject(&filler).await?;
    assert_eq!(&kept.payload[..], b"from before");

    // Fill it: at the limit the stream refuses new messages rather than dropping old ones.
    let refusal = fill(&js, &filler).await?;
    assert!(refusal.contains("maximum bytes"), "{refusal}");
    // Past half full, the target's host removes what it settled (the warm-up call); then the
    // stream is filled to the brim again.
    let greeter = call_subject(&e.hub.lattice, "greeter", "greeter");
    e.hub
        .wait_until("the settled warm-up call to leave the stream", || async {
            let gone = queue
                .get_last_raw_message_by_subject(&greeter)
                .await
                .is_err();
            Ok(gone.then_some(()))
        })
        .await?;
    fill(&js, &filler).await?;

    // Calls are still accepted by the edge host, and wait in its outbox: the stream refused
    // them, which the host says in an event, and nothing is delivered.
    let mut events = e
        .hub
        .client
        .subscribe(Subject::events(&e.hub.lattice).to_string())
        .await?;
    lattice_tests::synced(&e.hub.client).await?;
    const N: u32 = 5;
    for i in 0..N {
        let answer = http_get(&addr, &format!("/notify?msg=full-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
    }
    let event = tokio::time::timeout(WAIT, async {
        while let Some(msg) = events.next().await {
            if let Ok(event) = envelope::decode::<Event>(&msg.payload)
                && event.kind == EventKind::QueueStreamFull
            {
                return Some(event);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| anyhow::anyhow!("no queue-stream-full event; log:\n{}", log_text()))?;
    assert!(
        event.message.contains("outbox") && event.message.contains("--queue-max-bytes"),
        "{event:?}"
    );
    e.hub
        .wait_until("the calls to wait in the edge host's outbox", || async {
            let links = e.hub.ctl.queues().await?;
            let link = links.into_iter().find(|l| l.link.to_string() == LINK);
            Ok(link.filter(|l| edge_pending(l) == Some(u64::from(N))))
        })
        .await?;
    tokio::time::sleep(QUIET).await;
    assert_eq!(delivered("full"), Vec::<u32>::new());

    // Room returns (what filled the stream goes): every call arrives, in order, once.
    queue.purge().filter(&filler).await?;
    wait_delivered("full", N as usize).await?;
    tokio::time::sleep(QUIET).await;
    assert_eq!(delivered("full"), (0..N).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn settled_items_leave_a_queue_stream_past_half_its_limit() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let small = |c: &mut lattice_host::HostConfig| c.storage.queue_max_bytes = QUEUE_BYTES;
    let mut cloud = e.hub.host_config("cloud-1");
    cloud.labels.insert("role".into(), "cloud".into());
    small(&mut cloud);
    let _cloud = e.hub.start_host(cloud).await?;
    let _edge = start_edge_host_with(&e, small).await?;
    let addr = deploy(&e, 2, &QueuedLink::default()).await?;
    warm_up(&addr).await?;

    // Calls of 4 KiB each, more than the stream holds: they go as the target settles them and
    // the settled ones leave the stream to make room.
    let js = jetstream::new(e.hub.client.clone());
    let pad = "p".repeat(4 * 1024);
    const N: u32 = 200;
    for i in 0..N {
        let answer = http_get(&addr, &format!("/notify?msg=big-{i}.{pad}")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
    }
    wait_delivered("big", N as usize).await?;
    assert_eq!(delivered("big"), (0..N).collect::<Vec<_>>());
    let mut queue = js.get_stream(queue_stream(&e.hub.lattice)).await?;
    let state = queue.info().await?.state.clone();
    assert!(
        state.bytes <= QUEUE_BYTES as u64,
        "the stream stayed within its limit: {state:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_control_plane_bounds_older_buckets_and_refuses_a_push_over_the_artifact_limit()
-> anyhow::Result<()> {
    // Buckets as a release without limits made them, before any control plane ran.
    let nats = NatsServer::start().await?;
    let client = nats.client().await?;
    let js = jetstream::new(client.clone());
    let lattice = lattice_protocol::names::LatticeName::new("test")?;
    let b = Buckets::new(&lattice);
    let manifests = b.manifests();
    js.create_stream(stream::Config {
        name: format!("KV_{manifests}"),
        subjects: vec![format!("$KV.{manifests}.>")],
        max_messages_per_subject: 5,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await?;
    let old = js.get_key_value(&manifests).await?;
    old.put("kept", "a value".into()).await?;
    js.create_object_store(async_nats::jetstream::object_store::Config {
        bucket: b.artifacts(),
        ..Default::default()
    })
    .await?;

    const ARTIFACT_BYTES: i64 = 256 * 1024;
    let t = TestLattice::start_on(nats, |c| {
        c.storage.kv_max_bytes = 1024 * 1024;
        c.storage.artifacts_max_bytes = ARTIFACT_BYTES;
    })
    .await?;
    let mut kv = js.get_stream(format!("KV_{manifests}")).await?;
    let config = kv.info().await?.config.clone();
    assert_eq!(config.max_bytes, 1024 * 1024, "{config:?}");
    assert_eq!(config.max_messages_per_subject, 5, "the rest is as it was");
    assert_eq!(
        old.get("kept").await?.as_deref(),
        Some(&b"a value"[..]),
        "updated in place, not recreated"
    );
    let mut objects = js.get_stream(format!("OBJ_{}", b.artifacts())).await?;
    let config = objects.info().await?.config.clone();
    assert_eq!(config.max_bytes, ARTIFACT_BYTES, "{config:?}");
    assert_eq!(config.discard, stream::DiscardPolicy::New);

    // A push the artifact store's limit cannot hold is refused, saying so and what to do.
    let registry = lattice_control::registry::Registry::open(&js, &t.lattice).await?;
    let small = vec![1u8; 16 * 1024];
    registry.push(&small, None).await?;
    let big = vec![2u8; ARTIFACT_BYTES as usize];
    let refused = registry
        .push(&big, None)
        .await
        .expect_err("a push over the limit is refused");
    assert_eq!(refused.code, ErrorCode::Unavailable);
    assert!(
        refused.message.contains("artifact store is full")
            && refused.message.contains("--artifacts-max-bytes"),
        "{refused}"
    );
    Ok(())
}

/// A hub whose JetStream cannot reserve the lattice's limits (here it declares 1 GiB; a small
/// or full disk gives the same) ends the control plane at once with what to do, rather than
/// leaving it retrying unseen; lowered limits fit the same hub.
#[tokio::test]
async fn a_hub_too_small_for_the_limits_is_refused_saying_what_to_do() -> anyhow::Result<()> {
    const SMALL_HUB: &str = "jetstream {\n  max_file_store: 1G\n}\n";
    let nats = NatsServer::start_with_config(SMALL_HUB).await?;
    let refused = TestLattice::start_on(nats, |_| {})
        .await
        .expect_err("the default limits reserve more than 1 GiB");
    let text = format!("{refused:#}");
    assert!(
        text.contains("the control plane ended before answering")
            && text.contains("cannot reserve")
            && text.contains("max_file_store")
            && text.contains("--kv-max-bytes"),
        "{text}"
    );

    let nats = NatsServer::start_with_config(SMALL_HUB).await?;
    let t = TestLattice::start_on(nats, |c| {
        c.storage.kv_max_bytes = 16 * 1024 * 1024;
        c.storage.artifacts_max_bytes = 256 * 1024 * 1024;
    })
    .await?;
    assert!(t.ctl.apps().await?.is_empty());
    Ok(())
}
