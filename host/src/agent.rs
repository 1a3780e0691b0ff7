//! The host agent: it watches this host's signed assignment, converges the running workloads on
//! it, and reports what runs in heartbeats.
//!
//! Three tasks share a small [`Report`]: the watcher (verifies each assignment revision and hands
//! accepted ones over), the applier (owns the running workloads: fetch, verify, compile, bind)
//! and the heartbeat (publishes the report on a timer and at once after every change). The
//! applier fetches, verifies and compiles in tasks of their own ([`load`]), so a slow or
//! hostile compile holds up no other workload, and no stop.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use lattice_protocol::assignment::{Assignment, HttpRoute, Workload, WorkloadLink};
use lattice_protocol::keys::KeyPair;
use lattice_protocol::messages::{FailureReason, Heartbeat, WorkloadState, WorkloadStatus};
use lattice_protocol::names::HostId;
use lattice_protocol::signed::{MacKey, seal_heartbeat};
use lattice_protocol::subject::Subject;
use lattice_protocol::unix_now;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument as _, info, warn};
use wasmtime::component::{Component, Linker};

mod components;
mod load;
mod watch;

pub(crate) use load::LoadDone;
use load::{Loader, Loads};
use watch::refuse;
pub(crate) use watch::{Accepted, watch_assignments};

use crate::HostConfig;
use crate::artifacts::ArtifactCache;
use crate::caps::calls::{self, Loaded, Router, imports_components, link_imports};
use crate::caps::providers::{Providers, link_id};
use crate::caps::{
    HostServices, LatticeLink, Services, WorkloadCtx, WorkloadSpec, blobstore, config, messaging,
    secrets::SecretsState,
};
use crate::compile::{CodeCache, CodeKey};
use crate::engine::Runtime;
use crate::http::{FailureCount, HttpServer, HttpWorkload, Mount, Reuse, Serving, prepare_http};
use crate::queue::{self, OutboxLimits, Queue};
use crate::state::HostStore;
use crate::wasi::{HostState, new_linker};

