//! Key-value get/put through the `keyvalue-nats` provider in-process and as a separate process,
//! beside the same operations on NATS KV directly, all in one run.
//!
//! `cargo bench -p lattice-tests --bench kv_providers` (optional argument: operations per
//! variant per round, default 1,000). Needs the provider program built in release first:
//! `cargo build --release -p lattice-provider-keyvalue-nats` (the bench runs in the bench
//! profile, so it looks in `target/release/`). Prints figures and ratios; asserts nothing about
//! time. Every operation is on a 16-byte key and a 100-byte value, one at a time (a component's
//! calls are sequential). The provider process the host starts in part 2 logs at `info` on the
//! bench's stderr unless `RUST_LOG=warn` is set.
//!
//! **Part 1, provider level.** One nats-server (JetStream, random port, started by the bench)
//! and one NATS connection standing for the host's. Variants, per operation:
//!
//! - `raw-get`, `raw-put`: **the baseline.** `async_nats::jetstream::kv::Store::get` / `put` on a
//!   bucket made like the provider's (`lattice_protocol::jetstream::ensure_kv`, history 1).
//! - `inproc-get`, `inproc-put`: [`NatsKv`] through the [`Provider`] trait, as the host calls its
//!   built-in `builtin:keyvalue-nats`: `Provider::call(link, Call::KvGet / KvSet)` (link lookup,
//!   bucket check and lookup, then the same `Store` operation).
//! - `proc-get`, `proc-put`: the `lattice-provider-keyvalue-nats` **process** (started by the
//!   bench with the environment a host gives it) through a [`Remote`], as the host calls
//!   `provider:keyvalue-nats`: the request is MessagePack-encoded, sent to the process on its
//!   subject, decoded there, a task spawned, the same `NatsKv` call made on the process's own
//!   connection, and the reply sent back.
//! - `proc-open` (for information): `Call::KvOpen` through the process: the provider's answer
//!   needs no JetStream, so this is the process hop alone (the guest path below makes one per
//!   request, since kv-counter opens its bucket on every request).
//!
//! **Part 2, from a component** (the whole guest path). A `TestLattice` (nats-server, control
//! plane, one host, all in this process) runs the real `kv-counter` guest twice: app `inproc`
//! linked to `builtin:keyvalue-nats`, app `process` linked to `provider:keyvalue-nats` (the host
//! starts the provider program, found in `target/release/`), different buckets. The bench drives
//! each app's HTTP endpoint with sequential requests on one keep-alive connection: `GET
//! /_kv/<key>` (open + get) and `PUT /_kv/<key>` with a 100-byte body (open + set), and `GET
//! /_kv/x/y`, a route kv-counter answers 404 without touching key-value (the HTTP and instance
//! share). `raw-get` / `raw-put` run again here, on the lattice's NATS, as this part's baseline.
//!
//! In each of [`ROUNDS`] rounds the variants take turns in chunks of [`CHUNK`] operations, the
//! order rotating, so that a neighbour's load falls on all of them alike. Each operation is timed
//! alone; throughput is operations / the sum of their times (sequential, one in flight), i.e.
//! 1 / mean latency. Ratios are of throughputs, with the range of the per-round ratios.

#[allow(dead_code)] // only some of the helpers are used here
#[path = "control_scale/machine.rs"]
mod machine;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::kv;
use bytes::Bytes;
use lattice_protocol::names::{AppName, ComponentName, HostId, LatticeName};
use lattice_protocol::provider::{LinkDirection, LinkId, LinkInfo};
use lattice_protocol::subject::Subject;
use lattice_provider_keyvalue_nats::NatsKv;
use lattice_provider_sdk::{Call, CallKey, Provider, Remote, Reply};
use lattice_tests::{NatsServer, TestLattice, endpoint, kv_counter_manifest as manifest};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use machine::{cores, cpu_model, loadavg};

