//! The control plane's single worker: it owns all state, takes heartbeats and API requests, and
//! writes the assignments that the pure planner says changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, kv};
use futures::{FutureExt, StreamExt};
use lattice_protocol::assignment::{Assignment, SignedAssignment, Workload};
use lattice_protocol::envelope;
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::messages::{Event, EventKind, Heartbeat};
use lattice_protocol::names::{AppName, HostId};
use lattice_protocol::subject::{Buckets, CONTROL_QUEUE_GROUP, Subject};
use lattice_protocol::unix_now;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod api;

use crate::ControlConfig;
use crate::model::{RollbackNote, RolloutState, StoredApp};
use crate::placement::{self, HostView, Plan, Policy};
use crate::registry::Registry;
use crate::rollout;
use crate::status::short;
use lattice_protocol::jetstream::ensure_kv;

/// Publishes an event for `lattice ctl watch` (best effort: events are for people).
pub(crate) async fn publish_event(
    client: &async_nats::Client,
    lattice: &lattice_protocol::names::LatticeName,
    kind: EventKind,
    app: Option<&AppName>,
    host: Option<&HostId>,
    message: String,
) {
    let event = Event {
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        kind,
        app: app.cloned(),
        host: host.cloned(),
        message,
    };
    let subject = Subject::events(lattice).to_string();
    if let Err(e) = client
        .publish(subject, envelope::encode(&event).into())
        .await
    {
        debug!(error = %e, "event not published");
    }
}

/// At most this many heartbeats are taken in a row before the worker re-plans and looks at
/// requests again.
const HEARTBEAT_BATCH: usize = 1024;

struct Observed {
    heartbeat: Heartbeat,
    last_seen: Instant,
}

struct Written {
    kv_revision: u64,
    assignment: Assignment,
}

pub(crate) struct Worker {
    cfg: Arc<ControlConfig>,
    /// This leadership's fencing epoch, stamped on every assignment.
    epoch: u64,
    client: async_nats::Client,
    manifests: kv::Store,
    assignments: kv::Store,
    registry: Registry,
    apps: BTreeMap<AppName, (StoredApp, u64)>,
    hosts: BTreeMap<HostId, Observed>,
    ready: BTreeSet<HostId>,
    /// [`Worker::silence_marks`] as of the last check.
    silence: BTreeMap<HostId, usize>,
    /// Whether the startup grace has passed (and been acted on).
    grace_over: bool,
    written: BTreeMap<HostId, Written>,
    plan: Plan,
    /// Hosts found lost since the last events were published.
    newly_lost: Vec<HostId>,
    /// Hosts asked to stop (`ctl stop host`) that have not said they are stopping yet.
    stop_requested: std::collections::BTreeSet<HostId>,
    /// Label changes made with `ctl label`: `None` removes a label the host reports.
    label_overrides: BTreeMap<HostId, BTreeMap<String, Option<String>>>,
    labels_kv: kv::Store,
    /// Since when every switched host of a rolling-out app runs its new version.
    healthy_since: BTreeMap<AppName, Instant>,
    started: Instant,
    dirty: bool,
}

async fn load<T: serde::de::DeserializeOwned>(
    store: &kv::Store,
) -> anyhow::Result<Vec<(String, T, u64)>> {
    let mut out = Vec::new();
    let mut keys = store.keys().await?;
    while let Some(key) = keys.next().await {
        let key = key?;
        if let Some(entry) = store.entry(&key).await?
            && entry.operation == kv::Operation::Put
        {
            match envelope::decode::<T>(&entry.value) {
                Ok(v) => out.push((key, v, entry.revision)),
                Err(e) => warn!(key, error = %e, "skipping an entry that does not decode"),
            }
        }
    }
    Ok(out)
}

