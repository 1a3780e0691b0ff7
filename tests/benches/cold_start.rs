//! Host cold start offline: a real release `lattice-host` process, from spawn to the first HTTP
//! 200 of its component, served from its persisted state while NATS is unreachable.
//!
//! `cargo bench -p lattice-tests --bench cold_start` (optional arguments: offline starts to
//! measure, default 10; entries of a backlog left in the outbox, default 0). Needs `cargo build --release -p lattice-host` first (the bench runs in
//! the bench profile and starts `target/release/lattice-host`). Prints figures and `RESULT`
//! lines; asserts nothing about time. The target: ≤ 1 s.
//!
//! 1. **Populate** (online): a nats-server with JetStream and an in-process control plane
//!    ([`TestLattice`]); the `lattice-host` process joins, the hello component (signed, pushed)
//!    is deployed to it on a fixed port, and it answers 200. Its state directory now holds its
//!    key, the saved signed assignment, the artifact and the compiled code. The process is then
//!    SIGKILLed. With a backlog, its outbox is then filled with that many queued calls (one lane,
//!    ~250 bytes each), as an edge host's would be after a long outage: the host opens its
//!    outbox before it serves anything.
//! 2. **Offline starts**, N times: `lattice-host` is spawned with `--nats-url` pointing at a
//!    closed port (nothing listens; the host keeps retrying in the background) on the same state
//!    directory. The clock runs from just before `spawn` to the first `200` on the component's
//!    port: the bench tries a TCP connect every 2 ms (each attempt bounded to 50 ms) and, once
//!    the port accepts, sends `GET /`, retrying until a 200. The time the port first accepted
//!    is printed beside it. Each run's process is SIGKILLed and reaped before the next.
//! 3. **For information**: `lattice-host --version` spawned and reaped, N times: what starting
//!    the 180 MB binary costs before any host code runs.

#[path = "queue_drain/backlog.rs"]
mod backlog;
#[allow(dead_code)] // only some of the helpers are used here
#[path = "control_scale/machine.rs"]
mod machine;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lattice_protocol::messages::AppState;
use lattice_tests::free_port;
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};
use machine::{cores, cpu_model, loadavg};

const PROGRAM: &str = "lattice-host";

/// `target/release/lattice-host`, beside this bench's `deps/` directory.
fn host_program() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench runs from target/<profile>/deps")?;
    let program = dir.join(PROGRAM);
    anyhow::ensure!(
        program.is_file(),
        "{} is missing: build it first with `cargo build --release -p lattice-host` \
         (the bench runs in the bench profile, which puts binaries in target/release/)",
        program.display()
    );
    Ok(program)
}

/// A `lattice-host` process, SIGKILLed and reaped on drop.
struct HostProcess(Child);

