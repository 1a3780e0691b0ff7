//! The host's metrics, for Prometheus (`lattice-host --metrics-addr HOST:PORT`): every metric
//! the host exports is defined here, and nowhere else.
//!
//! - Per workload (label `workload`, `app/component`): HTTP requests by outcome, their latency,
//!   instances in use, traps, limit hits (memory, timeout, concurrency), queued items delivered
//!   and dead-lettered. The hot path never looks a label up: a workload's handles
//!   ([`WorkloadMetrics`]) are resolved once when it is loaded, and a request costs an atomic
//!   increment or two and one histogram observation.
//! - Per queued link (label `link`, `app/source->target`): entries waiting in the outbox, the
//!   oldest one's age, and entries forwarded, dropped and expired since the host started. These
//!   are read at each scrape from what the heartbeat already reports (`queue/stats.rs`), not
//!   counted a second time.
//! - The outbox's bytes and entries, and the heartbeat's age: seconds since the last one was
//!   handed to NATS (a host cut off from its hub keeps publishing into its client's buffer; the
//!   control plane's `lattice_control_hosts{state="lost"}` says whether they arrive).
//!
//! No host id in any label: the scrape target names the host.
//!
//! ```
//! use lattice_host::metrics::{HostMetrics, Outcome};
//! let metrics = HostMetrics::new();
//! let hello = metrics.workload("shop/hello");
//! hello.request(Outcome::Ok, std::time::Duration::from_millis(2));
//! assert!(metrics.encode().contains(r#"lattice_host_http_requests_total{workload="shop/hello",outcome="ok"} 1"#));
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::queue::Queue;

/// Where metrics are served, for [`crate::HostConfig::metrics`].
pub use lattice_telemetry::metrics::MetricsEndpoint;

/// How an HTTP request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The guest answered (whatever its status).
    Ok,
    /// The guest trapped, timed out, failed to start or answered nothing.
    Error,
    /// Refused at once: the workload at its concurrency, or the host out of instance slots.
    Busy,
    /// Refused by the host before the guest ran: a malformed request, a body too large.
    Rejected,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Busy => "busy",
            Self::Rejected => "rejected",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// A per-workload limit a request or call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// A linear memory could not grow: the workload's `memory` or the host's guest memory.
    Memory,
    /// The call ran past its `timeout`.
    Timeout,
    /// Refused at the workload's `concurrency`.
    Concurrency,
}

