//! The control plane's worker: the I/O around [`crate::decide`]. It owns the state, turns what
//! arrives (heartbeats, requests, ticks, prepared deploys) into inputs, and carries out the
//! actions decided: KV writes (whose outcomes go back in as inputs), events and replies.
//!
//! - this file: the loop and the actions.
//! - `api`: a `lattice ctl` request decoded by its verb ([`lattice_protocol::messages::verbs`]).
//! - `intake`: heartbeats believed only when signed by the host their subject names.
//! - `users`: the role table: loaded (and started with the bootstrap admins), and the
//!   `lattice ctl users` verbs.
//! - `configs`: the config store of `lattice ctl config`, which deploys read named configs
//!   from; a change reaches the apps that took it as a new version.
//! - `prepare`: deploys and scales prepared in tasks of their own (manifest parsed, artifacts
//!   read, links resolved), so that heartbeats never wait behind the object store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, kv};
use futures::{FutureExt, StreamExt};
use lattice_protocol::assignment::{Assignment, SignedAssignment};
use lattice_protocol::auth::{Freshness, Roles};
use lattice_protocol::envelope;
use lattice_protocol::messages::HostAdmission;
use lattice_protocol::names::{AppName, HostId};
use lattice_protocol::subject::{Buckets, CONTROL_QUEUE_GROUP, Subject};
use lattice_protocol::unix_now;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

mod api;
mod configs;
mod intake;
mod members;
mod prepare;
mod users;

use crate::ControlConfig;
use crate::decide::{
    self, Action, AfterStore, Input, LabelOverrides, Note, Outcome, QueueJob, ReplyTo, Settings,
    State, Time, Written,
};
use crate::events::Events;
use crate::model::StoredApp;
use crate::registry::Registry;
use lattice_protocol::jetstream::{Bucket, open_kv};

/// At most this many heartbeats are taken in a row before the worker re-plans and looks at
/// requests again.
const HEARTBEAT_BATCH: usize = 1024;

/// The hosts and apps gauges are set at most this often, and only when metrics are served:
/// working out every app's status walks its placements over every host, which done every tick
/// was a third of the control plane's CPU at 10,000 hosts. Scrapes come every 15 s or more.
const OBSERVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The KV buckets the worker writes.
struct Stores {
    manifests: kv::Store,
    assignments: kv::Store,
    labels: kv::Store,
    /// Host admissions ([`lattice_protocol::messages::HostAdmission`]).
    hosts: kv::Store,
    /// The role table (`lattice ctl users`).
    users: kv::Store,
    /// The config store (`lattice ctl config`).
    configs: kv::Store,
}

/// A prepared deploy or scale, with the span of the request it answers.
type Traced = (Input, tracing::Span);

