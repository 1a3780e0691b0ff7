//! What the decisions return: answers, events and writes for the worker to carry out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_protocol::assignment::Assignment;
use lattice_protocol::envelope::{self, Reply};
use lattice_protocol::error::WireError;
use lattice_protocol::messages::{EventKind, HostAdmission, Verb};
use lattice_protocol::names::{AppName, HostId};
use lattice_protocol::queue::ops::{DeadLettersRequest, QueueLink, RequeueRequest};

use super::{AfterStore, LabelOverrides, ReplyTo};
use crate::model::StoredApp;
use crate::queues::OutboxReport;

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
    /// Store a host's admission; then report [`Input::AdmissionStored`].
    StoreAdmission {
        host: HostId,
        record: HostAdmission,
        reply: Option<ReplyTo>,
    },
    /// Delete a forgotten host's assignment key (best effort: a host that comes back is
    /// assigned afresh).
    ClearAssignment { host: HostId, revision: u64 },
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

    pub(super) fn emit(
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
