//! The state the decisions take: apps, hosts as last seen, assignments written, and the
//! time as a value.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_protocol::assignment::Assignment;
use lattice_protocol::keys::PublicKey;
use lattice_protocol::messages::{Heartbeat, HostAdmission};
use lattice_protocol::names::{AppName, HostId, LatticeName};
use lattice_protocol::queue::TraceContext;

use crate::model::StoredApp;
use crate::placement::Plan;

/// The time as a decision sees it: a value, so that the same state and input always decide
/// the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Time {
    /// Since this leadership began (monotonic): what silences and health periods are measured in.
    pub(crate) since_start: Duration,
    /// Unix seconds: what assignments' issue and expiry times are written in.
    pub(crate) unix_secs: u64,
}

/// What the decisions need from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The lattice.
    pub(crate) lattice: LatticeName,
    /// This leadership's fencing epoch, stamped on every assignment.
    pub(crate) epoch: u64,
    /// See [`crate::ControlConfig::host_tolerance`].
    pub(crate) host_tolerance: Duration,
    /// See [`crate::ControlConfig::startup_grace`].
    pub(crate) startup_grace: Duration,
    /// See [`crate::ControlConfig::assignment_ttl`].
    pub(crate) assignment_ttl: Duration,
    /// See [`crate::ControlConfig::host_retention`].
    pub(crate) host_retention: Duration,
    /// The admins of the role table (at first [`crate::ControlConfig::admins`]): whose join
    /// tokens admit hosts.
    pub(crate) admins: Vec<PublicKey>,
}

/// A host as last heard from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observed {
    pub(crate) heartbeat: Heartbeat,
    /// [`Time::since_start`] of its last heartbeat.
    pub(crate) last_seen: Duration,
    /// Why it was not admitted as of its last heartbeat (`None`: admitted).
    pub(crate) refusal: Option<String>,
}

/// The assignment last written (or found) under a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    /// The KV revision of the key: the next write must name it (compare and set).
    pub(crate) kv_revision: u64,
    pub(crate) assignment: Assignment,
}

/// Label changes made with `ctl label`: `None` removes a label the host reports.
pub(crate) type LabelOverrides = BTreeMap<String, Option<String>>;

/// Everything the control plane knows: owned by the worker, changed only by [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct State {
    pub(crate) settings: Settings,
    /// Apps with the KV revision of their key.
    pub(crate) apps: BTreeMap<AppName, (StoredApp, u64)>,
    pub(crate) hosts: BTreeMap<HostId, Observed>,
    /// Admissions as stored (admitted or revoked), by host, heard from or not.
    pub(crate) admissions: BTreeMap<HostId, HostAdmission>,
    /// Admitted hosts heard from within the default tolerance and not stopping.
    pub(super) ready: BTreeSet<HostId>,
    /// `hosts::silence_marks` as of the last check.
    pub(super) silence: BTreeMap<HostId, usize>,
    /// Whether the startup grace has passed (and been acted on).
    pub(super) grace_over: bool,
    pub(crate) written: BTreeMap<HostId, Written>,
    /// The last plan (kept for `ctl status`).
    pub(super) plan: Plan,
    /// Hosts asked to stop (`ctl stop host`) that have not said they are stopping yet.
    pub(super) stop_requested: BTreeSet<HostId>,
    pub(super) label_overrides: BTreeMap<HostId, LabelOverrides>,
    /// Since when (see [`Time::since_start`]) every switched host of a rolling-out app runs its
    /// new version.
    pub(super) healthy_since: BTreeMap<AppName, Duration>,
    /// Something the plan depends on moved since the last plan.
    pub(super) dirty: bool,
    /// A host joined, changed or came back since readiness was last worked out: the next
    /// [`Input::Reconcile`](super::Input::Reconcile) works it out again, once for the whole
    /// batch of heartbeats (10,000 hosts joining cost one pass, not one each).
    pub(super) hosts_moved: bool,
    /// The trace of each app's last deploy (or scale), while the assignments it changes are
    /// still to be written: they carry it, so that the hosts' `lattice.apply` joins the
    /// deploy's trace. Forgotten once written (or at the end of its rollout): a later
    /// re-placement is no part of that deploy.
    pub(super) deploy_traces: BTreeMap<AppName, TraceContext>,
}

impl State {
    /// The state a new leadership starts from: what the KV buckets hold (apps, assignments,
    /// label changes, admissions), no host heard yet.
    pub(crate) fn new(
        settings: Settings,
        apps: BTreeMap<AppName, (StoredApp, u64)>,
        written: BTreeMap<HostId, Written>,
        label_overrides: BTreeMap<HostId, LabelOverrides>,
        admissions: BTreeMap<HostId, HostAdmission>,
    ) -> Self {
        Self {
            settings,
            apps,
            hosts: BTreeMap::new(),
            admissions,
            ready: BTreeSet::new(),
            silence: BTreeMap::new(),
            grace_over: false,
            written,
            plan: Plan::default(),
            stop_requested: BTreeSet::new(),
            label_overrides,
            healthy_since: BTreeMap::new(),
            dirty: true,
            hosts_moved: false,
            deploy_traces: BTreeMap::new(),
        }
    }

    /// Every app as stored, for the preparation of deploys and scales.
    pub(crate) fn catalog(&self) -> BTreeMap<AppName, StoredApp> {
        self.apps
            .iter()
            .map(|(name, (app, _))| (name.clone(), app.clone()))
            .collect()
    }
}
