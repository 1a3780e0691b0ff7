//! Backlog drain after a long outage: an outbox holding N queued calls is forwarded to the hub's
//! queue stream by the host's real forwarder, beside raw JetStream async publish of the same
//! messages, in the same run on the same hub.
//!
//! `cargo bench -p lattice-tests --bench queue_drain -- [entries [rounds [delivered]]]
//! [--cluster] [--sync-cost]` (entries default 1,000,000; rounds default 2; entries delivered in
//! part 2, default 20,000, 0 to skip it). Prints figures and ratios; asserts nothing about time.
//!
//! **Hubs.** By default one nats-server (JetStream, file storage, random port, started by the
//! bench, JetStream's default sync). `--cluster`: the harness's three-node JetStream cluster
//! (`lattice_tests::cluster`, `deploy/cluster.conf` as shipped, so `sync_interval: always` where
//! the server accepts it), the queue stream at three replicas, the bench's client given every
//! node's URL. `--sync-cost`: everything runs twice, on a hub without and then with
//! `sync_interval: always` (JetStream fsyncs each write before acknowledging it), and the
//! figures are compared (with / without); it needs nats-server 2.10 or later (2.9 refuses the
//! setting: the bench says so and measures without it only). Set `LATTICE_NATS_SERVER` to choose
//! the server.
//!
//! **Messages.** Every message is the same kind of queued call a guest makes through
//! `example:greeter/notifier.notify` on a queued link: an envelope-encoded `Queued` call (about
//! 150 bytes) with the headers the forwarder sets (`Nats-Msg-Id`, `Lattice-Link` and the lane's
//! `Lattice-Lane`, `-Seq`, `-Floor`), to a stream made as the forwarder makes it (`Limits`, file
//! storage, the lattice's default limits, the hub's replicas).
//!
//! **Part 1 variants** (each on a fresh stream; their order alternates between rounds):
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
//! **Part 2, forwarded and delivered** (`queue_drain/deliver.rs`): a control plane and one host
//! in this process, on the same kind of hub, run the real `greeter` component as the target of a
//! queued link from `greeter-client` (the app of `tests/src/queued.rs`). An outbox holding the
//! entries, made as above, is drained by the forwarder, and the host holding the consumer's lease
//! runs `notifier.notify` in a fresh greeter instance for each, one at a time in lane order, with
//! up to 20,000 in flight, remembering the lane once per chunk and acknowledging each chunk once.
//! Timed from the forwarder's start to the consumer having acknowledged the last entry; compared
//! with part 1's median `raw` (the raw figure has no delivery in it: the ratio says how far the
//! whole path is from publishing alone).

#[path = "queue_drain/backlog.rs"]
mod backlog;
#[path = "queue_drain/deliver.rs"]
mod deliver;
#[path = "queue_drain/hub.rs"]
mod hub;
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
use lattice_protocol::jetstream::Storage;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::names::{HostId, LatticeName};
use lattice_protocol::queue::{
    LANE_COUNT_HEADER, LANE_FLOOR_HEADER, LANE_HEADER, LANE_SEQ_HEADER, LINK_HEADER, MSG_ID_HEADER,
    queue_stream,
};
use lattice_tests::cluster::{server_version, sync_always_supported};
use lattice_tests::queued::names::{all_queued, call_subject, lane_id};

use hub::{Hub, HubKind};
use machine::{cores, cpu_model, loadavg};

const DEFAULT_ENTRIES: usize = 1_000_000;
const DEFAULT_ROUNDS: usize = 2;
const DEFAULT_DELIVERED: usize = 20_000;
/// Outstanding acknowledgements of the raw publisher.
const RAW_WINDOW: usize = 4_000;
const APP: &str = "bench";

/// The command line.
#[derive(Debug, Clone, Copy)]
struct Options {
    entries: usize,
    rounds: usize,
    delivered: usize,
    cluster: bool,
    sync_cost: bool,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        const USAGE: &str =
            "usage: queue_drain [entries [rounds [delivered]]] [--cluster] [--sync-cost]";
        let (mut numbers, mut cluster, mut sync_cost) = (Vec::new(), false, false);
        for arg in args {
            match arg.as_str() {
                "--cluster" => cluster = true,
                "--sync-cost" => sync_cost = true,
                // `cargo bench` passes it to every bench.
                "--bench" => {}
                other if other.starts_with('-') => anyhow::bail!("unknown option {other}; {USAGE}"),
                other => numbers.push(
                    other
                        .parse::<usize>()
                        .with_context(|| format!("{other} is not a number; {USAGE}"))?,
                ),
            }
        }
        anyhow::ensure!(numbers.len() <= 3, "at most three numbers; {USAGE}");
        let number = |i: usize, default: usize| numbers.get(i).copied().unwrap_or(default);
        Ok(Self {
            entries: number(0, DEFAULT_ENTRIES).max(1),
            rounds: number(1, DEFAULT_ROUNDS).max(1),
            delivered: number(2, DEFAULT_DELIVERED),
            cluster,
            sync_cost,
        })
    }

    /// The hubs to measure, in order: one, or without and with `sync_interval: always`.
    fn hubs(self) -> Vec<HubKind> {
        if !self.sync_cost {
            // The cluster as `deploy/cluster.conf` ships it; one server as `-js` starts it.
            return vec![HubKind::new(self.cluster, self.cluster)];
        }
        if !sync_always_supported() {
            let version = server_version()
                .map_or_else(|e| format!("unknown ({e:#})"), |(a, b)| format!("{a}.{b}"));
            println!(
                "NOTE --sync-cost: this nats-server ({version}) refuses `sync_interval: always` (it needs 2.10 or later): \
                 measuring without it only. Run again with LATTICE_NATS_SERVER=<path of a current nats-server>."
            );
            return vec![HubKind::new(self.cluster, false)];
        }
        vec![
            HubKind::new(self.cluster, false),
            HubKind::new(self.cluster, true),
        ]
    }
}

