//! Re-planning: placement of every desired app (and of the version a rollout replaces), the
//! rollouts' next steps, and the assignments that changed; then what the writes' outcomes teach.

use std::collections::BTreeMap;

use lattice_protocol::assignment::{Assignment, Workload};
use lattice_protocol::messages::EventKind;
use lattice_protocol::names::{AppName, HostId};
use lattice_protocol::queue::TraceContext;
use tracing::{info, warn};

use super::{Action, AfterStore, Outcome, State, Time, Written};
use crate::model::{ResolvedApp, RollbackNote, RolloutState, StoredApp};
use crate::placement::{self, HostView, Plan, Policy};
use crate::rollout::{self, Step};
use crate::status::short;

/// An app rolling out, with the version it goes to.
type Rolling<'a> = (AppName, RolloutState, &'a ResolvedApp);

impl State {
    /// Plans, decides each rollout's next step, and writes every assignment that changed (or
    /// must be re-signed). Changes nothing during the startup grace.
    pub(super) fn reconcile(&mut self, now: Time) -> Vec<Action> {
        let (plan, steps) = self.plan(now);
        self.plan = plan;
        // Cleared before acting, so a rollout step recorded below re-plans at once; and before
        // the grace check, so that the grace does not re-plan on every message (the first check
        // after it acts: see `check_hosts`).
        self.dirty = false;
        if now.since_start < self.settings.startup_grace {
            // Still learning what runs: keep planning for status, but change nothing yet.
            return Vec::new();
        }
        let mut actions: Vec<Action> = steps
            .into_iter()
            .filter_map(|(name, r, step)| self.advance_rollout(name, r, step, now))
            .collect();
        actions.extend(self.assignment_changes(now));
        actions
    }

    /// The plan (with rolling apps' hosts not switched yet keeping the old version), and each
    /// rollout's next step.
    fn plan(&self, now: Time) -> (Plan, Vec<(AppName, RolloutState, Step)>) {
        let desired: Vec<_> = self
            .apps
            .values()
            .filter_map(|(app, _)| app.desired().map(|v| &v.resolved))
            .collect();
        let hosts: Vec<HostView> = self
            .hosts
            .values()
            .map(|o| HostView {
                id: o.heartbeat.host.clone(),
                labels: self.labels_of(&o.heartbeat),
                silent: self.silent(o, now),
                stopped: o.heartbeat.stopping,
                admitted: self.is_admitted(&o.heartbeat.host),
            })
            .collect();
        let current: BTreeMap<HostId, Vec<Workload>> = self
            .written
            .iter()
            .map(|(h, w)| (h.clone(), w.assignment.workloads.clone()))
            .collect();
        let policy = Policy {
            default_tolerance: self.settings.host_tolerance,
        };
        let to_plan = placement::plan(&desired, &hosts, &current, policy);
        // Apps rolling out: their previous version is placed too, for the hosts not switched yet.
        let rolling: Vec<Rolling<'_>> = self
            .apps
            .values()
            .filter_map(|(app, _)| {
                let r = app.rollout.as_ref()?;
                let to = &app.desired()?.resolved;
                let _ = app.version(&r.from)?;
                Some((app.name.clone(), r.clone(), to))
            })
            .collect();
        let from_apps: Vec<_> = self
            .apps
            .values()
            .filter_map(|(app, _)| app.version(&app.rollout.as_ref()?.from))
            .map(|v| &v.resolved)
            .collect();
        let from_plan = placement::plan(&from_apps, &hosts, &current, policy);
        let mut plan = to_plan.clone();
        for (name, r, _) in &rolling {
            rollout::merge(name, r, &mut plan, &from_plan);
        }
        // Every heartbeat cloned: only rollouts need it.
        let observed = if rolling.is_empty() {
            BTreeMap::new()
        } else {
            self.observed()
        };
        let steps = rolling
            .into_iter()
            .map(|(name, r, to)| {
                let healthy_for = self
                    .healthy_since
                    .get(&name)
                    .map(|since| now.since_start.saturating_sub(*since));
                let step = rollout::next_step(
                    &name,
                    &r,
                    &to.rollout,
                    &to_plan,
                    &from_plan,
                    &observed,
                    healthy_for,
                );
                (name, r, step)
            })
            .collect();
        (plan, steps)
    }

