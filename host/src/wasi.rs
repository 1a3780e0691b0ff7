//! WASI P2 and `wasi:http` for guests: the per-[`Store`] state, the linker
//! and the store every invocation runs in.
//!
//! Components built from Rust `std` for `wasm32-wasip2` import the whole WASI
//! P2 set (`wasi:cli/*`, `wasi:filesystem`, `wasi:clocks`, `wasi:random`,
//! `wasi:io`, `wasi:sockets`) even when they only handle HTTP, so
//! [`new_linker`] links all of it. What a guest may actually *do* is decided
//! by the context [`HostState::new`] builds, and it is deliberately little:
//!
//! - environment variables: exactly those the host passes;
//! - no arguments, no stdin, stdout discarded, stderr to the host's stderr
//!   (a guest's panic message is the first thing one needs when debugging it);
//! - no filesystem preopens, no TCP, UDP or name lookups;
//! - outgoing `wasi:http` requests refused with `HTTP-request-denied`, except
//!   to the hosts a link to the `http-client` capability allows
//!   ([`crate::caps::outgoing_http`]).
//!
//! [`HostState`] holds WASI's and `wasi:http`'s contexts, the store's limits and resource
//! table, and the workload's context, whose capability states the linker's views point into;
//! it implements no capability itself.
//!
//! ```no_run
//! use lattice_host::engine::{EngineConfig, Runtime};
//! use lattice_host::wasi::{HostState, Limits, new_linker, new_store};
//!
//! let runtime = Runtime::new(&EngineConfig::default())?;
//! let linker = new_linker(&runtime)?;
//! let env = vec![("GREETING".to_owned(), "Hi".to_owned())];
//! let state = HostState::new(&env, &Limits::from_config(runtime.config()));
//! let store = new_store(&runtime, state);
//! # drop((linker, store));
//! # anyhow::Ok(())
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::caps::blobstore::BlobstoreView;
use crate::caps::bus::{BusView, LinkNames};
use crate::caps::config::ConfigView;
use crate::caps::keyvalue::KeyvalueView;
use crate::caps::logging::LoggingView;
use crate::caps::messaging::MessagingView;
use crate::caps::outgoing_http::OutgoingPolicy;
use crate::caps::secrets::SecretsView;
use crate::caps::{WorkloadCtx, blobstore, bus, config, keyvalue, logging, messaging, secrets};
use crate::engine::{EngineConfig, Runtime};
use crate::limits::{StoreLimiter, TABLE_ELEMENTS};

/// Resource limits for one [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Most elements one table may hold.
    pub table_elements: usize,
    /// Longest one invocation may run.
    pub execution_timeout: Duration,
}

impl Limits {
    /// The host's own limits (its maxima), for invocations of workloads that ask for none.
    pub fn from_config(config: &EngineConfig) -> Self {
        Self {
            memory_bytes: config.memory_limit_bytes,
            table_elements: TABLE_ELEMENTS,
            execution_timeout: config.execution_timeout,
        }
    }
}

/// The data of one [`Store`]: what WASI and `wasi:http` need while one
/// invocation runs, and its limits.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    limits: StoreLimiter,
    /// When this invocation must end: host calls (component calls, requests) wait no longer.
    deadline: Instant,
    hooks: OutgoingPolicy,
    /// The links the guest chose by name (`wasmcloud:bus`), for this invocation.
    pub(crate) link_names: LinkNames,
    /// The workload this store runs: its config, links and capabilities.
    pub(crate) ctx: Arc<WorkloadCtx>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The WASI context holds environment values, which may be secrets.
        f.debug_struct("HostState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl HostState {
    /// State for one invocation of a guest that sees `env` as its
    /// environment and has no links (outside a lattice, e.g. in tests).
    pub fn new(env: &[(String, String)], limits: &Limits) -> Self {
        Self::for_workload(WorkloadCtx::detached(env), limits)
    }

    /// State for one invocation of the workload `ctx`.
    pub fn for_workload(ctx: Arc<WorkloadCtx>, limits: &Limits) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.envs(ctx.env())
            .inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimiter::new(limits.memory_bytes, limits.table_elements),
            deadline: Instant::now() + limits.execution_timeout,
            hooks: OutgoingPolicy::new(ctx.outgoing_http.clone()),
            link_names: LinkNames::default(),
            ctx,
        }
    }

    /// Counts the memory growths this store's limiter refuses into `refusals`.
    pub fn count_memory_refusals(
        &mut self,
        refusals: prometheus_client::metrics::counter::Counter,
    ) {
        self.limits.count_refusals(refusals);
    }

    /// When this invocation must end.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline: an instance reused across requests ends no sooner than its newest
    /// request may run.
    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

