//! What the control plane stores: apps with their versions, each resolved at deploy time into
//! exactly what placement needs (digests, not tags; merged config; HTTP bindings).

use std::collections::BTreeMap;

use lattice_protocol::assignment::{ComponentLimits, HttpBinding, WorkloadLink};
use lattice_protocol::digest::Digest;
use lattice_protocol::names::{AppName, ComponentName};
use serde::{Deserialize, Serialize};

/// How many versions of an app are kept.
pub const MAX_VERSIONS: usize = 20;

/// An app as stored in the manifests bucket (one key per app).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredApp {
    /// The app.
    pub name: AppName,
    /// Versions, oldest first.
    pub versions: Vec<StoredVersion>,
    /// The version that should run; `None` once undeployed.
    pub deployed: Option<String>,
    /// A rollout in progress from the previous version to `deployed`.
    #[serde(default)]
    pub rollout: Option<RolloutState>,
    /// The last rollout that failed and was rolled back, until the next deploy.
    #[serde(default)]
    pub rolled_back: Option<RollbackNote>,
}

/// A rollout in progress: hosts in `switched` run `to`, the others still run `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    /// The version being replaced.
    pub from: String,
    /// The version rolling out (the app's `deployed`).
    pub to: String,
    /// Hosts already switched to `to`.
    pub switched: Vec<lattice_protocol::names::HostId>,
}

/// Why a rollout was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackNote {
    /// The version that failed.
    pub failed: String,
    /// The version restored.
    pub restored: String,
    /// Which component failed on which host, and why.
    pub reason: String,
}

impl StoredApp {
    /// The version that should run, if any.
    pub fn desired(&self) -> Option<&StoredVersion> {
        self.version(self.deployed.as_deref()?)
    }

    /// A stored version.
    pub fn version(&self, version: &str) -> Option<&StoredVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The newest version (deployed or not).
    pub fn latest(&self) -> Option<&StoredVersion> {
        self.versions.last()
    }
}

/// One version of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    /// The version string (the manifest's `version` annotation, or derived from its content).
    pub version: String,
    /// The manifest exactly as deployed.
    pub manifest: String,
    /// Unix seconds when deployed.
    pub deployed_at: u64,
    /// The manifest resolved for placement.
    pub resolved: ResolvedApp,
}

/// An app reduced to what placement and hosts need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedApp {
    /// The app.
    pub name: AppName,
    /// The version.
    pub version: String,
    /// Its runnable components (capabilities are folded into their bindings).
    pub components: Vec<ResolvedComponent>,
    /// How a new version of it replaces the running one.
    #[serde(default)]
    pub rollout: RolloutPolicy,
    /// When no host matches, report `Waiting` rather than `Failed` (annotation
    /// `lattice.wait-for-hosts: "true"`).
    #[serde(default)]
    pub wait_for_hosts: bool,
}

/// The annotation that makes an app wait for matching hosts instead of failing.
pub const WAIT_ANNOTATION: &str = "lattice.wait-for-hosts";

/// How a new version replaces the running one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    /// Hosts switched per step; `None`: all at once.
    pub batch: Option<lattice_manifest::Batch>,
    /// How long a step must run healthy before the next, in seconds.
    pub healthy_for_secs: u64,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            batch: None,
            healthy_for_secs: 5,
        }
    }
}

/// One runnable component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedComponent {
    /// The component.
    pub name: ComponentName,
    /// Its artifact.
    pub image: Digest,
    /// How many, where.
    pub scaler: Scaling,
    /// Its merged named config.
    pub config: BTreeMap<String, String>,
    /// Its merged secrets, each value sealed to the control plane's key (resealed to each host
    /// when its assignment is written).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Where the built-in HTTP server serves it.
    pub http: Option<HttpBinding>,
    /// What serves its linked imports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<WorkloadLink>,
    /// Subjects delivered to its messaging handler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// Its manifest's `limits`, passed to every host it is placed on.
    #[serde(default, skip_serializing_if = "ComponentLimits::is_empty")]
    pub limits: ComponentLimits,
}

/// How instances of a component are placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scaling {
    /// Spread (N in total) or daemon (N on every matching host).
    pub kind: ScalerKind,
    /// N.
    pub instances: u32,
    /// Where; an empty list means one entry that matches every host.
    pub spread: Vec<SpreadEntry>,
    /// How long a host may be silent before movable instances leave it; `None`: the control
    /// plane's default.
    #[serde(default)]
    pub tolerance_secs: Option<u64>,
}

/// Spread or daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScalerKind {
    /// N instances in total, split over the spread entries by weight.
    Spread,
    /// N instances on every matching host.
    Daemon,
}

/// One spread entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpreadEntry {
    /// Its name, for messages.
    pub name: String,
    /// Its share.
    pub weight: u32,
    /// Labels a host must all have.
    pub requirements: BTreeMap<String, String>,
    /// Instances stay on their host however long it is silent.
    #[serde(default)]
    pub pinned: bool,
}

impl SpreadEntry {
    /// Whether a host with `labels` matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }

    /// `zone=edge, arch=aarch64`, for messages.
    pub fn describe(&self) -> String {
        if self.requirements.is_empty() {
            return "any host".to_string();
        }
        self.requirements
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
