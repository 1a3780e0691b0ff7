//! The control-plane API: one handler per `lattice ctl` verb, run by the worker that owns the
//! state (see the parent module).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_manifest::Manifest;
use lattice_protocol::assignment::LinkTarget;
use lattice_protocol::envelope::{self, Reply};
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::messages::{
    AppRequest, AppState, AppStatus, AppSummary, DeployReply, DeployRequest, EventKind, Heartbeat,
    HostState, HostSummary, InventoryRequest, LabelRequest, RollbackRequest, ScaleRequest,
    StopHostRequest, VersionSummary,
};
use lattice_protocol::names::{AppName, ComponentName};
use lattice_protocol::queue::ops::{DeadLettersRequest, QueueLink, RequeueRequest};
use lattice_protocol::subject::{CtlVerb, Subject};
use lattice_protocol::unix_now;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tracing::{debug, info, warn};

use super::Worker;
use crate::model::{MAX_VERSIONS, RolloutState, StoredApp, StoredVersion};
use crate::{queues, status};

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidInput, message)
}

fn version_of(manifest: &Manifest, yaml: &str) -> String {
    manifest.version().map(str::to_string).unwrap_or_else(|| {
        let digest = hex::encode(Sha256::digest(yaml.as_bytes()));
        format!("sha-{}", &digest[..12])
    })
}

impl Worker {
    pub(super) async fn on_request(&mut self, msg: async_nats::Message) {
        let Some(reply_to) = msg.reply.clone() else {
            return;
        };
        let verb = match Subject::parse(&msg.subject) {
            Ok(Subject::Ctl { verb, .. }) => verb,
            _ => return,
        };
        debug!(?verb, "control request");
        if matches!(
            verb,
            CtlVerb::Queues | CtlVerb::DeadLetters | CtlVerb::Requeue
        ) {
            return self.on_queue_request(verb, reply_to, msg.payload);
        }
        let bytes = match verb {
            CtlVerb::Deploy => encode_reply(self.deploy(&msg.payload).await),
            CtlVerb::Undeploy => encode_reply(self.undeploy(&msg.payload).await),
            CtlVerb::Apps => encode_reply(Ok::<_, WireError>(self.apps_summary())),
            CtlVerb::Status => encode_reply(
                envelope::decode::<AppRequest>(&msg.payload)
                    .map_err(WireError::from)
                    .and_then(|r| self.status(&r.name)),
            ),
            CtlVerb::Hosts => encode_reply(Ok::<_, WireError>(self.hosts_summary())),
            CtlVerb::History => encode_reply(
                envelope::decode::<AppRequest>(&msg.payload)
                    .map_err(WireError::from)
                    .and_then(|r| self.history(&r.name)),
            ),
            CtlVerb::Rollback => encode_reply(self.rollback(&msg.payload).await),
            CtlVerb::StopHost => encode_reply(self.stop_host(&msg.payload)),
            CtlVerb::Scale => encode_reply(self.scale(&msg.payload).await),
            CtlVerb::Label => encode_reply(self.label(&msg.payload).await),
            CtlVerb::Inventory => encode_reply(
                envelope::decode::<InventoryRequest>(&msg.payload)
                    .map_err(WireError::from)
                    .and_then(|r| self.inventory(&r.host)),
            ),
            CtlVerb::Queues | CtlVerb::DeadLetters | CtlVerb::Requeue => return,
        };
        if let Err(e) = self.client.publish(reply_to, bytes.into()).await {
            warn!(error = %e, "could not send a reply");
        }
    }

