//! A workload as the HTTP server serves it: the component linked and pre-instantiated by the
//! version of `wasi:http` it exports ([`prepare_http`], [`HttpHandler`]), and what it serves
//! with ([`Serving`], [`HttpWorkload`]).

use std::sync::Arc;

use anyhow::Context as _;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::reuse::{self, Reuse};
use super::{HANDLER, HANDLER_VERSION, INCOMING_HANDLER, INCOMING_HANDLER_VERSION, WASI_P3_OFF};
use crate::caps::WorkloadCtx;
use crate::engine::Runtime;
use crate::limits::Gate;
use crate::metrics::WorkloadMetrics;
use crate::wasi::{HostState, Limits};

/// A component linked and pre-instantiated for serving HTTP ([`prepare_http`]), by the
/// version of `wasi:http` it exports.
pub enum HttpHandler {
    /// `wasi:http/incoming-handler@0.2.x`: a fresh instance per request.
    Fresh(ProxyPre<HostState>),
    /// `wasi:http/handler@0.3.x`: instances reused across requests.
    Reused(ServicePre<HostState>),
}

impl std::fmt::Debug for HttpHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fresh(_) => "HttpHandler::Fresh",
            Self::Reused(_) => "HttpHandler::Reused",
        })
    }
}

impl HttpHandler {
    /// The linked component, for instances that serve something else (component calls).
    pub fn instance_pre(&self) -> &InstancePre<HostState> {
        match self {
            Self::Fresh(pre) => pre.instance_pre(),
            Self::Reused(pre) => pre.instance_pre(),
        }
    }
}

/// How a workload's requests are served.
pub(super) enum Serve {
    /// Shared with each request's task.
    Fresh(Arc<ProxyPre<HostState>>),
    Reused(reuse::Handlers),
}

/// What an [`HttpWorkload`] serves with, besides its component.
#[derive(Debug, Clone)]
pub struct Serving {
    /// Which component this is (`app/component`), for logs.
    pub name: String,
    /// The workload's context: environment, config, links.
    pub ctx: Arc<WorkloadCtx>,
    /// Requests this workload failed, for heartbeats.
    pub failures: FailureCount,
    /// Its metric handles.
    pub metrics: WorkloadMetrics,
    /// Memory and time each request may use.
    pub limits: Limits,
    /// Requests that may run at once; shared with the workload's component calls.
    pub gate: Gate,
    /// How instances of a WASI 0.3 component are reused.
    pub reuse: Reuse,
}

/// A component ready to serve HTTP on an address.
pub struct HttpWorkload {
    /// Which component this is (`app/component`), for logs.
    pub name: String,
    /// How its requests are served.
    pub(super) serve: Serve,
    /// The workload's context: environment, config, links.
    pub ctx: Arc<WorkloadCtx>,
    /// Requests this workload failed (trap, timeout, failed instantiation), for heartbeats.
    pub failures: FailureCount,
    /// Its metric handles (the host's, resolved when it was loaded).
    pub metrics: WorkloadMetrics,
    /// Memory and time each request may use.
    pub limits: Limits,
    /// Requests that may run at once; shared with the workload's component calls.
    pub gate: Gate,
}

impl HttpWorkload {
    /// A workload with the host's limits and default concurrency and reuse.
    pub fn new(
        runtime: &Runtime,
        name: impl Into<String>,
        handler: HttpHandler,
        ctx: Arc<WorkloadCtx>,
    ) -> Self {
        let (limits, gate) = runtime.config().workload_limits(&Default::default());
        Self::serving(
            runtime,
            handler,
            Serving {
                name: name.into(),
                ctx,
                failures: FailureCount::default(),
                metrics: WorkloadMetrics::detached(),
                limits,
                gate,
                reuse: Reuse::default(),
            },
        )
    }

    /// A workload serving `handler` with `serving`'s limits, metrics and reuse.
    pub fn serving(runtime: &Runtime, handler: HttpHandler, serving: Serving) -> Self {
        let serve = match handler {
            HttpHandler::Fresh(pre) => Serve::Fresh(Arc::new(pre)),
            HttpHandler::Reused(pre) => {
                Serve::Reused(reuse::Handlers::new(runtime, &pre, &serving))
            }
        };
        let Serving {
            name,
            ctx,
            failures,
            metrics,
            limits,
            gate,
            reuse: _,
        } = serving;
        Self {
            name,
            serve,
            ctx,
            failures,
            metrics,
            limits,
            gate,
        }
    }
}

/// A shared count of failed requests.
#[derive(Debug, Clone, Default)]
pub struct FailureCount(Arc<std::sync::atomic::AtomicU64>);

impl FailureCount {
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn add(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for HttpWorkload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Environment values may be secrets: show only the names.
        let env: Vec<&str> = self
            .ctx
            .env()
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        f.debug_struct("HttpWorkload")
            .field("name", &self.name)
            .field("env", &env)
            .finish_non_exhaustive()
    }
}

/// Links `component` and pre-instantiates it for serving HTTP.
///
/// Fails with a message naming what is wrong when the component exports neither
/// `wasi:http/incoming-handler@0.2.x` nor `wasi:http/handler@0.3.x`, or imports something the
/// linker does not provide.
pub fn prepare_http(
    runtime: &Runtime,
    linker: &Linker<HostState>,
    component: &Component,
) -> anyhow::Result<HttpHandler> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(runtime.engine()).map(|(name, _)| name).collect();
    let exports_at = |interface: &str, version: &str| {
        exports.iter().any(|name| {
            name.strip_prefix(interface)
                .is_some_and(|v| v.starts_with(version))
        })
    };
    let reused = exports_at(HANDLER, HANDLER_VERSION);
    if reused && !runtime.config().wasi_p3 {
        anyhow::bail!("{WASI_P3_OFF}");
    }
    if !reused && !exports_at(INCOMING_HANDLER, INCOMING_HANDLER_VERSION) {
        anyhow::bail!(
            "the component exports neither {INCOMING_HANDLER}{INCOMING_HANDLER_VERSION}x nor \
             {HANDLER}{HANDLER_VERSION}x, so it cannot serve HTTP (it exports: {})",
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            }
        );
    }
    let pre = linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .context("linking the component")?;
    let prepared = if reused {
        ServicePre::new(pre).map(HttpHandler::Reused)
    } else {
        ProxyPre::new(pre).map(HttpHandler::Fresh)
    };
    prepared
        .map_err(anyhow::Error::from)
        .context("preparing the component to serve HTTP")
}
