//! The control plane's decisions, as one pure function: [`decide`] takes the state and one
//! [`Input`] (a heartbeat, a tick, a request, the outcome of a write) and returns the
//! [`Action`]s to carry out (write an assignment, store an app, emit an event, answer a
//! request). It reads no clock (the time comes in as a [`Time`]) and does no I/O; the worker
//! (`crate::worker`) receives inputs, calls it, carries the actions out, and feeds the outcome
//! of each write back as another input (a compare-and-set lost to another writer included).
//!
//! # Layout
//!
//! - this file: [`State`], [`Input`], [`Action`] and the dispatch, [`decide`].
//! - `hosts`: heartbeats and ticks: who is ready, lost or stopping, and the events for it.
//! - `reconcile`: re-planning (placement, rollouts) and the assignments that changed.
//! - `requests`: the `lattice ctl` verbs, once their request is decoded (and, for a deploy or a
//!   scale, prepared off this path: see [`Prepared`]).
//! - `tests`: property tests of the invariants.
//!
//! Logging goes through `tracing` here too: logs are for people and change nothing decided.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_protocol::assignment::Assignment;
use lattice_protocol::envelope::{self, Reply};
use lattice_protocol::error::WireError;
use lattice_protocol::messages::{
    AppRequest, EventKind, Heartbeat, InventoryRequest, LabelRequest, RollbackRequest,
    StopHostRequest, Verb,
};
use lattice_protocol::names::{AppName, HostId, LatticeName};
use lattice_protocol::queue_ops::{DeadLettersRequest, QueueLink, RequeueRequest};

use crate::model::{ResolvedApp, StoredApp};
use crate::placement::Plan;
use crate::queues::OutboxReport;

mod hosts;
mod reconcile;
mod requests;
#[cfg(test)]
mod tests;

pub(crate) use requests::{invalid, not_found, version_conflict};

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
}

/// A host as last heard from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observed {
    pub(crate) heartbeat: Heartbeat,
    /// [`Time::since_start`] of its last heartbeat.
    pub(crate) last_seen: Duration,
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
    /// Hosts heard from within the default tolerance and not stopping.
    ready: BTreeSet<HostId>,
    /// `hosts::silence_marks` as of the last check.
    silence: BTreeMap<HostId, usize>,
    /// Whether the startup grace has passed (and been acted on).
    grace_over: bool,
    pub(crate) written: BTreeMap<HostId, Written>,
    /// The last plan (kept for `ctl status`).
    plan: Plan,
    /// Hosts asked to stop (`ctl stop host`) that have not said they are stopping yet.
    stop_requested: BTreeSet<HostId>,
    label_overrides: BTreeMap<HostId, LabelOverrides>,
    /// Since when (see [`Time::since_start`]) every switched host of a rolling-out app runs its
    /// new version.
    healthy_since: BTreeMap<AppName, Duration>,
    /// Something the plan depends on moved since the last plan.
    dirty: bool,
}

impl State {
    /// The state a new leadership starts from: what the KV buckets hold, no host heard yet.
    pub(crate) fn new(
        settings: Settings,
        apps: BTreeMap<AppName, (StoredApp, u64)>,
        written: BTreeMap<HostId, Written>,
        label_overrides: BTreeMap<HostId, LabelOverrides>,
    ) -> Self {
        Self {
            settings,
            apps,
            hosts: BTreeMap::new(),
            ready: BTreeSet::new(),
            silence: BTreeMap::new(),
            grace_over: false,
            written,
            plan: Plan::default(),
            stop_requested: BTreeSet::new(),
            label_overrides,
            healthy_since: BTreeMap::new(),
            dirty: true,
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

/// Where a request's answer goes (its NATS reply subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyTo(pub(crate) String);

/// A `lattice ctl` request, decoded with its [`Verb`]'s request type. Deploy and scale are not
/// here: they are prepared first and come in as [`Input::Prepared`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    Undeploy(AppRequest),
    Apps,
    Status(AppRequest),
    Hosts,
    History(AppRequest),
    Rollback(RollbackRequest),
    Inventory(InventoryRequest),
    StopHost(StopHostRequest),
    Label(LabelRequest),
    Queues,
    DeadLetters(DeadLettersRequest),
    Requeue(RequeueRequest),
}

/// A deploy (or scale) prepared off the state task: the manifest parsed and versioned, its
/// images and links resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prepared {
    /// The manifest's YAML text as it is to be stored.
    pub(crate) text: String,
    pub(crate) name: AppName,
    pub(crate) version: String,
    /// `None` when the app already had this version with this manifest when it was prepared
    /// (nothing was resolved again).
    pub(crate) resolved: Option<ResolvedApp>,
}

/// How a compare-and-set write went.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome<T> {
    /// Written; the key's new KV revision.
    Written(u64),
    /// Someone else wrote the key first: what it holds now (with its KV revision), if it could
    /// be read, and the error.
    Lost {
        current: Option<Box<(T, u64)>>,
        error: String,
    },
}

/// What to do once an app is stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AfterStore {
    /// The request that asked for it: answered with a conflict when the store is lost.
    pub(crate) reply: Option<ReplyTo>,
    /// Carried out when stored (the answer, events).
    pub(crate) then: Vec<Action>,
}

