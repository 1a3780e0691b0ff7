//! Time from a host receiving an assignment to the first HTTP 200 of the component it assigns:
//! with the component's compiled code already cached on the host, and on a host that never saw
//! the component, compiling it or loading code precompiled for it (`lattice compile`).
//!
//! `cargo bench -p lattice-tests --bench assign_to_first_200` (or `make bench`). Prints figures;
//! asserts nothing about time. Optional argument: the number of rounds (default 20).
//!
//! One in-process lattice (real nats-server, control plane and one host, see `lattice_tests`):
//!
//! 1. warm-up: hello is deployed once on `127.0.0.1:0` (the host compiles it and caches the
//!    compiled code on disk); its endpoint gives the fixed address used from then on;
//! 2. every round: undeploy, wait until the port refuses connections; deploy a new version on
//!    the fixed address; **t0** is when this process sees the host's key in the assignments KV
//!    bucket change to an assignment that carries that version (a watch on the same stream the
//!    host watches, on loopback: the host is told at the same moment, give or take the NATS
//!    fan-out); **t1** is when a client that starts connecting at t0 first gets a 200.
//!
//! The rounds run in four cases: artifact and compiled code cached (the figure with a target);
//! compiled code removed (the host compiles); both removed (the host fetches, verifies and
//! compiles: a host that never saw the component); both removed with code for this machine's
//! target precompiled and signed in the object store (the host fetches and verifies both and
//! loads the code). Each case also prints deploy request -> first 200.
//!
//! The control plane's reaction (from the deploy request to the assignment write) is excluded
//! by design, and printed separately for information. The host-side steps are taken from the
//! host's own `tracing` events (`applying assignment`, `component loaded`, `running`), recorded
//! by a small layer in this process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use lattice_control::registry::Registry;
use lattice_protocol::assignment::SignedAssignment;
use lattice_protocol::digest::Digest;
use lattice_protocol::envelope;
use lattice_protocol::names::AppName;
use lattice_protocol::subject::Buckets;
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

const APP: &str = "hello";
const DEFAULT_ROUNDS: usize = 20;
/// Longest any one wait may take; the benchmark fails (it does not measure) past it.
const WAIT: Duration = Duration::from_secs(60);
/// How long the client sleeps between connection attempts while the port is not open yet.
const CLIENT_RETRY: Duration = Duration::from_micros(50);

/// The host's log messages that mark its steps, in order.
const MARKS: [&str; 3] = ["applying assignment", "component loaded", "running"];

type Marks = Arc<Mutex<Vec<(Instant, &'static str)>>>;

/// Records when the host logs one of [`MARKS`].
struct MarkLayer(Marks);

struct MessageVisitor(Option<String>);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MarkLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let now = Instant::now();
        let mut visitor = MessageVisitor(None);
        event.record(&mut visitor);
        if let Some(message) = visitor.0
            && let Some(mark) = MARKS.iter().find(|m| **m == message)
        {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((now, mark));
        }
    }
}

fn main() -> anyhow::Result<()> {
    // Same as the lattice binaries: no library backtrace captured on every dropped Store.
    lattice_host::quiet_library_backtraces();
    let rounds = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| {
            a.parse::<usize>()
                .context("the argument is the number of rounds")
        })
        .transpose()?
        .unwrap_or(DEFAULT_ROUNDS)
        .max(1);
    let marks: Marks = Arc::default();
    tracing_subscriber::registry()
        .with(MarkLayer(marks.clone()).with_filter(LevelFilter::INFO))
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(rounds, marks))
}

/// One round's figures.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Deploy request sent -> assignment seen (the control plane's part; excluded).
    control: Duration,
    /// Assignment seen -> first 200 (the figure).
    total: Duration,
    /// Assignment seen -> host logs `applying assignment` (watch delivery, verify, save).
    accept: Option<Duration>,
    /// `applying assignment` -> `component loaded` (artifact, claims, compiled code from disk).
    load: Option<Duration>,
    /// `component loaded` -> `running` (link, pre-instantiate, bind).
    bind: Option<Duration>,
    /// `running` -> first 200 as the client sees it.
    first_request: Option<Duration>,
}

