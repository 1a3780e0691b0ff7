//! W3C trace context (`traceparent`, `tracestate`) across the hops of a lattice: NATS message
//! headers, HTTP request headers and the header pairs a queued item stores.
//!
//! The sender calls [`nats_headers`] (or [`current_pairs`]) inside the span of the call it makes; the receiver
//! creates its span and hands it to a `continue_*` function before entering it, so that the
//! receiver's span is a child of the sender's. With traces off (no OTLP layer) injection writes
//! nothing and continuing does nothing, so the wire carries no headers nobody asked for.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header names trace context travels in (W3C Trace Context).
pub const HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The current span's context as NATS headers; `None` when there is none to send (traces off,
/// or no span), so that the message goes without headers, as it did before traces.
pub fn nats_headers() -> Option<async_nats::HeaderMap> {
    let mut headers = async_nats::HeaderMap::new();
    inject(&mut NatsInjector(&mut headers));
    (!headers.is_empty()).then_some(headers)
}

/// The current span's context as header pairs, for a message that is stored before it is sent
/// (a queued call); empty when traces are off or there is no span.
pub fn current_pairs() -> Vec<(String, String)> {
    let mut pairs = PairInjector(Vec::new());
    inject(&mut pairs);
    pairs.0
}

/// Makes `span` continue the trace whose context `headers` carry (a NATS message received).
pub fn continue_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    if let Some(headers) = headers {
        continue_from(span, &NatsExtractor(headers));
    }
}

/// Makes `span` continue the trace an incoming HTTP request's `traceparent` names.
pub fn continue_http(span: &tracing::Span, headers: &http::HeaderMap) {
    continue_from(span, &opentelemetry_http::HeaderExtractor(headers));
}

/// Makes `span` continue the trace stored as header pairs (see [`current_pairs`]).
pub fn continue_pairs(span: &tracing::Span, pairs: &[(String, String)]) {
    continue_from(span, &PairExtractor(pairs));
}

/// The current span's trace id in hex, when it has a valid one (for log lines that name their
/// trace).
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

fn inject(injector: &mut dyn Injector) {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, injector);
    });
}

fn continue_from(span: &tracing::Span, extractor: &dyn Extractor) {
    if span.is_disabled() || extractor.get(HEADERS[0]).is_none() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(extractor));
    if parent.span().span_context().is_valid() {
        // Fails only when the span was entered already or traces are off: then it stays a root.
        let _ = span.set_parent(parent);
    }
}

struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(async_nats::HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        HEADERS.to_vec()
    }
}

struct PairInjector(Vec<(String, String)>);

impl Injector for PairInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct PairExtractor<'a>(&'a [(String, String)]);

impl Extractor for PairExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}
