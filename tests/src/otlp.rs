//! An OTLP/HTTP trace receiver inside the test: what hosts started with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at it export, decoded with the OTLP protobuf types
//! (`opentelemetry-proto`), kept as [`ExportedSpan`]s for the test to look at.
//!
//! The same receiver is the `lattice-otlp-sink` program (`src/bin/lattice-otlp-sink.rs`) that
//! `scripts/bench-observability.sh` exports to: it also answers `GET /stats` with what it
//! counted ([`OtlpReceiver::stats`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tokio_util::task::AbortOnDropHandle;

/// One span as exported: who sent it, its name and where it sits in its trace (ids in hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedSpan {
    /// The exporting process's `service.name`.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Its trace id, 32 hex digits.
    pub trace_id: String,
    /// Its span id, 16 hex digits.
    pub span_id: String,
    /// Its parent's span id; empty for a root.
    pub parent_span_id: String,
}

/// A receiver on a free local port; stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    /// Where it listens: the value of `OTEL_EXPORTER_OTLP_ENDPOINT` is `http://{addr}`.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    _task: AbortOnDropHandle<()>,
}

impl OtlpReceiver {
    /// Listens on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::bind("127.0.0.1:0".parse()?).await
    }

    /// Listens on `addr` (port 0: any free one, see [`OtlpReceiver::addr`]).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let kept = kept.clone();
                        async move { Ok::<_, Infallible>(receive(request, &kept).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            spans,
            _task: AbortOnDropHandle::new(task),
        })
    }

    /// The endpoint to give exporters (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in the order they arrived.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.spans.lock().expect("not poisoned").clone()
    }

    /// What was received so far, counted (see [`stats`]).
    pub fn stats(&self) -> String {
        stats(&self.spans.lock().expect("not poisoned"))
    }
}

/// One line counting `spans`: `spans=N traces=T roots=R`, then `name=count` for each span
/// name in name order (e.g. `lattice.http.request=12`).
pub fn stats(spans: &[ExportedSpan]) -> String {
    let traces: std::collections::BTreeSet<&str> =
        spans.iter().map(|s| s.trace_id.as_str()).collect();
    let roots = spans.iter().filter(|s| s.parent_span_id.is_empty()).count();
    let mut names = std::collections::BTreeMap::<&str, usize>::new();
    for span in spans {
        *names.entry(span.name.as_str()).or_default() += 1;
    }
    let mut line = format!(
        "spans={} traces={} roots={roots}",
        spans.len(),
        traces.len()
    );
    for (name, count) in names {
        line.push_str(&format!(" {name}={count}"));
    }
    line
}

/// Decodes one export request (`POST /v1/traces`, protobuf) into `kept`.
async fn receive(
    request: Request<Incoming>,
    kept: &Mutex<Vec<ExportedSpan>>,
) -> Response<Full<Bytes>> {
    let answer = |status: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() == "/stats" && request.method() == hyper::Method::GET {
        let line = stats(&kept.lock().expect("not poisoned"));
        return Response::new(Full::new(Bytes::from(line + "\n")));
    }
    if request.uri().path() != "/v1/traces" {
        return answer(StatusCode::NOT_FOUND);
    }
    let Ok(body) = request.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let mut spans = Vec::new();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ExportedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    kept.lock().expect("not poisoned").extend(spans);
    answer(StatusCode::OK)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
