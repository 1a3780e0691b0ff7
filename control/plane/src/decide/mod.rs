//! The control plane's decisions, as one pure function: [`decide`] takes the state and one
//! [`Input`] (a heartbeat, a tick, a request, the outcome of a write) and returns the
//! [`Action`]s to carry out (write an assignment, store an app, emit an event, answer a
//! request). It reads no clock (the time comes in as a [`Time`]) and does no I/O; the worker
//! (`crate::worker`) receives inputs, calls it, carries the actions out, and feeds the outcome
//! of each write back as another input (a compare-and-set lost to another writer included).
//!
//! # Layout
//!
//! - this file: the dispatch, [`decide`].
//! - `state`: [`State`], with the [`Time`] as a value.
//! - `input`: [`Input`]: heartbeats, ticks, requests, prepared deploys, outcomes of writes.
//! - `action`: [`Action`]: answers, events, writes.
//! - `hosts`: heartbeats and ticks: who is ready, lost or stopping, and the events for it.
//! - `admission`: which hosts take part (join tokens, `ctl hosts admit|revoke`), and
//!   forgetting hosts silent past the retention.
//! - `reconcile`: re-planning (placement, rollouts) and the assignments that changed.
//! - `requests`: the `lattice ctl` verbs, once their request is decoded (and, for a deploy or a
//!   scale, prepared off this path: see [`Prepared`]).
//! - `tests`: property tests of the invariants.
//!
//! Logging goes through `tracing` here too: logs are for people and change nothing decided.

mod action;
mod admission;
mod hosts;
mod input;
mod reconcile;
mod requests;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use action::{Action, Note, QueueJob};
use lattice_protocol::messages::EventKind;

pub(crate) use input::{AfterStore, Input, Outcome, Prepared, ReplyTo, Request};
pub(crate) use requests::{invalid, not_found, version_conflict};
pub(crate) use state::{LabelOverrides, Observed, Settings, State, Time, Written};

/// Decides what `input` calls for, given `state` at time `now`; updates `state` with what it
/// learnt and decided. Deterministic: the same state, input and time give the same actions and
/// the same new state.
pub(crate) fn decide(state: &mut State, input: Input, now: Time) -> Vec<Action> {
    match input {
        Input::Heartbeat(hb) => state.on_heartbeat(hb, now),
        Input::Tick => {
            state.hosts_moved = false;
            state.check_hosts(now)
        }
        Input::Reconcile => {
            let mut actions = Vec::new();
            if std::mem::take(&mut state.hosts_moved) {
                actions.extend(state.check_hosts(now));
            }
            if state.dirty {
                actions.extend(state.reconcile(now));
            }
            actions
        }
        Input::Request { reply, request } => state.on_request(reply, request, now),
        Input::Prepared { reply, prepared } => match prepared {
            Ok(p) => state.deploy(&reply, p, now),
            Err(e) => {
                // Said to whoever asked, and to everyone watching.
                let message = format!("a deploy or scale was refused: {}", e.message);
                let note = Action::emit(EventKind::RequestRefused, None, None, message);
                vec![Action::refuse(&reply, e), note]
            }
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
        Input::AdmissionStored {
            host,
            record,
            reply,
            outcome,
        } => state.admission_stored(host, record, reply, outcome),
    }
}
