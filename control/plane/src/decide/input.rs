//! What the decisions take: heartbeats, ticks, requests, prepared deploys and the outcomes of
//! writes.

use lattice_protocol::assignment::Assignment;
use lattice_protocol::envelope::Reply;
use lattice_protocol::messages::{
    AdmissionRequest, AppRequest, Heartbeat, HostAdmission, InventoryRequest, LabelRequest,
    ManifestRequest, RollbackRequest, StopHostRequest,
};
use lattice_protocol::names::{AppName, HostId};
use lattice_protocol::queue::TraceContext;
use lattice_protocol::queue::ops::{DeadLettersRequest, RequeueRequest};

use super::{Action, LabelOverrides};
use crate::model::{ResolvedApp, StoredApp};

/// Where a request's answer goes: its NATS reply subject, and the nonce of the signed request
/// it answers (the worker signs the answer bound to it, so it cannot answer another request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyTo {
    pub(crate) subject: String,
    pub(crate) nonce: Vec<u8>,
}

impl ReplyTo {
    /// The answer to the request with `nonce`, sent to `subject`.
    pub(crate) fn new(subject: impl Into<String>, nonce: Vec<u8>) -> Self {
        Self {
            subject: subject.into(),
            nonce,
        }
    }

    /// No one: for what the control plane asks of itself (the deploys a config change
    /// starts), whose answers are not sent.
    pub(crate) fn nobody() -> Self {
        Self::new(String::new(), Vec::new())
    }
}

/// A `lattice ctl` request, decoded with its [`Verb`]'s request type. Deploy and scale are not
/// here: they are prepared first and come in as [`Input::Prepared`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    Undeploy(AppRequest),
    Apps,
    Status(AppRequest),
    Hosts,
    History(AppRequest),
    Manifest(ManifestRequest),
    Rollback(RollbackRequest),
    Inventory(InventoryRequest),
    StopHost(StopHostRequest),
    Label(LabelRequest),
    Queues,
    DeadLetters(DeadLettersRequest),
    Requeue(RequeueRequest),
    Admission(AdmissionRequest),
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
    /// The trace the request was served in (its `lattice.deploy`, or the scale's
    /// `lattice.ctl.serve`), carried on to the assignments it changes; `None` when traces are
    /// off.
    pub(crate) trace: Option<TraceContext>,
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
    /// How storing a host's admission went (`reply`: the operator's request, when it was one).
    AdmissionStored {
        host: HostId,
        record: HostAdmission,
        reply: Option<ReplyTo>,
        outcome: Result<(), String>,
    },
}