impl Worker {
    pub(crate) async fn start(
        cfg: Arc<ControlConfig>,
        epoch: u64,
        client: async_nats::Client,
    ) -> anyhow::Result<Self> {
        let js = jetstream::new(client.clone());
        let b = Buckets::new(&cfg.lattice);
        let manifests = ensure_kv(&js, &b.manifests(), 5, "Lattice app manifests").await?;
        let assignments =
            ensure_kv(&js, &b.assignments(), 5, "Lattice signed host assignments").await?;
        let registry = Registry::open(&js, &cfg.lattice).await?;
        let labels_kv = ensure_kv(&js, &b.labels(), 5, "Lattice host label changes").await?;
        let mut label_overrides = BTreeMap::new();
        for (key, overrides, _) in load::<BTreeMap<String, Option<String>>>(&labels_kv).await? {
            if let Ok(host) = HostId::new(key) {
                label_overrides.insert(host, overrides);
            }
        }
        let mut apps = BTreeMap::new();
        for (_, app, rev) in load::<StoredApp>(&manifests).await? {
            apps.insert(app.name.clone(), (app, rev));
        }
        let mut written = BTreeMap::new();
        for (_, signed, kv_revision) in load::<SignedAssignment>(&assignments).await? {
            if let Ok(assignment) = signed.decode_unverified() {
                written.insert(
                    assignment.host.clone(),
                    Written {
                        kv_revision,
                        assignment,
                    },
                );
            }
        }
        info!(
            lattice = %cfg.lattice,
            key = %cfg.key.public_key(),
            epoch,
            apps = apps.len(),
            assignments = written.len(),
            "control plane leading"
        );
        Ok(Self {
            cfg,
            epoch,
            client,
            manifests,
            assignments,
            registry,
            apps,
            hosts: BTreeMap::new(),
            ready: BTreeSet::new(),
            silence: BTreeMap::new(),
            grace_over: false,
            written,
            plan: Plan::default(),
            healthy_since: BTreeMap::new(),
            stop_requested: Default::default(),
            newly_lost: Vec::new(),
            label_overrides,
            labels_kv,
            started: Instant::now(),
            dirty: true,
        })
    }

