//! Heartbeats and ticks: which hosts are ready, lost or stopping, when placement needs another
//! look, and the events for what changed on a host. Only admitted hosts are ever ready (see
//! `admission`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_protocol::messages::{EventKind, Heartbeat};
use lattice_protocol::names::HostId;
use tracing::{info, warn};

use super::{Action, Observed, State, Time};
use crate::status::short;

impl State {
    /// Takes a host's heartbeat: records it, marks readiness for a re-check when the host is
    /// new, came back or changed, and emits the events for what changed.
    pub(super) fn on_heartbeat(&mut self, mut hb: Heartbeat, now: Time) -> Vec<Action> {
        let (refusal, admitted) = self.admit_on_heartbeat(&hb, now);
        // The join token has done its work: kept, `ctl get inventory` would show a credential,
        // and every host's record would carry it.
        hb.join_token = None;
        let previous = self.hosts.get(&hb.host);
        let previous_refusal = previous.and_then(|o| o.refusal.clone());
        let changed = previous.is_none_or(|o| {
            o.heartbeat.labels != hb.labels
                || o.heartbeat.stopping != hb.stopping
                || o.refusal != refusal
        });
        let mut actions = self.heartbeat_changes(previous.map(|p| &p.heartbeat), &hb, now);
        let known = previous.is_some();
        if changed {
            if hb.stopping {
                info!(host = %hb.host, name = %hb.name, "host stopping: its movable work goes elsewhere");
            } else {
                info!(host = %hb.host, name = %hb.name, "host joined or changed labels");
            }
        }
        let host = hb.host.clone();
        if hb.stopping {
            self.stop_requested.remove(&host);
        }
        actions.extend(admitted);
        if let Some(why) = refusal
            .as_ref()
            .filter(|r| !known || previous_refusal.as_ref() != Some(*r))
        {
            // Said once per reason, never silently: the host is heard but gets no work.
            warn!(host = %host, name = %hb.name, reason = %why, "host not admitted: it gets no work");
            let message = format!("host {} ({}) not admitted: {why}", hb.name, short(&host));
            actions.push(Action::emit(
                EventKind::HostUnadmitted,
                None,
                Some(&host),
                message,
            ));
        }
        // Moved in, not copied: a heartbeat is taken thousands of times a second.
        self.hosts.insert(
            host.clone(),
            Observed {
                heartbeat: hb,
                last_seen: now.since_start,
                refusal,
            },
        );
        // A host that is not admitted cannot become ready: its heartbeats cost no host check
        // unless something about it changed. The check is made once per batch, at the next
        // reconcile: it walks every host.
        if changed || (!self.ready.contains(&host) && self.is_admitted(&host)) {
            // New labels or a stop change placement even when readiness does not.
            self.dirty |= changed;
            self.hosts_moved = true;
        }
        actions
    }

    /// Recomputes which hosts are ready, and whether placement needs another look; emits an
    /// event for each host just found lost.
    pub(super) fn check_hosts(&mut self, now: Time) -> Vec<Action> {
        let mut forgotten = self.forget_silent(now);
        let tolerance = self.settings.host_tolerance;
        let ready_now = |(id, o): &(&HostId, &Observed)| {
            self.is_admitted(id) && !o.heartbeat.stopping && self.silent(o, now) <= tolerance
        };
        // Most checks (one a tick) find the same hosts ready: compared in order, both being
        // sorted, without copying ten thousand ids into a new set.
        let same = self
            .hosts
            .iter()
            .filter(ready_now)
            .map(|(id, _)| id)
            .eq(self.ready.iter());
        let mut lost = Vec::new();
        if !same {
            let ready: BTreeSet<HostId> = self
                .hosts
                .iter()
                .filter(ready_now)
                .map(|(id, _)| id.clone())
                .collect();
            lost = self
                .ready
                .iter()
                .filter(|h| !ready.contains(h))
                // Revoked or forgotten hosts are not lost: their own events said what happened.
                .filter(|h| self.is_admitted(h))
                .filter(|h| self.hosts.get(*h).is_some_and(|o| !o.heartbeat.stopping))
                .cloned()
                .collect();
            self.ready = ready;
        }
        let marks = self.silence_marks(now);
        // Re-plan only when something the plan depends on moved: a host crossed one of the
        // tolerances in use, a rollout is waiting out its health period, or an assignment
        // nears its expiry. A quiet lattice then costs heartbeats, not plans.
        let expiring = {
            let half = self.settings.assignment_ttl.as_secs() / 2;
            self.written
                .values()
                .any(|w| w.assignment.expires_at.saturating_sub(now.unix_secs) < half)
        };
        let rolling = self.apps.values().any(|(a, _)| a.rollout.is_some());
        // The first check after the startup grace acts on everything learnt meanwhile.
        let grace_over = !self.grace_over && now.since_start >= self.settings.startup_grace;
        self.grace_over |= grace_over;
        if !same || marks != self.silence || rolling || expiring || grace_over {
            self.dirty = true;
        }
        self.silence = marks;
        let lost = lost.into_iter().map(|host| {
            warn!(host = %host, "host lost: no heartbeat within its tolerance");
            let message = format!(
                "host {} lost: no heartbeat within its tolerance",
                short(&host)
            );
            Action::emit(EventKind::HostLost, None, Some(&host), message)
        });
        forgotten.extend(lost);
        forgotten
    }

