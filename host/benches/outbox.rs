//! The durable outbox (`lattice_host::queue::outbox`): appends acknowledged only after fsync, batched
//! by group commit, beside the same store doing one fsync per message, on the same disk in the
//! same run.
//!
//! `cargo bench -p lattice-host --bench outbox` (optional arguments: seconds per variant per
//! round, default 3; rounds, default 3). Prints figures and ratios and `RESULT` lines; asserts
//! nothing about time. The databases live in `target/outbox-bench/` (the workspace's disk, not
//! `/tmp`, which may be a tmpfs); the bench prints `df -T` for it, since what an fsync costs is
//! the disk's business.
//!
//! Every append is an [`OutboxEntry`] with a 256-byte payload and a 24-byte stream key, and is
//! timed from the call to its acknowledgement (the committed, fsync'd batch answering it).
//! Variants, each on a fresh database file, for a fixed time:
//!
//! - `group-256`: **the outbox as built.** 256 tokio tasks (2 worker threads) each appending in a
//!   loop, awaiting each append: the writer thread commits whatever has queued while it was
//!   committing the previous batch.
//! - `group-16` (information): the same with 16 tasks.
//! - `single`: **the baseline: one fsync per message.** The same outbox with
//!   `max_batch = 1` (one write transaction, one commit, per append), one appender awaiting each
//!   append in turn.
//! - `raw-single` (information): the same redb, without the outbox: one appender, one write
//!   transaction per insert (`Durability::Immediate`), on the bench's thread: what the outbox's
//!   thread and channel add to `single`.
//!
//! The variants take turns within each round, their order rotating. The ratio is of appends/s,
//! `group-256` over `single`, per round and over all rounds.

#[path = "../../tests/benches/control_scale/machine.rs"]
#[allow(dead_code)]
mod machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_host::queue::outbox::{Outbox, OutboxConfig, OutboxEntry};
use redb::{Database, TableDefinition};

const PAYLOAD: usize = 256;
const KEY: &str = "app/source-comp -> target";

#[derive(Default)]
struct Stats {
    name: &'static str,
    /// Per round: (appends, seconds, commits).
    rounds: Vec<(u64, f64, u64)>,
    lat_us: Vec<f64>,
}

impl Stats {
    fn rate(&self) -> f64 {
        let (n, s) = self
            .rounds
            .iter()
            .fold((0u64, 0f64), |(n, s), r| (n + r.0, s + r.1));
        n as f64 / s
    }
    fn round_rate(&self, i: usize) -> f64 {
        self.rounds[i].0 as f64 / self.rounds[i].1
    }
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.lat_us.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    }
}

fn entry() -> OutboxEntry {
    OutboxEntry::new(KEY, vec![0x5a; PAYLOAD], Duration::from_secs(3600))
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.redb"));
    let _ = std::fs::remove_file(&path);
    path
}

fn config(max_batch: usize) -> OutboxConfig {
    OutboxConfig {
        capacity_entries: u64::MAX,
        capacity_bytes: u64::MAX,
        max_batch,
        ..OutboxConfig::default()
    }
}