/// What the host reports about itself.
#[derive(Debug, Default)]
pub(crate) struct Report {
    applied_revision: u64,
    applied_epoch: u64,
    workloads: BTreeMap<String, WorkloadStatus>,
    /// Failed-request counters of the HTTP workloads, read at each heartbeat.
    failures: BTreeMap<String, FailureCount>,
    last_refusal: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Shared {
    report: Arc<Mutex<Report>>,
    changed: Arc<Notify>,
    /// The host's queue, whose per-link outbox stats each heartbeat (and scrape) carries.
    pub(crate) queue: Option<Arc<Queue>>,
    /// What the host exports for Prometheus (`metrics.rs`).
    pub(crate) metrics: Arc<crate::metrics::HostMetrics>,
    /// The host's clock, whose measured offset from the hub each heartbeat carries.
    pub(crate) clock: crate::clock::HubClock,
}

impl Shared {
    fn report(&self) -> MutexGuard<'_, Report> {
        // A panic while holding this lock cannot leave the report inconsistent (every update is
        // a single assignment), so a poisoned lock is still usable.
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Running {
    workload: Workload,
    http: Option<Mount>,
    /// Its call and subscription servers, stopped when it is dropped.
    _tasks: Vec<AbortOnDropHandle<()>>,
}

/// The parts of a host that act on assignments.
pub(crate) struct Agent {
    pub(crate) config: HostConfig,
    pub(crate) host: HostId,
    /// The host's key: opens the secrets sealed to it.
    key: Arc<KeyPair>,
    pub(crate) name: String,
    pub(crate) store: HostStore,
    pub(crate) runtime: Runtime,
    pub(crate) linker: Arc<Linker<HostState>>,
    pub(crate) http: HttpServer,
    pub(crate) shared: Shared,
    /// What workloads' capabilities use: NATS, the call router, providers.
    services: HostServices,
    running: BTreeMap<String, Running>,
    /// Components being fetched, verified and compiled, off the applier's loop.
    loads: Loads,
    /// The assignment being converged on, kept to retry what failed to start.
    current: Option<Assignment>,
    /// Moves queued calls from the outbox to the hub; stopped with the agent.
    _forwarder: Option<AbortOnDropHandle<()>>,
}

impl Agent {
    pub(crate) fn new(config: HostConfig, client: &async_nats::Client) -> anyhow::Result<Self> {
        let store = HostStore::open(&config.state_dir)?;
        let key = Arc::new(store.host_key()?);
        let host = HostId::new(key.public_key().to_string())?;
        let runtime = Runtime::new(&config.engine)?;
        let linker = Arc::new(new_linker(&runtime)?);
        // Sealed with a key only this host can derive: the cache loads no code it did not write.
        let code_key = CodeKey::derive(key.seed().as_bytes());
        let code = Arc::new(CodeCache::with_key(store.subdir("compiled")?, code_key)?);
        let artifacts = ArtifactCache::new(
            store.subdir("artifacts")?,
            config.jetstream(client),
            &config.lattice,
        );
        let http = HttpServer::with_options(runtime.clone(), config.http);
        let name = config.name.clone().unwrap_or_else(crate::hostname);
        let lattice = LatticeLink {
            client: client.clone(),
            jetstream: config.jetstream(client),
            lattice: config.lattice.clone(),
            host: host.clone(),
            storage: config.storage.clone(),
            clock: crate::clock::HubClock::new(config.clock),
        };
        let limits = OutboxLimits {
            entries: config.outbox_max_entries,
            bytes: config.outbox_max_bytes,
        };
        // A host whose outbox cannot be opened (e.g. another process holds it) still serves:
        // only its queued calls fail, each with the reason.
        let (queue, forwarder) = match Queue::open_with(
            &config.state_dir.join("outbox"),
            lattice.clone(),
            limits,
            key.clone(),
        ) {
            Ok((queue, forwarder)) => (Some(queue), Some(forwarder)),
            Err(e) => {
                warn!(error = %e, "cannot open the outbox: queued calls will be refused");
                (None, None)
            }
        };
        let shared = Shared {
            report: Arc::default(),
            changed: Arc::new(Notify::new()),
            queue: queue.clone(),
            metrics: Arc::default(),
            clock: lattice.clock.clone(),
        };
        let services = HostServices {
            router: Arc::new(Router::new(Some(lattice.clone()))),
            providers: Arc::new(Providers::new(
                lattice.clone(),
                config.providers.clone(),
                config.blob_root_base.clone(),
            )),
            queue,
            lattice,
        };
        let loads = Loads::new(Loader {
            artifacts,
            trusted_issuers: config.trusted_issuers.clone(),
            runtime: runtime.clone(),
            code,
            components: Default::default(),
        });
        Ok(Self {
            services,
            loads,
            config,
            host,
            key,
            name,
            store,
            runtime,
            linker,
            http,
            shared,
            running: BTreeMap::new(),
            current: None,
            _forwarder: forwarder,
        })
    }

    /// Re-applies the assignment saved on disk, so a restarted host serves at once, offline too.
    pub(crate) async fn boot_from_disk(&mut self) -> anyhow::Result<()> {
        let Some(signed) = self.store.load_assignment()? else {
            return Ok(());
        };
        match signed.verify(
            &self.config.trusted_operators,
            &self.config.lattice,
            &self.host,
            None,
        ) {
            Ok(assignment) => {
                info!(
                    revision = assignment.revision,
                    "re-applying the saved assignment"
                );
                // A restart is no part of the deploy that sent it: a trace of its own.
                self.apply(Assignment {
                    trace: None,
                    ..assignment
                })
                .await;
            }
            Err(e) => warn!(error = %e, "ignoring the saved assignment"),
        }
        Ok(())
    }

    /// Reports that assignment `revision` was accepted but could not be saved (`error`), so it
    /// is not applied: the workloads running now keep running.
    pub(crate) fn refuse_unsaved(&self, revision: u64, error: &anyhow::Error) {
        refuse(
            &self.shared,
            format!(
                "assignment revision {revision} could not be saved, so it is not applied (what \
                 runs keeps running; retried every {}s): {error:#}",
                crate::RETRY_FAILED.as_secs()
            ),
        );
    }

    /// Tries again to start the workloads of the current assignment that are not running (a
    /// port that was busy, an artifact store that was unreachable). Refusals are retried too:
    /// they are cheap, because verification comes before compilation. Not those being loaded,
    /// nor those whose compile went past a limit (it would again).
    pub(crate) async fn retry_failed(&mut self) {
        let pending = self.current.as_ref().is_some_and(|a| {
            a.workloads.iter().any(|w| {
                self.running.get(&w.key()).is_none_or(|r| r.workload != *w)
                    && !self.loads.is_loading_or_over_limit(w)
            })
        });
        if let Some(assignment) = self.current.clone().filter(|_| pending) {
            info!("retrying workloads that failed to start");
            self.apply(assignment).await;
        }
    }