pub(crate) struct Worker {
    cfg: Arc<ControlConfig>,
    client: async_nats::Client,
    stores: Stores,
    registry: Registry,
    state: State,
    /// When this leadership began: [`Time::since_start`] counts from here.
    started: Instant,
    /// Prepared deploys come back through here.
    /// With the span of the request they answer (`lattice.deploy`), which the writes they
    /// lead to (`lattice.assign`) continue.
    prepared: (
        mpsc::UnboundedSender<Traced>,
        mpsc::UnboundedReceiver<Traced>,
    ),
    /// The apps as stored, for preparing deploys; rebuilt when one was stored since.
    catalog: Option<Arc<BTreeMap<AppName, StoredApp>>>,
    /// Heartbeats refused (unsigned, spoofed), counted and reported.
    intake: intake::Intake,
    /// Who may do what (`lattice ctl users`), as stored.
    roles: Roles,
    /// The config store as stored, shared with the deploys being prepared.
    configs: Arc<configs::Configs>,
    /// Where events go (the events stream), without waiting.
    events: Events,
    /// The requests seen within the clock window: stale ones and replays are refused.
    freshness: Freshness,
    /// The hosts' signed memberships, which other hosts may read.
    members: members::Members,
    /// What the control plane exports for Prometheus: timed and counted here, its gauges set
    /// every [`OBSERVE_EVERY`].
    metrics: Arc<crate::metrics::ControlMetrics>,
    /// When the gauges were last set.
    observed: Option<Instant>,
    /// Hosts admitted by their join token in this turn of the loop, whose records are stored
    /// together at its end ([`Worker::store_admissions`]).
    admitted: Vec<(HostId, HostAdmission)>,
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

/// What `key` holds now, decoded, with its KV revision (after a lost compare-and-set).
async fn current<T: serde::de::DeserializeOwned>(
    store: &kv::Store,
    key: &str,
) -> Option<Box<(T, u64)>> {
    let entry = store.entry(key).await.ok()??;
    let value = envelope::decode::<T>(&entry.value).ok()?;
    Some(Box::new((value, entry.revision)))
}

/// Writes `bytes` under `key` if the key is still at `revision` (`None`: absent).
async fn compare_and_set(
    store: &kv::Store,
    key: &str,
    bytes: Vec<u8>,
    revision: Option<u64>,
) -> Result<u64, String> {
    match revision {
        Some(rev) => store
            .update(key, bytes.into(), rev)
            .await
            .map_err(|e| e.to_string()),
        None => store
            .create(key, bytes.into())
            .await
            .map_err(|e| e.to_string()),
    }
}

impl Worker {
    pub(crate) async fn start(
        cfg: Arc<ControlConfig>,
        epoch: u64,
        client: async_nats::Client,
    ) -> anyhow::Result<Self> {
        let js = jetstream::new(client.clone());
        let b = Buckets::new(&cfg.lattice);
        let bucket = |name, description| {
            let bucket = Bucket {
                name,
                history: 5,
                max_age: std::time::Duration::ZERO,
                description,
            };
            open_kv(&js, bucket, &cfg.storage)
        };
        let (stores, members) = (
            Stores {
                manifests: bucket(&b.manifests(), "Lattice app manifests").await?,
                assignments: bucket(&b.assignments(), "Lattice signed host assignments").await?,
                labels: bucket(&b.labels(), "Lattice host label changes").await?,
                hosts: bucket(&b.hosts(), "Lattice host admissions").await?,
                users: bucket(&b.users(), "Lattice role table: user key -> grant").await?,
                configs: bucket(&b.configs(), "Lattice config store: name -> values").await?,
            },
            bucket(&b.members(), "Lattice hosts' signed memberships").await?,
        );
        let roles = users::load(&stores.users, &cfg.admins).await?;
        let configs = Arc::new(configs::load(&stores.configs).await?);
        let mut members = members::Members::open(members).await?;
        let registry = Registry::open_limited(&js, &cfg.lattice, &cfg.storage).await?;
        crate::events::ensure(&js, &cfg.lattice, &cfg.storage).await?;
        let events = Events::start(js.clone(), &cfg.lattice);
        let mut label_overrides = BTreeMap::new();
        for (key, overrides, _) in load::<LabelOverrides>(&stores.labels).await? {
            if let Ok(host) = HostId::new(key) {
                label_overrides.insert(host, overrides);
            }
        }
        let mut admissions = BTreeMap::new();
        for (key, admission, _) in load::<HostAdmission>(&stores.hosts).await? {
            if let Ok(host) = HostId::new(key) {
                admissions.insert(host, admission);
            }
        }
        let mut apps = BTreeMap::new();
        for (_, app, rev) in load::<StoredApp>(&stores.manifests).await? {
            apps.insert(app.name.clone(), (app, rev));
        }
        let mut written = BTreeMap::new();
        for (_, signed, kv_revision) in load::<SignedAssignment>(&stores.assignments).await? {
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
        // Hosts assigned before memberships were written get theirs now.
        for host in written.keys() {
            members.ensure(&cfg.lattice, host, &cfg.key).await;
        }
        info!(
            lattice = %cfg.lattice,
            key = %cfg.key.public_key(),
            epoch,
            apps = apps.len(),
            assignments = written.len(),
            "control plane leading"
        );
        let settings = Settings {
            lattice: cfg.lattice.clone(),
            epoch,
            host_tolerance: cfg.host_tolerance,
            startup_grace: cfg.startup_grace,
            assignment_ttl: cfg.assignment_ttl,
            host_retention: cfg.host_retention,
            admins: roles.admins().cloned().collect(),
        };
        let intake = intake::Intake::new(&cfg.key);
        Ok(Self {
            cfg,
            client,
            stores,
            registry,
            state: State::new(settings, apps, written, label_overrides, admissions),
            started: Instant::now(),
            prepared: mpsc::unbounded_channel(),
            catalog: None,
            intake,
            roles,
            configs,
            events,
            freshness: Freshness::default(),
            members,
            metrics: Arc::default(),
            observed: None,
            admitted: Vec::new(),
        })
    }

    /// The apps as stored, made once and shared until one is stored again.
    fn catalog(&mut self) -> Arc<BTreeMap<AppName, StoredApp>> {
        self.catalog
            .get_or_insert_with(|| Arc::new(self.state.catalog()))
            .clone()
    }

    /// Counts into `metrics` (the process's, which outlive a leadership).
    pub(crate) fn with_metrics(mut self, metrics: Arc<crate::metrics::ControlMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sets the metrics' gauges from the state: hosts by state, apps by status.
    fn observe(&mut self) {
        if self.cfg.metrics.is_none()
            || self.observed.is_some_and(|at| at.elapsed() < OBSERVE_EVERY)
        {
            return;
        }
        self.observed = Some(Instant::now());
        let now = self.now();
        let apps = self.state.apps_summary(now).into_iter().map(|a| a.status);
        self.metrics.observe(self.state.host_states(), apps);
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
            crate::queues::watch_dead_letters(
                self.client.clone(),
                lattice.clone(),
                self.events.clone(),
            ),
        ));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = leading.changed() => {
                    if !*leading.borrow() {
                        warn!(epoch = self.state.settings.epoch, "lost leadership: stepping down");
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
                        match self.intake.take(&msg.subject, &msg.payload) {
                            intake::Taken::Heartbeat(hb) => self.step(Input::Heartbeat(hb)).await,
                            intake::Taken::Refused(Some(note)) => {
                                let _ = self.act(Action::Emit(note)).await;
                            }
                            intake::Taken::Refused(None) => {}
                        }
                        taken += 1;
                        if taken < HEARTBEAT_BATCH {
                            next = heartbeats.next().now_or_never().flatten();
                        }
                    }
                }
                Some(msg) = requests.next() => self.on_request(msg).await,
                Some((input, span)) = self.prepared.1.recv() => {
                    self.step(input).instrument(span).await;
                }
                _ = tick.tick() => {
                    self.step(Input::Tick).await;
                    self.observe();
                }
            }
            self.store_admissions().await;
            self.step(Input::Reconcile).await;
        }
        info!("control plane stopped");
        Ok(true)
    }

    fn now(&self) -> Time {
        Time {
            since_start: self.started.elapsed(),
            unix_secs: unix_now(),
        }
    }

    /// Decides `input` and carries the actions out, each outcome decided in turn before the
    /// actions after it (so a store's answer goes out before the next write).
    async fn step(&mut self, input: Input) {
        let now = self.now();
        let reconcile = matches!(input, Input::Reconcile).then(Instant::now);
        let mut pending = decide::decide(&mut self.state, input, now);
        if let Some(started) = reconcile {
            self.metrics.reconciled(started.elapsed());
        }
        pending.reverse();
        while let Some(action) = pending.pop() {
            if let Some(outcome) = self.act(action).await {
                let now = self.now();
                let mut more = decide::decide(&mut self.state, outcome, now);
                more.reverse();
                pending.extend(more);
            }
        }
    }

    /// Carries out one action; returns its outcome when [`decide`] must learn it.
    async fn act(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::Reply { to, body } if to.subject.is_empty() => {
                // A deploy the control plane asked of itself: nobody to answer, but a refusal
                // is worth a line.
                if let Ok(Err(e)) =
                    envelope::decode::<envelope::Reply<serde::de::IgnoredAny>>(&body)
                {
                    warn!(error = %e, "a deploy the control plane started itself was refused");
                }
                None
            }
            Action::Reply { to, body } => {
                let sealed = api::seal(&self.cfg.key, &to, body);
                if let Err(e) = self.client.publish(to.subject, sealed.into()).await {
                    warn!(error = %e, "could not send a reply");
                }
                None
            }
            Action::Emit(Note {
                kind,
                app,
                host,
                message,
            }) => {
                self.events.emit(kind, app.as_ref(), host.as_ref(), message);
                None
            }
            Action::StoreApp {
                app,
                revision,
                after,
            } => Some(self.store_app(app, revision, after).await),
            Action::WriteAssignment {
                assignment,
                revision,
            } => {
                // The membership first: the host's queued items may reach a target as soon as
                // it runs what it is assigned.
                let (lattice, key) = (&self.cfg.lattice, &self.cfg.key);
                self.members.ensure(lattice, &assignment.host, key).await;
                let outcome = self.write_assignment(&assignment, revision).await;
                let written = matches!(outcome, Outcome::Written(_));
                self.metrics.assignment_written(written);
                Some(Input::AssignmentWritten {
                    assignment,
                    outcome,
                })
            }
            Action::StoreLabels {
                host,
                overrides,
                reply,
            } => {
                let bytes = envelope::encode(&overrides);
                let outcome = match self.stores.labels.put(host.as_str(), bytes.into()).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                };
                Some(Input::LabelsStored {
                    host,
                    overrides,
                    reply,
                    outcome,
                })
            }
            // Admitted by its join token: decided already (and undone if the write fails), so
            // the write waits for the end of the turn and goes with the others of the batch.
            // 10,000 hosts joining at once were 10,000 round trips in a row, with every
            // heartbeat and request behind them. An operator's admission (with a reply) stays
            // in turn: no two writes for one host are ever in flight together.
            Action::StoreAdmission {
                host,
                record,
                reply: None,
            } => {
                self.admitted.push((host, record));
                None
            }
            Action::StoreAdmission {
                host,
                record,
                reply,
            } => {
                let bytes = envelope::encode(&record);
                let outcome = match self.stores.hosts.put(host.as_str(), bytes.into()).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                };
                Some(Input::AdmissionStored {
                    host,
                    record,
                    reply,
                    outcome,
                })
            }
            Action::ClearAssignment { host, revision } => {
                // Only if nobody wrote it since: a rival's newer assignment is its to clear.
                let store = &self.stores.assignments;
                match store
                    .delete_expect_revision(host.as_str(), Some(revision))
                    .await
                {
                    Ok(()) => self.members.remove(&host).await,
                    Err(e) => {
                        warn!(host = %host, error = %e, "could not clear a forgotten host's assignment");
                    }
                }
                None
            }
            Action::AnswerQueues { reply, job } => {
                self.answer_queues(reply, job);
                None
            }
        }
    }

    /// Stores the admissions of this turn's joining hosts, all at once, and decides each
    /// outcome.
    async fn store_admissions(&mut self) {
        if self.admitted.is_empty() {
            return;
        }
        let admitted = std::mem::take(&mut self.admitted);
        let store = &self.stores.hosts;
        let outcomes = futures::future::join_all(admitted.iter().map(|(host, record)| async {
            let bytes = envelope::encode(record);
            store
                .put(host.as_str(), bytes.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }))
        .await;
        for ((host, record), outcome) in admitted.into_iter().zip(outcomes) {
            self.step(Input::AdmissionStored {
                host,
                record,
                reply: None,
                outcome,
            })
            .await;
        }
    }

    /// Stores an app's new version if nobody stored one since `revision`.
    async fn store_app(
        &mut self,
        app: StoredApp,
        revision: Option<u64>,
        after: AfterStore,
    ) -> Input {
        let store = &self.stores.manifests;
        let key = app.name.as_str();
        let outcome = match compare_and_set(store, key, envelope::encode(&app), revision).await {
            Ok(rev) => Outcome::Written(rev),
            Err(error) => Outcome::Lost {
                current: current::<StoredApp>(store, key).await,
                error,
            },
        };
        self.catalog = None;
        Input::AppStored {
            app: Box::new(app),
            outcome,
            after,
        }
    }

    /// Writes `assignment` in a `lattice.assign` span, which continues the trace of the deploy
    /// that changed it (when it carries one) and is the trace the host's `lattice.apply`
    /// continues.
    async fn write_assignment(
        &self,
        assignment: &Assignment,
        revision: Option<u64>,
    ) -> Outcome<Assignment> {
        let span = tracing::debug_span!("lattice.assign", host = %assignment.host);
        if let Some(trace) = &assignment.trace {
            lattice_telemetry::propagation::continue_pairs(&span, &trace.to_pairs());
        }
        self.write_assignment_traced(assignment, revision)
            .instrument(span)
            .await
    }

    async fn write_assignment_traced(
        &self,
        assignment: &Assignment,
        revision: Option<u64>,
    ) -> Outcome<Assignment> {
        let store = &self.stores.assignments;
        let key = assignment.host.as_str();
        // Secrets are resealed to the host here, at the last moment; the state keeps them as
        // stored (sealed to this control plane) so that its comparisons stay stable.
        let mut sent = crate::secrets::for_host(assignment, &self.cfg.key);
        // The host continues this span (none when traces are off or this pass was sampled
        // out: then the host's apply starts a trace of its own).
        sent.trace = lattice_protocol::queue::TraceContext::from_pairs(
            &lattice_telemetry::propagation::current_pairs(),
        );
        let bytes = envelope::encode(&SignedAssignment::sign(&sent, &self.cfg.key));
        match compare_and_set(store, key, bytes, revision).await {
            Ok(rev) => Outcome::Written(rev),
            Err(error) => {
                // Someone else wrote this key: learn its revision so the next attempt can win.
                let current = current::<SignedAssignment>(store, key)
                    .await
                    .and_then(|c| Some(Box::new((c.0.decode_unverified().ok()?, c.1))));
                Outcome::Lost { current, error }
            }
        }
    }

    /// Queue verbs read JetStream, which may be slow: they are answered by a task of their own,
    /// from what the state held when they were asked.
    fn answer_queues(&self, reply: ReplyTo, job: QueueJob) {
        use lattice_protocol::messages::verbs;
        let client = self.client.clone();
        let lattice = self.cfg.lattice.clone();
        let js = async_nats::jetstream::new(client.clone());
        let cfg = self.cfg.clone();
        tokio::spawn(async move {
            let action = match job {
                QueueJob::Queues { deployed, reports } => Action::reply::<verbs::Queues>(
                    &reply,
                    crate::queues::queues(&js, &lattice, deployed, reports).await,
                ),
                QueueJob::DeadLetters(r) => Action::reply::<verbs::DeadLetters>(
                    &reply,
                    crate::queues::dead_letters(&js, &lattice, &r.link).await,
                ),
                QueueJob::Requeue { request, ttls } => Action::reply::<verbs::Requeue>(
                    &reply,
                    crate::queues::requeue(&js, &lattice, &request, &ttls, &cfg.key).await,
                ),
            };
            if let Action::Reply { to, body } = action
                && let Err(e) = client
                    .publish(to.subject.clone(), api::seal(&cfg.key, &to, body).into())
                    .await
            {
                warn!(error = %e, "could not send a reply");
            }
        });
    }
}