impl EncodeLabelValue for Limit {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let name = match self {
            Self::Memory => "memory",
            Self::Timeout => "timeout",
            Self::Concurrency => "concurrency",
        };
        EncodeLabelValue::encode(&name, encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkloadLabel {
    workload: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabel {
    workload: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabel {
    workload: String,
    limit: Limit,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LinkLabel {
    link: String,
}

/// Request latency buckets: 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

type HistogramFamily = Family<WorkloadLabel, Histogram, fn() -> Histogram>;

/// One workload's metric handles, resolved once when it is loaded (cheap to clone: each handle
/// is an `Arc`). [`WorkloadMetrics::detached`] counts into nothing exported, for workloads
/// served outside a host (tests, embedding).
#[derive(Debug, Clone)]
pub struct WorkloadMetrics {
    ok: Counter,
    error: Counter,
    busy: Counter,
    rejected: Counter,
    duration: Histogram,
    in_use: Gauge,
    kept: Gauge,
    traps: Counter,
    memory: Counter,
    timeout: Counter,
    concurrency: Counter,
    delivered: Counter,
    dead_lettered: Counter,
}

impl Default for WorkloadMetrics {
    fn default() -> Self {
        Self::detached()
    }
}

impl WorkloadMetrics {
    /// Handles registered nowhere.
    pub fn detached() -> Self {
        Self {
            ok: Counter::default(),
            error: Counter::default(),
            busy: Counter::default(),
            rejected: Counter::default(),
            duration: latency_histogram(),
            in_use: Gauge::default(),
            kept: Gauge::default(),
            traps: Counter::default(),
            memory: Counter::default(),
            timeout: Counter::default(),
            concurrency: Counter::default(),
            delivered: Counter::default(),
            dead_lettered: Counter::default(),
        }
    }

    /// An HTTP request ended with `outcome` after `took` (requests refused before the guest ran
    /// are not timed).
    pub fn request(&self, outcome: Outcome, took: Duration) {
        match outcome {
            Outcome::Ok => self.ok.inc(),
            Outcome::Error => self.error.inc(),
            Outcome::Busy => self.busy.inc(),
            Outcome::Rejected => self.rejected.inc(),
        };
        if matches!(outcome, Outcome::Ok | Outcome::Error) {
            self.duration.observe(took.as_secs_f64());
        }
    }

    /// The guest trapped.
    pub fn trap(&self) {
        self.traps.inc();
    }

    /// A request or call ran into `limit`.
    pub fn limit_hit(&self, limit: Limit) {
        match limit {
            Limit::Memory => self.memory.inc(),
            Limit::Timeout => self.timeout.inc(),
            Limit::Concurrency => self.concurrency.inc(),
        };
    }

    /// The counter of memory growths refused, for the store's limiter (which knows nothing of
    /// workloads).
    pub fn memory_refusals(&self) -> Counter {
        self.memory.clone()
    }

    /// An instance is in use until the returned guard is dropped.
    pub fn in_use(&self) -> InUse {
        self.in_use.inc();
        InUse(self.in_use.clone())
    }

    /// An instance kept for reuse across requests (WASI 0.3) is alive until the returned guard
    /// is dropped, idle or serving.
    pub fn kept(&self) -> InUse {
        self.kept.inc();
        InUse(self.kept.clone())
    }

    /// A queued item ran to completion on this workload.
    pub fn delivered(&self) {
        self.delivered.inc();
    }

    /// A queued item for this workload was dead-lettered.
    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }
}

/// An instance counted in use (or kept); dropping it counts it out.
#[derive(Debug)]
pub struct InUse(Gauge);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric of one host; see the [module docs](self).
#[derive(Debug)]
pub struct HostMetrics {
    registry: Registry,
    requests: Family<RequestLabel, Counter>,
    duration: HistogramFamily,
    in_use: Family<WorkloadLabel, Gauge>,
    kept: Family<WorkloadLabel, Gauge>,
    traps: Family<WorkloadLabel, Counter>,
    limit_hits: Family<LimitLabel, Counter>,
    delivered: Family<WorkloadLabel, Counter>,
    dead_lettered: Family<WorkloadLabel, Counter>,
    /// Read at each scrape: the queue's per-link figures, the outbox, the heartbeat.
    sampled: Arc<Sampled>,
}

impl Default for HostMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HostMetrics {
    /// The host's metrics, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabel, Counter>::default();
        registry.register(
            "lattice_host_http_requests",
            "HTTP requests served, by workload and outcome (ok, error, busy, rejected)",
            requests.clone(),
        );
        let duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "lattice_host_http_request_duration",
            "Time from a request's arrival to its response head, by workload (ok and error)",
            Unit::Seconds,
            duration.clone(),
        );
        let in_use = Family::<WorkloadLabel, Gauge>::default();
        registry.register(
            "lattice_host_instances_in_use",
            "Instances running now, by workload (HTTP requests and component calls)",
            in_use.clone(),
        );
        let kept = Family::<WorkloadLabel, Gauge>::default();
        registry.register(
            "lattice_host_instances_kept",
            "Instances kept for reuse across requests (WASI 0.3 HTTP), idle or serving, by workload",
            kept.clone(),
        );
        let traps = Family::<WorkloadLabel, Counter>::default();
        registry.register(
            "lattice_host_traps",
            "Guest traps, by workload",
            traps.clone(),
        );
        let limit_hits = Family::<LimitLabel, Counter>::default();
        registry.register(
            "lattice_host_limit_hits",
            "Limits run into, by workload and limit (memory, timeout, concurrency)",
            limit_hits.clone(),
        );
        let delivered = Family::<WorkloadLabel, Counter>::default();
        registry.register(
            "lattice_host_queue_delivered",
            "Queued calls and messages run to completion, by target workload",
            delivered.clone(),
        );
        let dead_lettered = Family::<WorkloadLabel, Counter>::default();
        registry.register(
            "lattice_host_queue_dead_lettered",
            "Queued calls and messages dead-lettered, by target workload",
            dead_lettered.clone(),
        );
        let sampled = Arc::new(Sampled::default());
        registry.register_collector(Box::new(sampled.clone()));
        Self {
            registry,
            requests,
            duration,
            in_use,
            kept,
            traps,
            limit_hits,
            delivered,
            dead_lettered,
            sampled,
        }
    }

    /// The handles of workload `name` (`app/component`); a workload loaded again (a new version)
    /// gets the same series.
    pub fn workload(&self, name: &str) -> WorkloadMetrics {
        let label = WorkloadLabel {
            workload: name.to_owned(),
        };
        let request = |outcome| {
            self.requests.get_or_create_owned(&RequestLabel {
                workload: name.to_owned(),
                outcome,
            })
        };
        let limit = |limit| {
            self.limit_hits.get_or_create_owned(&LimitLabel {
                workload: name.to_owned(),
                limit,
            })
        };
        WorkloadMetrics {
            ok: request(Outcome::Ok),
            error: request(Outcome::Error),
            busy: request(Outcome::Busy),
            rejected: request(Outcome::Rejected),
            duration: self.duration.get_or_create_owned(&label),
            in_use: self.in_use.get_or_create_owned(&label),
            kept: self.kept.get_or_create_owned(&label),
            traps: self.traps.get_or_create_owned(&label),
            memory: limit(Limit::Memory),
            timeout: limit(Limit::Timeout),
            concurrency: limit(Limit::Concurrency),
            delivered: self.delivered.get_or_create_owned(&label),
            dead_lettered: self.dead_lettered.get_or_create_owned(&label),
        }
    }

    /// A heartbeat was handed to NATS just now.
    pub fn heartbeat_sent(&self) {
        self.sampled.heartbeat_sent();
    }

    /// Reads the queue's figures (when the host has a queue) and encodes every metric as
    /// OpenMetrics text.
    pub async fn scrape(&self, queue: Option<&Queue>) -> String {
        if let Some(queue) = queue {
            let links = queue.link_stats().await;
            let forwarded = queue.forwarded_totals();
            let outbox = queue.outbox().stats();
            let mut q = self.sampled.queue.lock().unwrap_or_else(|p| p.into_inner());
            *q = Some(QueueSample {
                links: links
                    .into_iter()
                    .map(|s| LinkSample {
                        forwarded: forwarded.get(&s.link).copied().unwrap_or(0),
                        link: s.link.to_string(),
                        pending: s.pending,
                        oldest_age: s.oldest_age_ms.map(|ms| ms as f64 / 1000.0),
                        dropped: s.dropped_total,
                        expired: s.expired_total,
                    })
                    .collect(),
                outbox_bytes: outbox.bytes,
                outbox_entries: outbox.pending,
            });
        }
        self.encode()
    }

    /// Every metric as OpenMetrics text, the queue's as last read.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; a metric that could not be encoded is said so.
            let _ = writeln!(out, "# the metrics could not be encoded\n# EOF");
        }
        out
    }

