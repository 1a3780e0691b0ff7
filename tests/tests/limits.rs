//! Per-component limits, end to end: a manifest's `limits` block reaches the host through the
//! signed assignment and bounds its component's memory, time and concurrency there, and one
//! workload's flood or memory burst stays its own. Real nats-server, control plane and host,
//! real wasmtime, hand-made guests (`lattice-test-guests`) beside the real `hello` as the
//! neighbour.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lattice_host::engine::PoolSizing;
use lattice_test_guests::{bombs, greedy, looping};
use lattice_tests::TestLattice;
use lattice_tests::guest_apps::{Reply, deploy_guest, deploy_neighbour, get, neighbour_answers};

/// Generous bound on one request in these tests (a timed-out guest takes its whole timeout).
const REQUEST: Duration = Duration::from_secs(20);

/// The flooded app's concurrency; the flood keeps ten times as many requests in flight.
const CONCURRENCY: usize = 2;
/// How long each of the flooded app's requests sleeps in its guest.
const SLOW_MS: u32 = 200;
/// Neighbour requests measured, unloaded and loaded.
const SAMPLES: usize = 60;
/// The loaded p99 may be at most this many times the unloaded one (taken as at least
/// [`P99_FLOOR`], so that a sub-millisecond baseline on an idle machine does not make the
/// bound meaningless on a busy one).
const P99_FACTOR: u32 = 10;
const P99_FLOOR: Duration = Duration::from_millis(5);
/// How soon a refused flood client tries again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The neighbour's latencies over `SAMPLES` sequential requests, sorted; each must succeed.
async fn neighbour_latencies(addr: &str) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let reply = get(addr, REQUEST).await?;
        latencies.push(started.elapsed());
        anyhow::ensure!(
            reply.status == 200 && reply.body.starts_with("Neighbour from Lattice"),
            "the neighbour failed a request: {reply:?}"
        );
    }
    latencies.sort();
    Ok(latencies)
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

/// Two apps on one host: `flooded` (a guest that sleeps 200 ms, `concurrency: 2`) kept at
/// ten times its concurrency, and `neighbour` (hello). The neighbour keeps 100 % success and a
/// p99 within 10x its unloaded p99 (measured first, in this test); the flood's excess is
/// answered 503 with `Retry-After` at once, while its admitted requests run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooded_app_is_refused_busy_while_its_neighbour_keeps_its_latency() -> anyhow::Result<()>
{
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let neighbour = deploy_neighbour(&t).await?;
    let flooded = deploy_guest(
        &t,
        "flooded",
        &bombs::sleepy(SLOW_MS),
        &["concurrency: 2", "timeout: 10s"],
    )
    .await?;
    let unloaded = p99(&neighbour_latencies(&neighbour).await?);

    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..CONCURRENCY * 10 {
        let (addr, stop) = (flooded.clone(), stop.clone());
        flood.push(tokio::spawn(async move {
            let mut replies: Vec<(Reply, Duration)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let reply = get(&addr, REQUEST).await?;
                let refused = reply.status == 503;
                replies.push((reply, started.elapsed()));
                if refused {
                    // A client retrying soon, though sooner than `Retry-After` asks: the
                    // pressure stays on without turning into a CPU flood of refusals.
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            anyhow::Ok(replies)
        }));
    }
    let loaded = neighbour_latencies(&neighbour).await;
    stop.store(true, Ordering::Relaxed);
    let mut replies = Vec::new();
    for task in flood {
        replies.extend(tokio::time::timeout(REQUEST, task).await???);
    }
    let loaded = p99(&loaded?);

    let (busy, ran): (Vec<_>, Vec<_>) = replies.iter().partition(|(r, _)| r.status == 503);
    assert!(!busy.is_empty(), "no request of the flood was refused");
    for (reply, took) in &busy {
        assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
        assert!(reply.body.contains("concurrency"), "{reply:?}");
        // Refused at once, not after waiting for a slot.
        assert!(
            *took < Duration::from_millis(u64::from(SLOW_MS)),
            "{took:?}"
        );
    }
    assert!(!ran.is_empty(), "no request of the flood ran");
    for (reply, _) in &ran {
        // The sleeping guest answers nothing itself: the host says so.
        assert_eq!((reply.status, reply.body.as_str()), (500, "no response\n"));
    }
    let bound = unloaded.max(P99_FLOOR) * P99_FACTOR;
    assert!(
        loaded <= bound,
        "the neighbour's p99 went from {unloaded:?} unloaded to {loaded:?} during the flood \
         (bound {bound:?})"
    );
    Ok(())
}

/// The manifest's `memory` and `timeout` reach the host: the same guests fail at the limits
/// their manifest sets, far below the host's own (256 MiB, 60 s), and only their own requests.
#[tokio::test]
async fn a_manifests_memory_and_time_limits_bound_its_component() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let neighbour = deploy_neighbour(&t).await?;

    // 1 + 32 pages (2.1 MiB): within the host's limit, over the manifest's 1 MiB.
    let roomy = deploy_guest(&t, "roomy", &greedy(32), &[]).await?;
    let tight = deploy_guest(&t, "tight", &greedy(32), &["memory: 1Mi"]).await?;
    let reply = get(&roomy, REQUEST).await?;
    assert_eq!((reply.status, reply.body.as_str()), (500, "no response\n"));
    let reply = get(&tight, REQUEST).await?;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "component failed\n")
    );

    let looping_app = deploy_guest(&t, "spinner", &looping(), &["timeout: 300ms"]).await?;
    let started = Instant::now();
    let reply = get(&looping_app, REQUEST).await?;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "component timed out\n")
    );
    // Stopped at its own limit, not the host's minute (generously: well under 60 s).
    assert!(started.elapsed() < Duration::from_secs(15), "{started:?}");
    neighbour_answers(&neighbour).await?;
    Ok(())
}

