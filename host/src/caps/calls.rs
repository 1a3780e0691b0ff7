//! Component-to-component calls over the app's own WIT interfaces.
//!
//! **Caller side.** When a workload starts, [`link_imports`] defines every function of every
//! import outside the host's own packages (`wasi:*`, `wasmcloud:messaging`) in the workload's
//! linker: those its links send to a component call [`Router::call`]; the rest fail at once as
//! not linked. Errors reach the guest as the function's own error when it returns
//! `result<_, string>` (the message starts with the kind: `not-linked`, `no-instance`,
//! `timeout`, `trap`, `invalid-payload`), otherwise as a trap naming the import.
//!
//! **Routing.** [`Router::call`] runs the call in-process, in a fresh instance of the target,
//! when the target runs on this host; otherwise it sends an [`RpcCall`] on the target's
//! [`Subject::Rpc`], which the target's instances on other hosts serve as a queue group (NATS
//! spreads the calls over them). The caller's deadline travels with the call.
//!
//! **Target side.** [`serve`] answers calls for one workload that exports such interfaces.
//!
//! **Concurrency.** A workload runs at most its `concurrency` instances at once on a host (its
//! [`Gate`], shared with its HTTP requests): a direct call beyond that fails at once with the
//! `busy` kind, before any task or instance is made for it; a queued delivery waits for a slot
//! until its deadline.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use lattice_protocol::assignment::{LinkTarget, QueuedDelivery, WorkloadLink};
use lattice_protocol::envelope;
use lattice_protocol::names::{AppName, ComponentName};
use lattice_protocol::rpc::{CallError, CallErrorKind, RpcCall, RpcReply};
use lattice_protocol::subject::Subject;
use lattice_protocol::wit::{InterfaceName, unversioned};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument as _;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, Func, InstancePre, Linker, Type, Val};
use wasmtime::{Store, Trap};

use super::codec;
use super::{LatticeLink, WorkloadCtx};
use crate::engine::Runtime;
use crate::http::FailureCount;
use crate::limits::Gate;
use crate::metrics::Limit;
use crate::wasi::{HostState, Limits, new_store};