    /// The assignments to write: every planned host whose workloads changed, whose assignment
    /// nears its expiry, was signed by an earlier leader, or should carry a stop.
    fn assignment_changes(&self, now: Time) -> Vec<Action> {
        let half = self.settings.assignment_ttl.as_secs() / 2;
        let epoch = self.settings.epoch;
        self.plan
            .hosts
            .iter()
            .filter(|(host, workloads)| match self.written.get(*host) {
                Some(w) => {
                    &w.assignment.workloads != *workloads
                        || w.assignment.expires_at.saturating_sub(now.unix_secs) < half
                        // A new leader re-signs everything: this fences off the previous one.
                        || w.assignment.epoch < epoch
                        || (self.stop_requested.contains(*host) && !w.assignment.stop)
                }
                None => !workloads.is_empty() || self.stop_requested.contains(*host),
            })
            .map(|(host, workloads)| {
                let previous = self.written.get(host);
                let assignment = Assignment {
                    lattice: self.settings.lattice.clone(),
                    host: host.clone(),
                    revision: previous.map_or(0, |w| w.assignment.revision) + 1,
                    epoch,
                    stop: self.stop_requested.contains(host),
                    issued_at: now.unix_secs,
                    expires_at: now.unix_secs + self.settings.assignment_ttl.as_secs(),
                    workloads: workloads.clone(),
                    trace: self
                        .trace_of_change(previous.map(|w| &w.assignment.workloads[..]), workloads),
                };
                Action::WriteAssignment {
                    assignment,
                    revision: previous.map(|w| w.kv_revision),
                }
            })
            .collect()
    }

    /// The trace of the deploy that changed `before` into `after` (one host's workloads): that
    /// of the first app, by name, with a deploy trace whose workloads there differ.
    fn trace_of_change(
        &self,
        before: Option<&[Workload]>,
        after: &[Workload],
    ) -> Option<TraceContext> {
        let of = |ws: &[Workload], app: &AppName| -> Vec<Workload> {
            ws.iter().filter(|w| &w.app == app).cloned().collect()
        };
        self.deploy_traces
            .iter()
            .find(|(app, _)| of(before.unwrap_or_default(), app) != of(after, app))
            .map(|(_, trace)| trace.clone())
    }

    /// Acts on a rollout decision: start or stop the health clock, or store the app with the
    /// next batch switched, the rollout finished, or rolled back.
    fn advance_rollout(
        &mut self,
        name: AppName,
        r: RolloutState,
        step: Step,
        now: Time,
    ) -> Option<Action> {
        let (mut app, revision) = self.apps.get(&name).cloned()?;
        let message = match step {
            Step::Wait { running } => {
                if running {
                    self.healthy_since.entry(name).or_insert(now.since_start);
                } else {
                    self.healthy_since.remove(&name);
                }
                return None;
            }
            Step::Switch(hosts) => {
                let names: Vec<&str> = hosts.iter().map(short).collect();
                let message = format!("{name} {}: switching host(s) {}", r.to, names.join(", "));
                let mut next = r.clone();
                next.switched.extend(hosts);
                app.rollout = Some(next);
                message
            }
            Step::Complete => {
                app.rollout = None;
                self.deploy_traces.remove(&name);
                format!("{name} {}: rollout complete", r.to)
            }
            Step::RollBack(reason) => {
                warn!(app = %name, failed = %r.to, restored = %r.from, %reason, "rolling back");
                app.deployed = Some(r.from.clone());
                app.rollout = None;
                self.deploy_traces.remove(&name);
                let message = format!(
                    "{name} {} failed, rolled back to {}: {reason}",
                    r.to, r.from
                );
                app.rolled_back = Some(RollbackNote {
                    failed: r.to.clone(),
                    restored: r.from.clone(),
                    reason,
                });
                message
            }
        };
        self.healthy_since.remove(&name);
        info!(app = %name, "{message}");
        Some(Action::StoreApp {
            app,
            revision: Some(revision),
            after: AfterStore {
                reply: None,
                then: vec![Action::emit(
                    EventKind::Deployed,
                    Some(&name),
                    None,
                    message,
                )],
            },
        })
    }

