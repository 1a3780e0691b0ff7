//! Component-to-component calls: what a linked call costs beside calling the same export
//! directly, on one host and across hosts over NATS.
//!
//! `cargo bench -p lattice-tests --bench links` (optional argument: calls per measured block,
//! default 2,000). Prints figures and ratios; asserts nothing about time. The target is the
//! `examples/greeter` component's `example:greeter/greet.greet(name: string) -> string`, with a
//! 16-byte and a 1 KiB `name`.
//!
//! **Part 1, same host** (no NATS). One [`Runtime`] (the host's engine: pooling allocator,
//! epoch ticker), greeter linked with the host's linker ([`new_linker`]) and wrapped in a
//! [`Loaded`] as the host's agent does, registered in a [`Router`]. Every variant gets a fresh
//! per-invocation store built the way the host builds it ([`Loaded::store`]: `WasiCtx`, limits,
//! epoch deadline). Variants, per call:
//!
//! - `direct`: **the baseline.** `Loaded::store` + `InstancePre::instantiate_async` + `get_func`
//!   (export index looked up once, before the loop) + `call_async`: a direct wasmtime call of the
//!   export in a fresh instance, as the host runs every invocation.
//! - `router`: `Router::call` from host code: the local-target lookup, then `Loaded::invoke`
//!   (store, fresh instance, export looked up by name, call). The host side of a linked call
//!   without a calling guest.
//! - `linked`: **the linked call as a guest makes it.** A tiny *caller* component (encoded below
//!   with `wasm-encoder`: it imports `example:greeter/greet@0.1.0` and exports
//!   `run(name: string) -> string`, which calls the import and returns its result), linked with
//!   [`link_imports`] to greeter exactly as the agent links a workload, with a [`WorkloadCtx`]
//!   naming the router. One caller instance serves a chunk of calls in a row (its instantiation
//!   is *not* counted); each `run` lowers the argument into the caller, crosses into the host's
//!   import function (values as `Val`s), `Router::call` (lookup, fresh greeter instance, call),
//!   and lifts the result back out of the caller.
//! - `caller-stub` (for information): the same caller, its import defined as a host function
//!   that answers `Hello, <name>!` itself: the caller's own share of `linked` (guest → host →
//!   guest, no target).
//! - `warm` (for information): `greet` called again and again on **one** greeter instance: the
//!   call alone, without the fresh instance every invocation gets.
//!
//! **Part 2, across hosts over NATS.** One nats-server (random port, started by the bench).
//! Two NATS connections stand for two hosts, both in this process: "host A" has a `Router` with
//! no local greeter and a `LatticeLink` on connection A, so its calls go over NATS; "host B"
//! runs `calls::serve` for greeter on connection B (queue subscription, a task per call, fresh
//! instance, MessagePack by WIT type). Nothing short-circuits NATS: every call is a request
//! from connection A through the server to connection B and back. Variants, per call:
//!
//! - `raw`: **the baseline.** `async_nats::Client::request` on connection A to a responder on
//!   connection B that answers at once (no task spawned) with a reply of the same size as the
//!   RPC's reply; the request is the same size as the RPC's request.
//! - `rpc`: `Router::call` on host A (encode the arguments and the `RpcCall` envelope, request,
//!   decode the reply), served by host B.
//! - `rpc-guest` (for information): the caller component's `run` on host A, its import routed
//!   over NATS to host B.
//!
//! Calls are sequential (one in flight). Within each round the variants take turns in chunks of
//! 50 calls, their order rotating, so that a neighbour's load (or an idle vCPU's wake-up) falls on
//! all of them alike; each call is timed alone and the figures are percentiles over all rounds.
//! Ratios are of p50s; the range of the per-round ratios is printed beside them. Machine load is
//! printed at every round, since the machine may be shared.