impl HostProcess {
    fn spawn(
        t: &TestLattice,
        nats_url: &str,
        state_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)?;
        Ok(Self(
            Command::new(host_program()?)
                .args(["--nats-url", nats_url, "--lattice", t.lattice.as_str()])
                .args(["--name", "gateway", "--heartbeat-secs", "1"])
                .args(["--trust-issuer", t.issuer.public_key().as_str()])
                .args(["--trust-operator", t.operator.public_key().as_str()])
                .arg("--state-dir")
                .arg(state_dir)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        ))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns through `spawn`, then polls `addr` until it answers 200; returns (port open, 200).
async fn time_to_200(
    addr: &str,
    spawn: impl FnOnce() -> anyhow::Result<HostProcess>,
) -> anyhow::Result<(Duration, Duration, HostProcess)> {
    let start = Instant::now();
    let wall = std::time::SystemTime::now();
    let mut process = spawn()?;
    SPAWNED_AT.with(|w| w.set(Some(wall)));
    let mut open = None;
    let deadline = start + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            bail!("no HTTP 200 on {addr} within 60 s");
        }
        if let Some(status) = process.0.try_wait()? {
            bail!("lattice-host exited: {status}");
        }
        let connect = tokio::time::timeout(
            Duration::from_millis(50),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        if matches!(connect, Ok(Ok(_))) {
            let opened = *open.get_or_insert_with(|| start.elapsed());
            if let Ok((200, _)) = http_get(addr, "/").await {
                return Ok((opened, start.elapsed(), process));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

thread_local! {
    /// When the last process was spawned (wall clock, to compare with its log's timestamps).
    static SPAWNED_AT: std::cell::Cell<Option<std::time::SystemTime>> = const { std::cell::Cell::new(None) };
}

/// `HH:MM:SS.ffffff` (UTC) of `t`, as the host's log prints times.
fn time_of_day(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "RESULT cold_start.{name} runs={} min_ms={:.1} p50_ms={:.1} max_ms={:.1} mean_ms={:.1} loadavg=\"{}\"",
        v.len(),
        v[0],
        percentile(&v, 0.5),
        v[v.len() - 1],
        mean,
        loadavg()
    );
    format!(
        "{name:<28} min {:>7.1} ms  p50 {:>7.1} ms  max {:>7.1} ms  mean {:>7.1} ms",
        v[0],
        percentile(&v, 0.5),
        v[v.len() - 1],
        mean
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut numbers = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| {
            a.parse::<usize>()
                .context("arguments: runs [backlog entries]")
        });
    let runs = numbers.next().transpose()?.unwrap_or(10);
    let backlog = numbers.next().transpose()?.unwrap_or(0);
    let program = host_program()?;
    let size = std::fs::metadata(&program)?.len();
    println!(
        "machine: {} cores, {}; loadavg {}",
        cores(),
        cpu_model(),
        loadavg()
    );
    println!(
        "program: {} ({:.0} MB)",
        program.display(),
        size as f64 / 1e6
    );

    // 1. Populate the state directory online.
    let t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    let addr = format!("127.0.0.1:{}", free_port()?);
    {
        let _online =
            HostProcess::spawn(&t, &t.nats.url, &state_dir, &dir.path().join("online.log"))?;
        t.wait_for("the host process to report", || async {
            Ok(t.ctl.hosts().await?.iter().any(|h| h.name == "gateway"))
        })
        .await?;
        let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
        t.ctl
            .deploy(&hello_manifest(
                "hello",
                "v1",
                &image.to_string(),
                "Cold",
                &addr,
            ))
            .await?;
        let status = t
            .wait_status("hello", "hello deployed with its endpoint", |s| {
                s.status == AppState::Deployed && endpoint(s).is_ok()
            })
            .await?;
        anyhow::ensure!(endpoint(&status)? == addr, "served on {addr}");
        let (code, body) = http_get(&addr, "/").await?;
        anyhow::ensure!(code == 200, "online: {code} {body}");
        println!("populated {} online: {body:?}", state_dir.display());
    } // SIGKILL
    if backlog > 0 {
        let filling = Instant::now();
        // Where the host keeps its outbox (`HostConfig::state_dir`/outbox).
        backlog::fill(&state_dir.join("outbox"), &t.lattice, "backlog", backlog).await?;
        println!(
            "outbox filled with a backlog of {backlog} queued calls in {:.1?}",
            filling.elapsed()
        );
    }
    let mut state_bytes = 0;
    for entry in walk(&state_dir) {
        state_bytes += std::fs::metadata(&entry).map_or(0, |m| m.len());
    }
    println!("state directory: {:.1} MB", state_bytes as f64 / 1e6);

    // 2. Offline starts.
    let closed = format!("nats://127.0.0.1:{}", free_port()?);
    println!("offline: --nats-url {closed} (nothing listens there)");
    let (mut opens, mut firsts) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        anyhow::ensure!(
            tokio::net::TcpStream::connect(&addr).await.is_err(),
            "{addr} is closed before the run"
        );
        let log = dir.path().join(format!("offline-{run}.log"));
        let (open, first, process) =
            time_to_200(&addr, || HostProcess::spawn(&t, &closed, &state_dir, &log)).await?;
        drop(process); // SIGKILL, reaped
        println!(
            "run {run:>2}: port open after {:>7.1} ms, first 200 after {:>7.1} ms (loadavg {})",
            ms(open),
            ms(first),
            loadavg()
        );
        opens.push(ms(open));
        firsts.push(ms(first));
        if run == 1 {
            if let Some(at) = SPAWNED_AT.with(std::cell::Cell::get) {
                println!("  run 1 spawned at {} (UTC)", time_of_day(at));
            }
            println!("  log of run 1 (the host's own timestamps):");
            for line in std::fs::read_to_string(&log)?.lines().take(12) {
                println!("    {line}");
            }
        }
    }

    // 3. The binary alone.
    let mut versions = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let status = Command::new(&program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "--version: {status}");
        versions.push(ms(start.elapsed()));
    }

    println!();
    println!("{}", summary("offline_first_200", &firsts));
    println!("{}", summary("offline_port_open", &opens));
    println!("{}", summary("version_spawn_exit", &versions));
    let p50 = {
        let mut v = firsts.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    let max = firsts.iter().copied().fold(0.0, f64::max);
    println!(
        "target ≤ 1000 ms: p50 {p50:.1} ms, max {max:.1} ms: {}",
        if max <= 1000.0 {
            "met on every run"
        } else if p50 <= 1000.0 {
            "met at p50, missed on some runs"
        } else {
            "missed"
        }
    );
    Ok(())
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