const DEFAULT_OPS: usize = 1000;
const ROUNDS: usize = 5;
/// Operations a variant makes before the next one takes its turn.
const CHUNK: usize = 50;
/// 16 bytes.
const KEY: &str = "bench-key-000001";
const VALUE_BYTES: usize = 100;
const PROGRAM: &str = "lattice-provider-keyvalue-nats";
const PROVIDER: &str = "keyvalue-nats";

fn main() -> anyhow::Result<()> {
    lattice_host::quiet_library_backtraces();
    let ops = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| {
            a.parse::<usize>()
                .context("the argument is the number of operations per variant per round")
        })
        .transpose()?
        .unwrap_or(DEFAULT_OPS)
        .max(10);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(ops))
}

async fn run(ops: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "kv_providers: key-value get/put, {}-byte key, {VALUE_BYTES}-byte value",
        KEY.len()
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!(
        "{ROUNDS} rounds x {ops} operations per variant, in chunks of {CHUNK}; load average at start: {}",
        loadavg()
    );
    let program = provider_program()?;
    println!("provider program: {}", program.display());

    let mut summary = Vec::new();
    summary.extend(provider_level(&program, ops).await?);
    summary.extend(guest_level(&program, ops).await?);

    println!();
    println!(
        "== Summary (bench took {:.0} s; load average at end: {}) ==",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    for line in &summary {
        println!("{line}");
    }
    Ok(())
}

/// `target/release/lattice-provider-keyvalue-nats`, beside this bench's `deps/` directory.
fn provider_program() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench runs from target/<profile>/deps")?;
    let program = dir.join(PROGRAM);
    anyhow::ensure!(
        program.is_file(),
        "{} is missing: build it first with `cargo build --release -p lattice-provider-keyvalue-nats` \
         (the bench runs in the bench profile, which puts binaries in target/release/)",
        program.display()
    );
    Ok(program)
}

fn value() -> Bytes {
    Bytes::from(vec![b'v'; VALUE_BYTES])
}

/// A bucket made as the provider makes its buckets.
async fn raw_store(client: &async_nats::Client, bucket: &str) -> anyhow::Result<kv::Store> {
    let store = lattice_protocol::jetstream::ensure_kv(
        &async_nats::jetstream::new(client.clone()),
        bucket,
        1,
        "kv_providers bench: raw NATS KV",
    )
    .await?;
    store.put(KEY, value()).await?;
    Ok(store)
}

async fn raw_get(store: &kv::Store, value: &Bytes) -> anyhow::Result<()> {
    let got = store.get(KEY).await?.context("raw get: the key is there")?;
    anyhow::ensure!(got == *value, "raw get: a different value");
    Ok(())
}

fn link_id(app: &str) -> anyhow::Result<LinkId> {
    Ok(LinkId {
        app: AppName::new(app)?,
        component: ComponentName::new("counter")?,
        name: "default".into(),
        package: "wasi:keyvalue".into(),
        direction: lattice_provider_sdk::LinkDirection::Import,
    })
}

fn link_info(id: &LinkId, bucket: &str) -> LinkInfo {
    LinkInfo {
        id: id.clone(),
        interfaces: vec!["store".into(), "atomics".into()],
        direction: LinkDirection::Import,
        source_config: BTreeMap::new(),
        target_config: BTreeMap::from([("bucket".to_string(), bucket.to_string())]),
    }
}

/// Opens the link's bucket (as the host does at the guest's `open`) and writes the key.
async fn open_bucket(provider: &dyn Provider, link: &LinkId) -> anyhow::Result<String> {
    let bucket = match provider
        .call(
            link,
            Call::KvOpen {
                identifier: "default".into(),
            },
        )
        .await?
    {
        Reply::Bucket(b) => b,
        other => anyhow::bail!("open answered {other:?}"),
    };
    provider_put(provider, link, &bucket).await?;
    Ok(bucket)
}