/// `tasks` appenders through the outbox for `secs`: (appends, seconds, commits, latencies).
async fn run_outbox(
    path: &Path,
    tasks: usize,
    max_batch: usize,
    secs: f64,
) -> (u64, f64, u64, Vec<f64>) {
    let outbox = Outbox::open(path, config(max_batch)).expect("open");
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < end {
                    let e = entry();
                    let t = Instant::now();
                    outbox.append(e).await.expect("append");
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = outbox.stats();
    assert_eq!(stats.appended_total, lat.len() as u64);
    (lat.len() as u64, elapsed, stats.commits, lat)
}

/// One write transaction per insert on redb directly, for `secs`.
fn run_raw(path: &Path, secs: f64) -> (u64, f64, u64, Vec<f64>) {
    const T: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raw");
    let db = Database::create(path).expect("create");
    let start = Instant::now();
    let mut lat = Vec::new();
    let mut seq = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let e = entry();
        let t = Instant::now();
        let mut bytes = Vec::with_capacity(PAYLOAD + 64);
        bytes.extend_from_slice(e.id.as_bytes());
        bytes.extend_from_slice(KEY.as_bytes());
        bytes.extend_from_slice(&e.payload);
        let tx = db.begin_write().expect("begin");
        {
            let mut table = tx.open_table(T).expect("table");
            table.insert(seq, bytes.as_slice()).expect("insert");
        }
        tx.commit().expect("commit");
        seq += 1;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    (seq, start.elapsed().as_secs_f64(), seq, lat)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let secs: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/outbox-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let dir = dir.canonicalize().expect("canonical");
    let df = std::process::Command::new("df")
        .arg("-T")
        .arg(&dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("df failed: {e}"));
    println!(
        "outbox bench: {secs} s per variant per round, {rounds} rounds, in {}",
        dir.display()
    );
    println!("{}", df.trim_end());

    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime"),
    );
    let names = ["group-256", "group-16", "single", "raw-single"];
    let mut stats: Vec<Stats> = names
        .iter()
        .map(|&name| Stats {
            name,
            ..Stats::default()
        })
        .collect();
    for round in 0..rounds {
        println!("round {} (load {})", round + 1, machine::loadavg());
        for k in 0..names.len() {
            let i = (k + round) % names.len();
            let path = fresh(&dir, names[i]);
            let (n, s, commits, lat) = match names[i] {
                "group-256" => rt.block_on(run_outbox(&path, 256, 4096, secs)),
                "group-16" => rt.block_on(run_outbox(&path, 16, 4096, secs)),
                "single" => rt.block_on(run_outbox(&path, 1, 1, secs)),
                _ => run_raw(&path, secs),
            };
            let _ = std::fs::remove_file(&path);
            let st = &mut stats[i];
            st.rounds.push((n, s, commits));
            let mut sorted = lat.clone();
            sorted.sort_by(f64::total_cmp);
            let p = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
            println!(
                "  {:<11} {:>9.0} appends/s  {:>7} appends  {:>6} commits ({:>6.1} per commit)  p50 {:>9.1} µs  p99 {:>9.1} µs",
                names[i],
                n as f64 / s,
                n,
                commits,
                n as f64 / commits.max(1) as f64,
                p(0.5),
                p(0.99)
            );
            st.lat_us.extend(lat);
        }
    }

    println!("\nall rounds:");
    for s in &stats {
        let (n, commits) = s
            .rounds
            .iter()
            .fold((0u64, 0u64), |(n, c), r| (n + r.0, c + r.2));
        let rates: Vec<f64> = (0..s.rounds.len()).map(|i| s.round_rate(i)).collect();
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        println!(
            "  {:<11} {:>9.0} appends/s (rounds {lo:.0}–{hi:.0})  {:>6.1} appends per commit  p50 {:>9.1} µs  p90 {:>9.1} µs  p99 {:>9.1} µs",
            s.name,
            s.rate(),
            n as f64 / commits.max(1) as f64,
            s.pct(0.5),
            s.pct(0.9),
            s.pct(0.99)
        );
        println!(
            "RESULT outbox.{} appends={n} appends_per_s={:.0} round_min={lo:.0} round_max={hi:.0} commits={commits} appends_per_commit={:.1} p50_us={:.1} p90_us={:.1} p99_us={:.1}",
            s.name.replace('-', "_"),
            s.rate(),
            n as f64 / commits.max(1) as f64,
            s.pct(0.5),
            s.pct(0.9),
            s.pct(0.99)
        );
    }
    let ratio = |a: usize, b: usize| {
        let per: Vec<f64> = (0..rounds)
            .map(|i| stats[a].round_rate(i) / stats[b].round_rate(i))
            .collect();
        let lo = per.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per.iter().copied().fold(0.0, f64::max);
        (stats[a].rate() / stats[b].rate(), lo, hi)
    };
    let (r, lo, hi) = ratio(0, 2);
    println!(
        "\ngroup-256 / single (one fsync per message): {r:.1}x appends/s (rounds {lo:.1}–{hi:.1}); target >= 50x: {}",
        if r >= 50.0 { "met" } else { "missed" }
    );
    println!(
        "RESULT outbox.group_256_over_single ratio={r:.2} round_min={lo:.2} round_max={hi:.2}"
    );
    let (r16, lo16, hi16) = ratio(1, 2);
    println!("group-16 / single: {r16:.1}x (rounds {lo16:.1}–{hi16:.1})");
    println!(
        "RESULT outbox.group_16_over_single ratio={r16:.2} round_min={lo16:.2} round_max={hi16:.2}"
    );
    let (rr, lor, hir) = ratio(2, 3);
    println!(
        "single / raw-single (the outbox's thread and channel): {rr:.2}x (rounds {lor:.2}–{hir:.2})"
    );
    println!(
        "RESULT outbox.single_over_raw_single ratio={rr:.3} round_min={lor:.3} round_max={hir:.3}"
    );
}