    /// Converges on `assignment`, in a `lattice.apply` span that continues the trace the
    /// assignment carries (the control plane's `lattice.assign`, within the deploy's trace).
    pub(crate) async fn apply(&mut self, assignment: Assignment) {
        let span = tracing::debug_span!("lattice.apply", revision = assignment.revision);
        if let Some(trace) = &assignment.trace {
            lattice_telemetry::propagation::continue_pairs(&span, &trace.to_pairs());
        }
        self.converge(assignment).instrument(span).await;
    }

    async fn converge(&mut self, assignment: Assignment) {
        // Kept without its trace: a retry minutes later, or a re-apply after a restart, is
        // no part of the deploy that sent it.
        self.current = Some(Assignment {
            trace: None,
            ..assignment.clone()
        });
        {
            let mut report = self.shared.report();
            report.applied_revision = assignment.revision;
            report.applied_epoch = assignment.epoch;
        }
        let wanted: BTreeMap<String, &Workload> =
            assignment.workloads.iter().map(|w| (w.key(), w)).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.stop(&key).await;
        }
        self.loads.retain(|k| wanted.contains_key(k));
        self.loads
            .retain_components(|digest| wanted.values().any(|w| w.image == *digest));
        {
            let mut report = self.shared.report();
            report.workloads.retain(|k, _| wanted.contains_key(k));
            report.failures.retain(|k, _| wanted.contains_key(k));
        }
        for (key, workload) in wanted {
            if let Some(running) = self.running.get(&key).filter(|r| r.workload == *workload) {
                // Unchanged. After a failed update (rolled back since), the report may still
                // describe the version that failed: describe the one that serves.
                let stale = self.shared.report().workloads.get(&key).is_none_or(|s| {
                    s.app_version != workload.app_version || s.state != WorkloadState::Running
                });
                if stale {
                    self.set_running(workload, running.http.as_ref().map(|m| m.addr));
                }
                // Another version being compiled (rolled back meanwhile) is no longer wanted.
                self.loads.forget(&key);
                continue;
            }
            if self.loads.is_loading_or_over_limit(workload) {
                continue;
            }
            self.set_status(workload, WorkloadState::Starting, String::new());
            self.loads.begin(workload);
        }
    }

    /// The next component load to finish (cancel-safe), for [`Agent::finish_load`].
    pub(crate) async fn next_loaded(&mut self) -> LoadDone {
        self.loads.next().await
    }

    /// Starts the workload whose component `done` carries, or fails it with the load's reason;
    /// nothing if the assignment no longer wants that version of it.
    pub(crate) async fn finish_load(&mut self, done: LoadDone) {
        let applied_in = done.applied_in().clone();
        let Some((workload, loaded)) = self.loads.take(done) else {
            return;
        };
        // Linking, the trial instance and binding: the workload put in service, in the trace
        // of the apply that loaded it.
        let span =
            tracing::debug_span!(parent: &applied_in, "lattice.serve", workload = %workload.key());
        let started = match loaded {
            Ok(component) => self.start(&workload, component).instrument(span).await,
            Err(e) => Err(e),
        };
        let key = workload.key();
        let workload = &workload;
        match started {
            Ok(Started { http, tasks }) => {
                let previous = self.running.insert(
                    key,
                    Running {
                        workload: workload.clone(),
                        http: http.clone(),
                        _tasks: tasks,
                    },
                );
                if let Some(old) = &previous {
                    // Links the new version no longer has (a link it kept was put again).
                    let id = |l| link_id(&workload.app, &workload.component, l);
                    let kept: Vec<_> = workload.links.iter().map(id).collect();
                    let dropped: Vec<_> = old
                        .workload
                        .links
                        .iter()
                        .filter(|l| !kept.contains(&id(l)))
                        .cloned()
                        .collect();
                    self.services
                        .providers
                        .detach(&workload.app, &workload.component, &dropped)
                        .await;
                }
                if let Some(old) = previous
                    .and_then(|p| p.http)
                    .filter(|m| Some(m) != http.as_ref())
                {
                    self.http.unbind(old.addr, old.route.as_ref()).await;
                }
                self.set_running(workload, http.as_ref().map(|m| m.addr));
                info!(workload = %workload.key(), version = %workload.app_version, "running");
            }
            Err(StartError { reason, error }) => {
                let message = format!("{error:#}");
                warn!(workload = %workload.key(), %reason, error = %message, "workload failed to start");
                self.set_failed(workload, reason, message);
            }
        }
    }