#[path = "links/caller.rs"]
mod caller;
#[allow(dead_code)] // only some of the helpers are used here
#[path = "control_scale/machine.rs"]
mod machine;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use lattice_host::caps::calls::{self, Loaded, Router, link_imports};
use lattice_host::caps::{LatticeLink, Services, WorkloadCtx, WorkloadSpec, codec};
use lattice_host::engine::{EngineConfig, Runtime};
use lattice_host::http::FailureCount;
use lattice_host::wasi::{HostState, Limits, new_linker, new_store};
use lattice_protocol::assignment::{LinkTarget, WorkloadLink};
use lattice_protocol::envelope;
use lattice_protocol::names::{AppName, ComponentName, HostId, LatticeName};
use lattice_protocol::rpc::{RpcCall, RpcReply};
use lattice_tests::NatsServer;
use wasmtime::Store;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Func, InstancePre, Linker, Val};

use machine::{cores, cpu_model, loadavg};

const APP: &str = "bench";
const IMPORT: &str = "example:greeter/greet@0.1.0";
const INTERFACE: &str = "example:greeter/greet";
/// [`INTERFACE`], parsed.
static GREET: std::sync::LazyLock<lattice_protocol::wit::InterfaceName> =
    std::sync::LazyLock::new(|| INTERFACE.parse().expect("an interface name"));
const FUNCTION: &str = "greet";
const DEFAULT_CALLS: usize = 2000;
const ROUNDS: usize = 5;
/// Calls a variant makes before the next one takes its turn.
const CHUNK: usize = 50;
/// Argument sizes: 16 bytes and 1 KiB.
const SIZES: [usize; 2] = [16, 1024];

fn main() -> anyhow::Result<()> {
    lattice_host::quiet_library_backtraces();
    let calls = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| {
            a.parse::<usize>()
                .context("the argument is the number of calls per block")
        })
        .transpose()?
        .unwrap_or(DEFAULT_CALLS)
        .max(10);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(calls))
}