async fn provider_get(provider: &dyn Provider, link: &LinkId, bucket: &str) -> anyhow::Result<()> {
    let call = Call::KvGet {
        bucket: bucket.to_string(),
        key: KEY.to_string(),
    };
    match provider.call(link, call).await? {
        Reply::Value(Some(v)) if v.len() == VALUE_BYTES => Ok(()),
        other => anyhow::bail!("get answered {other:?}"),
    }
}

async fn provider_put(provider: &dyn Provider, link: &LinkId, bucket: &str) -> anyhow::Result<()> {
    let call = Call::KvSet {
        bucket: bucket.to_string(),
        key: KEY.to_string(),
        value: vec![b'v'; VALUE_BYTES],
    };
    match provider.call(link, call).await? {
        Reply::Unit => Ok(()),
        other => anyhow::bail!("set answered {other:?}"),
    }
}

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Part 1's variants.
#[derive(Debug, Clone, Copy)]
enum ProviderOp {
    RawGet,
    RawPut,
    InprocGet,
    InprocPut,
    ProcGet,
    ProcPut,
    ProcOpen,
}

struct ProviderBench {
    value: Bytes,
    raw: kv::Store,
    inproc: NatsKv,
    inproc_link: LinkId,
    inproc_bucket: String,
    remote: Remote,
    remote_link: LinkId,
    remote_bucket: String,
    _process: Child,
}

impl Target for ProviderBench {
    type Op = ProviderOp;

    async fn call(&mut self, op: ProviderOp) -> anyhow::Result<()> {
        match op {
            ProviderOp::RawGet => raw_get(&self.raw, &self.value).await,
            ProviderOp::RawPut => {
                self.raw.put(KEY, self.value.clone()).await?;
                Ok(())
            }
            ProviderOp::InprocGet => {
                provider_get(&self.inproc, &self.inproc_link, &self.inproc_bucket).await
            }
            ProviderOp::InprocPut => {
                provider_put(&self.inproc, &self.inproc_link, &self.inproc_bucket).await
            }
            ProviderOp::ProcGet => {
                provider_get(&self.remote, &self.remote_link, &self.remote_bucket).await
            }
            ProviderOp::ProcPut => {
                provider_put(&self.remote, &self.remote_link, &self.remote_bucket).await
            }
            ProviderOp::ProcOpen => {
                let call = Call::KvOpen {
                    identifier: "default".into(),
                };
                match self.remote.call(&self.remote_link, call).await? {
                    Reply::Bucket(b) if b == self.remote_bucket => Ok(()),
                    other => anyhow::bail!("open answered {other:?}"),
                }
            }
        }
    }
}