/// Whether the host serves `name`'s package itself (so it is never a component link).
fn host_provided(name: &str) -> bool {
    [
        "wasi:",
        "wasmcloud:messaging/",
        "wasmcloud:bus/",
        "wasmcloud:secrets/",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A workload ready to be instantiated: what the router, the RPC server and the messaging
/// handler need to run it.
pub struct Loaded {
    /// The host's engine.
    pub runtime: Runtime,
    /// The component, linked.
    pub pre: InstancePre<HostState>,
    /// Its context (name, config, links).
    pub ctx: Arc<WorkloadCtx>,
    /// Limits of each invocation.
    pub limits: Limits,
    /// Invocations that failed, for heartbeats.
    pub failures: FailureCount,
    /// Instances that may run at once (shared with the workload's HTTP requests).
    pub gate: Gate,
    /// Its metric handles (shared with the workload's HTTP requests).
    pub metrics: crate::metrics::WorkloadMetrics,
    /// Exported interfaces: unversioned name → the export's full name.
    exports: HashMap<String, String>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("workload", &self.ctx.name())
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// Wraps a linked component, with the host's default concurrency (see [`Loaded::with_gate`]).
    pub fn new(
        runtime: Runtime,
        pre: InstancePre<HostState>,
        ctx: Arc<WorkloadCtx>,
        limits: Limits,
        failures: FailureCount,
    ) -> Self {
        let exports = pre
            .component()
            .component_type()
            .exports(runtime.engine())
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
            .map(|(name, _)| (unversioned(name).to_string(), name.to_string()))
            .collect();
        let gate = Gate::new(runtime.config().default_concurrency);
        Self {
            runtime,
            pre,
            ctx,
            limits,
            failures,
            gate,
            metrics: crate::metrics::WorkloadMetrics::detached(),
            exports,
        }
    }

    /// The same, running at most as many instances at once as `gate` allows.
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    /// Counts into `metrics` (the host's, resolved for this workload) rather than nowhere.
    pub fn with_metrics(mut self, metrics: crate::metrics::WorkloadMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// A slot to run an instance in now, or the `busy` error.
    fn enter(&self) -> Result<crate::limits::Slot, CallError> {
        self.gate.try_enter().ok_or_else(|| {
            self.metrics.limit_hit(Limit::Concurrency);
            self.busy()
        })
    }

    fn busy(&self) -> CallError {
        CallError::new(
            CallErrorKind::Busy,
            format!(
                "`{}` runs {} calls at once on this host, its concurrency limit; retry shortly",
                self.ctx.name(),
                self.gate.limit()
            ),
        )
    }

    /// Whether it exports interfaces others call: the app's own, or the messaging handler
    /// (which provider processes deliver to).
    pub fn serves_calls(&self) -> bool {
        self.exports
            .values()
            .any(|name| !host_provided(name) || name.starts_with("wasmcloud:messaging/handler"))
    }

    /// Whether it exports `interface` (unversioned) at some version.
    pub fn exports(&self, interface: &str) -> bool {
        self.exports.contains_key(interface)
    }

    /// A store for one invocation that ends by `deadline` at the latest.
    pub fn store(&self, deadline: Option<Instant>) -> Store<HostState> {
        let mut limits = self.limits;
        if let Some(deadline) = deadline {
            limits.execution_timeout = limits
                .execution_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
        }
        let mut store = new_store(
            &self.runtime,
            HostState::for_workload(self.ctx.clone(), &limits),
        );
        store
            .data_mut()
            .count_memory_refusals(self.metrics.memory_refusals());
        store
    }

    /// `interface.function` of a fresh instance in `store`.
    async fn instantiate_func(
        &self,
        store: &mut Store<HostState>,
        interface: &str,
        function: &str,
        deadline: Instant,
    ) -> Result<Func, CallError> {
        let target = self.ctx.name();
        let Some(full) = self.exports.get(interface) else {
            return Err(CallError::new(
                CallErrorKind::NotLinked,
                format!("`{target}` does not export {interface}"),
            ));
        };
        let instance = self
            .pre
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| self.failed(&e, deadline))?;
        instance
            .get_export_index(&mut *store, None, full)
            .and_then(|i| instance.get_export_index(&mut *store, Some(&i), function))
            .and_then(|f| instance.get_func(&mut *store, f))
            .ok_or_else(|| {
                CallError::new(
                    CallErrorKind::NotLinked,
                    format!("`{target}` has no function `{function}` in {full}"),
                )
            })
    }

    /// Counts a failed invocation and says why it failed.
    fn failed(&self, e: &wasmtime::Error, deadline: Instant) -> CallError {
        self.failures.add();
        let error = classify(e, deadline, &self.ctx.name());
        match error.kind {
            CallErrorKind::Timeout => self.metrics.limit_hit(Limit::Timeout),
            CallErrorKind::Trap => self.metrics.trap(),
            _ => {}
        }
        error
    }

    /// Calls `interface.function` in a fresh instance.
    async fn invoke(
        &self,
        interface: &str,
        function: &str,
        params: &[Val],
        results: &mut [Val],
        deadline: Instant,
    ) -> Result<(), CallError> {
        let _slot = self.enter()?;
        let _in_use = self.metrics.in_use();
        let mut store = self.store(Some(deadline));
        let func = self
            .instantiate_func(&mut store, interface, function, deadline)
            .await?;
        func.call_async(&mut store, params, results)
            .await
            .map_err(|e| self.failed(&e, deadline))
    }
}

/// Sorts an invocation error into the kinds a caller can tell apart.
fn classify(e: &wasmtime::Error, deadline: Instant, target: &str) -> CallError {
    if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) || Instant::now() >= deadline {
        CallError::new(
            CallErrorKind::Timeout,
            format!("`{target}` did not finish before the deadline"),
        )
    } else if e.downcast_ref::<Trap>().is_some() {
        CallError::new(CallErrorKind::Trap, format!("`{target}` trapped: {e:#}"))
    } else if format!("{e:#}").contains("type mismatch") {
        CallError::new(
            CallErrorKind::InvalidPayload,
            format!("calling `{target}`: {e:#}"),
        )
    } else {
        CallError::new(CallErrorKind::Trap, format!("`{target}` failed: {e:#}"))
    }
}

/// Where the components of this host's workloads run, for calls between them.
#[derive(Debug, Default)]
pub struct Router {
    local: RwLock<HashMap<(AppName, ComponentName), Arc<Loaded>>>,
    lattice: Option<LatticeLink>,
}

impl Router {
    /// A router that reaches other hosts through `lattice` (none: local calls only).
    pub fn new(lattice: Option<LatticeLink>) -> Self {
        Self {
            local: RwLock::default(),
            lattice,
        }
    }

    /// Routes calls to `loaded`'s component to it while it runs here.
    pub fn insert(&self, loaded: Arc<Loaded>) {
        let key = (loaded.ctx.app.clone(), loaded.ctx.component.clone());
        self.local
            .write()
            .expect("not poisoned")
            .insert(key, loaded);
    }

    /// Stops routing calls to `app`'s `component` here.
    pub fn remove(&self, app: &AppName, component: &ComponentName) {
        self.local
            .write()
            .expect("not poisoned")
            .remove(&(app.clone(), component.clone()));
    }

    fn local(&self, app: &AppName, component: &ComponentName) -> Option<Arc<Loaded>> {
        self.local
            .read()
            .expect("not poisoned")
            .get(&(app.clone(), component.clone()))
            .cloned()
    }

    /// Calls `interface.function` of `target` (a component of the caller's app).
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(name = "lattice.call", level = "debug", skip_all, fields(%target, interface, function))]
    pub async fn call(
        &self,
        caller: &WorkloadCtx,
        target: &ComponentName,
        interface: &InterfaceName,
        function: &str,
        ty: &ComponentFunc,
        params: &[Val],
        results: &mut [Val],
        deadline: Instant,
    ) -> Result<(), CallError> {
        if let Some(loaded) = self.local(&caller.app, target) {
            return loaded
                .invoke(interface.unversioned(), function, params, results, deadline)
                .await;
        }
        let Some(lattice) = &self.lattice else {
            return Err(CallError::new(
                CallErrorKind::NoInstance,
                format!("`{target}` does not run on this host, and the host has no lattice"),
            ));
        };
        let args = codec_array(params.iter().zip(ty.params().map(|(_, t)| t))).map_err(|e| {
            CallError::new(CallErrorKind::InvalidPayload, format!("arguments: {e}"))
        })?;
        let call = RpcCall {
            interface: interface.clone(),
            function: function.to_string(),
            args,
            deadline_ms: unix_ms_at(deadline),
            caller: caller.name(),
        };
        let subject = Subject::rpc(&lattice.lattice, &caller.app, target).to_string();
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut request = async_nats::Request::new()
            .payload(envelope::encode(&call).into())
            .timeout(Some(wait.max(Duration::from_millis(1))));
        // The trace continues on the host that answers (`lattice.call.serve`).
        if let Some(headers) = lattice_telemetry::propagation::nats_headers() {
            request = request.headers(headers);
        }
        let reply = match lattice.client.send_request(subject, request).await {
            Ok(reply) => reply,
            Err(e) => {
                use async_nats::RequestErrorKind as K;
                let kind = match e.kind() {
                    K::TimedOut => CallErrorKind::Timeout,
                    _ => CallErrorKind::NoInstance,
                };
                let what = match kind {
                    CallErrorKind::Timeout => "did not answer before the deadline".to_string(),
                    _ if matches!(e.kind(), K::NoResponders) => {
                        "has no running instance on any reachable host".to_string()
                    }
                    _ => format!("could not be reached: {e}"),
                };
                return Err(CallError::new(kind, format!("`{target}` {what}")));
            }
        };
        let reply: RpcReply = envelope::decode(&reply.payload).map_err(|e| {
            CallError::new(
                CallErrorKind::InvalidPayload,
                format!("reply from `{target}`: {e}"),
            )
        })?;
        match reply {
            RpcReply::Ok(bytes) => decode_into(&bytes, ty.results(), results).map_err(|e| {
                CallError::new(
                    CallErrorKind::InvalidPayload,
                    format!("results from `{target}`: {e}"),
                )
            }),
            RpcReply::Err(e) => Err(e),
        }
    }
}