    /// What a `--metrics-addr` server serves: [`HostMetrics::scrape`] of `queue`.
    pub fn render(
        self: &Arc<Self>,
        queue: Option<Arc<Queue>>,
    ) -> lattice_telemetry::metrics::Render {
        let metrics = self.clone();
        Arc::new(move || {
            let (metrics, queue) = (metrics.clone(), queue.clone());
            Box::pin(async move { metrics.scrape(queue.as_deref()).await })
        })
    }
}

/// One queued link's figures at a scrape.
#[derive(Debug, Clone)]
struct LinkSample {
    link: String,
    pending: u64,
    oldest_age: Option<f64>,
    forwarded: u64,
    dropped: u64,
    expired: u64,
}

#[derive(Debug, Clone, Default)]
struct QueueSample {
    links: Vec<LinkSample>,
    outbox_bytes: u64,
    outbox_entries: u64,
}

/// What is read rather than counted: the queue as of the last scrape, and when the last
/// heartbeat went out (milliseconds after `start`, 0 for never).
#[derive(Debug)]
struct Sampled {
    queue: Mutex<Option<QueueSample>>,
    start: Instant,
    last_heartbeat_ms: AtomicU64,
}

impl Default for Sampled {
    fn default() -> Self {
        Self {
            queue: Mutex::new(None),
            start: Instant::now(),
            last_heartbeat_ms: AtomicU64::new(0),
        }
    }
}

impl Sampled {
    fn heartbeat_sent(&self) {
        // At least 1: 0 means "none yet".
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heartbeat_ms.store(ms.max(1), Ordering::Relaxed);
    }

    fn heartbeat_age(&self) -> Option<f64> {
        let sent = self.last_heartbeat_ms.load(Ordering::Relaxed);
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        (sent > 0).then(|| now.saturating_sub(sent) as f64 / 1000.0)
    }
}

/// A per-link counter: its name, its help and where its value is.
type LinkCounter = (&'static str, &'static str, fn(&LinkSample) -> u64);

const LINK_COUNTERS: [LinkCounter; 3] = [
    (
        "lattice_host_queue_forwarded",
        "Entries of a queued link forwarded to the hub's stream since the host started",
        |l| l.forwarded,
    ),
    (
        "lattice_host_queue_dropped",
        "Entries of a queued link dropped from a full outbox since the host started",
        |l| l.dropped,
    ),
    (
        "lattice_host_queue_expired",
        "Entries of a queued link expired in the outbox since the host started",
        |l| l.expired,
    ),
];