    async fn stop(&mut self, key: &str) {
        if let Some(running) = self.running.remove(key) {
            let w = &running.workload;
            self.services.router.remove(&w.app, &w.component);
            self.services
                .providers
                .detach(&w.app, &w.component, &w.links)
                .await;
            if let Some(mount) = running.http {
                self.http.unbind(mount.addr, mount.route.as_ref()).await;
            }
            info!(workload = key, "stopped");
        }
    }

    /// Stops everything (shutdown), and forgets the loads under way.
    pub(crate) async fn stop_all(&mut self) {
        self.loads.retain(|_| false);
        let keys: Vec<String> = self.running.keys().cloned().collect();
        for key in keys {
            self.stop(&key).await;
        }
    }

    /// Running, with its HTTP address, in one change of the report: a heartbeat never says it
    /// runs without saying where it serves.
    fn set_running(&self, w: &Workload, http: Option<SocketAddr>) {
        self.set_status_at(w, WorkloadState::Running, String::new(), None, http);
    }

    fn set_status(&self, w: &Workload, state: WorkloadState, message: String) {
        self.set_status_at(w, state, message, None, None);
    }

    /// Failed, with the kind of failure for programs beside the message for people.
    fn set_failed(&self, w: &Workload, reason: FailureReason, message: String) {
        self.set_status_at(w, WorkloadState::Failed, message, Some(reason), None);
    }

    fn set_status_at(
        &self,
        w: &Workload,
        state: WorkloadState,
        message: String,
        reason: Option<FailureReason>,
        endpoint: Option<SocketAddr>,
    ) {
        self.shared.report().workloads.insert(
            w.key(),
            WorkloadStatus {
                app: w.app.clone(),
                app_version: w.app_version.clone(),
                component: w.component.clone(),
                image: w.image.clone(),
                instances: w.instances,
                state,
                message,
                reason,
                endpoint: endpoint.map(|a| a.to_string()),
                failures: 0,
            },
        );
        self.shared.changed.notify_one();
    }

    /// The context `w`'s stores share: what the workload may use (buckets, blob root, outgoing
    /// hosts) is worked out here, once, not on each call; or why a link is refused.
    fn workload_ctx(
        &self,
        w: &Workload,
        secrets: BTreeMap<String, String>,
        links: Vec<WorkloadLink>,
    ) -> Result<WorkloadCtx, String> {
        // A secret wins over a config value of the same key.
        let mut config = w.config.clone();
        config.extend(secrets.clone());
        let mut env: Vec<(String, String)> = config.clone().into_iter().collect();
        env.push(("LATTICE_HOST_NAME".into(), self.name.clone()));
        env.push(("LATTICE_HOST_ID".into(), self.host.to_string()));
        let spec = WorkloadSpec {
            app: w.app.clone(),
            component: w.component.clone(),
            env,
            config,
            secrets: SecretsState::new(secrets),
            // `blobstore-fs` links without a `root` keep their blobs in `<blob root base>/<app>`.
            links: blobstore::with_default_root(links, &w.app)?,
        };
        Ok(WorkloadCtx::new(spec, Services::from(&self.services)))
    }

    /// The address (and route) a workload asks to be served on, if any, unless another
    /// workload here already serves it.
    fn http_address(&self, w: &Workload) -> Result<Option<Mount>, StartError> {
        let Some(binding) = &w.http else {
            return Ok(None);
        };
        let addr: SocketAddr = binding
            .address
            .parse()
            .with_context(|| format!("HTTP address `{}` is not ip:port", binding.address))
            .because(FailureReason::InvalidAddress)?;
        let route = binding.route.clone();
        // Another workload (of this or another app) already serving the address (or, on a
        // shared address, the route) keeps it.
        let clashes =
            |m: &Mount| m.addr == addr && HttpRoute::clash(m.route.as_ref(), route.as_ref());
        if let Some((other, _)) = self.running.iter().find(|(k, r)| {
            **k != w.key() && addr.port() != 0 && r.http.as_ref().is_some_and(clashes)
        }) {
            let what = route
                .as_ref()
                .map_or_else(String::new, |r| format!(" ({r})"));
            return Err(anyhow::anyhow!(
                "HTTP address {addr}{what} is already served by {other} on this host; give each component its own address or route"
            ))
            .because(FailureReason::AddressInUse);
        }
        Ok(Some(Mount { addr, route }))
    }

