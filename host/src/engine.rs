//! The host's one wasmtime [`Engine`] and the limits every guest runs under.
//!
//! A host makes one [`Runtime`] at start-up and clones it freely: compiled
//! components, pre-instantiated workloads and per-request stores all belong to
//! its engine. The engine is configured for what the host does most, which is
//! instantiating a small component per request:
//!
//! - **Pooling allocator**, sized from the machine's memory (see
//!   [`PoolSizing`]), with the first MiB of each linear memory and the first
//!   16 KiB of each table kept resident and reset in place (`PAGEMAP_SCAN`
//!   where the kernel has it) instead of being unmapped after every
//!   instance. Each of the two halved the cost of a request on the reference
//!   machine. Machines too small for a pool, or where creating it fails,
//!   fall back to on-demand allocation, and [`Runtime::pool_description`]
//!   says why.
//! - **Epoch interruption**, ticked every [`EPOCH_TICK`] by a background
//!   thread, so a guest that loops yields to other requests on the same thread
//!   and is stopped at its execution deadline.
//! - **Limits**: the configuration holds the host's maxima (memory per
//!   instance, time per call) and defaults (instances at once per workload);
//!   a workload's own limits are clamped to them ([`EngineConfig::workload_limits`]).
//!   The runtime owns the host's [`MemoryBudget`], from which every store
//!   reserves its linear memory (see [`crate::limits`]).
//!
//! ```no_run
//! use lattice_host::engine::{EngineConfig, Runtime};
//!
//! let runtime = Runtime::new(&EngineConfig::default())?;
//! println!("{} ({})", runtime.pool_description(), runtime.fingerprint());
//! # anyhow::Ok(())
//! ```

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::compile::Compiler;
use crate::limits::{Gate, MemoryBudget};
use crate::wasi::Limits;
use lattice_protocol::assignment::ComponentLimits;

/// How often the epoch advances: the granularity of execution deadlines and of
/// the yields that keep a busy guest from starving its neighbours.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

const MIB: usize = 1 << 20;

/// Below this much memory the host does not try to pool: the reservations
/// and kept-resident pages would crowd out everything else (wasmCloud's
/// pooling allocator failing on ~1 GB machines is the cautionary tale).
const MIN_POOLING_MEMORY: usize = 1536 * MIB;

/// Share of the machine's memory the pool may keep resident.
const POOL_MEMORY_DIVISOR: usize = 4;

/// What one pooled instance of a small component is expected to keep resident
/// between uses: 1 MiB of linear memory kept resident, its async stack,
/// tables and instance metadata. Only used to size the pool.
const INSTANCE_FOOTPRINT: usize = 4 * MIB;

/// Bounds on the number of pooled instances chosen automatically.
const AUTO_INSTANCES: (u32, u32) = (64, 10_000);

/// Linear memory kept resident (and reset with `memset`/`PAGEMAP_SCAN`
/// instead of `madvise`) when a pooled memory slot is freed.
const KEEP_RESIDENT: usize = MIB;

/// The same for tables. Without it every freed instance `madvise`d its
/// tables away and the next one faulted them back in: ~3 page faults per
/// request, each unmapping a TLB shootdown to the other cores. Measured on
/// the reference machine with `hello` (whose tables fit in one page): about
/// 2x the requests per second at 16 connections, page faults from ~60k/s to
/// ~0. 16 KiB leaves room for bigger function tables.
const TABLE_KEEP_RESIDENT: usize = 16 << 10;

/// The largest linear memory a guest may have on a small machine: a quarter
/// of the machine, so one runaway guest cannot take the host down.
const MEMORY_LIMIT_DIVISOR: usize = 4;

/// The share of the machine's memory all guests together may hold when the
/// host is not told otherwise: half, leaving the rest to the host, the
/// compiler and the system.
const GUEST_MEMORY_DIVISOR: usize = 2;

/// The guest memory budget when the machine's memory cannot be read.
const FALLBACK_GUEST_MEMORY: usize = 1 << 30;

/// Instances of one workload that may run at once on a host, unless its
/// manifest or the host says otherwise: above what one busy workload needs
/// (the HTTP benchmarks use 64 connections), low enough that one flooded
/// workload cannot take a whole pool.
pub const DEFAULT_CONCURRENCY: u32 = 100;

/// How the engine allocates instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolSizing {
    /// Pool sized from the machine's memory; on-demand on small machines.
    #[default]
    Auto,
    /// No pool: every instance maps its memory when created. Slower per
    /// instance, but reserves nothing up front.
    OnDemand,
    /// A pool for exactly this many concurrent component instances.
    Pooled {
        /// Concurrent component instances (also the number of linear memories).
        instances: u32,
    },
}

