//! Backlog drain after a long outage: an outbox holding N queued calls is forwarded to the hub's
//! queue stream by the host's real forwarder, beside raw JetStream async publish of the same
//! messages, in the same run on the same nats-server.
//!
//! `cargo bench -p lattice-tests --bench queue_drain` (optional arguments: entries, default
//! 1,000,000; rounds, default 2). Prints figures and ratios; asserts nothing about time.
//!
//! **Setup.** One nats-server (JetStream, file storage, random port, started by the bench); one
//! NATS connection standing for the host's. Every message is the same kind of queued call a
//! guest makes through `example:greeter/notifier.notify` on a queued link: an envelope-encoded
//! `Queued` call (about 150 bytes) with the headers the forwarder sets (`Nats-Msg-Id`,
//! `Lattice-Link` and the lane's `Lattice-Lane`, `-Seq`, `-Floor`), to a stream made like the forwarder's (`Limits`, file storage, 2-minute duplicate window).
//!
//! **Variants** (each on a fresh stream; their order alternates between rounds):
//! - `raw` (**the baseline**): `jetstream::Context::publish_with_headers` of the N messages,
//!   keeping at most [`RAW_WINDOW`] acknowledgements outstanding (nats.go's default for async
//!   publish is 4,000), timed from the first publish to the last acknowledgement.
//! - `outbox` (**Lattice**): the N entries are first appended to a durable outbox (not timed:
//!   that is the outage), then [`Queue::open`] starts the host's forwarder on it, timed from the
//!   open to the moment the outbox is empty, i.e. every entry was acknowledged by the stream and
//!   removed from the outbox with an fsync'd commit.
//!
//! Both variants end with the stream holding exactly N messages (checked).
//!
//! **Part 2, forwarded and delivered** (third argument: entries, default 20,000). A
//! `TestLattice` (nats-server, control plane, one host, in this process) runs the real `greeter`
//! component as the target of a queued link from `greeter-client` (the app of
//! `tests/src/queued.rs`). An outbox holding the entries, made as above, is drained by the
//! forwarder, and the host holding the consumer's lease runs `notifier.notify` in a fresh greeter
//! instance for each, one at a time in lane order, with up to 20,000 in flight, remembering the
//! lane once per chunk and acknowledging each chunk once. Timed from the forwarder's start to the consumer having acknowledged the last entry;
//! compared with `raw` above (the raw figure has no delivery in it: the ratio says how far the
//! whole path is from publishing alone).

#[path = "queue_drain/backlog.rs"]
mod backlog;
#[allow(dead_code)] // only some of the helpers are used here
#[path = "control_scale/machine.rs"]
mod machine;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use lattice_host::caps::LatticeLink;
use lattice_host::queue::Queue;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::names::{HostId, LatticeName};
use lattice_protocol::queue::{
    LANE_COUNT_HEADER, LANE_FLOOR_HEADER, LANE_HEADER, LANE_SEQ_HEADER, LINK_HEADER, LaneState,
    MSG_ID_HEADER, lanes_bucket, queue_stream,
};
use lattice_tests::queued::names::{all_queued, call_consumer, call_subject, lane_id, lane_key};
use lattice_tests::queued::{self, QueuedLink};
use lattice_tests::{NatsServer, TestLattice};

use machine::{cores, cpu_model, loadavg};

const DEFAULT_ENTRIES: usize = 1_000_000;
const DEFAULT_ROUNDS: usize = 2;
const DEFAULT_DELIVERED: usize = 20_000;
/// Outstanding acknowledgements of the raw publisher.
const RAW_WINDOW: usize = 4_000;
const APP: &str = "bench";
/// How long a settled consumer may take to remember its last chunk.
const STALLED: Duration = Duration::from_secs(30);
/// The app of `tests/src/queued.rs`'s manifest.
const APP_DEPLOYED: &str = "greeter";

fn main() -> anyhow::Result<()> {
    lattice_host::quiet_library_backtraces();
    let mut numbers = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.parse::<usize>().context("arguments: entries [rounds]"));
    let entries = numbers
        .next()
        .transpose()?
        .unwrap_or(DEFAULT_ENTRIES)
        .max(1);
    let rounds = numbers.next().transpose()?.unwrap_or(DEFAULT_ROUNDS).max(1);
    let delivered = numbers.next().transpose()?.unwrap_or(DEFAULT_DELIVERED);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let raw = run(entries, rounds).await?;
            if delivered > 0 {
                deliver(delivered, raw).await?;
            }
            Ok(())
        })
}

