//! WASI 0.3 HTTP components (`wasi:http/handler@0.3.x`): instances reused across requests,
//! several requests at once in one instance.
//!
//! wasmtime-wasi-http's [`ProxyHandler`] runs the instances: it starts one when no running
//! instance can take a request, hands each instance the requests it says it can take, and
//! drops it when it expires. This module is the policy it asks for:
//!
//! - [`Instances`] makes each store as a fresh-instance request would have it (the workload's
//!   context, memory limit and budget), so an instance holds exactly what one request's did;
//! - [`Worker`] takes at most [`Reuse::concurrency`] requests at once and
//!   [`Reuse::requests`] in all, and gives each request the workload's time limit;
//! - [`Expiration`] ends an instance that has been idle for [`Reuse::idle`], or whose newest
//!   request has run past the time limit, and an idle one at once when its workload is gone
//!   (stopped, or replaced by a new version): the [`Handlers`] are dropped, which cancels
//!   [`Instances::retired`]. The handler's own workers would otherwise keep the old version's
//!   instances, and their memory, until their idle time ended.
//!
//! What reuse changes, and why it is confined to components built for it: requests of one
//! instance share its memory (and its memory limit), so a request that traps or times out ends
//! the instance and the requests it was running with; and a host call that blocks (our
//! capabilities are WASI 0.2-style, synchronous to the guest) holds up the instance's other
//! requests until it returns. A WASI 0.2 component keeps a fresh instance per request.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, Proxy, ProxyHandler, ShouldAccept,
    WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use super::failure::Failure;
use super::{HttpWorkload, Serving};
use crate::caps::WorkloadCtx;
use crate::engine::Runtime;
use crate::limits::Slot;
use crate::metrics::{InUse, WorkloadMetrics};
use crate::wasi::{HostState, Limits, new_store};

/// Requests one instance serves at once, unless the manifest says otherwise.
pub const DEFAULT_INSTANCE_CONCURRENCY: u32 = 16;
/// Requests one instance serves in all before a fresh one takes over, unless the manifest
/// says otherwise: a guest that leaks or fragments memory is renewed before it matters.
pub const DEFAULT_INSTANCE_REQUESTS: u32 = 1_000;
/// How long an idle instance is kept, unless the manifest says otherwise.
pub const DEFAULT_INSTANCE_IDLE: Duration = Duration::from_secs(10);

/// How one workload's instances are reused (the manifest's `limits.instance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Requests one instance serves at once.
    pub concurrency: u32,
    /// Requests one instance serves in all.
    pub requests: u32,
    /// How long an instance with nothing to do is kept.
    pub idle: Duration,
}

impl Default for Reuse {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_INSTANCE_CONCURRENCY,
            requests: DEFAULT_INSTANCE_REQUESTS,
            idle: DEFAULT_INSTANCE_IDLE,
        }
    }
}

impl Reuse {
    /// What `limits` asks for, the defaults for what it does not.
    pub fn from_limits(limits: &lattice_protocol::assignment::ComponentLimits) -> Self {
        let default = Self::default();
        Self {
            concurrency: limits
                .instance_concurrency
                .filter(|n| *n > 0)
                .unwrap_or(default.concurrency),
            requests: limits
                .instance_requests
                .filter(|n| *n > 0)
                .unwrap_or(default.requests),
            idle: limits
                .instance_idle_ms
                .filter(|ms| *ms > 0)
                .map_or(default.idle, Duration::from_millis),
        }
    }
}

/// The instances of one WASI 0.3 workload: a [`ProxyHandler`] per HTTP worker thread, so that
/// a request is served by an instance on its own thread. (One handler shared by the threads
/// handed requests across them: each wait woke another thread, and a request that found every
/// instance of its thread busy started one more.)
pub(super) struct Handlers {
    handlers: Box<[ProxyHandler<Instances>]>,
    /// Cancelled when these are dropped: their instances end once idle.
    retired: CancellationToken,
}

impl Handlers {
    /// Handlers for `pre`, making stores for `workload`'s requests.
    pub(super) fn new(runtime: &Runtime, pre: &ServicePre<HostState>, workload: &Serving) -> Self {
        let threads = super::workers::threads(0);
        let retired = CancellationToken::new();
        let handlers = (0..threads)
            .map(|_| {
                ProxyHandler::new(Instances {
                    runtime: runtime.clone(),
                    pre: pre.clone(),
                    ctx: workload.ctx.clone(),
                    limits: workload.limits,
                    reuse: workload.reuse,
                    metrics: workload.metrics.clone(),
                    name: workload.name.clone(),
                    retired: retired.clone(),
                })
            })
            .collect();
        Self { handlers, retired }
    }

    /// The handler of the thread this runs on.
    fn here(&self) -> &ProxyHandler<Instances> {
        &self.handlers[super::workers::current() % self.handlers.len()]
    }
}

impl Drop for Handlers {
    fn drop(&mut self) {
        self.retired.cancel();
    }
}

/// Makes the stores and instances of one workload.
pub(super) struct Instances {
    runtime: Runtime,
    pre: ServicePre<HostState>,
    ctx: Arc<WorkloadCtx>,
    limits: Limits,
    reuse: Reuse,
    metrics: WorkloadMetrics,
    name: String,
    /// Cancelled when the workload is gone.
    retired: CancellationToken,
}