/// Limits, allocation and compilation settings for the host's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Largest component (in bytes of WebAssembly) the host agrees to compile.
    pub max_component_bytes: usize,
    /// Largest linear memory one instance may grow to. [`Runtime::new`] lowers
    /// it to a quarter of the machine's memory on small machines.
    pub memory_limit_bytes: usize,
    /// Longest a single invocation (e.g. one HTTP request) may run: the
    /// default and the maximum of a workload's `limits.timeout`.
    pub execution_timeout: Duration,
    /// Instances of one workload that may run at once when its manifest
    /// gives no `limits.concurrency`.
    pub default_concurrency: u32,
    /// Linear memory all guests together may hold; `None`: half of the
    /// machine's memory.
    pub guest_memory_total: Option<usize>,
    /// How instances are allocated.
    pub pool: PoolSizing,
    /// Where components are compiled for this engine: in-process by
    /// default; a long-running host compiles in a child process, so the
    /// compiler's memory is not kept for its lifetime.
    pub compiler: Compiler,
    /// Serve WASI 0.3 components (`lattice-host --wasi-p3`): wasmtime's concurrency support,
    /// which WASI 0.3 needs, makes every store dearer, a fresh WASI 0.2 instance per request
    /// included (about 14 µs more per request, BENCHMARKS.md §1c), so a host has it only
    /// when asked. It is part of the engine's fingerprint.
    pub wasi_p3: bool,
}

impl EngineConfig {
    /// A workload's limits on this host: what its manifest asks, clamped to
    /// the host's maxima (a manifest serves every host it is placed on, small
    /// gateways included, so asking more than one of them allows is not an
    /// error there), the host's values where it asks nothing.
    pub fn workload_limits(&self, asked: &ComponentLimits) -> (Limits, Gate) {
        let memory_bytes = asked
            .memory_bytes
            .and_then(|m| usize::try_from(m).ok())
            .map_or(self.memory_limit_bytes, |m| m.min(self.memory_limit_bytes));
        let execution_timeout = asked
            .timeout_ms
            .map(Duration::from_millis)
            .map_or(self.execution_timeout, |t| t.min(self.execution_timeout));
        let limits = Limits {
            memory_bytes,
            execution_timeout,
            ..Limits::from_config(self)
        };
        let concurrency = asked.concurrency.unwrap_or(self.default_concurrency);
        (limits, Gate::new(concurrency))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_component_bytes: 50 * MIB,
            memory_limit_bytes: 256 * MIB,
            execution_timeout: Duration::from_secs(60),
            default_concurrency: DEFAULT_CONCURRENCY,
            guest_memory_total: None,
            pool: PoolSizing::Auto,
            compiler: Compiler::InProcess,
            wasi_p3: false,
        }
    }
}

/// The host's wasmtime engine with its configuration. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    config: EngineConfig,
    fingerprint: String,
    /// [`Runtime::baseline_fingerprint`], worked out when first asked for.
    baseline: OnceLock<Option<String>>,
    pool_description: String,
    budget: Arc<MemoryBudget>,
    /// Dropping this (with the last `Runtime` clone) stops the epoch thread.
    _stop_ticker: mpsc::Sender<()>,
}