/// Encodes one family of per-link values.
fn per_link<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, unit): (&str, &str, Option<&Unit>),
    links: &[LinkSample],
    value: impl Fn(&LinkSample) -> Option<M>,
) -> Result<(), std::fmt::Error> {
    let Some(first) = links.iter().find_map(&value) else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, unit, first.metric_type())?;
    for link in links {
        if let Some(metric) = value(link) {
            let label = LinkLabel {
                link: link.link.clone(),
            };
            metric.encode(family.encode_family(&label)?)?;
        }
    }
    Ok(())
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if let Some(age) = self.heartbeat_age() {
            let gauge = ConstGauge::new(age);
            gauge.encode(encoder.encode_descriptor(
                "lattice_host_heartbeat_age",
                "Time since the last heartbeat was handed to NATS",
                Some(&Unit::Seconds),
                gauge.metric_type(),
            )?)?;
        }
        let Some(q) = self.queue.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return Ok(());
        };
        let bytes = ConstGauge::new(q.outbox_bytes as i64);
        bytes.encode(encoder.encode_descriptor(
            "lattice_host_outbox",
            "Encoded size of the entries waiting in the outbox, all links together",
            Some(&Unit::Bytes),
            bytes.metric_type(),
        )?)?;
        let entries = ConstGauge::new(q.outbox_entries as i64);
        entries.encode(encoder.encode_descriptor(
            "lattice_host_outbox_entries",
            "Entries waiting in the outbox, all links together",
            None,
            entries.metric_type(),
        )?)?;
        let links = &q.links;
        per_link(
            &mut encoder,
            (
                "lattice_host_queue_backlog_entries",
                "Entries of a queued link waiting in this host's outbox",
                None,
            ),
            links,
            |l| Some(ConstGauge::new(l.pending as i64)),
        )?;
        per_link(
            &mut encoder,
            (
                "lattice_host_queue_oldest_age",
                "Age of a queued link's oldest entry waiting in the outbox (among the oldest 4096)",
                Some(&Unit::Seconds),
            ),
            links,
            |l| l.oldest_age.map(ConstGauge::new),
        )?;
        for (name, help, value) in LINK_COUNTERS {
            per_link(&mut encoder, (name, help, None), links, |l| {
                Some(ConstCounter::new(value(l)))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workloads_handles_count_into_its_series() {
        let metrics = HostMetrics::new();
        let hello = metrics.workload("shop/hello");
        for _ in 0..3 {
            hello.request(Outcome::Ok, Duration::from_millis(1));
        }
        hello.request(Outcome::Error, Duration::from_millis(1));
        hello.request(Outcome::Busy, Duration::ZERO);
        hello.trap();
        hello.limit_hit(Limit::Concurrency);
        metrics.workload("shop/hello").limit_hit(Limit::Concurrency);
        {
            let _a = hello.in_use();
            let _b = hello.in_use();
            let text = metrics.encode();
            assert!(
                text.contains(r#"lattice_host_instances_in_use{workload="shop/hello"} 2"#),
                "{text}"
            );
        }
        let text = metrics.encode();
        for line in [
            r#"lattice_host_http_requests_total{workload="shop/hello",outcome="ok"} 3"#,
            r#"lattice_host_http_requests_total{workload="shop/hello",outcome="error"} 1"#,
            r#"lattice_host_http_requests_total{workload="shop/hello",outcome="busy"} 1"#,
            r#"lattice_host_http_request_duration_seconds_count{workload="shop/hello"} 4"#,
            r#"lattice_host_traps_total{workload="shop/hello"} 1"#,
            r#"lattice_host_limit_hits_total{workload="shop/hello",limit="concurrency"} 2"#,
            r#"lattice_host_instances_in_use{workload="shop/hello"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            !text.contains("lattice_host_heartbeat_age"),
            "no age before the first heartbeat: {text}"
        );
        metrics.heartbeat_sent();
        assert!(
            metrics
                .encode()
                .contains("lattice_host_heartbeat_age_seconds ")
        );
    }

    #[test]
    fn queue_samples_are_encoded_per_link() {
        let metrics = HostMetrics::new();
        *metrics.sampled.queue.lock().expect("unpoisoned") = Some(QueueSample {
            links: vec![LinkSample {
                link: "shop/a->b".into(),
                pending: 4,
                oldest_age: Some(1.5),
                forwarded: 7,
                dropped: 1,
                expired: 0,
            }],
            outbox_bytes: 900,
            outbox_entries: 4,
        });
        let text = metrics.encode();
        for line in [
            r#"lattice_host_queue_backlog_entries{link="shop/a->b"} 4"#,
            r#"lattice_host_queue_oldest_age_seconds{link="shop/a->b"} 1.5"#,
            r#"lattice_host_queue_forwarded_total{link="shop/a->b"} 7"#,
            r#"lattice_host_queue_dropped_total{link="shop/a->b"} 1"#,
            r#"lattice_host_queue_expired_total{link="shop/a->b"} 0"#,
            "lattice_host_outbox_bytes 900",
            "lattice_host_outbox_entries 4",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }
}
