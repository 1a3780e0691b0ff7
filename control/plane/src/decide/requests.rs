//! The `lattice ctl` verbs, decided on the state: each answer is typed by its verb
//! ([`lattice_protocol::messages::verbs`]); those that change what is stored answer once it is
//! stored.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_protocol::assignment::LinkTarget;
use lattice_protocol::envelope::Reply;
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::messages::{
    AppState, AppStatus, AppSummary, DeployReply, EventKind, Heartbeat, HostState, HostSummary,
    LabelRequest, ManifestReply, ManifestRequest, RollbackRequest, VersionSummary, verbs,
};
use lattice_protocol::names::{AppName, ComponentName, HostId};
use lattice_protocol::queue::ops::QueueLink;
use tracing::info;

use super::{
    Action, AfterStore, LabelOverrides, Observed, Prepared, QueueJob, ReplyTo, Request, State, Time,
};
use crate::model::{MAX_VERSIONS, RolloutState, StoredApp, StoredVersion};
use crate::queues::OutboxReport;
use crate::status;

pub(crate) fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidInput, message)
}

pub(crate) fn not_found(name: &AppName) -> WireError {
    WireError::new(
        ErrorCode::NotFound,
        format!("no app named `{name}`; `lattice ctl get apps` lists them"),
    )
}

/// A version stored before with another manifest.
pub(crate) fn version_conflict(name: &AppName, version: &str) -> WireError {
    WireError::new(
        ErrorCode::Conflict,
        format!(
            "app `{name}` version `{version}` was already deployed with a different manifest; change metadata.annotations.version to deploy a new version"
        ),
    )
}

impl State {
    /// Decides one decoded request.
    pub(super) fn on_request(&mut self, to: ReplyTo, request: Request, now: Time) -> Vec<Action> {
        let answer = match request {
            Request::Undeploy(r) => return self.undeploy(&to, &r.name),
            Request::Apps => Action::reply::<verbs::Apps>(&to, Ok(self.apps_summary(now))),
            Request::Status(r) => Action::reply::<verbs::Status>(&to, self.status(&r.name, now)),
            Request::Hosts => Action::reply::<verbs::Hosts>(&to, Ok(self.hosts_summary(now))),
            Request::History(r) => Action::reply::<verbs::History>(&to, self.history(&r.name)),
            Request::Manifest(r) => Action::reply::<verbs::Manifest>(&to, self.manifest(&r)),
            Request::Rollback(r) => return self.rollback(&to, r),
            Request::Inventory(r) => {
                Action::reply::<verbs::Inventory>(&to, self.inventory(&r.host))
            }
            Request::StopHost(r) => Action::reply::<verbs::StopHost>(&to, self.stop_host(&r.host)),
            Request::Label(r) => return self.label(&to, r),
            Request::Queues => {
                let job = QueueJob::Queues {
                    deployed: self.queued_links(),
                    reports: self.outbox_reports(now),
                };
                Action::AnswerQueues { reply: to, job }
            }
            Request::DeadLetters(r) => Action::AnswerQueues {
                reply: to,
                job: QueueJob::DeadLetters(r),
            },
            Request::Admission(r) => return self.admission_request(&to, r, now),
            Request::Requeue(request) => Action::AnswerQueues {
                reply: to,
                job: QueueJob::Requeue {
                    request,
                    ttls: self.queued_ttls(),
                },
            },
        };
        vec![answer]
    }

    /// Stores `app`, then carries out `then`; a request waiting on it is refused if the store
    /// is lost.
    fn store(&self, app: StoredApp, reply: &ReplyTo, then: Vec<Action>) -> Action {
        let revision = self.apps.get(&app.name).map(|(_, rev)| *rev);
        Action::StoreApp {
            app,
            revision,
            after: AfterStore {
                reply: Some(reply.clone()),
                then,
            },
        }
    }