    /// The host's linker, shared, for a component that imports only what the host serves; a
    /// copy with this workload's own imports (component links, and failing stand-ins for
    /// unlinked ones) for the others.
    fn linker_for(
        &self,
        w: &Workload,
        component: &Component,
    ) -> Result<Cow<'_, Linker<HostState>>, StartError> {
        if !imports_components(&self.runtime, component) {
            return Ok(Cow::Borrowed(&*self.linker));
        }
        let mut linker = (*self.linker).clone();
        link_imports(&mut linker, &self.runtime, component, &w.links)
            .because(FailureReason::LinkError)?;
        Ok(Cow::Owned(linker))
    }

    /// Link, try, and start serving one workload whose `component` is loaded: its calls, its
    /// subscriptions and (for HTTP components) its address.
    async fn start(&self, w: &Workload, component: Component) -> Result<Started, StartError> {
        let addr = self.http_address(w)?;
        let linker = self.linker_for(w, &component)?;
        let linker = linker.as_ref();
        // Secrets are opened here, in memory: the saved assignment keeps them sealed.
        let secrets = config::open_secrets(&self.key, &w.secrets)
            .map_err(anyhow::Error::msg)
            .because(FailureReason::SecretRefused)?;
        let links = config::links_with_secrets(&self.key, &w.links)
            .map_err(anyhow::Error::msg)
            .because(FailureReason::SecretRefused)?;
        let ctx = Arc::new(
            self.workload_ctx(w, secrets, links)
                .map_err(anyhow::Error::msg)
                .because(FailureReason::LinkError)?,
        );
        // Providers learn the links (a provider process starts if needed) before the first call.
        self.services
            .providers
            // The context's links: `blobstore-fs` learns the default root filled in there.
            .attach(&w.app, &w.component, ctx.links())
            .await
            .because(FailureReason::ProviderFailed)?;
        let proxy = match addr {
            Some(_) => Some(
                prepare_http(&self.runtime, linker, &component)
                    .because(FailureReason::LinkError)?,
            ),
            None => None,
        };
        let pre = match &proxy {
            Some(p) => p.instance_pre().clone(),
            None => linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .context("linking the component")
                .because(FailureReason::LinkError)?,
        };
        // The manifest's limits within the host's maxima; one gate for calls and requests.
        let (limits, gate) = self.runtime.config().workload_limits(&w.limits);
        let loaded = Arc::new(
            Loaded::new(
                self.runtime.clone(),
                pre,
                ctx.clone(),
                limits,
                FailureCount::default(),
            )
            .with_gate(gate.clone())
            .with_metrics(self.shared.metrics.workload(&w.key())),
        );
        // One trial instantiation (microseconds) before serving anything: a component that
        // traps at start fails here, and the version it would replace keeps serving.
        loaded
            .pre
            .instantiate_async(&mut loaded.store(None))
            .await
            .map_err(anyhow::Error::from)
            .context("the component traps at start")
            .because(FailureReason::TrapAtStart)?;
        let tasks = self.serve_lattice(&loaded, w).await?;
        self.services.router.insert(loaded.clone());
        self.shared
            .report()
            .failures
            .insert(w.key(), loaded.failures.clone());
        let http = match (addr, proxy) {
            (Some(mount), Some(handler)) => {
                let workload = Arc::new(HttpWorkload::serving(
                    &self.runtime,
                    handler,
                    Serving {
                        name: w.key(),
                        ctx,
                        failures: loaded.failures.clone(),
                        metrics: loaded.metrics.clone(),
                        limits,
                        gate,
                        reuse: Reuse::from_limits(&w.limits),
                    },
                ));
                let bound = self
                    .http
                    .bind(mount.addr, mount.route.clone(), workload)
                    .await;
                let reason = match &bound {
                    Err(e) if address_taken(e) => FailureReason::AddressInUse,
                    _ => FailureReason::ServeFailed,
                };
                Some(Mount {
                    addr: bound.because(reason)?,
                    route: mount.route,
                })
            }
            _ => None,
        };
        Ok(Started { http, tasks })
    }

