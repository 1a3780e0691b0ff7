//! Sampling new traces before their first span is made.
//!
//! The OpenTelemetry SDK decides whether a span is sampled when the span starts, which the
//! tracing bridge does when the span ends: every request paid for a span (its attributes, its
//! enters and exits at every poll, its end) that the sampler then dropped, some 8 µs of an HTTP
//! request at 1 % sampling (BENCHMARKS §12). So the busiest roots (an HTTP request arriving
//! without trace context) ask [`new_root`] first and make no span at all when it is not drawn.
//! A span made after a draw carries [`DRAWN`], and the process's sampler keeps such a span
//! without drawing again; every other span is sampled as `OTEL_TRACES_SAMPLER` says, read here
//! as the SDK reads it, so that both draws are one.

use std::cell::Cell;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::OnceLock;

use opentelemetry::trace::{Link, SpanKind, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

/// The field (and attribute) of a span made after [`new_root`] drew it.
pub const DRAWN: &str = "lattice.sampled";

/// The share of new traces sampled; set when traces are on.
static ROOT_RATIO: OnceLock<f64> = OnceLock::new();

/// What to do with a unit of work that arrives without trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewRoot {
    /// Traces are off: make the span as ever (it serves the logs, if anything).
    Untraced,
    /// Traces are on and this one is not drawn: make no span.
    Skip,
    /// Traces are on and this one is drawn: make the span with [`DRAWN`] set.
    Drawn,
}

/// Whether the next new trace is sampled, drawn at the configured ratio.
pub fn new_root() -> NewRoot {
    match ROOT_RATIO.get() {
        None => NewRoot::Untraced,
        Some(&ratio) if ratio >= 1.0 => NewRoot::Drawn,
        Some(&ratio) if ratio <= 0.0 => NewRoot::Skip,
        Some(&ratio) => {
            // The top 53 bits as a fraction in [0, 1).
            let draw = (next_random() >> 11) as f64 / (1u64 << 53) as f64;
            if draw < ratio {
                NewRoot::Drawn
            } else {
                NewRoot::Skip
            }
        }
    }
}

/// The process's sampler, from `var` (the environment): the configured one, which keeps a span
/// carrying [`DRAWN`]; and [`new_root`] starts drawing at its ratio.
pub(crate) fn install(var: impl Fn(&str) -> Option<String>) -> Drawn {
    let (sampler, ratio) = configured(var);
    let _ = ROOT_RATIO.set(ratio);
    Drawn(sampler)
}

/// The sampler `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name, as the SDK reads them
/// (an unknown name or a missing ratio falls back as it does), and its share of new traces.
fn configured(var: impl Fn(&str) -> Option<String>) -> (Sampler, f64) {
    let ratio = var("OTEL_TRACES_SAMPLER_ARG")
        .and_then(|arg| arg.trim().parse::<f64>().ok())
        .filter(|ratio| (0.0..=1.0).contains(ratio))
        .unwrap_or(1.0);
    let name = var("OTEL_TRACES_SAMPLER").unwrap_or_default();
    match name.trim() {
        "always_on" => (Sampler::AlwaysOn, 1.0),
        "always_off" => (Sampler::AlwaysOff, 0.0),
        "traceidratio" => (Sampler::TraceIdRatioBased(ratio), ratio),
        "parentbased_always_off" => (Sampler::ParentBased(Box::new(Sampler::AlwaysOff)), 0.0),
        "parentbased_traceidratio" => (
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
            ratio,
        ),
        _ => (Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), 1.0),
    }
}

/// The configured sampler, except that a span carrying [`DRAWN`] is kept: it was drawn already.
#[derive(Debug, Clone)]
pub(crate) struct Drawn(Sampler);

impl ShouldSample for Drawn {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if attributes.iter().any(|kv| kv.key.as_str() == DRAWN) {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// A thread's xorshift64*, seeded from the standard library's per-process random keys: draws
/// need to be uniform and cheap, not secret.
fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_env as env;

    #[test]
    fn the_ratio_is_read_as_the_sdk_reads_it() {
        let ratio = |pairs: &[(&str, &str)]| configured(env(pairs)).1;
        assert_eq!(ratio(&[]), 1.0, "the default samples every new trace");
        assert_eq!(
            ratio(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01")
            ]),
            0.01
        );
        assert_eq!(
            ratio(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2")
            ]),
            1.0,
            "a ratio out of range falls back to 1"
        );
        assert_eq!(ratio(&[("OTEL_TRACES_SAMPLER", "always_off")]), 0.0);
        assert_eq!(
            ratio(&[("OTEL_TRACES_SAMPLER", "parentbased_always_off")]),
            0.0
        );
        assert_eq!(ratio(&[("OTEL_TRACES_SAMPLER", "nonsense")]), 1.0);
    }

    #[test]
    fn a_drawn_span_is_kept_and_others_are_left_to_the_configured_sampler() {
        let never = Drawn(Sampler::AlwaysOff);
        let decide = |attributes: &[KeyValue]| {
            never
                .should_sample(
                    None,
                    TraceId::from_bytes([7; 16]),
                    "lattice.http.request",
                    &SpanKind::Internal,
                    attributes,
                    &[],
                )
                .decision
        };
        assert_eq!(
            decide(&[KeyValue::new(DRAWN, true)]),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(decide(&[]), SamplingDecision::Drop);
    }

    #[test]
    fn draws_are_spread_evenly() {
        let n = 100_000;
        let below = (0..n)
            .filter(|_| ((next_random() >> 11) as f64 / (1u64 << 53) as f64) < 0.25)
            .count();
        // 25 % of 100,000 is 25,000, with a standard deviation of about 137.
        assert!(
            (23_500..26_500).contains(&below),
            "{below} of {n} below 0.25"
        );
    }
}