    /// A prepared deploy (or scale): a new version stored (or an existing one made desired),
    /// through a rollout when another version runs.
    pub(super) fn deploy(&mut self, to: &ReplyTo, p: Prepared, now: Time) -> Vec<Action> {
        let Prepared {
            text,
            name,
            version,
            resolved,
            trace,
        } = p;
        let mut app = self
            .apps
            .get(&name)
            .map(|(a, _)| a.clone())
            .unwrap_or(StoredApp {
                name: name.clone(),
                versions: Vec::new(),
                deployed: None,
                rollout: None,
                rolled_back: None,
            });
        if let Some(existing) = app.versions.iter().find(|v| v.version == version) {
            if existing.manifest != text {
                return vec![Action::refuse(to, version_conflict(&name, &version))];
            }
        } else {
            // Prepared as already stored, but gone meanwhile (another leader's write learnt).
            let Some(resolved) = resolved else {
                let message = format!(
                    "app `{name}` changed while the deploy was prepared; retry the command"
                );
                return vec![Action::refuse(
                    to,
                    WireError::new(ErrorCode::Conflict, message),
                )];
            };
            app.versions.push(StoredVersion {
                version: version.clone(),
                manifest: text,
                deployed_at: now.unix_secs,
                resolved,
            });
            if app.versions.len() > MAX_VERSIONS {
                let extra = app.versions.len() - MAX_VERSIONS;
                app.versions.drain(..extra);
            }
        }
        let changed = app.deployed.as_deref() != Some(version.as_str());
        // An explicit deploy is the operator's answer to an earlier rollback.
        let acknowledged = app.rolled_back.take().is_some();
        if changed {
            // Replacing a running version goes through a rollout; going back to the version a
            // rollout started from simply ends it.
            let from = match &app.rollout {
                Some(r) => Some(r.from.clone()),
                None => app.deployed.clone(),
            };
            app.rollout = from.filter(|f| *f != version).map(|from| RolloutState {
                from,
                to: version.clone(),
                switched: Vec::new(),
            });
            app.rolled_back = None;
        }
        app.deployed = Some(version.clone());
        let answer = Action::reply::<verbs::Deploy>(
            to,
            Ok(DeployReply {
                name: name.clone(),
                version: version.clone(),
                changed,
            }),
        );
        if !(changed || acknowledged) {
            return vec![answer];
        }
        info!(app = %name, version, "deploying");
        match trace {
            Some(trace) => self.deploy_traces.insert(name.clone(), trace),
            None => self.deploy_traces.remove(&name),
        };
        let event = Action::emit(
            EventKind::Deployed,
            Some(&name),
            None,
            format!("{name} {version} deployed"),
        );
        vec![self.store(app, to, vec![event, answer])]
    }

    fn undeploy(&mut self, to: &ReplyTo, name: &AppName) -> Vec<Action> {
        let Some((app, _)) = self.apps.get(name) else {
            return vec![Action::refuse(to, not_found(name))];
        };
        let mut app = app.clone();
        app.rollout = None;
        let answer = Action::reply::<verbs::Undeploy>(to, Ok(()));
        if app.deployed.take().is_none() {
            return vec![answer];
        }
        info!(app = %name, "undeploying");
        self.deploy_traces.remove(name);
        let event = Action::emit(
            EventKind::Undeployed,
            Some(name),
            None,
            format!("{name} undeployed"),
        );
        vec![self.store(app, to, vec![event, answer])]
    }

    fn rollback(&mut self, to: &ReplyTo, req: RollbackRequest) -> Vec<Action> {
        let Some((app, _)) = self.apps.get(&req.name) else {
            return vec![Action::refuse(to, not_found(&req.name))];
        };
        let mut app = app.clone();
        let version = match rollback_target(&app, req.version.as_deref()) {
            Ok(v) => v,
            Err(e) => return vec![Action::refuse(to, e)],
        };
        let changed = app.deployed.as_deref() != Some(version.as_str());
        app.deployed = Some(version.clone());
        app.rollout = None;
        let acknowledged = app.rolled_back.take().is_some();
        let answer = Action::reply::<verbs::Rollback>(
            to,
            Ok(DeployReply {
                name: req.name.clone(),
                version: version.clone(),
                changed,
            }),
        );
        if !(changed || acknowledged) {
            return vec![answer];
        }
        info!(app = %req.name, version, "rolling back");
        let message = format!("{} rolled back to {version}", req.name);
        let event = Action::emit(EventKind::Deployed, Some(&req.name), None, message);
        vec![self.store(app, to, vec![event, answer])]
    }