/// Something that happened, for [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    /// A host's heartbeat.
    Heartbeat(Heartbeat),
    /// Time passed (hosts may have gone silent, assignments may near their expiry).
    Tick,
    /// The inputs waiting have been taken: re-plan if anything moved. Separate from the inputs,
    /// so that a burst of heartbeats costs one plan.
    Reconcile,
    /// A decoded `lattice ctl` request.
    Request { reply: ReplyTo, request: Request },
    /// A deploy or scale, prepared (or refused while preparing).
    Prepared {
        reply: ReplyTo,
        prepared: Reply<Prepared>,
    },
    /// How storing an app went.
    AppStored {
        app: Box<StoredApp>,
        outcome: Outcome<StoredApp>,
        after: AfterStore,
    },
    /// How writing an assignment went.
    AssignmentWritten {
        assignment: Assignment,
        outcome: Outcome<Assignment>,
    },
    /// How storing a host's label changes went.
    LabelsStored {
        host: HostId,
        overrides: LabelOverrides,
        reply: ReplyTo,
        outcome: Result<(), String>,
    },
}

/// A queue verb's work: it reads JetStream, so it runs in a task of its own, from what the
/// state held when it was asked.
#[derive(Debug, Clone)]
pub(crate) enum QueueJob {
    Queues {
        deployed: BTreeSet<QueueLink>,
        reports: Vec<OutboxReport>,
    },
    DeadLetters(DeadLettersRequest),
    Requeue {
        request: RequeueRequest,
        ttls: BTreeMap<QueueLink, Duration>,
    },
}

// By hand: `OutboxReport` (the queue module's) does not compare; its fields do.
impl PartialEq for QueueJob {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                QueueJob::Queues { deployed, reports },
                QueueJob::Queues {
                    deployed: d,
                    reports: r,
                },
            ) => {
                deployed == d
                    && reports.len() == r.len()
                    && reports.iter().zip(r).all(|(a, b)| {
                        (&a.host, &a.name, &a.stats, a.reported_secs_ago)
                            == (&b.host, &b.name, &b.stats, b.reported_secs_ago)
                    })
            }
            (QueueJob::DeadLetters(a), QueueJob::DeadLetters(b)) => a == b,
            (
                QueueJob::Requeue { request, ttls },
                QueueJob::Requeue {
                    request: r,
                    ttls: t,
                },
            ) => request == r && ttls == t,
            _ => false,
        }
    }
}

/// An event for `lattice ctl watch`; the worker stamps it with the time it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Note {
    pub(crate) kind: EventKind,
    pub(crate) app: Option<AppName>,
    pub(crate) host: Option<HostId>,
    pub(crate) message: String,
}

/// Something for the worker to carry out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Answer a request (an enveloped [`Reply`] of its verb's reply type).
    Reply { to: ReplyTo, body: Vec<u8> },
    /// Publish an event.
    Emit(Note),
    /// Store an app under its key, if the key is still at `revision` (`None`: absent); then
    /// report [`Input::AppStored`].
    StoreApp {
        app: StoredApp,
        revision: Option<u64>,
        after: AfterStore,
    },
    /// Sign and write a host's assignment, if its key is still at `revision` (`None`: absent);
    /// then report [`Input::AssignmentWritten`].
    WriteAssignment {
        assignment: Assignment,
        revision: Option<u64>,
    },
    /// Store a host's label changes; then report [`Input::LabelsStored`].
    StoreLabels {
        host: HostId,
        overrides: LabelOverrides,
        reply: ReplyTo,
    },
    /// Answer a queue verb from JetStream, in a task of its own.
    AnswerQueues { reply: ReplyTo, job: QueueJob },
}

impl Action {
    /// The answer to a request of verb `V`: typed by the verb, so it cannot drift from what
    /// the client decodes.
    pub(crate) fn reply<V: Verb>(to: &ReplyTo, reply: Reply<V::Reply>) -> Self {
        Action::Reply {
            to: to.clone(),
            body: envelope::encode(&reply),
        }
    }

    /// A refusal: an error's encoding does not depend on the verb's reply type.
    pub(crate) fn refuse(to: &ReplyTo, error: WireError) -> Self {
        Action::Reply {
            to: to.clone(),
            body: envelope::encode(&Reply::<()>::Err(error)),
        }
    }

    fn emit(
        kind: EventKind,
        app: Option<&AppName>,
        host: Option<&HostId>,
        message: String,
    ) -> Self {
        Action::Emit(Note {
            kind,
            app: app.cloned(),
            host: host.cloned(),
            message,
        })
    }
}

/// Decides what `input` calls for, given `state` at time `now`; updates `state` with what it
/// learnt and decided. Deterministic: the same state, input and time give the same actions and
/// the same new state.
pub(crate) fn decide(state: &mut State, input: Input, now: Time) -> Vec<Action> {
    match input {
        Input::Heartbeat(hb) => state.on_heartbeat(hb, now),
        Input::Tick => state.check_hosts(now),
        Input::Reconcile if state.dirty => state.reconcile(now),
        Input::Reconcile => Vec::new(),
        Input::Request { reply, request } => state.on_request(reply, request, now),
        Input::Prepared { reply, prepared } => match prepared {
            Ok(p) => state.deploy(&reply, p, now),
            Err(e) => vec![Action::refuse(&reply, e)],
        },
        Input::AppStored {
            app,
            outcome,
            after,
        } => state.app_stored(app, outcome, after),
        Input::AssignmentWritten {
            assignment,
            outcome,
        } => state.assignment_written(assignment, outcome),
        Input::LabelsStored {
            host,
            overrides,
            reply,
            outcome,
        } => state.labels_stored(host, overrides, &reply, outcome),
    }
}
