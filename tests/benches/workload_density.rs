//! Workloads on one host: what each costs a real `lattice-host` process in memory, how long a
//! deploy of many takes to serve, and how fast each answers its first request.
//!
//! `cargo bench -p lattice-tests --bench workload_density -- [N]` (default N = 1,000). Needs the
//! host built in the same profile first: `cargo build --release -p lattice-host` for the figures
//! (the bench profile starts `target/release/lattice-host`); for a quick look at where memory
//! goes, `cargo build -p lattice-host` and `cargo bench --profile dev -p lattice-tests --bench
//! workload_density -- 100` start `target/debug/lattice-host`. Prints figures and `RESULT`
//! lines; asserts only that every workload answered, with its own greeting, never a time.
//!
//! 1. A real nats-server, the control plane in-process ([`TestLattice`]) and ONE `lattice-host`
//!    process (compiling in its child, trimming its heap every 2 s, as in production), started
//!    under a soft limit of 1,024 open files (`prlimit`), as systemd starts a service.
//! 2. **Idle**: the host joined, nothing deployed.
//! 3. **One workload**: app `one`, a hello component on `127.0.0.1:0`, deployed and answering:
//!    what the first workload costs is mostly the compiled code, shared by all that follow.
//! 4. **N more**: app `many`, N hello components (the same signed artifact), each on its own
//!    `127.0.0.1:0`, deployed in one request. Each address is requested once as soon as the
//!    app's status reports it (read every 100 ms, so deploy → serving includes up to that and a
//!    heartbeat). Measured: deploy → all N answered 200, and each one's first-request latency.
//!
//! Memory is read 3 s after the last answer of each step (the host gives freed heap back every
//! 2 s): `/proc/<pid>/status` (VmRSS, RssAnon, RssFile) and `smaps_rollup` (Pss, Private).
//! **Per workload** = (reading with N + 1 workloads − reading with 1) / N. With
//! `LATTICE_DENSITY_SMAPS=<dir>` the host's `/proc/<pid>/smaps` after each step is copied there.

#[allow(dead_code)] // only some of the helpers are used here
#[path = "control_scale/machine.rs"]
mod machine;
#[path = "workload_density/memory.rs"]
mod memory;
#[path = "workload_density/serving.rs"]
mod serving;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lattice_tests::{TestLattice, hello_wasm};
use machine::{cores, cpu_model, loadavg, proc_cpu};
use memory::Memory;
use serving::{FirstRequest, first_requests, manifest};

const PROGRAM: &str = "lattice-host";
const HOST_NAME: &str = "dense";

/// How long a step's memory is left to settle: past one of the host's 2 s heap trims.
const SETTLE: Duration = Duration::from_secs(3);

/// The soft limit of open files the host is started with (`prlimit` execs it, same process).
const SOFT_OPEN_FILES: u32 = 1024;

/// `program` on the `PATH`, if there.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `lattice-host` of the profile this bench was built in, beside its `deps/` directory.
fn host_program() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench runs from target/<profile>/deps")?;
    let program = dir.join(PROGRAM);
    anyhow::ensure!(
        program.is_file(),
        "{} is missing: build it first in the bench's profile (`cargo build --release -p \
         lattice-host` for `cargo bench`; `cargo build -p lattice-host` for `cargo bench \
         --profile dev`)",
        program.display()
    );
    Ok(program)
}

/// The `lattice-host` process, SIGKILLed and reaped on drop.
struct HostProcess(Child);