async fn run(calls: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("links: component-to-component calls, greeter.greet(string) -> string");
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!(
        "{ROUNDS} rounds x {calls} calls per variant and size; load average at start: {}",
        loadavg()
    );
    let bench = Bench::new()?;
    let mut summary = Vec::new();
    for size in SIZES {
        summary.push(bench.same_host(size, calls).await?);
    }
    let nats = NatsServer::start().await?;
    let remote = Remote::start(&bench, &nats).await?;
    for size in SIZES {
        summary.push(remote.measure(&bench, size, calls).await?);
    }

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

/// A name of `size` bytes.
fn name_of(size: usize) -> String {
    "n".repeat(size)
}

fn greeting(name: &str) -> String {
    format!("Hello, {name}!")
}

/// greet's type, from greeter's component type.
fn greet_type(runtime: &Runtime, component: &Component) -> anyhow::Result<ComponentFunc> {
    let engine = runtime.engine();
    for (name, item) in component.component_type().exports(engine) {
        if name != IMPORT {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        for (function, item) in instance.exports(engine) {
            if let (FUNCTION, ComponentItem::ComponentFunc(f)) = (function, item.ty) {
                return Ok(f);
            }
        }
    }
    anyhow::bail!("greeter exports no {IMPORT}.{FUNCTION}")
}

fn greeter_link() -> WorkloadLink {
    WorkloadLink {
        namespace: "example".into(),
        package: "greeter".into(),
        interfaces: vec!["greet".into()],
        name: "default".into(),
        target: LinkTarget::Component(ComponentName::new("greeter").expect("a valid name")),
        source_config: BTreeMap::new(),
        target_config: BTreeMap::new(),
        source_secrets: Default::default(),
        target_secrets: Default::default(),
        queued: None,
    }
}

fn ctx(
    component: &str,
    links: Vec<WorkloadLink>,
    lattice: Option<LatticeLink>,
    router: Option<Arc<Router>>,
) -> anyhow::Result<Arc<WorkloadCtx>> {
    let spec = WorkloadSpec {
        app: AppName::new(APP)?,
        component: ComponentName::new(component)?,
        env: Vec::new(),
        config: BTreeMap::new(),
        secrets: Default::default(),
        links,
    };
    let services = Services {
        lattice,
        router,
        ..Services::default()
    };
    Ok(Arc::new(WorkloadCtx::new(spec, services)))
}

/// What both parts share: the engine, greeter compiled and linked, the caller component.
struct Bench {
    runtime: Runtime,
    linker: Linker<HostState>,
    limits: Limits,
    greeter_pre: InstancePre<HostState>,
    greet_ty: ComponentFunc,
    /// greeter's `greet`, looked up once.
    greet_index: ComponentExportIndex,
    caller: Component,
    /// The caller with its import answered by the host itself.
    stub_pre: InstancePre<HostState>,
}

impl Bench {
    fn new() -> anyhow::Result<Self> {
        let runtime = Runtime::new(&EngineConfig::default())?;
        let linker = new_linker(&runtime)?;
        let limits = Limits::from_config(runtime.config());
        let bytes = std::fs::read(env!("LATTICE_GREETER_WASM"))
            .context("the build script built the example components")?;
        let greeter = Component::new(runtime.engine(), &bytes)?;
        println!(
            "greeter: {} bytes of wasm; caller: {} bytes (hand-encoded)",
            bytes.len(),
            caller::component().len()
        );
        let greeter_pre = linker.instantiate_pre(&greeter)?;
        let greet_ty = greet_type(&runtime, &greeter)?;
        let interface = greeter
            .get_export_index(None, IMPORT)
            .context("greeter exports the interface")?;
        let greet_index = greeter
            .get_export_index(Some(&interface), FUNCTION)
            .context("the interface has greet")?;
        let caller = Component::new(runtime.engine(), caller::component())?;
        let mut stub = linker.clone();
        stub.instance(IMPORT)?
            .func_new_async(FUNCTION, |_store, _ty, params, results| {
                let answer = match params {
                    [Val::String(name)] => Ok(Val::String(greeting(name))),
                    _ => Err(wasmtime::Error::msg("greet takes one string")),
                };
                Box::new(async move {
                    results[0] = answer?;
                    Ok(())
                })
            })?;
        let stub_pre = stub.instantiate_pre(&caller)?;
        Ok(Self {
            runtime,
            linker,
            limits,
            greeter_pre,
            greet_ty,
            greet_index,
            caller,
            stub_pre,
        })
    }

    /// greeter as a workload of app `bench` (what the agent builds).
    fn greeter(&self, lattice: Option<LatticeLink>) -> anyhow::Result<Arc<Loaded>> {
        Ok(Arc::new(Loaded::new(
            self.runtime.clone(),
            self.greeter_pre.clone(),
            ctx("greeter", Vec::new(), lattice, None)?,
            self.limits,
            FailureCount::default(),
        )))
    }

    /// The caller linked to greeter through `router`, as the agent links a workload.
    fn caller(&self, router: Arc<Router>) -> anyhow::Result<CallerPre> {
        let mut linker = self.linker.clone();
        let links = vec![greeter_link()];
        link_imports(&mut linker, &self.runtime, &self.caller, &links)?;
        Ok(CallerPre {
            pre: linker.instantiate_pre(&self.caller)?,
            ctx: ctx("caller", links, None, Some(router))?,
        })
    }

    fn caller_ctx(&self, router: Arc<Router>) -> anyhow::Result<Arc<WorkloadCtx>> {
        ctx("caller", vec![greeter_link()], None, Some(router))
    }

    /// A store for one invocation of `ctx`, as the host makes it.
    fn store(&self, ctx: Arc<WorkloadCtx>) -> Store<HostState> {
        new_store(&self.runtime, HostState::for_workload(ctx, &self.limits))
    }

    async fn same_host(&self, size: usize, calls: usize) -> anyhow::Result<String> {
        let name = name_of(size);
        let expected = greeting(&name);
        println!();
        println!("== Same host, {size}-byte name ==");
        let router = Arc::new(Router::new(None));
        let greeter = self.greeter(None)?;
        router.insert(greeter.clone());
        let caller = self.caller(router.clone())?;
        let caller_ctx = self.caller_ctx(router.clone())?;
        let target = ComponentName::new("greeter")?;
        let params = [Val::String(name.clone())];

        let mut variants: Vec<Variant<'_>> = vec![
            Variant::new("direct", {
                let (greeter, params) = (greeter.clone(), &params);
                let index = self.greet_index;
                Box::new(move |n| {
                    let greeter = greeter.clone();
                    Box::pin(async move {
                        let mut times = Vec::with_capacity(n);
                        let mut results = [Val::Bool(false)];
                        for _ in 0..n {
                            let t = Instant::now();
                            let mut store = greeter.store(None);
                            let instance = greeter.pre.instantiate_async(&mut store).await?;
                            let func = instance
                                .get_func(&mut store, index)
                                .context("greet is a function")?;
                            func.call_async(&mut store, params, &mut results).await?;
                            drop(store);
                            times.push(t.elapsed());
                        }
                        Ok((times, results[0].clone()))
                    })
                })
            }),
            Variant::new("router", {
                let (router, caller_ctx, target, params) =
                    (router.clone(), caller_ctx.clone(), &target, &params);
                let ty = &self.greet_ty;
                Box::new(move |n| {
                    let (router, caller_ctx) = (router.clone(), caller_ctx.clone());
                    Box::pin(async move {
                        let mut times = Vec::with_capacity(n);
                        let mut results = [Val::Bool(false)];
                        for _ in 0..n {
                            let t = Instant::now();
                            let deadline = Instant::now() + Duration::from_secs(10);
                            router
                                .call(
                                    &caller_ctx,
                                    target,
                                    &GREET,
                                    FUNCTION,
                                    ty,
                                    params,
                                    &mut results,
                                    deadline,
                                )
                                .await?;
                            times.push(t.elapsed());
                        }
                        Ok((times, results[0].clone()))
                    })
                })
            }),
            Variant::new("linked", self.guest_runs(&caller.pre, &caller.ctx, &params)),
            Variant::new(
                "caller-stub",
                self.guest_runs(&self.stub_pre, &caller_ctx, &params),
            ),
            Variant::new("warm", {
                let (greeter, params) = (greeter.clone(), &params);
                let index = self.greet_index;
                Box::new(move |n| {
                    let greeter = greeter.clone();
                    Box::pin(async move {
                        let mut store = greeter.store(None);
                        let instance = greeter.pre.instantiate_async(&mut store).await?;
                        let func = instance
                            .get_func(&mut store, index)
                            .context("greet is a function")?;
                        let mut times = Vec::with_capacity(n);
                        let mut results = [Val::Bool(false)];
                        for _ in 0..n {
                            let t = Instant::now();
                            func.call_async(&mut store, params, &mut results).await?;
                            times.push(t.elapsed());
                        }
                        Ok((times, results[0].clone()))
                    })
                })
            }),
        ];
        measure(&mut variants, calls, &expected).await?;
        report_variants(&variants, &format!("same_host.size_{size}"));
        let direct = &variants[0];
        let mut out = format!("same host, {size}-byte name (per call, p50):");
        for v in &variants {
            out.push_str(&format!("\n  {:<12} {}", v.name, v.describe()));
        }
        for (i, what) in [(1, "router/direct"), (2, "linked/direct")] {
            let (ratio, lo, hi) = ratio(&variants[i], direct);
            out.push_str(&format!(
                "\n  {what}: {ratio:.2} (per round {lo:.2}-{hi:.2})  target <= 2"
            ));
            println!(
                "RESULT links.same_host.{} size={size} ratio_p50={ratio:.3} round_min={lo:.3} round_max={hi:.3}",
                what.replace('/', "_over_")
            );
        }
        let (ratio, lo, hi) = ratio(&variants[2], &variants[4]);
        out.push_str(&format!(
            "\n  linked/warm (for information): {ratio:.2} (per round {lo:.2}-{hi:.2})"
        ));
        Ok(out)
    }

    /// `run(name)` of one instance of the caller per block, called `n` times.
    fn guest_runs<'a>(
        &'a self,
        pre: &'a InstancePre<HostState>,
        ctx: &'a Arc<WorkloadCtx>,
        params: &'a [Val],
    ) -> Runner<'a> {
        Box::new(move |n| {
            Box::pin(async move {
                let mut store = self.store(ctx.clone());
                let instance = pre.instantiate_async(&mut store).await?;
                let run: Func = instance
                    .get_func(&mut store, "run")
                    .context("the caller exports run")?;
                let mut times = Vec::with_capacity(n);
                let mut results = [Val::Bool(false)];
                for _ in 0..n {
                    let t = Instant::now();
                    run.call_async(&mut store, params, &mut results).await?;
                    times.push(t.elapsed());
                }
                Ok((times, results[0].clone()))
            })
        })
    }
}