    /// The host named by id, unique id prefix, or name.
    pub(super) fn find_host(&self, wanted: &str) -> Reply<&Heartbeat> {
        let matches: Vec<&Heartbeat> = self
            .hosts
            .values()
            .map(|o| &o.heartbeat)
            .filter(|hb| hb.host.as_str().starts_with(wanted) || hb.name == wanted)
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(WireError::new(
                ErrorCode::NotFound,
                format!("no host `{wanted}`; `lattice ctl get hosts` lists them"),
            )),
            many => Err(invalid(format!(
                "`{wanted}` matches {} hosts; give more of the id",
                many.len()
            ))),
        }
    }

    fn inventory(&self, wanted: &str) -> Reply<Heartbeat> {
        let mut hb = self.find_host(wanted)?.clone();
        hb.labels = self.labels_of(&hb);
        Ok(hb)
    }

    fn stop_host(&mut self, wanted: &str) -> Reply<()> {
        let host = self.find_host(wanted)?.host.clone();
        info!(host = %host, "stop requested");
        self.stop_requested.insert(host);
        self.dirty = true;
        Ok(())
    }

    fn label(&mut self, to: &ReplyTo, req: LabelRequest) -> Vec<Action> {
        let overrides = (|| {
            for key in req.set.keys().chain(&req.delete) {
                lattice_protocol::names::LabelKey::new(key.as_str())
                    .map_err(|e| invalid(e.to_string()))?;
            }
            let host = self.find_host(&req.host)?.host.clone();
            let mut overrides = self.label_overrides.get(&host).cloned().unwrap_or_default();
            for (k, v) in req.set {
                overrides.insert(k, Some(v));
            }
            for k in req.delete {
                overrides.insert(k, None);
            }
            Ok::<_, WireError>((host, overrides))
        })();
        match overrides {
            Ok((host, overrides)) => vec![Action::StoreLabels {
                host,
                overrides,
                reply: to.clone(),
            }],
            Err(e) => vec![Action::refuse(to, e)],
        }
    }

    /// Once a host's label changes are stored: they apply, and the answer is its labels now.
    pub(super) fn labels_stored(
        &mut self,
        host: HostId,
        overrides: LabelOverrides,
        to: &ReplyTo,
        outcome: Result<(), String>,
    ) -> Vec<Action> {
        if let Err(e) = outcome {
            let error = WireError::new(ErrorCode::Internal, format!("storing labels: {e}"));
            return vec![Action::refuse(to, error)];
        }
        self.label_overrides.insert(host.clone(), overrides);
        self.dirty = true;
        let labels = match self.hosts.get(&host) {
            Some(o) => self.labels_of(&o.heartbeat),
            None => BTreeMap::new(),
        };
        vec![Action::reply::<verbs::Label>(to, Ok(labels))]
    }

    fn history(&self, name: &AppName) -> Reply<Vec<VersionSummary>> {
        let (app, _) = self.apps.get(name).ok_or_else(|| not_found(name))?;
        Ok(app
            .versions
            .iter()
            .map(|v| VersionSummary {
                version: v.version.clone(),
                deployed_at: v.deployed_at,
                current: app.deployed.as_deref() == Some(v.version.as_str()),
            })
            .collect())
    }

    /// A stored manifest, its secrets redacted.
    fn manifest(&self, r: &ManifestRequest) -> Reply<ManifestReply> {
        let (app, _) = self.apps.get(&r.name).ok_or_else(|| not_found(&r.name))?;
        let v = match &r.version {
            Some(version) => app.version(version).ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotFound,
                    format!(
                        "app `{}` has no version `{version}`; `lattice ctl history {}` lists them",
                        r.name, r.name
                    ),
                )
            })?,
            None => app
                .desired()
                .or_else(|| app.latest())
                .ok_or_else(|| not_found(&r.name))?,
        };
        Ok(ManifestReply {
            name: r.name.clone(),
            version: v.version.clone(),
            manifest: crate::secrets::shown(&v.manifest),
        })
    }

    fn status(&self, name: &AppName, now: Time) -> Reply<AppStatus> {
        let (app, _) = self.apps.get(name).ok_or_else(|| not_found(name))?;
        let Some(v) = app.desired() else {
            return Ok(AppStatus {
                name: name.clone(),
                version: app.latest().map(|v| v.version.clone()).unwrap_or_default(),
                status: AppState::Undeployed,
                message: String::new(),
                components: Vec::new(),
            });
        };
        let mut s = status::app_status(&v.resolved, &self.plan, &self.observed());
        // Work kept on a silent or stopped host (pinned, daemon, or within tolerance): say so
        // rather than repeat the host's last report as if it were fresh.
        for c in &mut s.components {
            let Some(o) = c.host.as_ref().and_then(|h| self.hosts.get(h)) else {
                continue;
            };
            if o.heartbeat.stopping {
                c.message = format!("host stopped; last reported {}", c.state);
            } else if !self.ready.contains(&o.heartbeat.host) {
                c.message = format!(
                    "host disconnected for {}s; last reported {}",
                    self.silent(o, now).as_secs(),
                    c.state
                );
            }
        }
        if let Some(note) = &app.rolled_back {
            s.status = AppState::Failed;
            s.message = format!(
                "version {} failed and was rolled back to {} (which keeps serving): {}",
                note.failed, note.restored, note.reason
            );
        } else if let Some(r) = &app.rollout
            && s.status != AppState::Failed
        {
            s.status = AppState::Reconciling;
            s.message = format!(
                "rolling out {} (from {}): {} host(s) switched",
                r.to,
                r.from,
                r.switched.len()
            );
        }
        Ok(s)
    }

    pub(crate) fn apps_summary(&self, now: Time) -> Vec<AppSummary> {
        self.apps
            .keys()
            .filter_map(|name| self.status(name, now).ok())
            .map(|s| AppSummary {
                name: s.name,
                version: s.version,
                status: s.status,
                message: s.message,
            })
            .collect()
    }

    /// A host's state as `ctl get hosts` and the metrics tell it.
    pub(crate) fn host_state(&self, o: &Observed) -> HostState {
        let hb = &o.heartbeat;
        if !self.is_admitted(&hb.host) {
            HostState::Unadmitted
        } else if hb.stopping {
            HostState::Stopped
        } else if self.ready.contains(&hb.host) {
            HostState::Ready
        } else {
            HostState::Lost
        }
    }

    /// Every host's state, for the metrics: [`Self::host_state`] of each, without the rest of
    /// a summary (its labels and name copied for each of thousands of hosts).
    pub(crate) fn host_states(&self) -> impl Iterator<Item = HostState> + '_ {
        self.hosts.values().map(|o| self.host_state(o))
    }

    pub(crate) fn hosts_summary(&self, now: Time) -> Vec<HostSummary> {
        self.hosts
            .values()
            .map(|o| {
                let hb = &o.heartbeat;
                let admission = self.not_admitted_because(o);
                HostSummary {
                    id: hb.host.clone(),
                    name: hb.name.clone(),
                    labels: self.labels_of(hb),
                    state: self.host_state(o),
                    admission,
                    uptime_secs: now.unix_secs.saturating_sub(hb.started_at),
                    last_seen_secs: self.silent(o, now).as_secs(),
                    version: hb.version.clone(),
                    workloads: hb.workloads.len(),
                    clock_offset_ms: hb.clock_offset_ms,
                }
            })
            .collect()
    }

    /// The queued links between components of the deployed apps.
    fn queued_links(&self) -> BTreeSet<QueueLink> {
        let mut links = BTreeSet::new();
        for (app, _) in self.apps.values() {
            let Some(version) = app.desired() else {
                continue;
            };
            for c in &version.resolved.components {
                for l in c.links.iter().filter(|l| l.queued.is_some()) {
                    if let LinkTarget::Component(target) = &l.target {
                        links.insert(QueueLink {
                            app: app.name.clone(),
                            source: c.name.clone(),
                            target: target.clone(),
                        });
                    }
                }
            }
        }
        links
    }

    /// The `ttl` of every queued link of the deployed apps, calls and messages (a message link's
    /// target is `messaging-nats`, as in its `Lattice-Link` header).
    fn queued_ttls(&self) -> BTreeMap<QueueLink, Duration> {
        let mut ttls = BTreeMap::new();
        for (app, _) in self.apps.values() {
            let Some(version) = app.desired() else {
                continue;
            };
            for c in &version.resolved.components {
                for l in &c.links {
                    let Some(queued) = &l.queued else { continue };
                    let target = match &l.target {
                        LinkTarget::Component(t) => t.clone(),
                        LinkTarget::Builtin(name) => match ComponentName::new(name.as_str()) {
                            Ok(t) => t,
                            Err(_) => continue,
                        },
                        LinkTarget::Provider(_) => continue,
                    };
                    ttls.insert(
                        QueueLink {
                            app: app.name.clone(),
                            source: c.name.clone(),
                            target,
                        },
                        Duration::from_secs(queued.ttl_secs),
                    );
                }
            }
        }
        ttls
    }

    /// What each host last reported about its outbox.
    fn outbox_reports(&self, now: Time) -> Vec<OutboxReport> {
        self.hosts
            .values()
            .filter(|o| !o.heartbeat.queues.is_empty())
            .map(|o| OutboxReport {
                host: o.heartbeat.host.clone(),
                name: o.heartbeat.name.clone(),
                stats: o.heartbeat.queues.clone(),
                reported_secs_ago: self.silent(o, now).as_secs(),
            })
            .collect()
    }
}

/// The version a rollback makes desired: `wanted`, or the one before the desired one (after an
/// undeploy, the last one).
fn rollback_target(app: &StoredApp, wanted: Option<&str>) -> Reply<String> {
    let listed = || {
        app.versions
            .iter()
            .map(|v| v.version.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(v) if app.versions.iter().any(|s| s.version == v) => Ok(v.to_string()),
        Some(v) => Err(WireError::new(
            ErrorCode::NotFound,
            format!(
                "app `{}` has no version `{v}`; it has: {}",
                app.name,
                listed()
            ),
        )),
        None => {
            let current = app
                .deployed
                .as_deref()
                .and_then(|d| app.versions.iter().position(|v| v.version == d));
            let index = match current {
                Some(0) | None if app.deployed.is_some() => None,
                Some(i) => Some(i - 1),
                None => app.versions.len().checked_sub(1),
            };
            let index = index.ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotFound,
                    format!(
                        "app `{}` has no earlier version to roll back to (versions: {})",
                        app.name,
                        listed()
                    ),
                )
            })?;
            Ok(app.versions[index].version.clone())
        }
    }
}