fn unix_ms_at(deadline: Instant) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now + deadline.saturating_duration_since(Instant::now())).as_millis() as u64
}

fn instant_at(unix_ms: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Instant::now() + Duration::from_millis(unix_ms).saturating_sub(now)
}

/// MessagePack array of values with their types.
fn codec_array<'a>(
    values: impl Iterator<Item = (&'a Val, Type)>,
) -> Result<Vec<u8>, codec::CodecError> {
    let items = values
        .map(|(v, t)| codec::encode(v, &t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &rmpv::Value::Array(items))
        .expect("writing to a Vec cannot fail");
    Ok(out)
}

/// Decodes a MessagePack array into `out`, one value per type.
fn decode_into(
    bytes: &[u8],
    types: impl ExactSizeIterator<Item = Type>,
    out: &mut [Val],
) -> Result<(), String> {
    let value = rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| e.to_string())?;
    let rmpv::Value::Array(items) = value else {
        return Err("expected an array of values".into());
    };
    if items.len() != types.len() || items.len() != out.len() {
        return Err(format!(
            "expected {} values, found {}",
            out.len(),
            items.len()
        ));
    }
    for ((slot, item), ty) in out.iter_mut().zip(&items).zip(types) {
        *slot = codec::decode(item, &ty).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// How a failed call reaches the guest: as the function's `result<_, string>` error when it
/// has one, otherwise as a trap.
fn fail(ty: &ComponentFunc, results: &mut [Val], error: CallError) -> wasmtime::Result<()> {
    let mut types = ty.results();
    if let (1, Some(Type::Result(r))) = (types.len(), types.next())
        && matches!(r.err(), Some(Type::String))
    {
        results[0] = Val::Result(Err(Some(Box::new(Val::String(error.to_string())))));
        return Ok(());
    }
    Err(wasmtime::Error::new(error))
}

/// The components a workload's links send one interface to, by link name, in manifest order.
#[derive(Debug, Default)]
struct Targets(Vec<(String, ComponentName, Option<Arc<QueuedDelivery>>)>);

impl Targets {
    /// The links of `links` that send `interface` to a component.
    fn of(links: &[WorkloadLink], interface: &InterfaceName) -> Self {
        Self(
            links
                .iter()
                .filter(|l| {
                    l.serves(
                        interface.namespace(),
                        interface.package(),
                        interface.interface(),
                    )
                })
                .filter_map(|l| match &l.target {
                    LinkTarget::Component(c) => {
                        Some((l.name.clone(), c.clone(), l.queued.clone().map(Arc::new)))
                    }
                    _ => None,
                })
                .collect(),
        )
    }

    /// The target of the link named `chosen` (`wasmcloud:bus`), else of the first link, with
    /// its queued delivery, if any; `None` when no such link sends it anywhere.
    fn pick(&self, chosen: Option<&str>) -> Option<(&ComponentName, Option<&Arc<QueuedDelivery>>)> {
        let found = match chosen {
            Some(name) => self.0.iter().find(|(n, _, _)| n == name),
            None => self.0.first(),
        };
        found.map(|(_, c, q)| (c, q.as_ref()))
    }
}

/// Whether `component` imports an interface the host does not serve itself, which
/// [`link_imports`] defines: only such a component needs a linker of its own.
pub fn imports_components(runtime: &Runtime, component: &Component) -> bool {
    component
        .component_type()
        .imports(runtime.engine())
        .any(|(name, item)| {
            matches!(item.ty, ComponentItem::ComponentInstance(_))
                && !host_provided(name)
                && InterfaceName::parse(name).is_ok()
        })
}

/// Defines, in `linker`, every function of `component`'s imports that the host does not serve
/// itself: linked ones call their target component, the others fail as not linked.
///
/// Fails when a linked interface passes resources (handles cannot cross instances or hosts).
pub fn link_imports(
    linker: &mut Linker<HostState>,
    runtime: &Runtime,
    component: &Component,
    links: &[WorkloadLink],
) -> anyhow::Result<()> {
    let engine = runtime.engine();
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if host_provided(name) {
            continue;
        }
        let Ok(parsed) = InterfaceName::parse(name) else {
            continue;
        };
        let targets = Arc::new(Targets::of(links, &parsed));
        let linked = !targets.0.is_empty();
        let queued = targets.0.iter().any(|(_, _, q)| q.is_some());
        let interface = Arc::new(parsed.without_version());
        let mut scope = linker.instance(name)?;
        for (function, item) in instance.exports(engine) {
            let ComponentItem::ComponentFunc(func) = item.ty else {
                continue;
            };
            let crossable = func.params().all(|(_, t)| codec::crossable(&t))
                && func.results().all(|t| codec::crossable(&t));
            if linked && !crossable {
                anyhow::bail!(
                    "{name}.{function} passes resources, streams or futures, which cannot cross components; link it to a capability instead"
                );
            }
            if queued && !one_way(&func) {
                anyhow::bail!(
                    "{name}.{function} is on a link with `delivery: queued` but returns data: only one-way operations qualify (functions without a return value other than `result<_, error>`); make the link direct"
                );
            }
            let (interface, function_name, targets) = (
                interface.clone(),
                Arc::new(function.to_string()),
                targets.clone(),
            );
            scope.func_new_async(function, move |store, ty, params, results| {
                let (interface, function_name, targets) =
                    (interface.clone(), function_name.clone(), targets.clone());
                Box::new(async move {
                    let data = store.data();
                    let (ctx, deadline) = (data.ctx.clone(), data.deadline());
                    let chosen = data.link_names.chosen(
                        interface.namespace(),
                        interface.package(),
                        interface.interface(),
                    );
                    let chosen = chosen.map(str::to_owned);
                    let picked = targets.pick(chosen.as_deref());
                    let (target, queued) = (picked.map(|(t, _)| t), picked.and_then(|(_, q)| q));
                    let outcome = match (target, ctx.router()) {
                        (Some(t), _) if let Some(q) = queued => {
                            enqueue(&ctx, t, &interface, &function_name, &ty, params, q).await.map(
                                |()| {
                                    if let Some(slot) = results.first_mut() {
                                        *slot = Val::Result(Ok(None));
                                    }
                                },
                            )
                        }
                        (None, _) if let Some(name) = &chosen => Err(CallError::new(
                            CallErrorKind::NotLinked,
                            format!(
                                "no link named `{name}` (chosen with wasmcloud:bus/lattice.set-link-name) sends {interface} anywhere for `{}`: name one of its links that does",
                                ctx.name()
                            ),
                        )),
                        (None, _) => Err(CallError::new(
                            CallErrorKind::NotLinked,
                            format!(
                                "{interface} is not linked for `{}`: add a link trait naming the component that exports it",
                                ctx.name()
                            ),
                        )),
                        (Some(_), None) => Err(CallError::new(
                            CallErrorKind::NoInstance,
                            "this host routes no component calls".to_string(),
                        )),
                        (Some(t), Some(router)) => {
                            router
                                .call(&ctx, t, &interface, &function_name, &ty, params, results, deadline)
                                .await
                        }
                    };
                    match outcome {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            tracing::debug!(caller = %ctx.name(), %interface, function = %function_name, error = %e, "component call failed");
                            fail(&ty, results, e)
                        }
                    }
                })
            })?;
        }
    }
    Ok(())
}