/// One hub's figures.
struct Figures {
    kind: HubKind,
    part1: Part1,
    /// Forwarded and delivered, msg/s (part 2; `None`: not run).
    delivered: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    lattice_host::quiet_library_backtraces();
    let options = Options::parse(std::env::args().skip(1))?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut all = Vec::new();
            for kind in options.hubs() {
                let part1 = run(options.entries, options.rounds, kind).await?;
                let delivered = if options.delivered > 0 {
                    Some(deliver::deliver(options.delivered, part1.median_raw(), kind).await?)
                } else {
                    None
                };
                all.push(Figures {
                    kind,
                    part1,
                    delivered,
                });
            }
            if let [without, with] = all.as_slice() {
                print_sync_cost(without, with);
            }
            Ok(())
        })
}

/// The cost of `sync_interval: always`: medians with / without.
fn print_sync_cost(without: &Figures, with: &Figures) {
    println!();
    println!("sync_interval: always, its cost (medians of the rounds; with / without):");
    println!(
        "| msg/s | {} | {} | with / without |",
        without.kind.label(),
        with.kind.label()
    );
    println!("|---|---:|---:|---:|");
    let row = |name: &str, a: f64, b: f64| {
        println!("| {name} | {a:.0} | {b:.0} | **{:.2}x** |", b / a);
    };
    row("`raw`", without.part1.median_raw(), with.part1.median_raw());
    row(
        "`outbox` (forwarder)",
        without.part1.median_outbox(),
        with.part1.median_outbox(),
    );
    if let (Some(a), Some(b)) = (without.delivered, with.delivered) {
        row("forwarded and delivered", a, b);
    }
    println!(
        "RESULT queue_drain.sync_cost cluster={} raw_ratio={:.3} outbox_ratio={:.3}",
        with.kind.cluster,
        with.part1.median_raw() / without.part1.median_raw(),
        with.part1.median_outbox() / without.part1.median_outbox()
    );
}

/// A new, empty queue stream, made as the forwarder makes it (its limits and the hub's
/// replicas, so that the forwarder finds nothing to change).
async fn fresh_stream(
    js: &jetstream::Context,
    lattice: &LatticeName,
    storage: &Storage,
) -> anyhow::Result<()> {
    let _ = js.delete_stream(queue_stream(lattice)).await;
    let config = stream::Config {
        name: queue_stream(lattice),
        subjects: vec![all_queued(lattice)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.create_stream(storage.limit(config, storage.queue_max_bytes, Storage::QUEUE_MAX_AGE))
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

/// Part 1's rates per round.
struct Part1 {
    raw: Vec<f64>,
    outbox: Vec<f64>,
}

impl Part1 {
    fn median_raw(&self) -> f64 {
        median(&self.raw)
    }
    fn median_outbox(&self) -> f64 {
        median(&self.outbox)
    }
}

/// The median (the higher middle one of an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Part 1 on a fresh hub of `kind`.
async fn run(n: usize, rounds: usize, kind: HubKind) -> anyhow::Result<Part1> {
    println!(
        "queue_drain: a backlog of {n} queued calls, forwarded vs raw JetStream async publish"
    );
    println!("hub: {}", kind.describe());
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!("{rounds} rounds; load average at start: {}", loadavg());
    let hub = Hub::start(kind).await?;
    let client = hub.client().await?;
    let js = jetstream::new(client.clone());
    let lattice = LatticeName::new("bench")?;
    let link = LatticeLink {
        client,
        jetstream: js.clone(),
        lattice: lattice.clone(),
        host: HostId::new("bench-host")?,
        storage: kind.storage(),
        clock: Default::default(),
    };
    let work = tempfile::tempdir()?;
    let (mut raw_rates, mut outbox_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut this = [0.0f64; 2];
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for variant in order {
            fresh_stream(&js, &lattice, &link.storage).await?;
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
    println!("| Variant ({}) | msg/s per round |", kind.label());
    println!("|---|---:|");
    println!("| `raw` (baseline) | {} |", fmt(&raw_rates, ""));
    println!("| `outbox` (forwarder) | {} |", fmt(&outbox_rates, ""));
    println!(
        "| **outbox / raw** (target >= 0.5x) | {} |",
        fmt(&ratios, "x")
    );
    Ok(Part1 {
        raw: raw_rates,
        outbox: outbox_rates,
    })
}
