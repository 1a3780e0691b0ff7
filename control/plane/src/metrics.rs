//! The control plane's metrics, for Prometheus (`lattice control --metrics-addr HOST:PORT`):
//! every metric it exports is defined here.
//!
//! - `lattice_control_hosts{state}`: hosts by state (`ready`, `lost`, `stopped`,
//!   `unadmitted`), as `lattice ctl get hosts` would list them;
//! - `lattice_control_apps{status}`: apps by status (`deployed`, `reconciling`, `failed`,
//!   `undeployed`, `waiting`), as `lattice ctl get apps` would;
//! - `lattice_control_leading`: 1 while this control plane leads (a standby's other figures
//!   stay as they were when it last led, or at zero);
//! - `lattice_control_reconcile_duration_seconds`: how long each re-plan (`decide` of a
//!   reconcile pass, planning included) took;
//! - `lattice_control_assignment_writes_total{outcome}`: signed assignments written
//!   (`written`) or lost to a concurrent writer or a store error (`lost`).
//!
//! Labels are bounded: states and outcomes, never a host id or an app name. The worker sets the
//! gauges from its state at every tick ([`ControlMetrics::observe`]).
//!
//! ```
//! use lattice_control::metrics::ControlMetrics;
//! let metrics = ControlMetrics::new();
//! metrics.assignment_written(true);
//! assert!(metrics.encode().contains(r#"lattice_control_assignment_writes_total{outcome="written"} 1"#));
//! ```

use std::sync::Arc;
use std::time::Duration;

/// Where metrics are served, for [`crate::ControlConfig::metrics`].
pub use lattice_telemetry::metrics::MetricsEndpoint;

use lattice_protocol::messages::{AppState, HostState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

const HOST_STATES: [HostState; 4] = [
    HostState::Ready,
    HostState::Lost,
    HostState::Stopped,
    HostState::Unadmitted,
];

const APP_STATES: [AppState; 5] = [
    AppState::Deployed,
    AppState::Reconciling,
    AppState::Failed,
    AppState::Undeployed,
    AppState::Waiting,
];

fn host_state(state: HostState) -> &'static str {
    match state {
        HostState::Ready => "ready",
        HostState::Lost => "lost",
        HostState::Stopped => "stopped",
        HostState::Unadmitted => "unadmitted",
    }
}

fn app_state(state: AppState) -> &'static str {
    match state {
        AppState::Deployed => "deployed",
        AppState::Reconciling => "reconciling",
        AppState::Failed => "failed",
        AppState::Undeployed => "undeployed",
        AppState::Waiting => "waiting",
    }
}