async fn provider_level(program: &Path, ops: usize) -> anyhow::Result<Vec<String>> {
    println!();
    println!("== Part 1: provider level (raw NATS KV, NatsKv in-process, the provider process) ==");
    let nats = NatsServer::start().await?;
    let client = nats.client().await?;
    let lattice = LatticeName::new("bench")?;
    let host = HostId::new("bench-host")?;

    let raw = raw_store(&client, "raw").await?;

    let inproc = NatsKv::new(
        async_nats::jetstream::new(client.clone()),
        Default::default(),
    );
    let inproc_link = link_id("inproc")?;
    inproc.link_put(link_info(&inproc_link, "inproc")).await?;
    let inproc_bucket = open_bucket(&inproc, &inproc_link).await?;

    // The process, started with the environment a host gives it.
    let mut process = Child(
        std::process::Command::new(program)
            .env("LATTICE_NATS_URL", &nats.url)
            .env("LATTICE_LATTICE", lattice.as_str())
            .env("LATTICE_HOST_ID", host.as_str())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?,
    );
    let subject = Subject::provider(&lattice, &host, &ComponentName::new(PROVIDER)?).to_string();
    // Its call key, as a host hands it over.
    let key = CallKey::generate();
    std::io::Write::write_all(
        process.0.stdin.as_mut().context("piped")?,
        key.to_line().as_bytes(),
    )?;
    let remote = Remote::new(
        PROVIDER,
        client.clone(),
        subject,
        Duration::from_secs(10),
        key,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while remote.ping().await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the provider process did not answer a ping within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let remote_link = link_id("process")?;
    remote.link_put(link_info(&remote_link, "process")).await?;
    let remote_bucket = open_bucket(&remote, &remote_link).await?;

    let mut bench = ProviderBench {
        value: value(),
        raw,
        inproc,
        inproc_link,
        inproc_bucket,
        remote,
        remote_link,
        remote_bucket,
        _process: process,
    };
    use ProviderOp::*;
    let variants = [
        ("raw-get", RawGet),
        ("raw-put", RawPut),
        ("inproc-get", InprocGet),
        ("inproc-put", InprocPut),
        ("proc-get", ProcGet),
        ("proc-put", ProcPut),
        ("proc-open", ProcOpen),
    ];
    let stats = measure(&mut bench, &variants, ops).await?;
    report(&stats, "provider");
    let mut out = vec!["provider level (per operation, sequential):".to_string()];
    for s in &stats {
        out.push(format!("  {:<11} {}", s.name, s.describe()));
    }
    for (a, b) in [
        ("inproc-get", "raw-get"),
        ("proc-get", "raw-get"),
        ("proc-get", "inproc-get"),
        ("inproc-put", "raw-put"),
        ("proc-put", "raw-put"),
        ("proc-put", "inproc-put"),
    ] {
        out.push(ratio_line(&stats, "provider", a, b));
    }
    Ok(out)
}

/// Part 2's variants.
#[derive(Debug, Clone, Copy)]
enum GuestOp {
    RawGet,
    RawPut,
    /// `GET /_kv/<key>` of app `inproc` (0) or `process` (1).
    Get(usize),
    Put(usize),
    /// `GET /_kv/x/y`: 404 without key-value.
    NoKv(usize),
}

struct GuestBench {
    value: Bytes,
    raw: kv::Store,
    apps: [Http; 2],
}

impl Target for GuestBench {
    type Op = GuestOp;

    async fn call(&mut self, op: GuestOp) -> anyhow::Result<()> {
        let path = format!("/_kv/{KEY}");
        match op {
            GuestOp::RawGet => raw_get(&self.raw, &self.value).await,
            GuestOp::RawPut => {
                self.raw.put(KEY, self.value.clone()).await?;
                Ok(())
            }
            GuestOp::Get(app) => {
                let (code, body) = self.apps[app].request("GET", &path, &[]).await?;
                anyhow::ensure!(
                    code == 200 && body == self.value,
                    "GET {path}: {code} {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(())
            }
            GuestOp::Put(app) => {
                let (code, body) = self.apps[app].request("PUT", &path, &self.value).await?;
                anyhow::ensure!(
                    code == 200,
                    "PUT {path}: {code} {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(())
            }
            GuestOp::NoKv(app) => {
                let (code, body) = self.apps[app].request("GET", "/_kv/x/y", &[]).await?;
                anyhow::ensure!(
                    code == 404 && body == b"no such route\n",
                    "GET /_kv/x/y: {code} {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(())
            }
        }
    }
}

async fn guest_level(program: &Path, ops: usize) -> anyhow::Result<Vec<String>> {
    println!();
    println!(
        "== Part 2: from a component (kv-counter over HTTP, one in-process host, raw NATS KV as baseline) =="
    );
    let t = TestLattice::start().await?;
    let mut config = t.host_config("bench");
    config.providers.dirs = program.parent().map(PathBuf::from).into_iter().collect();
    let _host = t.start_host(config).await?;
    t.wait_for("the host to report", || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == "bench"))
    })
    .await?;
    let wasm = std::fs::read(env!("LATTICE_KV_COUNTER_WASM"))
        .context("the build script built kv-counter")?;
    println!("kv-counter: {} bytes of wasm", wasm.len());
    let image = t.push(&t.sign(&wasm, "kv-counter", "0.1.0")).await?;
    let mut apps = Vec::new();
    for (app, provider) in [
        ("inproc", "builtin:keyvalue-nats"),
        ("process", "provider:keyvalue-nats"),
    ] {
        t.ctl
            .deploy(&manifest(app, &image, provider, &format!("guest-{app}")))
            .await?;
        let addr = endpoint(&t.wait_deployed(app).await?)?;
        println!("app {app} ({provider}) serves on {addr}");
        let mut http = Http::connect(&addr).await?;
        let (code, body) = http
            .request("PUT", &format!("/_kv/{KEY}"), &value())
            .await?;
        anyhow::ensure!(
            code == 200,
            "the first PUT to {app}: {code} {}",
            String::from_utf8_lossy(&body)
        );
        apps.push(http);
    }
    let raw = raw_store(&t.client, "guest-raw").await?;
    let mut bench = GuestBench {
        value: value(),
        raw,
        apps: apps.try_into().map_err(|_| anyhow::anyhow!("two apps"))?,
    };
    use GuestOp::*;
    let variants = [
        ("raw-get", RawGet),
        ("raw-put", RawPut),
        ("inproc-get", Get(0)),
        ("inproc-put", Put(0)),
        ("proc-get", Get(1)),
        ("proc-put", Put(1)),
        ("http-nokv", NoKv(0)),
    ];
    let stats = measure(&mut bench, &variants, ops).await?;
    report(&stats, "guest");
    let mut out =
        vec!["from a component (HTTP request to kv-counter, per request, sequential):".to_string()];
    for s in &stats {
        out.push(format!("  {:<11} {}", s.name, s.describe()));
    }
    for (a, b) in [
        ("inproc-get", "raw-get"),
        ("proc-get", "raw-get"),
        ("proc-get", "inproc-get"),
        ("inproc-put", "raw-put"),
        ("proc-put", "raw-put"),
        ("proc-put", "inproc-put"),
        ("http-nokv", "inproc-get"),
    ] {
        out.push(ratio_line(&stats, "guest", a, b));
    }
    Ok(out)
}

/// An HTTP/1.1 client on one keep-alive connection.
struct Http {
    addr: String,
    conn: BufReader<TcpStream>,
}

impl Http {
    async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            addr: addr.to_string(),
            conn: BufReader::new(stream),
        })
    }

    /// Sends one request and reads the whole response: status code and body.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if !body.is_empty() || method == "PUT" {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.conn.get_mut().write_all(&bytes).await?;

        let mut line = String::new();
        self.conn.read_line(&mut line).await?;
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("a status line, not {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            anyhow::ensure!(
                self.conn.read_line(&mut line).await? > 0,
                "the server closed the connection"
            );
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = Some(value.parse::<usize>()?),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        anyhow::ensure!(!close, "the server does not keep the connection alive");
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.conn.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim(), 16)
                    .with_context(|| format!("a chunk size, not {line:?}"))?;
                let start = out.len();
                out.resize(start + n + 2, 0);
                self.conn.read_exact(&mut out[start..]).await?;
                out.truncate(start + n);
                if n == 0 {
                    break;
                }
            }
        } else {
            out.resize(length.unwrap_or(0), 0);
            self.conn.read_exact(&mut out).await?;
        }
        Ok((code, out))
    }
}