struct CallerPre {
    pre: InstancePre<HostState>,
    ctx: Arc<WorkloadCtx>,
}

type Outcome = anyhow::Result<(Vec<Duration>, Val)>;
/// Runs `n` calls and returns each call's time and the last result.
type Runner<'a> =
    Box<dyn FnMut(usize) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + 'a>> + 'a>;

struct Variant<'a> {
    name: &'static str,
    runner: Runner<'a>,
    /// Every call of every round.
    all: Vec<Duration>,
    /// Each round's p50.
    rounds: Vec<Duration>,
}

impl<'a> Variant<'a> {
    fn new(name: &'static str, runner: Runner<'a>) -> Self {
        Self {
            name,
            runner,
            all: Vec::new(),
            rounds: Vec::new(),
        }
    }

    fn pct(&self, p: f64) -> Duration {
        percentile(&self.all, p)
    }

    fn mean(&self) -> Duration {
        self.all.iter().sum::<Duration>() / self.all.len().max(1) as u32
    }

    fn describe(&self) -> String {
        format!(
            "p50 {:>8}  p90 {:>8}  p99 {:>8}  mean {:>8}",
            us(self.pct(0.5)),
            us(self.pct(0.9)),
            us(self.pct(0.99)),
            us(self.mean())
        )
    }
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

/// p50(a) / p50(b) over all calls, and the range of the per-round ratios.
fn ratio(a: &Variant<'_>, b: &Variant<'_>) -> (f64, f64, f64) {
    let all = a.pct(0.5).as_secs_f64() / b.pct(0.5).as_secs_f64();
    let per_round: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .map(|(x, y)| x.as_secs_f64() / y.as_secs_f64())
        .collect();
    let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = per_round.iter().copied().fold(0.0, f64::max);
    (all, lo, hi)
}

/// A warm-up block of every variant (checking its answer), then [`ROUNDS`] rounds of `calls`
/// calls of each. Within a round the variants take turns in chunks of [`CHUNK`] calls, the
/// order rotating, so that all of them see the same machine (a neighbour's burst, an idle vCPU).
async fn measure(variants: &mut [Variant<'_>], calls: usize, expected: &str) -> anyhow::Result<()> {
    for v in variants.iter_mut() {
        let (_, last) = (v.runner)((calls / 5).max(10))
            .await
            .with_context(|| format!("warming up {}", v.name))?;
        match last {
            Val::String(s) if s == expected => {}
            other => anyhow::bail!("{} answered {other:?}", v.name),
        }
    }
    let k = variants.len();
    for round in 0..ROUNDS {
        let mut times = vec![Vec::with_capacity(calls); k];
        for chunk in 0..calls.div_ceil(CHUNK) {
            let n = CHUNK.min(calls - chunk * CHUNK);
            for j in 0..k {
                let i = (chunk + j) % k;
                let (t, _) = (variants[i].runner)(n).await?;
                times[i].extend(t);
            }
        }
        for (v, times) in variants.iter_mut().zip(times) {
            v.rounds.push(percentile(&times, 0.5));
            v.all.extend(times);
        }
        let p50s: Vec<String> = variants
            .iter()
            .map(|v| format!("{} {}", v.name, us(v.rounds[round])))
            .collect();
        println!(
            "round {}: p50 {}  (load average {})",
            round + 1,
            p50s.join(", "),
            loadavg()
        );
    }
    Ok(())
}

fn report_variants(variants: &[Variant<'_>], prefix: &str) {
    for v in variants {
        println!(
            "RESULT links.{prefix}.{} calls={} p50_us={:.2} p90_us={:.2} p99_us={:.2} mean_us={:.2} round_p50_min_us={:.2} round_p50_max_us={:.2} loadavg=\"{}\"",
            v.name,
            v.all.len(),
            v.pct(0.5).as_secs_f64() * 1e6,
            v.pct(0.9).as_secs_f64() * 1e6,
            v.pct(0.99).as_secs_f64() * 1e6,
            v.mean().as_secs_f64() * 1e6,
            v.rounds
                .iter()
                .min()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e6,
            v.rounds
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e6,
            loadavg()
        );
    }
}

/// Two "hosts" on two NATS connections: A calls, B serves greeter (and the raw responder).
struct Remote {
    client_a: async_nats::Client,
    router_a: Arc<Router>,
    caller_a: CallerPre,
    _serve_b: tokio_util::task::AbortOnDropHandle<()>,
    _raw_b: tokio_util::task::AbortOnDropHandle<()>,
    /// The raw responder's reply size, set before each size's measurement.
    raw_reply: Arc<std::sync::atomic::AtomicUsize>,
}

const RAW_SUBJECT: &str = "bench.raw";

impl Remote {
    async fn start(bench: &Bench, nats: &NatsServer) -> anyhow::Result<Self> {
        let lattice = LatticeName::new("bench")?;
        let link = |client: async_nats::Client, host: &str| -> anyhow::Result<LatticeLink> {
            Ok(LatticeLink {
                jetstream: async_nats::jetstream::new(client.clone()),
                client,
                lattice: lattice.clone(),
                host: HostId::new(host)?,
                storage: Default::default(),
                clock: Default::default(),
            })
        };
        let (client_a, client_b) = (nats.client().await?, nats.client().await?);
        let link_a = link(client_a.clone(), "host-a")?;
        let link_b = link(client_b.clone(), "host-b")?;
        // Host B: greeter, served over NATS only (B's router is not involved in serving).
        let greeter_b = bench.greeter(Some(link_b.clone()))?;
        let serve_b = calls::serve(greeter_b, &link_b).await?;
        // Host A: no greeter here, so its router goes over NATS.
        let router_a = Arc::new(Router::new(Some(link_a)));
        let caller_a = bench.caller(router_a.clone())?;
        // The raw responder on B: answers every request at once with `raw_reply` bytes.
        let raw_reply = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut requests = client_b.subscribe(RAW_SUBJECT).await?;
        client_b.flush().await?;
        let raw_b = {
            let (client_b, raw_reply) = (client_b.clone(), raw_reply.clone());
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                let mut body = bytes::BytesMut::new();
                while let Some(message) = requests.next().await {
                    let Some(reply_to) = message.reply else {
                        continue;
                    };
                    let size = raw_reply.load(std::sync::atomic::Ordering::Relaxed);
                    body.resize(size, b'r');
                    let _ = client_b.publish(reply_to, body.clone().freeze()).await;
                }
            }))
        };
        Ok(Self {
            client_a,
            router_a,
            caller_a,
            _serve_b: serve_b,
            _raw_b: raw_b,
            raw_reply,
        })
    }

