//! Queued delivery under real faults: duplicates forced into the hub's stream past its
//! deduplication window, deliveries lost with the delivering host's link, a SIGKILLed sending
//! host, a full outbox, a full disk under a host
//! process. The app, its setup and how deliveries are observed (greeter's log lines, captured
//! in-process) are [`lattice_tests::queued`]'s; the happy path is `queued.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use futures::TryStreamExt;
use lattice_host::queue::outbox::{Outbox, OutboxConfig};
use lattice_protocol::envelope;
use lattice_protocol::queue::{
    LANE_COUNT_HEADER, LaneState, MSG_ID_HEADER, decode_bundle, lanes_bucket, queue_stream,
};
use lattice_tests::edge::EdgeTopology;
use lattice_tests::proxy::Proxy;
use lattice_tests::queued::names::{all_queued, call_consumer};
use lattice_tests::queued::{
    QueuedLink, captured, delivered, deploy, log_text, setup, setup_with, setup_with_edge,
    start_cloud_host, start_edge_host, stream_messages, wait_delivered, warm_up,
};
use lattice_tests::tmpfs::Tmpfs;
use lattice_tests::{QUIET, TestHost, WAIT, eventually, free_port, http_get};

/// Waits until `check` holds, for at most [`WAIT`]; on failure says what greeter's host logged.
async fn poll<F, Fut>(what: &str, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    eventually(WAIT, what, check)
        .await
        .with_context(|| format!("log:\n{}", log_text()))
}

/// Waits until greeter's queue consumer has settled every message in the stream (nothing
/// pending, nothing unacknowledged): no copy is left that could still run.
async fn wait_consumer_idle(e: &EdgeTopology) -> anyhow::Result<()> {
    let js = jetstream::new(e.hub.client.clone());
    let stream = js.get_stream(queue_stream(&e.hub.lattice)).await?;
    let consumer = call_consumer("greeter", "greeter");
    poll(
        "greeter's queue consumer to settle every message",
        || async {
            let info = stream.consumer_info(&consumer).await?;
            Ok(info.num_pending == 0 && info.num_ack_pending == 0)
        },
    )
    .await
}

/// How many copies of each call (by its id: the `Nats-Msg-Id` the forwarder gives a message of
/// one call, or the id a bundle gives each of its calls) the queue stream holds.
async fn copies_per_call(e: &EdgeTopology) -> anyhow::Result<BTreeMap<String, u32>> {
    let js = jetstream::new(e.hub.client.clone());
    let mut stream = js.get_stream(queue_stream(&e.hub.lattice)).await?;
    let state = stream.info().await?.state.clone();
    let mut copies = BTreeMap::new();
    for seq in state.first_sequence..=state.last_sequence {
        let message = stream.get_raw_message(seq).await?;
        let header = |name| message.headers.get(name).map(ToString::to_string);
        let ids = match header(LANE_COUNT_HEADER) {
            Some(_) => decode_bundle(&message.payload)?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            None => vec![header(MSG_ID_HEADER).unwrap_or_default()],
        };
        for id in ids {
            *copies.entry(id).or_default() += 1;
        }
    }
    Ok(copies)
}

/// Sends `/notify?msg=end-0.` until the client accepts it (the queue may still be full while
/// the forwarder drains it), then waits until it is delivered: delivery to a target is in
/// order, so every call queued before it has been delivered or skipped by then.
async fn send_end_marker(addr: &str) -> anyhow::Result<()> {
    poll("the end marker to be accepted", || async {
        Ok(http_get(addr, "/notify?msg=end-0.").await?.0 == 200)
    })
    .await?;
    wait_delivered("end", 1).await
}