/// What the measuring loop drives.
trait Target {
    type Op: Copy;
    async fn call(&mut self, op: Self::Op) -> anyhow::Result<()>;
}

/// One variant's figures.
struct Stats {
    name: &'static str,
    /// Every operation of every round.
    all: Vec<Duration>,
    /// Each round's operations per second.
    rounds: Vec<f64>,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        percentile(&self.all, p)
    }

    /// Operations per second, one at a time: operations / the sum of their times.
    fn ops_per_s(&self) -> f64 {
        throughput(&self.all)
    }

    fn describe(&self) -> String {
        format!(
            "{:>7.0} ops/s  p50 {:>9}  p90 {:>9}  p99 {:>9}",
            self.ops_per_s(),
            us(self.pct(0.5)),
            us(self.pct(0.9)),
            us(self.pct(0.99)),
        )
    }
}

fn throughput(times: &[Duration]) -> f64 {
    times.len() as f64 / times.iter().sum::<Duration>().as_secs_f64().max(1e-9)
}

fn percentile(times: &[Duration], p: f64) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// A warm-up of every variant, then [`ROUNDS`] rounds of `ops` operations of each, in chunks of
/// [`CHUNK`] with the order rotating.
async fn measure<T: Target>(
    target: &mut T,
    variants: &[(&'static str, T::Op)],
    ops: usize,
) -> anyhow::Result<Vec<Stats>> {
    for &(name, op) in variants {
        for _ in 0..(ops / 5).max(10) {
            target
                .call(op)
                .await
                .with_context(|| format!("warming up {name}"))?;
        }
    }
    let k = variants.len();
    let mut stats: Vec<Stats> = variants
        .iter()
        .map(|&(name, _)| Stats {
            name,
            all: Vec::new(),
            rounds: Vec::new(),
        })
        .collect();
    for round in 0..ROUNDS {
        let mut times = vec![Vec::with_capacity(ops); k];
        for chunk in 0..ops.div_ceil(CHUNK) {
            let n = CHUNK.min(ops - chunk * CHUNK);
            for j in 0..k {
                let i = (chunk + j) % k;
                let (name, op) = variants[i];
                for _ in 0..n {
                    let t = Instant::now();
                    target.call(op).await.with_context(|| name.to_string())?;
                    times[i].push(t.elapsed());
                }
            }
        }
        for (s, times) in stats.iter_mut().zip(times) {
            s.rounds.push(throughput(&times));
            s.all.extend(times);
        }
        let figures: Vec<String> = stats
            .iter()
            .map(|s| format!("{} {:.0}", s.name, s.rounds[round]))
            .collect();
        println!(
            "round {}: ops/s {}  (load average {})",
            round + 1,
            figures.join(", "),
            loadavg()
        );
    }
    Ok(stats)
}

fn report(stats: &[Stats], part: &str) {
    for s in stats {
        let (lo, hi) = s
            .rounds
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        println!(
            "RESULT kv_providers.{part}.{} ops={} ops_per_s={:.0} p50_us={:.1} p90_us={:.1} p99_us={:.1} round_ops_per_s_min={lo:.0} round_ops_per_s_max={hi:.0} loadavg=\"{}\"",
            s.name,
            s.all.len(),
            s.ops_per_s(),
            s.pct(0.5).as_secs_f64() * 1e6,
            s.pct(0.9).as_secs_f64() * 1e6,
            s.pct(0.99).as_secs_f64() * 1e6,
            loadavg()
        );
    }
}

/// Throughput of `a` / throughput of `b`, with its per-round range, and p50 latency of `a` / p50
/// latency of `b`: printed as a `RESULT` line; returns the summary line.
fn ratio_line(stats: &[Stats], part: &str, a: &str, b: &str) -> String {
    let find = |name: &str| stats.iter().find(|s| s.name == name).expect("a variant");
    let (a_s, b_s) = (find(a), find(b));
    let ratio = a_s.ops_per_s() / b_s.ops_per_s();
    let per_round: Vec<f64> = a_s
        .rounds
        .iter()
        .zip(&b_s.rounds)
        .map(|(x, y)| x / y)
        .collect();
    let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = per_round.iter().copied().fold(0.0, f64::max);
    let p50 = a_s.pct(0.5).as_secs_f64() / b_s.pct(0.5).as_secs_f64();
    println!(
        "RESULT kv_providers.{part}.{}_over_{} throughput_ratio={ratio:.3} round_min={lo:.3} round_max={hi:.3} p50_latency_ratio={p50:.3}",
        a.replace('-', "_"),
        b.replace('-', "_"),
    );
    format!("  {a} / {b}: throughput {ratio:.2} (per round {lo:.2}-{hi:.2}); p50 latency {p50:.2}x")
}