/// A small gateway: no pool and 512 MiB for all guests together. A burst of guests that each
/// hold ~188 MiB while they sleep: the ones that fit run, the rest fail their own request
/// ("component failed"), the host stays up and the neighbour keeps answering throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_gateway_stays_up_under_a_burst_of_memory_hungry_guests() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let mut config = t.host_config("gateway");
    config.engine.pool = PoolSizing::OnDemand;
    config.engine.guest_memory_total = Some(512 << 20);
    let _host = t.start_host(config).await?;
    t.wait_for("host gateway to report", || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == "gateway"))
    })
    .await?;
    let neighbour = deploy_neighbour(&t).await?;
    // 3000 pages: 187.5 MiB each, so two fit in the budget beside the neighbour, three do not.
    let hungry = deploy_guest(
        &t,
        "hungry",
        &bombs::hungry(3000, 1500),
        &["concurrency: 16"],
    )
    .await?;

    let burst: Vec<_> = (0..8)
        .map(|_| {
            let addr = hungry.clone();
            tokio::spawn(async move { get(&addr, REQUEST).await })
        })
        .collect();
    // While the burst holds its memory, the neighbour answers.
    for _ in 0..10 {
        neighbour_answers(&neighbour).await?;
    }
    let mut ran = 0;
    let mut refused = 0;
    for request in burst {
        let reply = tokio::time::timeout(REQUEST, request).await???;
        match (reply.status, reply.body.as_str()) {
            (500, "no response\n") => ran += 1,
            (500, "component failed\n") => refused += 1,
            other => panic!("unexpected answer to a hungry guest: {other:?}"),
        }
    }
    assert!(ran >= 1, "no hungry guest got its memory");
    assert!(
        refused >= 1,
        "every hungry guest got ~188 MiB of a 512 MiB budget"
    );
    assert!(
        ran <= 2,
        "{ran} guests of ~188 MiB each ran in a 512 MiB budget"
    );
    // The budget was given back: a hungry guest runs again, and the neighbour answers.
    let reply = get(&hungry, REQUEST).await?;
    assert_eq!((reply.status, reply.body.as_str()), (500, "no response\n"));
    neighbour_answers(&neighbour).await?;
    Ok(())
}