/// Every metric of one control plane; see the [module docs](self).
#[derive(Debug)]
pub struct ControlMetrics {
    registry: Registry,
    hosts: Family<StateLabel, Gauge>,
    apps: Family<StatusLabel, Gauge>,
    leading: Gauge,
    reconcile: Histogram,
    writes: Family<OutcomeLabel, Counter>,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlMetrics {
    /// The metrics, at zero (every state and status listed, so a dashboard sees zeros rather
    /// than gaps).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let hosts = Family::<StateLabel, Gauge>::default();
        registry.register(
            "lattice_control_hosts",
            "Hosts by state (ready, lost, stopped, unadmitted), as `ctl get hosts` lists them",
            hosts.clone(),
        );
        let apps = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "lattice_control_apps",
            "Apps by status (deployed, reconciling, failed, undeployed, waiting)",
            apps.clone(),
        );
        let leading = Gauge::default();
        registry.register(
            "lattice_control_leading",
            "1 while this control plane holds the leader lease",
            leading.clone(),
        );
        // 10 µs to about 10 s, quadrupling: a re-plan of a thousand hosts takes milliseconds.
        let reconcile = Histogram::new(exponential_buckets(0.000_01, 4.0, 11));
        registry.register_with_unit(
            "lattice_control_reconcile_duration",
            "Time one reconcile pass (decide, planning included) took",
            Unit::Seconds,
            reconcile.clone(),
        );
        let writes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "lattice_control_assignment_writes",
            "Signed host assignments written (written) or lost to another writer or an error (lost)",
            writes.clone(),
        );
        for state in HOST_STATES {
            hosts.get_or_create_owned(&StateLabel {
                state: host_state(state),
            });
        }
        for state in APP_STATES {
            apps.get_or_create_owned(&StatusLabel {
                status: app_state(state),
            });
        }
        for outcome in ["written", "lost"] {
            writes.get_or_create_owned(&OutcomeLabel { outcome });
        }
        Self {
            registry,
            hosts,
            apps,
            leading,
            reconcile,
            writes,
        }
    }

    /// Sets the gauges: the hosts' states and the apps' statuses as the state has them now.
    pub fn observe(
        &self,
        hosts: impl IntoIterator<Item = HostState>,
        apps: impl IntoIterator<Item = AppState>,
    ) {
        let mut host_counts = [0i64; HOST_STATES.len()];
        for state in hosts {
            if let Some(i) = HOST_STATES.iter().position(|s| *s == state) {
                host_counts[i] += 1;
            }
        }
        for (state, n) in HOST_STATES.into_iter().zip(host_counts) {
            let label = StateLabel {
                state: host_state(state),
            };
            self.hosts.get_or_create(&label).set(n);
        }
        let mut app_counts = [0i64; APP_STATES.len()];
        for state in apps {
            if let Some(i) = APP_STATES.iter().position(|s| *s == state) {
                app_counts[i] += 1;
            }
        }
        for (state, n) in APP_STATES.into_iter().zip(app_counts) {
            let label = StatusLabel {
                status: app_state(state),
            };
            self.apps.get_or_create(&label).set(n);
        }
    }

    /// Whether this control plane leads now.
    pub fn set_leading(&self, leading: bool) {
        self.leading.set(i64::from(leading));
    }

    /// A reconcile pass took `took`.
    pub fn reconciled(&self, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
    }

    /// An assignment write ended: `written`, or lost.
    pub fn assignment_written(&self, written: bool) {
        let outcome = if written { "written" } else { "lost" };
        self.writes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Every metric as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; say so rather than serve half an exposition.
            out = "# the metrics could not be encoded\n# EOF\n".to_owned();
        }
        out
    }

    /// What a `--metrics-addr` server serves.
    pub fn render(self: &Arc<Self>) -> lattice_telemetry::metrics::Render {
        let metrics = self.clone();
        Arc::new(move || {
            let text = metrics.encode();
            Box::pin(async move { text })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_apps_are_counted_by_state() {
        let metrics = ControlMetrics::new();
        let text = metrics.encode();
        assert!(
            text.contains(r#"lattice_control_hosts{state="lost"} 0"#),
            "zeros from the start: {text}"
        );
        metrics.observe(
            [HostState::Ready, HostState::Ready, HostState::Lost],
            [AppState::Deployed, AppState::Failed],
        );
        metrics.set_leading(true);
        metrics.reconciled(Duration::from_millis(3));
        metrics.assignment_written(true);
        metrics.assignment_written(false);
        let text = metrics.encode();
        for line in [
            r#"lattice_control_hosts{state="ready"} 2"#,
            r#"lattice_control_hosts{state="lost"} 1"#,
            r#"lattice_control_hosts{state="unadmitted"} 0"#,
            r#"lattice_control_apps{status="deployed"} 1"#,
            r#"lattice_control_apps{status="failed"} 1"#,
            r#"lattice_control_apps{status="waiting"} 0"#,
            "lattice_control_leading 1",
            "lattice_control_reconcile_duration_seconds_count 1",
            r#"lattice_control_assignment_writes_total{outcome="written"} 1"#,
            r#"lattice_control_assignment_writes_total{outcome="lost"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        // A later observation replaces the counts.
        metrics.observe([], []);
        let text = metrics.encode();
        assert!(
            text.contains(r#"lattice_control_hosts{state="ready"} 0"#),
            "{text}"
        );
    }
}