/// Whether a function returns nothing a caller would wait for: no result, or `result<_, E>`.
fn one_way(func: &ComponentFunc) -> bool {
    let mut results = func.results();
    match (results.len(), results.next()) {
        (0, _) => true,
        (1, Some(Type::Result(r))) => r.ok().is_none(),
        _ => false,
    }
}

/// Queues a call on a queued link in the host's outbox.
#[tracing::instrument(name = "lattice.call.enqueue", level = "debug", skip_all, fields(%target, interface, function))]
async fn enqueue(
    ctx: &WorkloadCtx,
    target: &ComponentName,
    interface: &InterfaceName,
    function: &str,
    ty: &ComponentFunc,
    params: &[Val],
    delivery: &QueuedDelivery,
) -> Result<(), CallError> {
    let Some(queue) = ctx.queue() else {
        return Err(CallError::new(
            CallErrorKind::QueueFull,
            "this host has no outbox for queued calls".to_string(),
        ));
    };
    let args = codec_array(params.iter().zip(ty.params().map(|(_, t)| t)))
        .map_err(|e| CallError::new(CallErrorKind::InvalidPayload, format!("arguments: {e}")))?;
    let call = RpcCall {
        interface: interface.clone(),
        function: function.to_string(),
        args,
        deadline_ms: 0,
        caller: ctx.name(),
    };
    queue.enqueue(ctx, target, call, delivery).await
}