/// Test 2. The forwarder publishes, the hub stores, the acknowledgements are lost; past the
/// stream's duplicate window the forwarder publishes the same entries again, and the stream keeps
/// both copies (deduplication by `Nats-Msg-Id` no longer applies). The target must still run
/// each call once, in order: the lane's remembered last call is what stops the copies.
///
/// How the copies are forced, with real parts only: the test creates the queue stream before
/// the hosts start, with a 1 s `duplicate_window` (the hosts get-or-create it, so they keep
/// it). The proxy then holds hub → leaf bytes while passing leaf → hub bytes
/// ([`Proxy::hold_replies`](lattice_tests::proxy::Proxy::hold_replies)): the forwarder's batch
/// reaches the hub and is stored (and delivered from there), its acks never reach the edge host,
/// so the outbox keeps those entries. (While held, the forwarder cannot re-publish by itself:
/// after the ack timeout it re-checks the stream through a JetStream API request, whose answer
/// is held too; the calls behind the batch wait in the outbox.) Then the link is cut and
/// healed: the forwarder publishes the stored entries again, well past the window, and the rest
/// behind them.
#[tokio::test]
async fn an_outage_past_the_duplicate_window_stores_copies_and_runs_each_call_once()
-> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let duplicate_window = Duration::from_secs(1);
    let js = jetstream::new(e.hub.client.clone());
    js.create_stream(stream::Config {
        name: queue_stream(&e.hub.lattice),
        subjects: vec![all_queued(&e.hub.lattice)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window,
        ..Default::default()
    })
    .await?;
    let (_cloud, _edge, addr) = setup(&e).await?;
    warm_up(&addr).await?;
    let window = js
        .get_stream(queue_stream(&e.hub.lattice))
        .await?
        .info()
        .await?
        .config
        .duplicate_window;
    assert_eq!(window, duplicate_window, "the host kept the test's stream");

    // One-way link: what the forwarder publishes is stored on the hub, its acks are held.
    let before = stream_messages(&e).await?;
    e.proxy.hold_replies();
    const N: u32 = 10;
    for i in 0..N {
        assert_eq!(
            http_get(&addr, &format!("/notify?msg=dup-{i}.")).await?,
            (200, "ok".into()),
            "call {i}"
        );
    }
    // The forwarder's first batch (at least the first call) is stored; its ack never comes,
    // and the calls behind it wait in the outbox (the forwarder re-checks the stream first).
    poll("the hub to store calls whose acks are held", || async {
        Ok(stream_messages(&e).await? > before)
    })
    .await?;
    // A lower bound, not a race: any re-publish from now on is past the window.
    tokio::time::sleep(duplicate_window * 2).await;

    // Cut (the held acks are lost with the connection) and heal: the forwarder re-publishes.
    e.cut().await?;
    e.heal().await?;
    send_end_marker(&addr).await?;
    wait_consumer_idle(&e).await?;

    let copies = copies_per_call(&e).await?;
    let total: u32 = copies.values().sum();
    assert!(
        u64::from(total) > before + u64::from(N) + 1,
        "the stream holds {total} messages for {} calls: no copy was forced ({copies:?})",
        copies.len()
    );
    assert!(copies.values().any(|&n| n >= 2), "{copies:?}");
    assert_eq!(
        copies.len(),
        N as usize + 2,
        "warmup, dups, end: {copies:?}"
    );
    assert_eq!(delivered("dup"), (0..N).collect::<Vec<_>>());
    assert_eq!(delivered("warmup"), vec![0]);
    assert_eq!(delivered("end"), vec![0]);
    // One lane (this sender's link to greeter) remembers its last call run: that is what made
    // the later copies skip.
    let lanes = js.get_key_value(lanes_bucket(&e.hub.lattice)).await?;
    let keys: Vec<String> = lanes.keys().await?.try_collect().await?;
    let ours = format!("{}.", call_consumer("greeter", "greeter"));
    let ours: Vec<&String> = keys.iter().filter(|k| k.starts_with(&ours)).collect();
    assert_eq!(ours.len(), 1, "one lane: {keys:?}");
    let state: LaneState = envelope::decode(&lanes.get(ours[0]).await?.context("lane state")?)?;
    assert_eq!(state.last, u64::from(N) + 2, "{state:?}");
    Ok(())
}