    /// Acts until `shutdown` (returns `Ok(true)`) or until the lease is lost (`Ok(false)`).
    pub(crate) async fn run(
        mut self,
        shutdown: CancellationToken,
        mut leading: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<bool> {
        let lattice = self.cfg.lattice.clone();
        let mut heartbeats = self
            .client
            .subscribe(Subject::all_heartbeats(&lattice))
            .await?;
        let mut requests = self
            .client
            .queue_subscribe(Subject::all_ctl(&lattice), CONTROL_QUEUE_GROUP.to_string())
            .await?;
        // Make sure the subscriptions are registered before anyone is told we are up.
        self.client.flush().await?;
        let mut tick = tokio::time::interval(self.cfg.tick);
        // Only the leader announces dead letters; stopped when this leadership ends.
        let _dead_letters = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            crate::queues::watch_dead_letters(self.client.clone(), lattice.clone()),
        ));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = leading.changed() => {
                    if !*leading.borrow() {
                        warn!(epoch = self.epoch, "lost leadership: stepping down");
                        return Ok(false);
                    }
                }
                Some(msg) = heartbeats.next() => {
                    // The heartbeats already waiting are taken too, so that the re-plan below
                    // runs once for all of them: a thousand hosts joining, or a worker that
                    // fell behind, then cost one plan rather than one each (which, at 1,000
                    // hosts and 1,000 components, never caught up).
                    let mut next = Some(msg);
                    let mut taken = 0;
                    while let Some(msg) = next.take() {
                        if let Some((previous, hb)) = self.on_heartbeat(&msg.payload) {
                            self.emit_heartbeat_changes(previous.as_ref(), &hb).await;
                        }
                        taken += 1;
                        if taken < HEARTBEAT_BATCH {
                            next = heartbeats.next().now_or_never().flatten();
                        }
                    }
                }
                Some(msg) = requests.next() => self.on_request(msg).await,
                _ = tick.tick() => {
                    let lost = self.check_hosts();
                    self.newly_lost.extend(lost);
                }
            }
            for lost in std::mem::take(&mut self.newly_lost) {
                let message = format!(
                    "host {} lost: no heartbeat within its tolerance",
                    short(&lost)
                );
                self.emit(EventKind::HostLost, None, Some(&lost), message)
                    .await;
            }
            if self.dirty {
                self.reconcile().await;
            }
        }
        info!("control plane stopped");
        Ok(true)
    }

    /// Publishes an event for `lattice ctl watch` (best effort: events are for people).
    async fn emit(
        &self,
        kind: EventKind,
        app: Option<&AppName>,
        host: Option<&HostId>,
        message: String,
    ) {
        publish_event(&self.client, &self.cfg.lattice, kind, app, host, message).await;
    }

    /// Events for what changed between a host's previous heartbeat and this one.
    async fn emit_heartbeat_changes(&self, previous: Option<&Heartbeat>, hb: &Heartbeat) {
        match previous {
            None => {
                let message = format!("host {} joined", hb.name);
                self.emit(EventKind::HostJoined, None, Some(&hb.host), message)
                    .await;
            }
            Some(p) if !p.stopping && hb.stopping => {
                let message = format!("host {} is stopping", hb.name);
                self.emit(EventKind::HostStopped, None, Some(&hb.host), message)
                    .await;
            }
            Some(_) => {}
        }
        self.emit_outbox_losses(previous, hb).await;
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
                self.emit(EventKind::Workload, Some(&w.app), Some(&hb.host), message)
                    .await;
            }
        }
    }

    /// Events for queued calls a host dropped or saw expire since its last heartbeat.
    async fn emit_outbox_losses(&self, previous: Option<&Heartbeat>, hb: &Heartbeat) {
        let leading_since = unix_now().saturating_sub(self.started.elapsed().as_secs());
        for (kind, link, message) in crate::queues::outbox_losses(previous, hb, leading_since) {
            warn!(host = %hb.name, %link, "{message}");
            self.emit(kind, Some(&link.app), Some(&hb.host), message)
                .await;
        }
    }

    fn on_heartbeat(&mut self, payload: &[u8]) -> Option<(Option<Heartbeat>, Heartbeat)> {
        let hb: Heartbeat = match envelope::decode(payload) {
            Ok(hb) => hb,
            Err(e) => {
                warn!(error = %e, "ignoring a heartbeat that does not decode");
                return None;
            }
        };
        let changed = self
            .hosts
            .get(&hb.host)
            .is_none_or(|o| o.heartbeat.labels != hb.labels || o.heartbeat.stopping != hb.stopping);
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
        let previous = self.hosts.insert(
            hb.host.clone(),
            Observed {
                heartbeat: hb.clone(),
                last_seen: Instant::now(),
            },
        );
        if changed || !self.ready.contains(&host) {
            // New labels or a stop change placement even when readiness does not.
            self.dirty |= changed;
            let lost = self.check_hosts();
            self.newly_lost.extend(lost);
        }
        Some((previous.map(|p| p.heartbeat), hb))
    }

    /// Recomputes which hosts are ready, and whether placement needs another look; returns the
    /// hosts that were just found lost.
    fn check_hosts(&mut self) -> Vec<HostId> {
        let tolerance = self.cfg.host_tolerance;
        let ready: BTreeSet<HostId> = self
            .hosts
            .iter()
            .filter(|(_, o)| !o.heartbeat.stopping && o.last_seen.elapsed() <= tolerance)
            .map(|(id, _)| id.clone())
            .collect();
        let lost: Vec<HostId> = self
            .ready
            .iter()
            .filter(|h| !ready.contains(h))
            .filter(|h| self.hosts.get(*h).is_some_and(|o| !o.heartbeat.stopping))
            .cloned()
            .collect();
        for host in &lost {
            warn!(host = %host, "host lost: no heartbeat within its tolerance");
        }
        let marks = self.silence_marks();
        // Re-plan only when something the plan depends on moved: a host crossed one of the
        // tolerances in use, a rollout is waiting out its health period, or an assignment
        // nears its expiry. A quiet lattice then costs heartbeats, not plans.
        let expiring = {
            let now = unix_now();
            let half = self.cfg.assignment_ttl.as_secs() / 2;
            self.written
                .values()
                .any(|w| w.assignment.expires_at.saturating_sub(now) < half)
        };
        let rolling = self.apps.values().any(|(a, _)| a.rollout.is_some());
        // The first check after the startup grace acts on everything learnt meanwhile.
        let grace_over = !self.grace_over && self.started.elapsed() >= self.cfg.startup_grace;
        self.grace_over |= grace_over;
        if ready != self.ready || marks != self.silence || rolling || expiring || grace_over {
            self.dirty = true;
        }
        self.ready = ready;
        self.silence = marks;
        lost
    }

    /// For each host, how many of the tolerances in use (the default and every deployed
    /// component's own) its silence exceeds: placement changes only when one of these moves.
    fn silence_marks(&self) -> BTreeMap<HostId, usize> {
        let mut tolerances: BTreeSet<std::time::Duration> = self
            .apps
            .values()
            .filter_map(|(a, _)| a.desired())
            .flat_map(|v| v.resolved.components.iter())
            .filter_map(|c| c.scaler.tolerance_secs)
            .map(std::time::Duration::from_secs)
            .collect();
        tolerances.insert(self.cfg.host_tolerance);
        self.hosts
            .iter()
            .map(|(id, o)| {
                let silent = o.last_seen.elapsed();
                (
                    id.clone(),
                    tolerances.iter().filter(|t| silent > **t).count(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    async fn reconcile(&mut self) {
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
                silent: o.last_seen.elapsed(),
                stopped: o.heartbeat.stopping,
            })
            .collect();
        let current: BTreeMap<HostId, Vec<Workload>> = self
            .written
            .iter()
            .map(|(h, w)| (h.clone(), w.assignment.workloads.clone()))
            .collect();
        let policy = Policy {
            default_tolerance: self.cfg.host_tolerance,
        };
        let to_plan = placement::plan(&desired, &hosts, &current, policy);
        // Apps rolling out: their previous version is placed too, for the hosts not switched yet.
        let rolling: Vec<(AppName, RolloutState, &crate::model::ResolvedApp)> = self
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
        let steps: Vec<(AppName, RolloutState, rollout::Step)> = rolling
            .into_iter()
            .map(|(name, r, to)| {
                let healthy_for = self.healthy_since.get(&name).map(Instant::elapsed);
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
        self.plan = plan;
        // Cleared before acting, so a rollout step recorded below re-plans at once; and before
        // the grace check, so that the grace does not re-plan on every message (the first check
        // after it acts: see `check_hosts`).
        self.dirty = false;
        if self.started.elapsed() < self.cfg.startup_grace {
            // Still learning what runs: keep planning for status, but change nothing yet.
            return;
        }
        for (name, r, step) in steps {
            self.advance_rollout(name, r, step).await;
        }
        let now = unix_now();
        let half = self.cfg.assignment_ttl.as_secs() / 2;
        let changes: Vec<_> = self
            .plan
            .hosts
            .iter()
            .filter(|(host, workloads)| match self.written.get(*host) {
                Some(w) => {
                    &w.assignment.workloads != *workloads
                        || w.assignment.expires_at.saturating_sub(now) < half
                        // A new leader re-signs everything: this fences off the previous one.
                        || w.assignment.epoch < self.epoch
                        || (self.stop_requested.contains(*host) && !w.assignment.stop)
                }
                None => !workloads.is_empty() || self.stop_requested.contains(*host),
            })
            .map(|(h, w)| (h.clone(), w.clone()))
            .collect();
        for (host, workloads) in changes {
            if let Err(e) = self.write_assignment(&host, workloads, now).await {
                warn!(host = %host, error = %e, "writing an assignment failed; will retry");
                self.dirty = true;
            }
        }
    }

    /// Acts on a rollout decision: switch a batch, finish, or roll back.
    async fn advance_rollout(&mut self, name: AppName, r: RolloutState, step: rollout::Step) {
        use rollout::Step;
        let Some((mut app, _)) = self.apps.get(&name).cloned() else {
            return;
        };
        let (event, message) = match step {
            Step::Wait { running } => {
                if running {
                    self.healthy_since.entry(name).or_insert_with(Instant::now);
                } else {
                    self.healthy_since.remove(&name);
                }
                return;
            }
            Step::Switch(hosts) => {
                let names: Vec<&str> = hosts.iter().map(short).collect();
                let message = format!("{name} {}: switching host(s) {}", r.to, names.join(", "));
                let mut next = r.clone();
                next.switched.extend(hosts);
                app.rollout = Some(next);
                (EventKind::Deployed, message)
            }
            Step::Complete => {
                app.rollout = None;
                (
                    EventKind::Deployed,
                    format!("{name} {}: rollout complete", r.to),
                )
            }
            Step::RollBack(reason) => {
                warn!(app = %name, failed = %r.to, restored = %r.from, %reason, "rolling back");
                app.deployed = Some(r.from.clone());
                app.rollout = None;
                let message = format!(
                    "{name} {} failed, rolled back to {}: {reason}",
                    r.to, r.from
                );
                app.rolled_back = Some(RollbackNote {
                    failed: r.to.clone(),
                    restored: r.from.clone(),
                    reason,
                });
                (EventKind::Deployed, message)
            }
        };
        self.healthy_since.remove(&name);
        info!(app = %name, "{message}");
        if let Err(e) = self.store_app(app).await {
            warn!(app = %name, error = %e, "could not record the rollout step; will retry");
            return;
        }
        self.emit(event, Some(&name), None, message).await;
    }

    async fn write_assignment(
        &mut self,
        host: &HostId,
        workloads: Vec<Workload>,
        now: u64,
    ) -> anyhow::Result<()> {
        let previous = self.written.get(host);
        let assignment = Assignment {
            lattice: self.cfg.lattice.clone(),
            host: host.clone(),
            revision: previous.map_or(0, |w| w.assignment.revision) + 1,
            epoch: self.epoch,
            stop: self.stop_requested.contains(host),
            issued_at: now,
            expires_at: now + self.cfg.assignment_ttl.as_secs(),
            workloads,
        };
        let bytes = envelope::encode(&SignedAssignment::sign(&assignment, &self.cfg.key));
        let result = match previous {
            Some(w) => self
                .assignments
                .update(host.as_str(), bytes.into(), w.kv_revision)
                .await
                .map_err(anyhow::Error::from),
            None => self
                .assignments
                .create(host.as_str(), bytes.into())
                .await
                .map_err(anyhow::Error::from),
        };
        match result {
            Ok(kv_revision) => {
                info!(
                    host = %short(host),
                    revision = assignment.revision,
                    workloads = assignment.workloads.len(),
                    "assignment written"
                );
                let message = format!(
                    "assignment revision {} written for host {}: {} workload(s)",
                    assignment.revision,
                    short(host),
                    assignment.workloads.len()
                );
                self.written.insert(
                    host.clone(),
                    Written {
                        kv_revision,
                        assignment,
                    },
                );
                self.emit(EventKind::Assigned, None, Some(host), message)
                    .await;
                Ok(())
            }
            Err(e) => {
                // Someone else wrote this key: learn its revision so the next attempt can win.
                if let Ok(Some(entry)) = self.assignments.entry(host.as_str()).await
                    && let Ok(signed) = envelope::decode::<SignedAssignment>(&entry.value)
                    && let Ok(assignment) = signed.decode_unverified()
                {
                    self.written.insert(
                        host.clone(),
                        Written {
                            kv_revision: entry.revision,
                            assignment,
                        },
                    );
                }
                Err(e)
            }
        }
    }

    async fn store_app(&mut self, app: StoredApp) -> Result<(), WireError> {
        let bytes = envelope::encode(&app);
        let result = match self.apps.get(&app.name) {
            Some((_, rev)) => self
                .manifests
                .update(app.name.as_str(), bytes.into(), *rev)
                .await
                .map_err(|e| e.to_string()),
            None => self
                .manifests
                .create(app.name.as_str(), bytes.into())
                .await
                .map_err(|e| e.to_string()),
        };
        let rev = match result {
            Ok(rev) => rev,
            Err(e) => {
                // Someone else (a deposed leader) wrote it: learn what is stored, so that the
                // retry starts from there.
                if let Ok(Some(entry)) = self.manifests.entry(app.name.as_str()).await
                    && let Ok(stored) = envelope::decode::<StoredApp>(&entry.value)
                {
                    self.apps.insert(app.name.clone(), (stored, entry.revision));
                }
                return Err(WireError::new(
                    ErrorCode::Conflict,
                    format!("storing app `{}` failed ({e}); retry the command", app.name),
                ));
            }
        };
        self.apps.insert(app.name.clone(), (app, rev));
        self.dirty = true;
        Ok(())
    }

    fn observed(&self) -> BTreeMap<HostId, Heartbeat> {
        self.hosts
            .iter()
            .map(|(id, o)| (id.clone(), o.heartbeat.clone()))
            .collect()
    }
}