    /// Queue requests read JetStream, which may be slow: they are answered by a task of their
    /// own, from a snapshot of what the hosts reported.
    fn on_queue_request(
        &self,
        verb: CtlVerb,
        reply_to: async_nats::Subject,
        payload: bytes::Bytes,
    ) {
        let client = self.client.clone();
        let lattice = self.cfg.lattice.clone();
        let js = async_nats::jetstream::new(client.clone());
        let (deployed, reports) = if verb == CtlVerb::Queues {
            (self.queued_links(), self.outbox_reports())
        } else {
            Default::default()
        };
        let ttls = if verb == CtlVerb::Requeue {
            self.queued_ttls()
        } else {
            BTreeMap::new()
        };
        tokio::spawn(async move {
            let bytes = match verb {
                CtlVerb::Queues => {
                    encode_reply(queues::queues(&js, &lattice, deployed, reports).await)
                }
                CtlVerb::DeadLetters => match envelope::decode::<DeadLettersRequest>(&payload) {
                    Ok(r) => encode_reply(queues::dead_letters(&js, &lattice, &r.link).await),
                    Err(e) => encode_reply::<()>(Err(e.into())),
                },
                _ => match envelope::decode::<RequeueRequest>(&payload) {
                    Ok(r) => encode_reply(queues::requeue(&js, &lattice, &r, &ttls).await),
                    Err(e) => encode_reply::<()>(Err(e.into())),
                },
            };
            if let Err(e) = client.publish(reply_to, bytes.into()).await {
                warn!(error = %e, "could not send a reply");
            }
        });
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
    fn outbox_reports(&self) -> Vec<queues::OutboxReport> {
        self.hosts
            .values()
            .filter(|o| !o.heartbeat.queues.is_empty())
            .map(|o| queues::OutboxReport {
                host: o.heartbeat.host.clone(),
                name: o.heartbeat.name.clone(),
                stats: o.heartbeat.queues.clone(),
                reported_secs_ago: o.last_seen.elapsed().as_secs(),
            })
            .collect()
    }

    async fn deploy(&mut self, payload: &[u8]) -> Reply<DeployReply> {
        let req: DeployRequest = envelope::decode(payload)?;
        self.deploy_text(req.manifest).await
    }

    async fn deploy_text(&mut self, manifest: String) -> Reply<DeployReply> {
        let req = DeployRequest { manifest };
        let manifest = lattice_manifest::parse(&req.manifest).map_err(|diags| {
            invalid(format!(
                "the manifest has {} problem(s):\n{diags}",
                diags.len()
            ))
        })?;
        let name = manifest.metadata.name.clone();
        let version = version_of(&manifest, &req.manifest);
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
            if existing.manifest != req.manifest {
                return Err(WireError::new(
                    ErrorCode::Conflict,
                    format!(
                        "app `{name}` version `{version}` was already deployed with a different manifest; change metadata.annotations.version to deploy a new version"
                    ),
                ));
            }
        } else {
            let resolved = crate::resolve::resolve(&manifest, &version, &self.registry).await?;
            app.versions.push(StoredVersion {
                version: version.clone(),
                manifest: req.manifest.clone(),
                deployed_at: unix_now(),
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
        if changed || acknowledged {
            self.store_app(app).await?;
            info!(app = %name, version, "deployed");
            let message = format!("{name} {version} deployed");
            self.emit(EventKind::Deployed, Some(&name), None, message)
                .await;
        }
        Ok(DeployReply {
            name,
            version,
            changed,
        })
    }

    async fn undeploy(&mut self, payload: &[u8]) -> Reply<()> {
        let req: AppRequest = envelope::decode(payload)?;
        let Some((app, _)) = self.apps.get(&req.name) else {
            return Err(not_found(&req.name));
        };
        let mut app = app.clone();
        app.rollout = None;
        if app.deployed.take().is_some() {
            self.store_app(app).await?;
            info!(app = %req.name, "undeployed");
            let message = format!("{} undeployed", req.name);
            self.emit(EventKind::Undeployed, Some(&req.name), None, message)
                .await;
        }
        Ok(())
    }

    /// The host named by id, unique id prefix, or name.
    fn find_host(&self, wanted: &str) -> Reply<&Heartbeat> {
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

    /// A host's labels with the operator's changes applied.
    pub(super) fn labels_of(&self, hb: &Heartbeat) -> BTreeMap<String, String> {
        let mut labels = hb.labels.clone();
        for (k, v) in self.label_overrides.get(&hb.host).into_iter().flatten() {
            match v {
                Some(v) => labels.insert(k.clone(), v.clone()),
                None => labels.remove(k),
            };
        }
        labels
    }

    fn stop_host(&mut self, payload: &[u8]) -> Reply<()> {
        let req: StopHostRequest = envelope::decode(payload)?;
        let host = self.find_host(&req.host)?.host.clone();
        info!(host = %host, "stop requested");
        self.stop_requested.insert(host);
        self.dirty = true;
        Ok(())
    }

    async fn label(&mut self, payload: &[u8]) -> Reply<BTreeMap<String, String>> {
        let req: LabelRequest = envelope::decode(payload)?;
        for key in req.set.keys().chain(&req.delete) {
            lattice_protocol::names::LabelKey::new(key.as_str())
                .map_err(|e| invalid(e.to_string()))?;
        }
        let hb = self.find_host(&req.host)?.clone();
        let mut overrides = self
            .label_overrides
            .get(&hb.host)
            .cloned()
            .unwrap_or_default();
        for (k, v) in req.set {
            overrides.insert(k, Some(v));
        }
        for k in req.delete {
            overrides.insert(k, None);
        }
        self.labels_kv
            .put(hb.host.as_str(), envelope::encode(&overrides).into())
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, format!("storing labels: {e}")))?;
        self.label_overrides.insert(hb.host.clone(), overrides);
        self.dirty = true;
        Ok(self.labels_of(&hb))
    }

    /// A new version of the app, identical but for one component's instance count.
    async fn scale(&mut self, payload: &[u8]) -> Reply<DeployReply> {
        let req: ScaleRequest = envelope::decode(payload)?;
        if req.instances == 0 {
            return Err(invalid(format!(
                "scale to at least 1 instance; to stop `{}`, use `lattice ctl undeploy {}`",
                req.name, req.name
            )));
        }
        let (app, _) = self
            .apps
            .get(&req.name)
            .ok_or_else(|| not_found(&req.name))?;
        let current = app.desired().ok_or_else(|| {
            WireError::new(
                ErrorCode::NotFound,
                format!("app `{}` is not deployed; deploy it first", req.name),
            )
        })?;
        let mut manifest = lattice_manifest::parse(&current.manifest)
            .map_err(|d| WireError::new(ErrorCode::Internal, format!("stored manifest: {d}")))?;
        let component = manifest
            .spec
            .components
            .iter_mut()
            .find(|c| c.name == req.component)
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotFound,
                    format!("app `{}` has no component `{}`", req.name, req.component),
                )
            })?;
        let scaler = component
            .traits
            .iter_mut()
            .find_map(|t| match t {
                lattice_manifest::Trait::Spreadscaler(s)
                | lattice_manifest::Trait::Daemonscaler(s) => Some(s),
                lattice_manifest::Trait::Link(_) => None,
            })
            .ok_or_else(|| {
                invalid(format!(
                    "component `{}` has no scaler to change",
                    req.component
                ))
            })?;
        scaler.instances = req.instances;
        let version = format!("{}+{}={}", current.version, req.component, req.instances);
        manifest
            .metadata
            .annotations
            .insert("version".to_string(), version);
        // JSON is YAML: the stored manifest of the new version is the same document, rewritten.
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
        self.deploy_text(text).await
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