/// Test 3. A real `lattice-host` process runs greeter-client on the leaf; four clients fire
/// queued calls at it, each one call at a time, recording the calls answered 200; the process
/// is SIGKILLed while calls are in flight, then restarted on the same state directory. Every
/// call answered 200 (written to the outbox, fsync'd) arrives after the restart; none arrives
/// twice; a call whose request failed arrives at most once.
///
/// The forwarder is active throughout. So that some entries are certainly published but not yet
/// removed from the outbox when the process dies, the proxy holds hub → leaf bytes for the last
/// stretch before the kill (the stream stores those calls; their acks never come back): after
/// the restart the forwarder publishes them again, and the stream's deduplication and the
/// lane's remembered last call keep them to one run each.
/// Greeter's host, connected to the hub through a proxy, drains a backlog. Deliveries on their
/// way to it are held in the proxy, then dropped with the connection: the consumer goes on
/// with later deliveries, and acknowledging one of those would acknowledge the lost ones too.
#[tokio::test]
async fn deliveries_lost_with_the_delivering_hosts_link_run_once_it_is_back() -> anyhow::Result<()>
{
    captured();
    let e = EdgeTopology::start().await?;
    let link = Proxy::start(SocketAddr::from(([127, 0, 0, 1], e.hub.nats.port))).await?;
    let through_link = || {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(format!("nats://{}", link.addr))
    };
    let mut cloud = e.hub.host_config("cloud-1");
    cloud.labels.insert("role".into(), "cloud".into());
    let greeter_host = TestHost::spawn(cloud.clone(), through_link().await?);
    let _edge = start_edge_host(&e).await?;
    let addr = deploy(&e, 2, &QueuedLink::default()).await?;
    warm_up(&addr).await?;

    // A backlog larger than one pull's batch, while greeter's host is away.
    greeter_host.stop().await?;
    const N: u32 = 3000;
    for i in 0..N {
        let answer = http_get(&addr, &format!("/notify?msg=lost-{i}.")).await?;
        assert_eq!(answer, (200, "ok".into()), "call {i}");
    }
    // Forwarded (some calls bundled together) once the stream stops growing.
    let stored = std::cell::Cell::new(0);
    poll("the backlog to reach the hub's stream", || async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stream_messages(&e).await?;
        Ok(now > 1100 && stored.replace(now) == now)
    })
    .await?;

    // Greeter's host comes back; once it runs the first call, what the hub sends it waits in
    // the proxy. When the host has run all it received, and the hub has sent more, the link
    // drops.
    let _greeter_host = TestHost::spawn(cloud, through_link().await?);
    let deadline = tokio::time::Instant::now() + WAIT;
    while delivered("lost").is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the drain did not begin"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    link.hold_replies();
    let js = jetstream::new(e.hub.client.clone());
    let stream = js.get_stream(queue_stream(&e.hub.lattice)).await?;
    let consumer = call_consumer("greeter", "greeter");
    let ran = std::cell::Cell::new(0);
    poll("the host to wait for deliveries the hub sent", || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = stream
            .consumer_info(&consumer)
            .await?
            .delivered
            .consumer_sequence;
        let now = delivered("lost").len();
        Ok(ran.replace(now) == now && sent > now as u64 + 1)
    })
    .await?;
    link.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    link.heal();

    wait_delivered("lost", N as usize).await?;
    tokio::time::sleep(QUIET).await;
    let ran = delivered("lost");
    assert_eq!(
        ran.iter().copied().collect::<BTreeSet<_>>(),
        (0..N).collect::<BTreeSet<_>>(),
        "every acknowledged call ran"
    );
    assert_eq!(ran.len(), N as usize, "no call ran twice");
    assert!(
        log_text().contains("lost in transit"),
        "the host did not notice deliveries lost in transit: the test lost none"
    );
    Ok(())
}