    /// The sizes of the RPC's request and reply for a `size`-byte name.
    fn rpc_sizes(bench: &Bench, name: &str) -> anyhow::Result<(usize, usize)> {
        let (_, param_ty) = bench
            .greet_ty
            .params()
            .next()
            .context("greet has a param")?;
        let result_ty = bench
            .greet_ty
            .results()
            .next()
            .context("greet has a result")?;
        let array = |v: &Val, t| -> anyhow::Result<Vec<u8>> {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &rmpv::Value::Array(vec![codec::encode(v, t)?]))?;
            Ok(out)
        };
        let call = RpcCall {
            interface: GREET.clone(),
            function: FUNCTION.into(),
            args: array(&Val::String(name.into()), &param_ty)?,
            deadline_ms: lattice_protocol::unix_now() * 1000 + 10_000,
            caller: format!("{APP}/caller"),
        };
        let reply = RpcReply::Ok(array(&Val::String(greeting(name)), &result_ty)?);
        Ok((
            envelope::encode(&call).len(),
            envelope::encode(&reply).len(),
        ))
    }

    async fn measure(&self, bench: &Bench, size: usize, calls: usize) -> anyhow::Result<String> {
        let name = name_of(size);
        let expected = greeting(&name);
        let (request_bytes, reply_bytes) = Self::rpc_sizes(bench, &name)?;
        self.raw_reply
            .store(reply_bytes, std::sync::atomic::Ordering::Relaxed);
        println!();
        println!(
            "== Across hosts over NATS, {size}-byte name (request {request_bytes} B, reply {reply_bytes} B on the wire, payloads) =="
        );
        let caller_ctx = bench.caller_ctx(self.router_a.clone())?;
        let target = ComponentName::new("greeter")?;
        let params = [Val::String(name.clone())];
        let raw_request = bytes::Bytes::from(vec![b'q'; request_bytes]);
        let mut variants: Vec<Variant<'_>> = vec![
            Variant::new("raw", {
                let (client, expected) = (&self.client_a, expected.clone());
                Box::new(move |n| {
                    let (raw_request, expected) = (raw_request.clone(), expected.clone());
                    Box::pin(async move {
                        let mut times = Vec::with_capacity(n);
                        for _ in 0..n {
                            let t = Instant::now();
                            let reply = client.request(RAW_SUBJECT, raw_request.clone()).await?;
                            times.push(t.elapsed());
                            anyhow::ensure!(reply.payload.len() == reply_bytes, "raw reply size");
                        }
                        // The raw reply carries no greeting; answer what the check expects.
                        Ok((times, Val::String(expected)))
                    })
                })
            }),
            Variant::new("rpc", {
                let (router, caller_ctx, target, params) =
                    (self.router_a.clone(), caller_ctx.clone(), &target, &params);
                let ty = &bench.greet_ty;
                Box::new(move |n| {
                    let (router, caller_ctx) = (router.clone(), caller_ctx.clone());
                    Box::pin(async move {
                        let mut times = Vec::with_capacity(n);
                        let mut results = [Val::Bool(false)];
                        for _ in 0..n {
                            let t = Instant::now();
                            let deadline = Instant::now() + Duration::from_secs(10);
                            router
                                .call(
                                    &caller_ctx,
                                    target,
                                    &GREET,
                                    FUNCTION,
                                    ty,
                                    params,
                                    &mut results,
                                    deadline,
                                )
                                .await?;
                            times.push(t.elapsed());
                        }
                        Ok((times, results[0].clone()))
                    })
                })
            }),
            Variant::new(
                "rpc-guest",
                bench.guest_runs(&self.caller_a.pre, &self.caller_a.ctx, &params),
            ),
        ];
        measure(&mut variants, calls, &expected).await?;
        report_variants(&variants, &format!("nats.size_{size}"));
        let mut out = format!("across hosts over NATS, {size}-byte name (per call):");
        for v in &variants {
            out.push_str(&format!("\n  {:<12} {}", v.name, v.describe()));
        }
        let (r, lo, hi) = ratio(&variants[1], &variants[0]);
        out.push_str(&format!(
            "\n  rpc/raw p50: {r:.2} (per round {lo:.2}-{hi:.2})  target <= 1.5"
        ));
        println!(
            "RESULT links.nats.rpc_over_raw size={size} request_bytes={request_bytes} reply_bytes={reply_bytes} ratio_p50={r:.3} round_min={lo:.3} round_max={hi:.3} p90_ratio={:.3} p99_ratio={:.3}",
            variants[1].pct(0.9).as_secs_f64() / variants[0].pct(0.9).as_secs_f64(),
            variants[1].pct(0.99).as_secs_f64() / variants[0].pct(0.99).as_secs_f64(),
        );
        let (r, lo, hi) = ratio(&variants[2], &variants[0]);
        out.push_str(&format!(
            "\n  rpc-guest/raw p50 (for information): {r:.2} (per round {lo:.2}-{hi:.2})"
        ));
        Ok(out)
    }
}
