//! How the HTTP server answers what a guest did not: a failed, timed-out or refused request,
//! each with its own status (and `Retry-After` where trying again later helps).

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use wasmtime::{PoolConcurrencyLimitError, Trap};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::metrics::{Limit, Outcome, WorkloadMetrics};

/// Seconds a refused client is asked to wait: instances of a busy workload free up within
/// its requests' time, and a client retrying sooner only adds to the flood.
const RETRY_AFTER_SECS: &str = "1";

/// Why a guest did not finish a request.
#[derive(Debug)]
pub(super) enum Failure {
    /// The pooling allocator has no free slot: the host is at capacity.
    PoolFull(wasmtime::Error),
    /// Instantiation failed for another reason (e.g. a memory limit).
    Instantiate(wasmtime::Error),
    /// The guest trapped (panic, out of bounds, unreachable, ...).
    Trap(wasmtime::Error),
    /// The guest ran past the execution timeout.
    Timeout,
    /// The guest answered with a `wasi:http` error code instead of a response.
    Answered(String),
}

impl Failure {
    pub(super) fn instantiate(err: wasmtime::Error) -> Self {
        if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            Self::PoolFull(err)
        } else {
            Self::Instantiate(err)
        }
    }

    pub(super) fn guest(err: wasmtime::Error) -> Self {
        // The epoch callback interrupts a guest that is past its deadline.
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Self::Timeout,
            _ => Self::Trap(err),
        }
    }

    pub(super) fn log(&self, component: &str) {
        match self {
            Self::PoolFull(err) => {
                tracing::warn!(component, error = %err, "no instance slot free for the request");
            }
            Self::Instantiate(err) => tracing::warn!(
                component,
                error = format!("{err:#}"),
                "instantiating the component failed"
            ),
            Self::Trap(err) => {
                tracing::warn!(
                    component,
                    error = format!("{err:#}"),
                    "the component trapped"
                );
            }
            Self::Timeout => {
                tracing::warn!(component, "the component exceeded its execution time");
            }
            Self::Answered(code) => {
                tracing::warn!(component, error = %code, "the component answered with an error");
            }
        }
    }

    /// How the request ended, for the metrics.
    pub(super) fn outcome(&self) -> Outcome {
        match self {
            Self::PoolFull(_) => Outcome::Busy,
            Self::Instantiate(_) | Self::Trap(_) | Self::Timeout | Self::Answered(_) => {
                Outcome::Error
            }
        }
    }

    /// Counts a trap or a timeout (memory refusals are counted by the store's limiter).
    pub(super) fn count(&self, metrics: &WorkloadMetrics) {
        match self {
            Self::Trap(_) => metrics.trap(),
            Self::Timeout => metrics.limit_hit(Limit::Timeout),
            Self::PoolFull(_) | Self::Instantiate(_) | Self::Answered(_) => {}
        }
    }

    pub(super) fn response(&self) -> Response<HyperOutgoingBody> {
        match self {
            Self::PoolFull(_) => busy_response("host at capacity\n"),
            Self::Instantiate(_) | Self::Trap(_) => {
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "component failed\n")
            }
            Self::Timeout => {
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "component timed out\n")
            }
            Self::Answered(_) => {
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "component error\n")
            }
        }
    }
}

/// A short plain-text response from the host itself.
pub(super) fn error_response(
    status: StatusCode,
    message: &'static str,
) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(message.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `503 Service Unavailable` with `Retry-After`: the host or the workload is at capacity.
pub(super) fn busy_response(message: &'static str) -> Response<HyperOutgoingBody> {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}