#[tokio::test]
async fn a_sigkilled_sending_host_delivers_every_accepted_call_once_after_restart()
-> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let _cloud = start_cloud_host(&e).await?;
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("edge-1");
    const EDGE: &[(&str, &str)] = &[("role", "edge")];
    let first = e.start_host_process("edge-1", EDGE, &state_dir)?;
    let link = QueuedLink {
        http_address: Some(format!("127.0.0.1:{}", free_port()?)),
        ..QueuedLink::default()
    };
    let addr = deploy(&e, 2, &link).await?;
    warm_up(&addr).await?;

    // Four clients, one call at a time each; ids `client * 100_000 + i`.
    let accepted: Arc<Mutex<Vec<u32>>> = Arc::default();
    let sent: Arc<Mutex<Vec<u32>>> = Arc::default();
    let clients: Vec<_> = (0..4u32)
        .map(|client| {
            let (addr, accepted, sent) = (addr.clone(), accepted.clone(), sent.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let id = client * 100_000 + i;
                    sent.lock().expect("not poisoned").push(id);
                    let answer = tokio::time::timeout(
                        Duration::from_secs(10),
                        http_get(&addr, &format!("/notify?msg=kill-{id}.")),
                    )
                    .await;
                    match answer {
                        Ok(Ok((200, _))) => accepted.lock().expect("not poisoned").push(id),
                        // The host is gone (or answered otherwise): this client is done.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let count = |v: &Arc<Mutex<Vec<u32>>>| v.lock().expect("not poisoned").len();
    poll("40 calls to be accepted", || async {
        Ok(count(&accepted) >= 40)
    })
    .await?;
    e.proxy.hold_replies();
    let accepted_at_hold = count(&accepted);
    poll("40 more calls to be accepted", || async {
        Ok(count(&accepted) >= accepted_at_hold + 40)
    })
    .await?;
    first.kill();
    for client in clients {
        client.await?;
    }
    let accepted = accepted.lock().expect("not poisoned").clone();
    let sent: BTreeSet<u32> = sent.lock().expect("not poisoned").iter().copied().collect();

    // What the kill left: entries both in the outbox (a copy of it, so that the restarted host
    // finds the file as the kill left it) and in the stream were published and not yet removed.
    let copy = dir.path().join("outbox-at-kill");
    std::fs::copy(state_dir.join("outbox"), &copy)?;
    let outbox =
        tokio::task::spawn_blocking(move || Outbox::open(&copy, OutboxConfig::default())).await??;
    let left: BTreeSet<String> = outbox
        .peek(100_000)
        .await?
        .into_iter()
        .map(|(_, entry)| entry.id.to_string())
        .collect();
    drop(outbox);
    let in_stream: BTreeSet<String> = copies_per_call(&e).await?.into_keys().collect();
    let published_not_removed = left.intersection(&in_stream).count();
    assert!(
        published_not_removed > 0,
        "no outbox entry was both published and left in the outbox: {} left, {} in the stream",
        left.len(),
        in_stream.len()
    );

    // Restarted on the same state directory, the link whole again.
    e.proxy.release_replies();
    let second = e.start_host_process("edge-1", EDGE, &state_dir)?;
    for id in &accepted {
        let id = *id;
        if let Err(err) = wait_until_delivered("kill", id).await {
            anyhow::bail!("{err:#}\nedge host log:\n{}", second.log_text());
        }
    }
    // Then the end marker, through the restarted host: everything its outbox held before it
    // has been delivered or skipped once it arrives.
    poll("the restarted host to serve HTTP", || async {
        Ok(matches!(http_get(&addr, "/where-not").await, Ok((404, _))))
    })
    .await?;
    send_end_marker(&addr).await?;
    wait_consumer_idle(&e).await?;

    let got = delivered("kill");
    let mut times: HashMap<u32, usize> = HashMap::new();
    for id in &got {
        *times.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for id in &accepted {
        assert!(times.contains_key(id), "accepted call {id} was lost");
    }
    for id in times.keys() {
        assert!(sent.contains(id), "delivered {id}, which was never sent");
    }
    // Each client's calls were queued one after another: they arrive in that order.
    for client in 0..4 {
        let theirs: Vec<u32> = got
            .iter()
            .copied()
            .filter(|id| id / 100_000 == client)
            .collect();
        assert!(theirs.is_sorted(), "client {client}: {theirs:?}");
    }
    println!(
        "accepted {}, sent {}, delivered {}; at the kill the outbox held {} entries, \
         {published_not_removed} of them already in the stream",
        accepted.len(),
        sent.len(),
        got.len(),
        left.len(),
    );
    Ok(())
}

/// Waits until greeter logged `<prefix>-<id>.`.
async fn wait_until_delivered(prefix: &str, id: u32) -> anyhow::Result<()> {
    eventually(WAIT * 2, &format!("`{prefix}-{id}.`"), || async {
        Ok(delivered(prefix).contains(&id))
    })
    .await
    .context("accepted but never delivered")
}

/// Test 5, `on_full: refuse`. With the link cut, a link of capacity 3 takes three calls; the
/// fourth is refused with the `queue-full` error, which reaches the HTTP caller; the host keeps
/// serving; after the heal exactly the three accepted calls arrive.
#[tokio::test]
async fn a_full_queue_refuses_the_call_past_capacity_and_keeps_serving() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let link = QueuedLink {
        capacity: Some(3),
        on_full: Some("refuse"),
        ..QueuedLink::default()
    };
    let (_cloud, _edge, addr) = setup_with(&e, &link).await?;

    e.cut().await?;
    for i in 0..3 {
        assert_eq!(
            http_get(&addr, &format!("/notify?msg=full-{i}.")).await?,
            (200, "ok".into()),
            "call {i}"
        );
    }
    for i in 3..5 {
        let (status, body) = http_get(&addr, &format!("/notify?msg=full-{i}.")).await?;
        assert_eq!(status, 500, "call {i}: {body}");
        assert!(
            body.starts_with("err: queue-full") && body.contains("retry later"),
            "call {i}: {body}"
        );
        // The host still serves other requests.
        assert_eq!(
            http_get(&addr, "/no-such-route").await?,
            (404, "no such route\n".into())
        );
    }

    e.heal().await?;
    wait_delivered("full", 3).await?;
    send_end_marker(&addr).await?;
    assert_eq!(delivered("full"), vec![0, 1, 2]);
    Ok(())
}

/// Test 5, `on_full: drop_oldest`. With the link cut, seven calls on a link of capacity 3 are
/// all accepted; each of the four past capacity drops the oldest waiting call, with a warning;
/// after the heal only the newest three arrive.
#[tokio::test]
async fn a_full_queue_drops_its_oldest_calls_and_says_so() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let link = QueuedLink {
        capacity: Some(3),
        on_full: Some("drop_oldest"),
        ..QueuedLink::default()
    };
    let (_cloud, _edge, addr) = setup_with(&e, &link).await?;

    e.cut().await?;
    for i in 0..7 {
        assert_eq!(
            http_get(&addr, &format!("/notify?msg=drop-{i}.")).await?,
            (200, "ok".into()),
            "call {i}"
        );
    }
    let drops = log_text()
        .lines()
        .filter(|l| l.contains("queue full: dropped its oldest call (on_full: drop_oldest)"))
        .count();
    assert_eq!(drops, 4, "log:\n{}", log_text());

    e.heal().await?;
    wait_delivered("drop", 3).await?;
    send_end_marker(&addr).await?;
    assert_eq!(delivered("drop"), vec![4, 5, 6]);
    Ok(())
}

/// The host's own limit (`--outbox-max-entries`), not the link's `capacity`: with the link
/// cut, an edge host whose outbox keeps 2 entries takes two calls on a link of capacity 10000
/// and refuses the third with a `queue-full` error that says which limit and names the flag;
/// after the heal the two accepted calls arrive.
#[tokio::test]
async fn a_full_outbox_refuses_the_call_and_names_the_hosts_flag() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let link = QueuedLink {
        capacity: Some(10_000),
        on_full: Some("refuse"),
        ..QueuedLink::default()
    };
    let (_cloud, _edge, addr) = setup_with_edge(&e, &link, |c| c.outbox_max_entries = 2).await?;

    e.cut().await?;
    for i in 0..2 {
        assert_eq!(
            http_get(&addr, &format!("/notify?msg=host-{i}.")).await?,
            (200, "ok".into()),
            "call {i}"
        );
    }
    let (status, body) = http_get(&addr, "/notify?msg=host-2.").await?;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.starts_with("err: queue-full")
            && body.contains("this host's outbox is full (2 of 2 entries")
            && body.contains("not the link's `capacity`")
            && body.contains("raise the host's --outbox-max-entries"),
        "{body}"
    );

    e.heal().await?;
    wait_delivered("host", 2).await?;
    send_end_marker(&addr).await?;
    assert_eq!(delivered("host"), vec![0, 1]);
    Ok(())
}