/// Over NATS, a call to a component at its concurrency is answered at once with the typed
/// `busy` kind (not a timeout, not a trap); once a slot is free the same call runs. greeter
/// (the real example) served by `calls::serve` as a host serves it, with a concurrency of 1
/// whose one slot the test holds.
#[tokio::test]
async fn a_call_beyond_the_targets_concurrency_is_busy() -> anyhow::Result<()> {
    use std::collections::BTreeMap;

    use lattice_host::caps::calls::{self, Loaded};
    use lattice_host::caps::{LatticeLink, Services, WorkloadCtx, WorkloadSpec};
    use lattice_host::engine::{EngineConfig, Runtime};
    use lattice_host::http::FailureCount;
    use lattice_host::limits::Gate;
    use lattice_host::wasi::{Limits, new_linker};
    use lattice_protocol::envelope;
    use lattice_protocol::names::{AppName, ComponentName, HostId, LatticeName};
    use lattice_protocol::rpc::{CallErrorKind, RpcCall, RpcReply};
    use lattice_protocol::subject::Subject;
    use wasmtime::component::Component;

    let nats = lattice_tests::NatsServer::start().await?;
    let client = nats.client().await?;
    let lattice = LatticeName::new("default")?;
    let link = LatticeLink {
        jetstream: async_nats::jetstream::new(client.clone()),
        client: client.clone(),
        lattice: lattice.clone(),
        host: HostId::new("host-a")?,
        storage: Default::default(),
        clock: Default::default(),
    };
    let runtime = Runtime::new(&EngineConfig {
        pool: PoolSizing::OnDemand,
        ..EngineConfig::default()
    })?;
    let greeter = Component::new(
        runtime.engine(),
        std::fs::read(env!("LATTICE_GREETER_WASM"))?,
    )
    .map_err(anyhow::Error::from)?;
    let pre = new_linker(&runtime)?
        .instantiate_pre(&greeter)
        .map_err(anyhow::Error::from)?;
    let (app, component) = (AppName::new("shop")?, ComponentName::new("greeter")?);
    let ctx = Arc::new(WorkloadCtx::new(
        WorkloadSpec {
            app: app.clone(),
            component: component.clone(),
            env: Vec::new(),
            config: BTreeMap::new(),
            secrets: Default::default(),
            links: Vec::new(),
        },
        Services {
            lattice: Some(link.clone()),
            ..Services::default()
        },
    ));
    let gate = Gate::new(1);
    let loaded = Loaded::new(
        runtime.clone(),
        pre,
        ctx,
        Limits::from_config(runtime.config()),
        FailureCount::default(),
    )
    .with_gate(gate.clone());
    let _serving = calls::serve(Arc::new(loaded), &link).await?;
    client.flush().await?;

    let subject = Subject::rpc(&lattice, &app, &component).to_string();
    let call = || {
        let mut args = Vec::new();
        rmpv::encode::write_value(
            &mut args,
            &rmpv::Value::Array(vec![rmpv::Value::from("Ada")]),
        )
        .expect("writing to a Vec cannot fail");
        envelope::encode(&RpcCall {
            interface: "example:greeter/greet".parse().expect("an interface name"),
            function: "greet".to_string(),
            args,
            deadline_ms: u64::try_from(
                (std::time::SystemTime::now() + REQUEST)
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or_default(),
            )
            .unwrap_or(u64::MAX),
            caller: "shop/caller".to_string(),
        })
    };
    let ask = || async {
        let reply =
            tokio::time::timeout(REQUEST, client.request(subject.clone(), call().into())).await??;
        anyhow::Ok(envelope::decode::<RpcReply>(&reply.payload)?)
    };

    let held = gate.try_enter().expect("the one slot is free");
    let started = Instant::now();
    match ask().await? {
        RpcReply::Err(e) => {
            assert_eq!(e.kind, CallErrorKind::Busy, "{e}");
            assert!(e.to_string().starts_with("busy: "), "{e}");
            assert!(e.message.contains("concurrency"), "{e}");
        }
        other => panic!("a call beyond the concurrency was answered {other:?}"),
    }
    assert!(started.elapsed() < REQUEST / 2, "refused at once");
    drop(held);
    match ask().await? {
        RpcReply::Ok(_) => {}
        RpcReply::Err(e) => panic!("with its slot free the call failed: {e}"),
    }
    Ok(())
}