    /// How long `o` has been silent at `now`.
    pub(super) fn silent(&self, o: &Observed, now: Time) -> Duration {
        now.since_start.saturating_sub(o.last_seen)
    }

    /// For each host, how many of the tolerances in use (the default and every deployed
    /// component's own) its silence exceeds: placement changes only when one of these moves.
    fn silence_marks(&self, now: Time) -> BTreeMap<HostId, usize> {
        let mut tolerances: BTreeSet<Duration> = self
            .apps
            .values()
            .filter_map(|(a, _)| a.desired())
            .flat_map(|v| v.resolved.components.iter())
            .filter_map(|c| c.scaler.tolerance_secs)
            .map(Duration::from_secs)
            .collect();
        tolerances.insert(self.settings.host_tolerance);
        self.hosts
            .iter()
            .map(|(id, o)| {
                let silent = self.silent(o, now);
                (
                    id.clone(),
                    tolerances.iter().filter(|t| silent > **t).count(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Events for what changed between a host's previous heartbeat and this one.
    fn heartbeat_changes(
        &self,
        previous: Option<&Heartbeat>,
        hb: &Heartbeat,
        now: Time,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        match previous {
            None => {
                let message = format!("host {} joined", hb.name);
                actions.push(Action::emit(
                    EventKind::HostJoined,
                    None,
                    Some(&hb.host),
                    message,
                ));
            }
            Some(p) if !p.stopping && hb.stopping => {
                let message = format!("host {} is stopping", hb.name);
                actions.push(Action::emit(
                    EventKind::HostStopped,
                    None,
                    Some(&hb.host),
                    message,
                ));
            }
            Some(_) => {}
        }
        // Queued calls the host dropped or saw expire since its last heartbeat.
        let leading_since = now.unix_secs.saturating_sub(now.since_start.as_secs());
        for (kind, link, message) in crate::queues::outbox_losses(previous, hb, leading_since) {
            warn!(host = %hb.name, %link, "{message}");
            actions.push(Action::emit(kind, Some(&link.app), Some(&hb.host), message));
        }
        for w in &hb.workloads {
            let before = previous.and_then(|p| {
                p.workloads.iter().find(|o| {
                    o.app == w.app && o.component == w.component && o.app_version == w.app_version
                })
            });
            if before.is_none_or(|b| b.state != w.state || b.message != w.message) {
                let mut message = format!(
                    "{}/{} {} on {}: {}",
                    w.app, w.component, w.app_version, hb.name, w.state
                );
                if !w.message.is_empty() {
                    message += &format!(" ({})", w.message);
                }
                actions.push(Action::emit(
                    EventKind::Workload,
                    Some(&w.app),
                    Some(&hb.host),
                    message,
                ));
            }
        }
        actions
    }

    /// A host's labels with the operator's changes applied.
    pub(crate) fn labels_of(&self, hb: &Heartbeat) -> BTreeMap<String, String> {
        let mut labels = hb.labels.clone();
        for (k, v) in self.label_overrides.get(&hb.host).into_iter().flatten() {
            match v {
                Some(v) => labels.insert(k.clone(), v.clone()),
                None => labels.remove(k),
            };
        }
        labels
    }

    /// Every host's latest heartbeat.
    pub(super) fn observed(&self) -> BTreeMap<HostId, Heartbeat> {
        self.hosts
            .iter()
            .map(|(id, o)| (id.clone(), o.heartbeat.clone()))
            .collect()
    }
}