pub use crate::caps::outgoing_http::HTTP_CLIENT;

/// A linker with all of WASI 0.2 and 0.3 and `wasi:http` (async), shared by every
/// component of the host.
pub fn new_linker(runtime: &Runtime) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(runtime.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    // WASI 0.3 on hosts that serve it (`--wasi-p3`), for components that serve
    // `wasi:http/handler@0.3.x`; such a component built from Rust `std` also imports WASI 0.2
    // (its environment, stderr), linked above.
    if runtime.config().wasi_p3 {
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    }
    logging::add_to_linker(&mut linker, logging_view)?;
    config::add_to_linker(&mut linker, config_view)?;
    keyvalue::add_to_linker(&mut linker, keyvalue_view)?;
    messaging::add_to_linker(&mut linker, messaging_view)?;
    messaging::v0_3::add_to_linker(&mut linker, messaging3_view)?;
    blobstore::add_to_linker(&mut linker, blobstore_view)?;
    bus::add_to_linker(&mut linker, bus_view)?;
    secrets::add_to_linker(&mut linker, secrets_view)?;
    Ok(linker)
}

fn logging_view(state: &mut HostState) -> LoggingView<'_> {
    LoggingView(&state.ctx.logging)
}

fn config_view(state: &mut HostState) -> ConfigView<'_> {
    ConfigView(&state.ctx.config)
}

fn messaging_view(state: &mut HostState) -> MessagingView<'_> {
    MessagingView {
        ctx: &state.ctx,
        names: &state.link_names,
        deadline: state.deadline,
    }
}

fn messaging3_view(state: &mut HostState) -> messaging::v0_3::MessagingView<'_> {
    messaging::v0_3::MessagingView {
        table: &mut state.table,
        ctx: &state.ctx,
        deadline: state.deadline,
    }
}

fn blobstore_view(state: &mut HostState) -> BlobstoreView<'_> {
    BlobstoreView {
        table: &mut state.table,
        ctx: &state.ctx,
        names: &state.link_names,
    }
}

fn keyvalue_view(state: &mut HostState) -> KeyvalueView<'_> {
    KeyvalueView {
        table: &mut state.table,
        ctx: &state.ctx,
        names: &state.link_names,
    }
}

fn bus_view(state: &mut HostState) -> BusView<'_> {
    BusView {
        table: &mut state.table,
        names: &mut state.link_names,
        links: state.ctx.links(),
    }
}

fn secrets_view(state: &mut HostState) -> SecretsView<'_> {
    SecretsView {
        table: &mut state.table,
        secrets: &state.ctx.secrets,
    }
}

/// A fresh store for one invocation, enforcing the memory and table limits
/// in `state` (its memory reserved from the host's budget) and its execution
/// timeout.
///
/// Every epoch tick the running guest yields to the async executor (so a
/// guest in a loop cannot hold a thread that other requests share); once the
/// timeout has passed the next tick traps it with
/// [`wasmtime::Trap::Interrupt`].
pub fn new_store(runtime: &Runtime, mut state: HostState) -> Store<HostState> {
    state.limits = std::mem::replace(&mut state.limits, StoreLimiter::new(0, 0))
        .with_budget(runtime.memory_budget().clone());
    let mut store = Store::new(runtime.engine(), state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(1);
    // The deadline is read from the store: a reused instance moves it with each request.
    store.epoch_deadline_callback(|store| {
        Ok(if Instant::now() >= store.data().deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    store
}