    /// What `loaded` serves on the lattice: calls to its exports, its subscriptions, and the
    /// queues the assignment names it a target of.
    async fn serve_lattice(
        &self,
        loaded: &Arc<Loaded>,
        w: &Workload,
    ) -> Result<Vec<AbortOnDropHandle<()>>, StartError> {
        let mut tasks = Vec::new();
        let lattice = &self.services.lattice;
        if loaded.serves_calls() {
            tasks.push(
                calls::serve(loaded.clone(), lattice)
                    .await
                    .because(FailureReason::ServeFailed)?,
            );
        }
        if !w.subscriptions.is_empty() {
            tasks.push(
                messaging::serve(loaded.clone(), lattice, &w.subscriptions)
                    .await
                    .because(FailureReason::ServeFailed)?,
            );
        }
        // Only what the assignment names it a queue target of (none: no consumer at all).
        tasks.extend(
            queue::consume(loaded, lattice, w, &self.config.trusted_operators)
                .because(FailureReason::ServeFailed)?,
        );
        Ok(tasks)
    }
}

/// Why a workload did not start: the kind of failure that goes on the wire, and the error
/// whose chain is the message people read.
struct StartError {
    reason: FailureReason,
    error: anyhow::Error,
}

/// Names the kind of a failure where it happens (`.because(FailureReason::LinkError)?`).
trait Because<T> {
    fn because(self, reason: FailureReason) -> Result<T, StartError>;
}

impl<T, E: Into<anyhow::Error>> Because<T> for Result<T, E> {
    fn because(self, reason: FailureReason) -> Result<T, StartError> {
        self.map_err(|e| StartError {
            reason,
            error: e.into(),
        })
    }
}

/// Whether binding failed because another program holds the address.
fn address_taken(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// What [`Agent::start`] started.
struct Started {
    http: Option<Mount>,
    /// Call and subscription servers; dropping them stops them.
    tasks: Vec<AbortOnDropHandle<()>>,
}

/// Publishes heartbeats, signed by the host's key `key` (which is its id: nobody else can
/// speak for this host) and tagged for each trusted operator key (which the control plane checks
/// far more cheaply than the signature), every `interval`, and at once when the report changes.
pub(crate) async fn heartbeats(
    client: async_nats::Client,
    config: Arc<(HostConfig, HostId)>,
    (name, key): (String, KeyPair),
    shared: Shared,
    shutdown: CancellationToken,
) {
    let (config, host) = (&config.0, &config.1);
    let started_at = unix_now();
    let subject = Subject::heartbeat(&config.lattice, host).to_string();
    let mut labels = crate::builtin_labels();
    labels.extend(config.labels.clone());
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    let macs: Vec<MacKey> = config
        .trusted_operators
        .iter()
        .filter_map(|operator| {
            MacKey::agree(&key, operator)
                .inspect_err(|e| warn!(operator = %operator, error = %e, "heartbeats are not tagged for this operator key; it checks their signature"))
                .ok()
        })
        .collect();
    let beat = |stopping: bool, queues| {
        let report = shared.report();
        Heartbeat {
            host: host.clone(),
            name: name.clone(),
            labels: labels.clone(),
            started_at,
            sent_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
            assignment_revision: report.applied_revision,
            interval_secs: config.heartbeat_interval.as_secs().max(1),
            workloads: report
                .workloads
                .iter()
                .map(|(key, w)| WorkloadStatus {
                    failures: report.failures.get(key).map_or(0, FailureCount::get),
                    ..w.clone()
                })
                .collect(),
            last_refusal: report.last_refusal.clone(),
            stopping,
            queues,
            clock_offset_ms: shared.clock.offset_ms(),
            // Presented every time: the host cannot tell when it is admitted, and an
            // admitted host's token is not looked at again.
            join_token: config.join_token.clone(),
        }
    };
    let queue_stats = || async {
        match &shared.queue {
            Some(queue) => queue.link_stats().await,
            None => Vec::new(),
        }
    };
    // Resolves when the queue counted dropped or expired calls (never without a queue).
    let queue_changed = || async {
        match &shared.queue {
            Some(queue) => queue.stats_changed().await,
            None => std::future::pending().await,
        }
    };
    loop {
        let hb = beat(false, queue_stats().await);
        match client
            .publish(subject.clone(), seal_heartbeat(&hb, &key, &macs).into())
            .await
        {
            Ok(()) => shared.metrics.heartbeat_sent(),
            Err(e) => warn!(error = %e, "heartbeat not sent"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            () = shared.changed.notified() => {}
            () = queue_changed() => {}
        }
    }
    // The last word: this host is stopping, so its movable work can go elsewhere now rather
    // than after its tolerance.
    let last = seal_heartbeat(&beat(true, queue_stats().await), &key, &macs);
    if client.publish(subject, last.into()).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    }
}