    /// Learns how storing `app` went: on success it is the app now (and the plan needs another
    /// look); when lost, what the key holds now is learnt, so that a retry starts from there.
    pub(super) fn app_stored(
        &mut self,
        app: Box<StoredApp>,
        outcome: Outcome<StoredApp>,
        after: AfterStore,
    ) -> Vec<Action> {
        match outcome {
            Outcome::Written(revision) => {
                self.apps.insert(app.name.clone(), (*app, revision));
                self.dirty = true;
                after.then
            }
            Outcome::Lost { current, error } => {
                if let Some((stored, revision)) = current.map(|c| *c) {
                    self.apps.insert(app.name.clone(), (stored, revision));
                }
                match after.reply {
                    Some(reply) => vec![Action::refuse(
                        &reply,
                        lattice_protocol::error::WireError::new(
                            lattice_protocol::error::ErrorCode::Conflict,
                            format!(
                                "storing app `{}` failed ({error}); retry the command",
                                app.name
                            ),
                        ),
                    )],
                    None => {
                        warn!(app = %app.name, %error, "could not record the rollout step; will retry");
                        let message = format!(
                            "{} {}: the rollout step could not be stored ({error}); retrying",
                            app.name,
                            app.deployed.as_deref().unwrap_or("-")
                        );
                        vec![Action::emit(
                            EventKind::StoreFailed,
                            Some(&app.name),
                            None,
                            message,
                        )]
                    }
                }
            }
        }
    }

    /// Learns how writing an assignment went; a lost write learns the key's revision (and what
    /// it holds) so that the next attempt can win.
    pub(super) fn assignment_written(
        &mut self,
        assignment: Assignment,
        outcome: Outcome<Assignment>,
    ) -> Vec<Action> {
        let host = assignment.host.clone();
        match outcome {
            Outcome::Written(kv_revision) => {
                info!(
                    host = %short(&host),
                    revision = assignment.revision,
                    workloads = assignment.workloads.len(),
                    "assignment written"
                );
                // Its deploy's trace has reached the host; a rollout's next batches carry it
                // on until the rollout ends.
                if let Some(trace) = &assignment.trace {
                    let apps = &self.apps;
                    self.deploy_traces.retain(|app, t| {
                        t != trace || apps.get(app).is_some_and(|(a, _)| a.rollout.is_some())
                    });
                }
                let message = format!(
                    "assignment revision {} written for host {}: {} workload(s)",
                    assignment.revision,
                    short(&host),
                    assignment.workloads.len()
                );
                self.written.insert(
                    host.clone(),
                    Written {
                        kv_revision,
                        assignment,
                    },
                );
                vec![Action::emit(
                    EventKind::Assigned,
                    None,
                    Some(&host),
                    message,
                )]
            }
            Outcome::Lost { current, error } => {
                warn!(host = %host, %error, "writing an assignment failed; will retry");
                let message = format!(
                    "assignment revision {} for host {} not written ({error}); retrying",
                    assignment.revision,
                    short(&host)
                );
                let note = Action::emit(EventKind::AssignmentFailed, None, Some(&host), message);
                if let Some((assignment, kv_revision)) = current.map(|c| *c) {
                    self.written.insert(
                        host,
                        Written {
                            kv_revision,
                            assignment,
                        },
                    );
                }
                self.dirty = true;
                vec![note]
            }
        }
    }
}