/// Runs a queued call in a fresh instance of `loaded`: `Ok` only when the function returned
/// without a trap and without its own error.
pub(crate) async fn deliver(
    loaded: &Loaded,
    call: &RpcCall,
    deadline: Instant,
) -> Result<(), CallError> {
    // A queued call waits for a slot: failing it would only spend one of its attempts.
    let Some(_slot) = loaded.gate.enter_by(deadline).await else {
        return Err(loaded.busy());
    };
    let mut store = loaded.store(Some(deadline));
    let func = loaded
        .instantiate_func(
            &mut store,
            call.interface.unversioned(),
            &call.function,
            deadline,
        )
        .await?;
    let ty = func.ty(&store);
    let mut params = vec![Val::Bool(false); ty.params().len()];
    decode_into(&call.args, ty.params().map(|(_, t)| t), &mut params)
        .map_err(|e| CallError::new(CallErrorKind::InvalidPayload, format!("arguments: {e}")))?;
    let mut results = vec![Val::Bool(false); ty.results().len()];
    func.call_async(&mut store, &params, &mut results)
        .await
        .map_err(|e| loaded.failed(&e, deadline))?;
    match results.first() {
        Some(Val::Result(Err(e))) => Err(CallError::new(
            CallErrorKind::Trap,
            format!(
                "`{}` returned an error: {}",
                loaded.ctx.name(),
                match e.as_deref() {
                    Some(Val::String(s)) => s.clone(),
                    Some(other) => format!("{other:?}"),
                    None => "(no detail)".to_string(),
                }
            ),
        )),
        _ => Ok(()),
    }
}