impl Runtime {
    /// Creates the engine and starts its epoch ticker.
    ///
    /// `cfg` is adjusted to the machine: see [`Runtime::config`] for the
    /// values in force.
    pub fn new(cfg: &EngineConfig) -> anyhow::Result<Runtime> {
        let machine_memory = machine_memory();
        let mut config = cfg.clone();
        if let Some(total) = machine_memory {
            let cap = total / MEMORY_LIMIT_DIVISOR;
            if config.memory_limit_bytes > cap {
                tracing::info!(
                    requested = config.memory_limit_bytes,
                    limit = cap,
                    "lowering the per-instance memory limit to a quarter of this machine's memory"
                );
                config.memory_limit_bytes = cap;
            }
        }

        let total = config.guest_memory_total.unwrap_or_else(|| {
            machine_memory.map_or(FALLBACK_GUEST_MEMORY, |m| m / GUEST_MEMORY_DIVISOR)
        });
        config.guest_memory_total = Some(total);
        let budget = Arc::new(MemoryBudget::new(total));

        let (engine, pool_description) = build_engine(&config, machine_memory)?;
        let fingerprint = fingerprint(&engine);
        let (stop_ticker, stopped) = mpsc::channel();
        spawn_epoch_ticker(engine.clone(), stopped)?;
        tracing::info!(pool = %pool_description, %fingerprint,
            guest_memory_mib = total / MIB, "wasm engine ready");
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                config,
                fingerprint,
                baseline: OnceLock::new(),
                pool_description,
                budget,
                _stop_ticker: stop_ticker,
            }),
        })
    }

    /// The wasmtime engine every component of this host is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configuration in force (after adjusting to the machine).
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The linear memory all guests of this host may hold together.
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.inner.budget
    }

    /// A short hex hash of everything that makes compiled code compatible
    /// with this engine; part of the name of every cached compiled component.
    pub fn fingerprint(&self) -> String {
        self.inner.fingerprint.clone()
    }

    /// The fingerprint of code compiled for this host's target with no CPU feature beyond the
    /// architecture's baseline ([`crate::compile::target`]): precompiled code this engine can
    /// load. `None` if no such engine can be made (then nothing precompiled is looked for).
    pub fn baseline_fingerprint(&self) -> Option<String> {
        self.inner
            .baseline
            .get_or_init(|| {
                let triple = crate::compile::target::host_triple();
                match target_engine(&triple, self.inner.config.wasi_p3) {
                    Ok(engine) => Some(fingerprint(&engine)),
                    Err(err) => {
                        tracing::warn!(error = %format!("{err:#}"), %triple,
                            "no baseline engine for this host: precompiled code is not used");
                        None
                    }
                }
            })
            .clone()
    }

    /// How instances are allocated, for logs and heartbeats, e.g.
    /// `pooling: 1536 instances, 256 MiB each` or `on-demand: <reason>`.
    pub fn pool_description(&self) -> String {
        self.inner.pool_description.clone()
    }
}

/// An on-demand engine, which produces the same code as every [`Runtime`]
/// of this build (the pool does not affect code); a compiler process uses
/// it without a ticker, since it runs nothing.
pub(crate) fn code_engine(wasi_p3: bool) -> anyhow::Result<Engine> {
    let mut wasm = base_config(wasi_p3);
    wasm.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    Engine::new(&wasm)
        .map_err(anyhow::Error::from)
        .context("creating the wasm engine")
}

/// An engine making code for `triple` with only the architecture's baseline CPU features (none
/// inferred from this machine): what `lattice compile` uses, and what a host of that target can
/// load whatever its CPU. It runs nothing.
pub(crate) fn target_engine(triple: &str, wasi_p3: bool) -> anyhow::Result<Engine> {
    let mut wasm = base_config(wasi_p3);
    let unknown =
        || format!("this build makes no code for target `{triple}` (it makes x86_64 and aarch64)");
    wasm.target(triple)
        .map_err(anyhow::Error::from)
        .with_context(unknown)?;
    wasm.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    Engine::new(&wasm)
        .map_err(anyhow::Error::from)
        .with_context(unknown)
}

/// Settings shared by the pooled, on-demand and compile-only engines: all
/// that decides what code is generated, and whether WASI 0.3 (concurrency support) is on.
fn base_config(wasi_p3: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.concurrency_support(wasi_p3);
    config
}

/// Builds the engine the sizing asks for, falling back to on-demand
/// allocation when pooling is not possible. Returns the engine and a
/// description of the allocation for logs.
fn build_engine(
    config: &EngineConfig,
    machine_memory: Option<usize>,
) -> anyhow::Result<(Engine, String)> {
    let instances = match pool_instances(config.pool, machine_memory) {
        Ok(instances) => instances,
        Err(reason) => return on_demand(config, reason),
    };
    let mut wasm = base_config(config.wasi_p3);
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
        instances,
        config.memory_limit_bytes,
    )));
    match Engine::new(&wasm) {
        Ok(engine) => Ok((
            engine,
            format!(
                "pooling: {instances} instances, {} MiB each",
                config.memory_limit_bytes / MIB
            ),
        )),
        Err(err) => {
            // Typically a virtual address space limit (ulimit -v) or an
            // overcommit policy refusing the pool's reservation.
            tracing::warn!(error = %err, instances, "creating the pooling allocator failed");
            on_demand(
                config,
                format!("creating a pool of {instances} instances failed: {err}"),
            )
        }
    }
}

fn on_demand(config: &EngineConfig, reason: String) -> anyhow::Result<(Engine, String)> {
    Ok((code_engine(config.wasi_p3)?, format!("on-demand: {reason}")))
}

/// How many concurrent instances to pool, or why not to pool at all.
fn pool_instances(sizing: PoolSizing, machine_memory: Option<usize>) -> Result<u32, String> {
    match sizing {
        PoolSizing::OnDemand => Err("configured".to_owned()),
        PoolSizing::Pooled { instances: 0 } => Err("configured with 0 instances".to_owned()),
        PoolSizing::Pooled { instances } => Ok(instances),
        PoolSizing::Auto => {
            let Some(memory) = machine_memory else {
                return Err("cannot read this machine's memory size".to_owned());
            };
            auto_instances(memory)
        }
    }
}