/// What the host has on disk when it receives the assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// Artifact and compiled code cached (the figure with a target).
    Cached,
    /// Artifact cached, compiled code removed: the host compiles.
    Compile,
    /// Both removed: the host fetches from the object store, verifies and compiles.
    Nothing,
    /// Both removed, code precompiled for this host's target in the object store (`lattice
    /// compile`): the host fetches the component and the code, verifies both, loads the code.
    Precompiled,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Cached => "artifact and compiled code cached",
            Case::Compile => "artifact cached, compile needed",
            Case::Nothing => "nothing cached (fetch + verify + compile)",
            Case::Precompiled => "nothing cached, precompiled code in the lattice",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Case::Cached => "cached",
            Case::Compile => "compile",
            Case::Nothing => "nothing_cached",
            Case::Precompiled => "precompiled",
        }
    }
}

async fn run(rounds: usize, marks: Marks) -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let host = t.add_host("bench").await?;
    let host_id = t
        .ctl
        .hosts()
        .await?
        .into_iter()
        .next()
        .context("one host")?
        .id;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let app = AppName::new(APP)?;

    // Warm-up: the first deploy compiles the component and caches its compiled code.
    let started = Instant::now();
    t.ctl
        .deploy(&hello_manifest(
            APP,
            "v0",
            &image.to_string(),
            "Hi",
            "127.0.0.1:0",
        ))
        .await?;
    let status = t.wait_deployed(APP).await?;
    let addr = endpoint(&status)?;
    let (code, _) = http_get(&addr, "/").await?;
    anyhow::ensure!(code == 200, "warm-up GET answered {code}");
    println!(
        "warm-up (compile + cache): deploy request -> deployed status -> 200 in {:.1} ms, on {addr}",
        ms(started.elapsed())
    );
    let sockaddr: SocketAddr = addr.parse()?;

    let js = async_nats::jetstream::new(t.client.clone());
    let kv = js
        .get_key_value(Buckets::new(&t.lattice).assignments())
        .await?;
    let mut watch = kv.watch(host_id.as_str()).await?;

    let uncached_rounds = (rounds / 4).max(3);
    let plan = [
        (Case::Cached, rounds),
        (Case::Compile, uncached_rounds),
        (Case::Nothing, uncached_rounds),
        (Case::Precompiled, uncached_rounds),
    ];
    let mut version = 0;
    let mut all = Vec::new();
    for (case, n) in plan {
        println!();
        println!("case: {} ({n} rounds)", case.label());
        let mut results = Vec::with_capacity(n);
        for round in 1..=n {
            // Stop the app and wait until the port is really closed.
            t.ctl.undeploy(&app).await?;
            wait_closed(sockaddr).await?;
            if case != Case::Cached {
                clear_dir(&host.state_dir.join("compiled"))?;
            }
            if matches!(case, Case::Nothing | Case::Precompiled) {
                clear_dir(&host.state_dir.join("artifacts"))?;
            }
            if case == Case::Precompiled && round == 1 {
                store_precompiled(&t, &image).await?;
            }
            marks.lock().unwrap_or_else(|p| p.into_inner()).clear();

            version += 1;
            let version = format!("v{version}");
            let manifest = hello_manifest(APP, &version, &image.to_string(), "Hi", &addr);
            let requested = Instant::now();
            t.ctl.deploy(&manifest).await?;
            let t0 = tokio::time::timeout(WAIT, async {
                while let Some(entry) = watch.next().await {
                    let entry = entry?;
                    let seen = Instant::now();
                    if entry.operation != async_nats::jetstream::kv::Operation::Put {
                        continue;
                    }
                    let signed: SignedAssignment = envelope::decode(&entry.value)?;
                    let assignment = signed.decode_unverified()?;
                    if assignment
                        .workloads
                        .iter()
                        .any(|w| w.app == app && w.app_version == version)
                    {
                        return Ok(seen);
                    }
                }
                anyhow::bail!("the assignment watch ended")
            })
            .await
            .context("no assignment with the new version")??;
            let t1 = tokio::task::spawn_blocking(move || first_200(sockaddr))
                .await
                .context("client task")??;

            let marks = marks.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let at = |name: &str| marks.iter().find(|(_, m)| *m == name).map(|(i, _)| *i);
            let (apply, loaded, running) = (at(MARKS[0]), at(MARKS[1]), at(MARKS[2]));
            let r = Round {
                control: t0 - requested,
                total: t1 - t0,
                accept: apply.map(|a| a.saturating_duration_since(t0)),
                load: apply
                    .zip(loaded)
                    .map(|(a, b)| b.saturating_duration_since(a)),
                bind: loaded
                    .zip(running)
                    .map(|(a, b)| b.saturating_duration_since(a)),
                first_request: running.map(|r| t1.saturating_duration_since(r)),
            };
            println!(
                "  round {round:>3}: assignment -> first 200 {:>8.2} ms   (control plane before t0: {:.1} ms)",
                ms(r.total),
                ms(r.control)
            );
            results.push(r);
        }
        all.push((case, results));
    }

    for (case, results) in &all {
        println!();
        println!(
            "assignment -> first 200, {}, {} rounds (ms; t0 = the host's assignment key changed):",
            case.label(),
            results.len()
        );
        println!(
            "  {:<46} {:>8} {:>8} {:>8} {:>8}",
            "", "min", "p50", "p90", "max"
        );
        let row = |label: &str, values: Vec<Duration>| {
            if values.is_empty() {
                println!("  {label:<46} (not observed)");
                return;
            }
            let s = summary(values);
            println!(
                "  {label:<46} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                ms(s[0]),
                ms(s[1]),
                ms(s[2]),
                ms(s[3])
            );
        };
        row(
            "TOTAL assignment -> first 200",
            results.iter().map(|r| r.total).collect(),
        );
        row(
            "  host: accept (watch, verify, save to disk)",
            results.iter().filter_map(|r| r.accept).collect(),
        );
        row(
            "  host: load (artifact, claims, code)",
            results.iter().filter_map(|r| r.load).collect(),
        );
        row(
            "  host: link + bind",
            results.iter().filter_map(|r| r.bind).collect(),
        );
        row(
            "  running -> client's first 200",
            results.iter().filter_map(|r| r.first_request).collect(),
        );
        row(
            "(excluded) deploy request -> assignment",
            results.iter().map(|r| r.control).collect(),
        );
        row(
            "deploy request -> first 200",
            results.iter().map(|r| r.control + r.total).collect(),
        );
    }
    println!();
    for (case, results) in &all {
        let s = summary(results.iter().map(|r| r.total).collect());
        println!(
            "RESULT assign_to_first_200.{} rounds={} min_ms={:.2} p50_ms={:.2} p90_ms={:.2} max_ms={:.2}",
            case.key(),
            results.len(),
            ms(s[0]),
            ms(s[1]),
            ms(s[2]),
            ms(s[3])
        );
    }
    Ok(())
}