    async fn rollback(&mut self, payload: &[u8]) -> Reply<DeployReply> {
        let req: RollbackRequest = envelope::decode(payload)?;
        let (app, _) = self
            .apps
            .get(&req.name)
            .ok_or_else(|| not_found(&req.name))?;
        let mut app = app.clone();
        let listed = || {
            app.versions
                .iter()
                .map(|v| v.version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let version = match &req.version {
            Some(v) if app.versions.iter().any(|s| &s.version == v) => v.clone(),
            Some(v) => {
                return Err(WireError::new(
                    ErrorCode::NotFound,
                    format!(
                        "app `{}` has no version `{v}`; it has: {}",
                        req.name,
                        listed()
                    ),
                ));
            }
            None => {
                // The version before the desired one; after an undeploy, the last one.
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
                            req.name,
                            listed()
                        ),
                    )
                })?;
                app.versions[index].version.clone()
            }
        };
        let changed = app.deployed.as_deref() != Some(version.as_str());
        app.deployed = Some(version.clone());
        app.rollout = None;
        let acknowledged = app.rolled_back.take().is_some();
        if changed || acknowledged {
            self.store_app(app).await?;
            info!(app = %req.name, version, "rolled back");
            let message = format!("{} rolled back to {version}", req.name);
            self.emit(EventKind::Deployed, Some(&req.name), None, message)
                .await;
        }
        Ok(DeployReply {
            name: req.name,
            version,
            changed,
        })
    }

    fn status(&self, name: &AppName) -> Reply<AppStatus> {
        let (app, _) = self.apps.get(name).ok_or_else(|| not_found(name))?;
        Ok(match app.desired() {
            Some(v) => {
                let mut s = status::app_status(&v.resolved, &self.plan, &self.observed());
                // Work kept on a silent or stopped host (pinned, daemon, or within tolerance):
                // say so rather than repeat the host's last report as if it were fresh.
                for c in &mut s.components {
                    let Some(o) = c.host.as_ref().and_then(|h| self.hosts.get(h)) else {
                        continue;
                    };
                    if o.heartbeat.stopping {
                        c.message = format!("host stopped; last reported {}", c.state);
                    } else if !self.ready.contains(&o.heartbeat.host) {
                        c.message = format!(
                            "host disconnected for {}s; last reported {}",
                            o.last_seen.elapsed().as_secs(),
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
                s
            }
            None => AppStatus {
                name: name.clone(),
                version: app.latest().map(|v| v.version.clone()).unwrap_or_default(),
                status: AppState::Undeployed,
                message: String::new(),
                components: Vec::new(),
            },
        })
    }

    fn apps_summary(&self) -> Vec<AppSummary> {
        self.apps
            .keys()
            .filter_map(|name| self.status(name).ok())
            .map(|s| AppSummary {
                name: s.name,
                version: s.version,
                status: s.status,
                message: s.message,
            })
            .collect()
    }

    fn hosts_summary(&self) -> Vec<HostSummary> {
        let now = unix_now();
        self.hosts
            .values()
            .map(|o| {
                let hb = &o.heartbeat;
                HostSummary {
                    id: hb.host.clone(),
                    name: hb.name.clone(),
                    labels: self.labels_of(hb),
                    state: if hb.stopping {
                        HostState::Stopped
                    } else if self.ready.contains(&hb.host) {
                        HostState::Ready
                    } else {
                        HostState::Lost
                    },
                    uptime_secs: now.saturating_sub(hb.started_at),
                    last_seen_secs: o.last_seen.elapsed().as_secs(),
                    version: hb.version.clone(),
                    workloads: hb.workloads.len(),
                }
            })
            .collect()
    }
}

fn not_found(name: &AppName) -> WireError {
    WireError::new(
        ErrorCode::NotFound,
        format!("no app named `{name}`; `lattice ctl get apps` lists them"),
    )
}

fn encode_reply<T: Serialize>(reply: Reply<T>) -> Vec<u8> {
    envelope::encode(&reply)
}