/// The automatic pool size for a machine with `memory` bytes.
fn auto_instances(memory: usize) -> Result<u32, String> {
    if memory < MIN_POOLING_MEMORY {
        return Err(format!(
            "{} MiB of memory is less than the {} MiB pooling needs",
            memory / MIB,
            MIN_POOLING_MEMORY / MIB
        ));
    }
    let fit = memory / POOL_MEMORY_DIVISOR / INSTANCE_FOOTPRINT;
    let (min, max) = AUTO_INSTANCES;
    Ok(u32::try_from(fit).unwrap_or(max).clamp(min, max))
}

fn pooling_config(instances: u32, memory_limit: usize) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        // A component made by wit-component instantiates its main module
        // plus small shim modules (Rust's `hello`: 3 core instances, 2
        // tables) but normally has one linear memory. Tables are cheap.
        .total_core_instances(instances.saturating_mul(4))
        .total_tables(instances.saturating_mul(4))
        .total_memories(instances)
        .total_stacks(instances)
        .max_memory_size(memory_limit)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        // Auto: used on Linux >= 6.7, silently skipped elsewhere.
        .pagemap_scan(Enabled::Auto);
    pool
}

/// A short hex hash of the engine's compatibility hash, the same on every machine that builds
/// the same engine: code precompiled on a workstation is found by a gateway under it.
pub(crate) fn fingerprint(engine: &Engine) -> String {
    let mut hasher = StableHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// A `Hasher` feeding sha256, whose result does not depend on the process (unlike
/// `DefaultHasher`, whose algorithm Rust may change between releases). Integers are written as
/// the platform's bytes: the targets Lattice builds for are all 64-bit little-endian.
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Not used: `fingerprint` reads the digest.
    fn finish(&self) -> u64 {
        0
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until `stop` is
/// disconnected (when the last [`Runtime`] clone is dropped).
fn spawn_epoch_ticker(engine: Engine, stop: mpsc::Receiver<()>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("lattice-epoch".to_owned())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(EPOCH_TICK) {
                engine.increment_epoch();
            }
        })
        .context("starting the epoch thread")?;
    Ok(())
}

/// The memory this host may use: the machine's `MemTotal`, or the cgroup's
/// limit when running in a container with a smaller one.
fn machine_memory() -> Option<usize> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| parse_mem_total(&meminfo));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|max| max.trim().parse::<usize>().ok());
    match (total, cgroup) {
        (Some(total), Some(cgroup)) => Some(total.min(cgroup)),
        (total, cgroup) => total.or(cgroup),
    }
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
fn parse_mem_total(meminfo: &str) -> Option<usize> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: usize = fields.next()?.parse().ok()?;
    let unit = match fields.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: usize = 1 << 30;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24684092 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_684_092 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 12 MB\n"), None);
    }

    #[test]
    fn small_machines_do_not_pool() {
        let Err(reason) = auto_instances(GIB) else {
            panic!("a 1 GiB machine must not pool");
        };
        assert!(reason.contains("1024 MiB"), "{reason}");
        // 2 GiB: a quarter of it in 4 MiB instances.
        assert_eq!(auto_instances(2 * GIB), Ok(128));
        // Very large machines are capped.
        assert_eq!(auto_instances(1 << 50), Ok(AUTO_INSTANCES.1));
    }

    #[test]
    fn explicit_sizing_wins() {
        assert_eq!(
            pool_instances(PoolSizing::Pooled { instances: 7 }, None),
            Ok(7)
        );
        assert!(pool_instances(PoolSizing::OnDemand, Some(64 * GIB)).is_err());
        assert!(pool_instances(PoolSizing::Auto, None).is_err());
    }

    #[test]
    fn on_demand_runtime_describes_itself() -> anyhow::Result<()> {
        let runtime = Runtime::new(&EngineConfig {
            pool: PoolSizing::OnDemand,
            ..EngineConfig::default()
        })?;
        assert_eq!(runtime.pool_description(), "on-demand: configured");
        assert_eq!(runtime.fingerprint().len(), 16);
        // Same configuration, same fingerprint: the code cache depends on it.
        let again = Runtime::new(&EngineConfig {
            pool: PoolSizing::Pooled { instances: 8 },
            ..EngineConfig::default()
        })?;
        assert!(again.pool_description().starts_with("pooling: 8 instances"));
        assert_eq!(runtime.fingerprint(), again.fingerprint());
        // A compiler process's engine makes code both can load.
        assert_eq!(fingerprint(&code_engine(false)?), runtime.fingerprint());
        Ok(())
    }
}