/// Answers calls to `loaded`'s component arriving over NATS, until the handle is dropped.
pub async fn serve(
    loaded: Arc<Loaded>,
    lattice: &LatticeLink,
) -> anyhow::Result<AbortOnDropHandle<()>> {
    let subject =
        Subject::rpc(&lattice.lattice, &loaded.ctx.app, &loaded.ctx.component).to_string();
    let mut calls = lattice
        .client
        .queue_subscribe(subject.clone(), subject)
        .await?;
    let client = lattice.client.clone();
    Ok(AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(message) = calls.next().await {
            let Some(reply_to) = message.reply else {
                continue;
            };
            // At the workload's concurrency the call is answered `busy` here, so calls in
            // flight (and their tasks) never outnumber its slots.
            let slot = match loaded.enter() {
                Ok(slot) => slot,
                Err(busy) => {
                    let reply = envelope::encode(&RpcReply::Err(busy));
                    if let Err(e) = client.publish(reply_to, reply.into()).await {
                        tracing::debug!(error = %e, "could not send a call's reply");
                    }
                    continue;
                }
            };
            let (loaded, client) = (loaded.clone(), client.clone());
            // A child of the caller's `lattice.call` span, on whichever host this is.
            let span = tracing::debug_span!("lattice.call.serve", component = %loaded.ctx.name());
            lattice_telemetry::propagation::continue_nats(&span, message.headers.as_ref());
            tokio::spawn(
                async move {
                    let _slot = slot;
                    let reply = answer(&loaded, &message.payload).await;
                    if let Err(e) = client
                        .publish(reply_to, envelope::encode(&reply).into())
                        .await
                    {
                        tracing::debug!(error = %e, "could not send a call's reply");
                    }
                }
                .instrument(span),
            );
        }
    })))
}

/// Runs one call received over NATS.
async fn answer(loaded: &Loaded, payload: &[u8]) -> RpcReply {
    let call: RpcCall = match envelope::decode(payload) {
        Ok(c) => c,
        Err(e) => {
            return RpcReply::Err(CallError::new(CallErrorKind::InvalidPayload, e.to_string()));
        }
    };
    let deadline = instant_at(call.deadline_ms);
    match answer_call(loaded, &call, deadline).await {
        Ok(bytes) => RpcReply::Ok(bytes),
        Err(e) => {
            tracing::debug!(caller = %call.caller, target = %loaded.ctx.name(), error = %e, "call failed");
            RpcReply::Err(e)
        }
    }
}

async fn answer_call(
    loaded: &Loaded,
    call: &RpcCall,
    deadline: Instant,
) -> Result<Vec<u8>, CallError> {
    let mut store = loaded.store(Some(deadline));
    let func = loaded
        .instantiate_func(
            &mut store,
            call.interface.unversioned(),
            &call.function,
            deadline,
        )
        .await?;
    let ty = func.ty(&store);
    let mut params = vec![Val::Bool(false); ty.params().len()];
    decode_into(&call.args, ty.params().map(|(_, t)| t), &mut params)
        .map_err(|e| CallError::new(CallErrorKind::InvalidPayload, format!("arguments: {e}")))?;
    let mut results = vec![Val::Bool(false); ty.results().len()];
    func.call_async(&mut store, &params, &mut results)
        .await
        .map_err(|e| loaded.failed(&e, deadline))?;
    codec_array(results.iter().zip(ty.results()))
        .map_err(|e| CallError::new(CallErrorKind::InvalidPayload, format!("results: {e}")))
}