/// Writes zeros to `path` until the filesystem is full, then gives `headroom` bytes back;
/// returns the file's size.
fn fill(path: &Path, headroom: u64) -> anyhow::Result<u64> {
    let mut file = std::fs::File::create(path)?;
    let block = vec![0u8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => return Err(e.into()),
        }
    }
    let len = file.metadata()?.len();
    let kept = len.saturating_sub(headroom);
    file.set_len(kept)?;
    file.sync_all()?;
    Ok(kept)
}

/// A full disk behaves like a full outbox, and the host stays up. A real `lattice-host`
/// process on the edge keeps its outbox (`<state_dir>/outbox`, a symlink) on a 2 MiB tmpfs,
/// which the test fills up but for a little room once the host has opened it. With the link
/// cut, queued calls are accepted until a commit fails for want of space; that call is refused
/// with the `queue-full` error (`err: queue-full: the call was not queued: outbox storage
/// failed: ...`), the process keeps running and serving HTTP, and so do later refusals. Then
/// the filler is deleted: calls are accepted again, with the link still cut; after the heal,
/// every call answered 200 arrives once, in order, and no refused call arrives.
///
/// **Needs root** (it mounts a tmpfs): run as anyone else, it fails saying so.
#[tokio::test]
async fn a_full_disk_refuses_queued_calls_and_the_host_stays_up() -> anyhow::Result<()> {
    captured();
    // Dropped in reverse order: the host process first, then the tmpfs, then the directory.
    let dir = tempfile::tempdir()?;
    let disk = Tmpfs::mount(&dir.path().join("disk"), "2m")?;
    let state_dir = dir.path().join("edge-1");
    std::fs::create_dir_all(&state_dir)?;
    let outbox = disk.dir().join("outbox");
    std::os::unix::fs::symlink(&outbox, state_dir.join("outbox"))?;

    let e = EdgeTopology::start().await?;
    let _cloud = start_cloud_host(&e).await?;
    const EDGE: &[(&str, &str)] = &[("role", "edge")];
    let mut host = e.start_host_process("edge-1", EDGE, &state_dir)?;
    let addr = deploy(&e, 2, &QueuedLink::default()).await?;
    warm_up(&addr).await?;
    assert!(
        std::fs::metadata(&outbox)?.len() > 0,
        "the host did not open its outbox through the symlink, on the tmpfs"
    );

    e.cut().await?;
    // Room for some tens of calls, then none.
    let filler = disk.dir().join("filler");
    let filled = fill(&filler, 32 << 10)?;
    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..10_000u32 {
        let (status, body) = http_get(&addr, &format!("/notify?msg=disk-{i}.")).await?;
        if status == 200 {
            accepted.push(i);
        } else {
            refusal = Some((i, status, body));
            break;
        }
    }
    let Some((refused, status, body)) = refusal else {
        anyhow::bail!("10000 calls were accepted on a full 2 MiB tmpfs");
    };
    println!(
        "{} calls accepted with {filled} bytes of filler, then: {status} {body}",
        accepted.len()
    );
    assert_eq!(status, 500, "call {refused}: {body}");
    assert!(
        body.starts_with("err: queue-full")
            && body.contains("the call was not queued: outbox storage failed")
            && body.contains("(os error 28)"), // ENOSPC
        "call {refused}: {body}"
    );
    assert!(!accepted.is_empty(), "not one call fit in the room left");
    // The host is up and serves; a call is still refused, not hung.
    assert!(host.is_running()?, "the host exited:\n{}", host.log_text());
    assert_eq!(
        http_get(&addr, "/no-such-route").await?,
        (404, "no such route\n".into())
    );
    let (status, body) = http_get(&addr, "/notify?msg=refused-0.").await?;
    assert!(
        status == 500 && body.starts_with("err: queue-full"),
        "{status} {body}"
    );

    // Room again: calls are accepted, the link still cut.
    std::fs::remove_file(&filler)?;
    let after = refused + 1;
    for i in after..after + 5 {
        assert_eq!(
            http_get(&addr, &format!("/notify?msg=disk-{i}.")).await?,
            (200, "ok".into()),
            "call {i}, after room was made; host log:\n{}",
            host.log_text()
        );
        accepted.push(i);
    }
    assert!(host.is_running()?, "the host exited:\n{}", host.log_text());

    e.heal().await?;
    send_end_marker(&addr).await?;
    wait_consumer_idle(&e).await?;
    assert_eq!(
        delivered("disk"),
        accepted,
        "every accepted call, once, in order"
    );
    assert_eq!(delivered("refused"), Vec::<u32>::new());
    drop(host);
    Ok(())
}
