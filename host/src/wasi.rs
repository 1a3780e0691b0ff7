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
//! - outgoing `wasi:http` requests refused with `HTTP-request-denied` (an
//!   allow-list comes later).
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

use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::engine::{EngineConfig, Runtime};

/// Table elements one instance may have; matches the pooling allocator's
/// default, which is ample for compiled languages (debug-mode C# needs ~10k).
const TABLE_ELEMENTS: usize = 20_000;

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
    /// The limits the engine configuration sets for every invocation.
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
    table: ResourceTable,
    limits: StoreLimits,
    execution_timeout: Duration,
    hooks: DenyOutgoing,
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
    /// environment.
    pub fn new(env: &[(String, String)], limits: &Limits) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.envs(env)
            .inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .table_elements(limits.table_elements)
                .build(),
            execution_timeout: limits.execution_timeout,
            hooks: DenyOutgoing,
        }
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

/// `wasi:http` hooks that refuse every outgoing request.
#[derive(Debug)]
struct DenyOutgoing;

/// What [`WasiHttpHooks::send_request`] returns: the response and a future
/// reporting errors while its body is read.
type SendRequestFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                hyper::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for DenyOutgoing {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendRequestFuture {
        // The guest gets a WIT error it can handle, not a trap.
        tracing::debug!(authority = ?request.uri().authority(), "outgoing HTTP request denied");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// A linker with all of WASI P2 and `wasi:http` (async), shared by every
/// component of the host.
pub fn new_linker(runtime: &Runtime) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(runtime.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// A fresh store for one invocation, enforcing the memory and table limits
/// in `state` and its execution timeout.
///
/// Every epoch tick the running guest yields to the async executor (so a
/// guest in a loop cannot hold a thread that other requests share); once the
/// timeout has passed the next tick traps it with
/// [`wasmtime::Trap::Interrupt`].
pub fn new_store(runtime: &Runtime, state: HostState) -> Store<HostState> {
    let deadline = Instant::now() + state.execution_timeout;
    let mut store = Store::new(runtime.engine(), state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    store
}