async fn fresh_stream(js: &jetstream::Context, lattice: &LatticeName) -> anyhow::Result<()> {
    let _ = js.delete_stream(queue_stream(lattice)).await;
    js.create_stream(stream::Config {
        name: queue_stream(lattice),
        subjects: vec![all_queued(lattice)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the stream: {e}"))?;
    Ok(())
}

/// The stream's message count, and the lane sequence of the last item it holds (the lane's
/// last message's first item, plus the others it bundles).
async fn stream_contents(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<(u64, u64)> {
    let mut s = js
        .get_stream(queue_stream(lattice))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = s
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .state
        .clone();
    let last = s
        .get_raw_message(state.last_sequence)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let number = |name| {
        last.headers
            .get(name)
            .and_then(|v| v.as_str().parse::<u64>().ok())
    };
    let last_item =
        number(LANE_SEQ_HEADER).unwrap_or(0) + number(LANE_COUNT_HEADER).unwrap_or(1) - 1;
    Ok((state.messages, last_item))
}

/// `raw`: publishes every message with a bounded window of acknowledgements.
async fn raw(js: &jetstream::Context, lattice: &LatticeName, n: usize) -> anyhow::Result<Duration> {
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| backlog::payload(lattice, APP, i)).collect();
    let subject = call_subject(lattice, APP, "greeter");
    let link = backlog::link(APP);
    let lane = lane_id(
        &uuid::Uuid::new_v4().simple().to_string(),
        &backlog::lane(lattice, APP),
    );
    let started = Instant::now();
    let mut window = VecDeque::with_capacity(RAW_WINDOW);
    for (i, body) in payloads.into_iter().enumerate() {
        if window.len() == RAW_WINDOW {
            let ack: jetstream::context::PublishAckFuture = window.pop_front().expect("not empty");
            ack.await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID_HEADER, id.as_str());
        headers.insert(LINK_HEADER, link.as_str());
        // The lane headers the forwarder adds, so both variants publish the same bytes.
        headers.insert(LANE_HEADER, lane.as_str());
        headers.insert(LANE_SEQ_HEADER, (i + 1).to_string().as_str());
        headers.insert(LANE_FLOOR_HEADER, (i + 1).to_string().as_str());
        let ack = js
            .publish_with_headers(subject.clone(), headers, body.into())
            .await
            .map_err(|e| anyhow::anyhow!("publish {i}: {e}"))?;
        window.push_back(ack);
    }
    for ack in window {
        ack.await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(started.elapsed())
}

/// `outbox`: the host's forwarder drains a filled outbox.
async fn forwarded(link: &LatticeLink, path: &Path, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // No consumer here: any host key signs.
    let key = Arc::new(KeyPair::generate(KeyRole::Host));
    let (queue, forwarder) = Queue::open(path, link.clone(), key)?;
    eprintln!("  the outbox opened in {:.1?}", started.elapsed());
    let queue = Arc::clone(&queue);
    let mut last_report = Instant::now();
    while queue.outbox().stats().pending > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  ... {} of {n} still in the outbox after {:.0?}",
                queue.outbox().stats().pending,
                started.elapsed()
            );
            last_report = Instant::now();
        }
    }
    let took = started.elapsed();
    drop(forwarder);
    Ok(took)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Part 1; returns the median raw rate.
async fn run(n: usize, rounds: usize) -> anyhow::Result<f64> {
    println!(
        "queue_drain: a backlog of {n} queued calls, forwarded vs raw JetStream async publish"
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!("{rounds} rounds; load average at start: {}", loadavg());
    let server = NatsServer::start().await?;
    let client = server.client().await?;
    let js = jetstream::new(client.clone());
    let lattice = LatticeName::new("bench")?;
    let link = LatticeLink {
        client,
        jetstream: js.clone(),
        lattice: lattice.clone(),
        host: HostId::new("bench-host")?,
        storage: Default::default(),
        clock: Default::default(),
    };
    let work = tempfile::tempdir()?;
    let (mut raw_rates, mut outbox_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut this = [0.0f64; 2];
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for variant in order {
            fresh_stream(&js, &lattice).await?;
            let took = if variant == 0 {
                raw(&js, &lattice, n).await?
            } else {
                let path = work.path().join(format!("outbox-{round}"));
                let filling = Instant::now();
                backlog::fill(&path, &lattice, APP, n).await?;
                eprintln!(
                    "  round {round}: outbox filled in {:.1?}",
                    filling.elapsed()
                );
                forwarded(&link, &path, n).await?
            };
            let (held, last_item) = stream_contents(&js, &lattice).await?;
            anyhow::ensure!(
                last_item == n as u64 && held <= n as u64,
                "the stream's last item is number {last_item} of {n}"
            );
            this[variant] = rate(n, took);
            println!(
                "round {round}: {:<6} {n} calls in {:>8.2?}: {:>9.0} msg/s, {held} stream messages (load {})",
                ["raw", "outbox"][variant],
                took,
                this[variant],
                loadavg()
            );
        }
        raw_rates.push(this[0]);
        outbox_rates.push(this[1]);
        ratios.push(this[1] / this[0]);
    }
    let fmt = |v: &[f64], unit: &str| {
        v.iter()
            .map(|x| format!("{x:.2}{unit}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!();
    println!("| Variant | msg/s per round |");
    println!("|---|---:|");
    println!("| `raw` (baseline) | {} |", fmt(&raw_rates, ""));
    println!("| `outbox` (forwarder) | {} |", fmt(&outbox_rates, ""));
    println!(
        "| **outbox / raw** (target >= 0.5x) | {} |",
        fmt(&ratios, "x")
    );
    raw_rates.sort_by(f64::total_cmp);
    Ok(raw_rates[raw_rates.len() / 2])
}

/// Part 2: forwarded and delivered to greeter on a real host.
async fn deliver(n: usize, raw_rate: f64) -> anyhow::Result<()> {
    println!();
    println!("part 2: {n} queued calls forwarded and delivered to greeter on a host");
    let t = TestLattice::start().await?;
    let host = t.add_labelled_host("cloud-1", "role", "cloud").await?;
    let greeter = t
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await?;
    let client = t
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await?;
    let link = QueuedLink {
        capacity: Some(u32::try_from(n)?.max(1)),
        ..QueuedLink::default()
    };
    t.ctl
        .deploy(&queued::manifest(&client, &greeter, &link))
        .await?;
    let js = jetstream::new(t.client.clone());
    let consumer_name = call_consumer(APP_DEPLOYED, "greeter");
    t.wait_for("greeter's queue consumer", || async {
        let Ok(stream) = js.get_stream(queue_stream(&t.lattice)).await else {
            return Ok(false);
        };
        Ok(stream.consumer_info(&consumer_name).await.is_ok())
    })
    .await?;
    let work = tempfile::tempdir()?;
    let path = work.path().join("outbox");
    backlog::fill(&path, &t.lattice, APP_DEPLOYED, n).await?;
    let link = LatticeLink {
        client: t.client.clone(),
        jetstream: js.clone(),
        lattice: t.lattice.clone(),
        host: HostId::new("bench-sender")?,
        storage: Default::default(),
        clock: Default::default(),
    };
    let started = Instant::now();
    // Signed by the host itself: a signer greeter's consumer takes (a host of the lattice).
    let key = queued::host_key(&host)?;
    let sender = key.public_key().to_string();
    let (queue, _forwarder) = Queue::open(&path, link, Arc::new(key))?;
    // When the outbox emptied, and how many had been delivered by then.
    let mut forwarded: Option<(Duration, u64)> = None;
    let mut last_report = Instant::now();
    let stream = js
        .get_stream(queue_stream(&t.lattice))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let lanes = js
        .get_key_value(lanes_bucket(&t.lattice))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let lane = lane_key(
        &consumer_name,
        &sender,
        &queue.outbox().id().simple().to_string(),
        &backlog::lane(&t.lattice, APP_DEPLOYED),
    );
    // Calls run, as the consumer's lane remembers them (once per chunk).
    let ran = || async {
        let state: LaneState = match lanes.get(&lane).await.map_err(|e| anyhow::anyhow!("{e}"))? {
            Some(bytes) => lattice_protocol::envelope::decode(&bytes)?,
            None => LaneState::default(),
        };
        anyhow::Ok(state.last)
    };
    let mut settled_since: Option<Instant> = None;
    loop {
        let emptied = queue.outbox().stats().pending == 0;
        let info = stream
            .consumer_info(&consumer_name)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let settled = info.num_pending == 0 && info.num_ack_pending == 0;
        let done = ran().await?;
        if forwarded.is_none() && emptied {
            forwarded = Some((started.elapsed(), done));
        }
        if forwarded.is_some() && settled && done >= n as u64 {
            break;
        }
        // Everything forwarded and acknowledged for a while, yet the lane says fewer ran.
        if !(settled && forwarded.is_some()) {
            settled_since = None;
        } else if settled_since.get_or_insert_with(Instant::now).elapsed() > STALLED {
            anyhow::bail!(
                "the consumer settled every message, but its lane remembers {done} of {n} calls run"
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  ... {done} of {n} delivered after {:.0?}",
                started.elapsed()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let (forwarded, by_then) = forwarded.expect("set before the loop ends");
    let delivered = rate(n, took);
    println!(
        "forwarded in {forwarded:.2?} ({:.0} msg/s), {by_then} delivered by then; forwarded and delivered in {took:.2?}: {delivered:.0} msg/s (load {})",
        rate(n, forwarded),
        loadavg()
    );
    println!(
        "delivery alone after forwarding: {:.0} msg/s",
        (n as u64 - by_then) as f64 / (took - forwarded).as_secs_f64()
    );
    println!(
        "| **forwarded and delivered / raw publish** | {:.3}x ({delivered:.0} / {raw_rate:.0} msg/s) |",
        delivered / raw_rate
    );
    Ok(())
}