/// Stores `image`'s code compiled for this machine's target, signed by the lattice's issuer, as
/// `lattice compile --target host` does.
async fn store_precompiled(t: &TestLattice, image: &Digest) -> anyhow::Result<()> {
    use lattice_host::compile::target::{host_triple, precompile};
    use lattice_protocol::code::{self, CodeClaim, Precompiled};
    let registry =
        Registry::open(&async_nats::jetstream::new(t.client.clone()), &t.lattice).await?;
    let bytes = registry.get(image).await?;
    let made = precompile(&bytes, &host_triple(), 64 << 20, false)?;
    let claim = CodeClaim::new(image, &made.target, &made.fingerprint, &made.code);
    let object = Precompiled::sign(claim, made.code, &t.issuer).encode();
    registry
        .put_code(&code::object_name(image, &made.fingerprint), &object)
        .await?;
    Ok(())
}

/// Removes every file in `dir`.
fn clear_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Waits until `addr` refuses connections.
async fn wait_closed(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{addr} is still open after undeploy"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Connects and GETs `/` until the answer is a 200; returns when it came.
fn first_200(addr: SocketAddr) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(code) = get_status(addr)
            && code == 200
        {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no 200 from {addr} within {WAIT:?}"
        );
        std::thread::sleep(CLIENT_RETRY);
    }
}

/// One blocking `GET /`; the status code.
fn get_status(addr: SocketAddr) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let head = String::from_utf8_lossy(&raw);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")
}

/// min, p50, p90, max (nearest rank).
fn summary(mut values: Vec<Duration>) -> [Duration; 4] {
    values.sort();
    let rank = |p: f64| {
        let i = ((p / 100.0) * values.len() as f64).ceil() as usize;
        values[i.clamp(1, values.len()) - 1]
    };
    [values[0], rank(50.0), rank(90.0), values[values.len() - 1]]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