impl HandlerState for Instances {
    type StoreData = HostState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiration, Worker>> {
        let mut store = new_store(
            &self.runtime,
            HostState::for_workload(self.ctx.clone(), &self.limits),
        );
        store
            .data_mut()
            .count_memory_refusals(self.metrics.memory_refusals());
        let timeout = self.limits.execution_timeout;
        let service = tokio::time::timeout(timeout, self.pre.instantiate_async(&mut store))
            .await
            .map_err(|_elapsed| wasmtime::format_err!("instantiation timed out"))??;
        tracing::debug!(component = %self.name, "started an instance for requests");
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: |state| state.http(),
            expiration: Expiration {
                timeout,
                idle: self.reuse.idle,
                timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
                armed: None,
                retired: Box::pin(self.retired.clone().cancelled_owned()),
            },
            state: Worker {
                concurrency: usize::try_from(self.reuse.concurrency).unwrap_or(usize::MAX),
                requests: usize::try_from(self.reuse.requests).unwrap_or(usize::MAX),
                timeout,
                name: self.name.clone(),
                _kept: self.metrics.kept(),
            },
        })
    }
}

/// How many requests one instance takes, and how long each may run.
pub(super) struct Worker {
    concurrency: usize,
    requests: usize,
    timeout: Duration,
    name: String,
    /// Counts the instance as kept while it lives.
    _kept: InUse,
}

impl WorkerState for Worker {
    type StoreData = HostState;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.requests {
            ShouldAccept::Never
        } else if concurrent >= self.concurrency {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, HostState>,
        (): (),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        // Host calls wait no longer than the newest request may run, and the epoch callback
        // interrupts guest code past it (older requests expire by the timer below).
        store.data_mut().set_deadline(Instant::now() + self.timeout);
        Box::pin(tokio::time::sleep(self.timeout))
    }

    fn drop(&self, _store: Store<HostState>, result: wasmtime::Result<()>) {
        // The requests it was running have each been answered and counted; this says why.
        if let Err(err) = result {
            tracing::warn!(component = %self.name, error = format!("{err:#}"),
                "an instance serving requests ended: the requests it was running failed");
        }
    }
}

/// Ends an instance idle for longer than its idle time, or whose newest request has run
/// past the time limit (the guest is then stuck, and the instance with it); and an idle one at
/// once when its workload is gone.
pub(super) struct Expiration {
    timeout: Duration,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// When the timer is set to fire.
    armed: Option<Instant>,
    /// Ready once the workload is gone; requests running then are let finish.
    retired: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        since: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        if matches!(status, WorkerStatus::Idle) && this.retired.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let limit = match status {
            WorkerStatus::Idle => this.idle,
            WorkerStatus::Requests | WorkerStatus::PostReturn => this.timeout,
        };
        let at = since + limit;
        if this.armed != Some(at) {
            this.timer.as_mut().reset(at.into());
            this.armed = Some(at);
        }
        this.timer.as_mut().poll(cx)
    }
}

/// Answers one request with an instance of this thread's handler; `slot` (the workload's
/// concurrency) is held until the response body has been sent.
pub(super) async fn serve(
    workload: &HttpWorkload,
    handlers: &Handlers,
    request: hyper::Request<super::LimitedBody<hyper::body::Incoming>>,
    slot: Slot,
) -> Result<hyper::Response<wasmtime_wasi_http::WasiBody>, Failure> {
    let in_use = workload.metrics.in_use();
    let request = request.map(|body| body.boxed_unsync());
    let response = handlers.here().handle((), request).await.map_err(failure)?;
    Ok(response.map(|body| {
        Held {
            body,
            _held: (slot, in_use),
        }
        .boxed_unsync()
    }))
}

/// Why a request of a reused instance failed.
fn failure(err: wasmtime::Error) -> Failure {
    if err.downcast_ref::<ExpirationError>().is_some() {
        return Failure::Timeout;
    }
    if let Some(failed) = err.downcast_ref::<InstantiationError<()>>() {
        let cause = wasmtime::format_err!("{:#}", failed.error);
        return match failed
            .error
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        {
            Some(_) => Failure::PoolFull(cause),
            None => Failure::Instantiate(cause),
        };
    }
    if let Some(code) = err.downcast_ref::<ErrorCode>() {
        return Failure::Answered(format!("{code:?}"));
    }
    Failure::guest(err)
}

/// A response body that holds what its request took (its concurrency slot, its in-use
/// count) until it has been sent or dropped.
struct Held<B, T> {
    body: B,
    _held: T,
}

impl<B, T> Body for Held<B, T>
where
    B: Body<Data = Bytes> + Unpin,
    T: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_takes_requests_up_to_its_concurrency_and_its_total() {
        let worker = Worker {
            concurrency: 2,
            requests: 3,
            timeout: Duration::from_secs(1),
            name: "app/web".into(),
            _kept: WorkloadMetrics::detached().kept(),
        };
        assert!(matches!(
            worker.should_accept_request(0, 0),
            ShouldAccept::Yes
        ));
        assert!(matches!(
            worker.should_accept_request(1, 1),
            ShouldAccept::Yes
        ));
        assert!(matches!(
            worker.should_accept_request(2, 2),
            ShouldAccept::No
        ));
        assert!(matches!(
            worker.should_accept_request(1, 3),
            ShouldAccept::Never
        ));
    }

    #[test]
    fn the_manifest_chooses_reuse_and_zero_means_the_default() {
        let limits = lattice_protocol::assignment::ComponentLimits {
            instance_concurrency: Some(4),
            instance_requests: Some(0),
            instance_idle_ms: Some(250),
            ..Default::default()
        };
        assert_eq!(
            Reuse::from_limits(&limits),
            Reuse {
                concurrency: 4,
                requests: DEFAULT_INSTANCE_REQUESTS,
                idle: Duration::from_millis(250),
            }
        );
        assert_eq!(Reuse::from_limits(&Default::default()), Reuse::default());
    }
}