impl HostProcess {
    fn spawn(t: &TestLattice, state_dir: &Path, log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)?;
        // Under the soft limit of open files most services get (systemd's default), which a
        // thousand listening sockets would pass if the host did not raise it.
        let mut command = match which("prlimit") {
            Some(prlimit) => {
                let mut c = Command::new(prlimit);
                c.arg(format!("--nofile={SOFT_OPEN_FILES}:"))
                    .arg(host_program()?);
                c
            }
            None => {
                println!("no prlimit: the host starts with this bench's limit of open files");
                Command::new(host_program()?)
            }
        };
        Ok(Self(
            command
                .args(["--nats-url", &t.nats.url, "--lattice", t.lattice.as_str()])
                .args(["--name", HOST_NAME, "--heartbeat-secs", "1"])
                .args(["--trust-issuer", t.issuer.public_key().as_str()])
                .args(["--trust-operator", t.operator.public_key().as_str()])
                .arg("--state-dir")
                .arg(state_dir)
                .env("LATTICE_JOIN_TOKEN", t.join_token())
                .env("RUST_LOG", "warn")
                .env("RUST_LIB_BACKTRACE", "0")
                .env_remove("RUST_BACKTRACE")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        ))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A step's figures: memory after it, and its deploy's first requests.
struct Step {
    name: String,
    memory: Memory,
    firsts: Vec<FirstRequest>,
    cpu: Duration,
}

/// Deploys `n` hello components as `app`, waits until each answered, lets memory settle.
async fn step(
    t: &TestLattice,
    host: &HostProcess,
    image: &str,
    app: &str,
    n: usize,
) -> anyhow::Result<Step> {
    let cpu_before = proc_cpu(host.pid())?;
    let deployed = Instant::now();
    t.ctl.deploy(&manifest(app, image, n)).await?;
    let within = Duration::from_secs(120).max(Duration::from_millis(600) * n as u32);
    let firsts = first_requests(t, app, n, deployed, within).await?;
    let cpu = proc_cpu(host.pid())? - cpu_before;
    tokio::time::sleep(SETTLE).await;
    keep_smaps(host.pid(), app)?;
    Ok(Step {
        name: format!("+{n} ({app})"),
        memory: Memory::of(host.pid())?,
        firsts: firsts.into_values().collect(),
        cpu,
    })
}

/// With `LATTICE_DENSITY_SMAPS=<dir>`, copies the host's `/proc/<pid>/smaps` there after each
/// step (`<step>.smaps`), to see which mappings grew.
fn keep_smaps(pid: u32, step: &str) -> anyhow::Result<()> {
    let Some(dir) = std::env::var_os("LATTICE_DENSITY_SMAPS") else {
        return Ok(());
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(
        format!("/proc/{pid}/smaps"),
        dir.join(format!("{step}.smaps")),
    )
    .with_context(|| format!("copying /proc/{pid}/smaps to {}", dir.display()))?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The value at fraction `p` of `sorted`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn print_step(step: &Step) {
    let mut latency: Vec<f64> = step.firsts.iter().map(|f| ms(f.latency)).collect();
    let mut served: Vec<f64> = step.firsts.iter().map(|f| ms(f.since_deploy)).collect();
    latency.sort_by(f64::total_cmp);
    served.sort_by(f64::total_cmp);
    let n = latency.len();
    println!(
        "{}: deploy -> first answered {:.0} ms, all {n} answered {:.0} ms; host CPU {:.0} ms",
        step.name,
        served[0],
        served[n - 1],
        ms(step.cpu)
    );
    println!(
        "  first-request latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        latency[n - 1]
    );
    println!(
        "RESULT workload_density.{} workloads={n} deploy_to_all_ms={:.0} first_p50_ms={:.1} \
         first_p99_ms={:.1} first_max_ms={:.1} host_cpu_ms={:.0} loadavg=\"{}\"",
        step.name.trim_start_matches('+').replace(' ', ""),
        served[n - 1],
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        latency[n - 1],
        ms(step.cpu),
        loadavg()
    );
}

/// The memory table: idle, one workload, N + 1 workloads, and per workload beyond the first.
fn print_memory(idle: Memory, one: Memory, many: Memory, n: usize) {
    println!();
    println!(
        "{:<16} {:>10} {:>10} {:>12} {:>14}",
        "",
        "idle",
        "1 workload",
        format!("{} workloads", n + 1),
        "per workload"
    );
    for (name, values) in Memory::rows(&[idle, one, many]) {
        let per = (values[2] as f64 - values[1] as f64) / n as f64;
        println!(
            "{name:<16} {:>10} {:>10} {:>12} {:>14.1}",
            values[0], values[1], values[2], per
        );
    }
    let per = |f: fn(&Memory) -> u64| (f(&many) as f64 - f(&one) as f64) / n as f64;
    println!(
        "RESULT workload_density.memory n={n} idle_rss_kib={} one_rss_kib={} many_rss_kib={} \
         first_workload_rss_kib={} per_workload_rss_kib={:.1} per_workload_pss_kib={:.1} \
         per_workload_anon_kib={:.1} per_workload_private_kib={:.1}",
        idle.rss,
        one.rss,
        many.rss,
        one.rss as i64 - idle.rss as i64,
        per(|m| m.rss),
        per(|m| m.pss),
        per(|m| m.rss_anon),
        per(|m| m.private),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        Some(arg) => arg.parse::<usize>().context("argument: workloads (N)")?,
        None => 1000,
    };
    anyhow::ensure!(n > 0, "argument: at least 1 workload");
    let program = host_program()?;
    println!(
        "machine: {} cores, {}; loadavg {}",
        cores(),
        cpu_model(),
        loadavg()
    );
    println!(
        "program: {} ({:.0} MB)",
        program.display(),
        std::fs::metadata(&program)?.len() as f64 / 1e6
    );

    let t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("host.log");
    let host = HostProcess::spawn(&t, &dir.path().join("state"), &log)?;
    let result = run(&t, &host, n).await;
    if result.is_err() {
        // What the host said is the first thing to read when a step fails.
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("last lines of the host's log:");
        for line in &lines[lines.len().saturating_sub(30)..] {
            eprintln!("  {line}");
        }
    }
    result
}

async fn run(t: &TestLattice, host: &HostProcess, n: usize) -> anyhow::Result<()> {
    t.wait_for("the host process to report", || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == HOST_NAME))
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    let idle = Memory::of(host.pid())?;
    let image = t
        .push(&t.sign(&hello_wasm(), "hello", "0.1.0"))
        .await?
        .to_string();
    let one = step(t, host, &image, "one", 1).await?;
    print_step(&one);
    let many = step(t, host, &image, "many", n).await?;
    print_step(&many);
    print_memory(idle, one.memory, many.memory, n);
    println!(
        "every one of the {} workloads answered 200 with its own greeting",
        n + 1
    );
    Ok(())
}
