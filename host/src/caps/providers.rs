//! The providers a host's workloads link to: the built-in ones inside the host, and provider
//! processes the host starts, supervises and tells its links.
//!
//! Every provider is an `Arc<dyn Provider>` (the SDK's trait): the built-in ones in-process
//! (registered in one list, `in_host`: [`NatsKv`] for `keyvalue-nats`, [`NatsMessaging`] for
//! `messaging-nats`, [`FsBlobs`] for `blobstore-fs`, [`NatsBlobs`] for `blobstore-nats`), a
//! [`Remote`] for a process. One process
//! per provider name per host serves every app that links to it; it stops when the last link on
//! the host is gone, so undeploying one app never stops what another uses.
//!
//! A process that exits (a crash, SIGKILL) is started again with backoff (250 ms doubling to
//! 30 s, back to 250 ms after a minute of good health); once it answers a ping it is given every
//! link again, and calls resume. Calls made meanwhile fail at once as unavailable.
//!
//! Each start draws a new call key, written as the first line on the process's standard input
//! (the pipe that also tells it when this host dies); every request the [`Remote`] sends is
//! authenticated with it (`lattice_protocol::provider::auth`), and the process answers nothing
//! else.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lattice_protocol::assignment::{LinkTarget, WorkloadLink};
use lattice_protocol::names::{AppName, ComponentName};
use lattice_protocol::provider::{LinkDirection, LinkId, LinkInfo};
use lattice_protocol::subject::Subject;
use lattice_provider_keyvalue_nats::NatsKv;
use lattice_provider_sdk::{CallKey, ProcessEnv, Provider, Remote};
use tokio_util::task::AbortOnDropHandle;

use super::LatticeLink;
use super::blobstore::fs::FsBlobs;
use super::blobstore::nats::NatsBlobs;
use super::messaging::NatsMessaging;
use crate::backoff::Backoff;

/// How provider processes are found and connected.
#[derive(Debug, Clone, Default)]
pub struct ProviderLaunch {
    /// The NATS URL providers connect to (the host's own); without it no process can start.
    pub nats_url: Option<String>,
    /// How providers connect: the host's own NATS options (credentials, nkey, TLS, pings).
    pub nats: lattice_connect::NatsOptions,
    /// The JetStream domain providers use (the host's own, `HostConfig::js_domain`), if any.
    pub js_domain: Option<String>,
    /// Directories searched for `lattice-provider-<name>` before the host's own directory and
    /// `PATH`.
    pub dirs: Vec<PathBuf>,
}

/// How long a provider has to answer a request.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a started process has to answer its first ping.
const START_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The `LinkId` of `link` for the component `app/component`.
pub fn link_id(app: &AppName, component: &ComponentName, link: &WorkloadLink) -> LinkId {
    LinkId {
        app: app.clone(),
        component: component.clone(),
        name: link.name.clone(),
        package: format!("{}:{}", link.namespace, link.package),
        direction: direction(link),
    }
}

/// Whether the component exports what this link delivers (a handler) rather than importing it.
fn direction(link: &WorkloadLink) -> LinkDirection {
    if link.serves("wasmcloud", "messaging", "handler") {
        LinkDirection::Export
    } else {
        LinkDirection::Import
    }
}

/// A provider process and the links it was given.
struct Process {
    remote: Remote,
    links: Arc<Mutex<BTreeMap<LinkId, LinkInfo>>>,
    /// Whether the process answers (false while it starts or restarts).
    ready: tokio::sync::watch::Receiver<bool>,
    _supervisor: AbortOnDropHandle<()>,
}

/// The providers a host runs in-process, by name: the one registration list of built-in
/// providers (each also described in `lattice_protocol::provider::catalog`).
fn in_host(
    lattice: &LatticeLink,
    blob_root_base: PathBuf,
) -> HashMap<&'static str, Arc<dyn Provider>> {
    let providers: [Arc<dyn Provider>; 4] = [
        Arc::new(NatsKv::new(
            lattice.jetstream.clone(),
            lattice.storage.clone(),
        )),
        Arc::new(NatsMessaging::new(lattice.client.clone())),
        Arc::new(FsBlobs::new(blob_root_base)),
        Arc::new(NatsBlobs::new(
            lattice.jetstream.clone(),
            lattice.storage.clone(),
        )),
    ];
    providers
        .into_iter()
        .map(|p| {
            let name = catalog_name(p.name());
            (name, p)
        })
        .collect()
}

/// The catalogue's `'static` name for `name`, which every in-process provider has.
fn catalog_name(name: &str) -> &'static str {
    lattice_protocol::provider::catalog::ALL
        .iter()
        .map(|d| d.name)
        .find(|n| *n == name)
        .expect("every in-process provider is described in the catalogue")
}

/// The host's providers.
pub struct Providers {
    lattice: LatticeLink,
    launch: ProviderLaunch,
    in_host: HashMap<&'static str, Arc<dyn Provider>>,
    processes: tokio::sync::Mutex<HashMap<String, Process>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers").finish_non_exhaustive()
    }
}

impl Providers {
    /// The providers of a host on `lattice`; `blobstore-fs` keeps its roots under
    /// `blob_root_base`.
    pub fn new(lattice: LatticeLink, launch: ProviderLaunch, blob_root_base: PathBuf) -> Self {
        Self {
            in_host: in_host(&lattice, blob_root_base),
            lattice,
            launch,
            processes: tokio::sync::Mutex::default(),
        }
    }

    /// The in-process provider `name`, if there is one.
    pub fn in_host(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.in_host.get(name).cloned()
    }

    /// The provider serving `target`, when it is a provider and runs.
    pub async fn get(&self, target: &LinkTarget) -> Option<Arc<dyn Provider>> {
        match target {
            LinkTarget::Builtin(name) => self.in_host.get(name.as_str()).cloned(),
            LinkTarget::Provider(name) => self
                .processes
                .lock()
                .await
                .get(name)
                .map(|p| Arc::new(p.remote.clone()) as Arc<dyn Provider>),
            _ => None,
        }
    }

    /// Tells each provider of `links` about its link from `app/component`, starting provider
    /// processes that are not running yet.
    pub async fn attach(
        &self,
        app: &AppName,
        component: &ComponentName,
        links: &[WorkloadLink],
    ) -> anyhow::Result<()> {
        for link in links {
            let info = LinkInfo {
                id: link_id(app, component, link),
                interfaces: link.interfaces.clone(),
                direction: direction(link),
                source_config: link.source_config.clone(),
                target_config: link.target_config.clone(),
            };
            match &link.target {
                LinkTarget::Builtin(name) => {
                    if let Some(provider) = self.in_host.get(name.as_str()) {
                        provider.link_put(info).await?;
                    }
                }
                LinkTarget::Provider(name) => {
                    let mut processes = self.processes.lock().await;
                    if !processes.contains_key(name) {
                        let process = self.start(name)?;
                        processes.insert(name.clone(), process);
                    }
                    let process = &processes[name];
                    process
                        .links
                        .lock()
                        .expect("not poisoned")
                        .insert(info.id.clone(), info.clone());
                    // The workload starts once its provider answers, so its first call works.
                    let mut ready = process.ready.clone();
                    // (The watch's guard is dropped at once: it may not live across an await.)
                    let answered = tokio::time::timeout(START_TIMEOUT, ready.wait_for(|r| *r))
                        .await
                        .is_ok_and(|r| r.is_ok());
                    if !answered {
                        anyhow::bail!(
                            "provider `{name}` did not start within {START_TIMEOUT:?}; the host log says why"
                        );
                    }
                    process
                        .remote
                        .link_put(info)
                        .await
                        .with_context(|| format!("provider `{name}` refused the link"))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes back the links of `app/component`; a provider process left without links stops.
    pub async fn detach(&self, app: &AppName, component: &ComponentName, links: &[WorkloadLink]) {
        for link in links {
            let id = link_id(app, component, link);
            match &link.target {
                LinkTarget::Builtin(name) => {
                    if let Some(provider) = self.in_host.get(name.as_str()) {
                        provider.link_del(&id).await;
                    }
                }
                LinkTarget::Provider(name) => {
                    let mut processes = self.processes.lock().await;
                    let Some(process) = processes.get(name) else {
                        continue;
                    };
                    process.remote.link_del(&id).await;
                    let empty = {
                        let mut held = process.links.lock().expect("not poisoned");
                        held.remove(&id);
                        held.is_empty()
                    };
                    if empty {
                        tracing::info!(provider = %name, "no links left on this host: stopping the provider");
                        processes.remove(name);
                    }
                }
                _ => {}
            }
        }
    }

    /// Starts supervising provider process `name`.
    fn start(&self, name: &str) -> anyhow::Result<Process> {
        let program = self.find(name)?;
        let nats_url = self.launch.nats_url.clone().with_context(|| {
            format!(
                "cannot start provider `{name}`: this host was not given its NATS URL to pass on"
            )
        })?;
        let provider = ComponentName::new(name)?;
        let subject =
            Subject::provider(&self.lattice.lattice, &self.lattice.host, &provider).to_string();
        // Replaced by the supervisor with a fresh key each time it starts the process.
        let remote = Remote::new(
            name,
            self.lattice.client.clone(),
            subject,
            CALL_TIMEOUT,
            CallKey::generate(),
        );
        let links = Arc::new(Mutex::new(BTreeMap::new()));
        let env = ProcessEnv {
            nats_url,
            lattice: self.lattice.lattice.clone(),
            host: self.lattice.host.clone(),
            nats: self.launch.nats.clone(),
            js_domain: self.launch.js_domain.clone(),
            host_pipe: true,
            storage: self.lattice.storage.clone(),
        };
        let mut command = tokio::process::Command::new(&program);
        for (name, value) in env.vars() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        // The rest of the host's environment is inherited, OTLP settings included, but not the
        // host's own service name: the process's traces are under its binary's name.
        command.env_remove("OTEL_SERVICE_NAME");
        // The process reads its call key on this pipe, then watches it: it closes when this
        // host dies, however it dies.
        command
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true);
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let supervisor = tokio::spawn(supervise(
            name.to_string(),
            command,
            remote.clone(),
            links.clone(),
            ready_tx,
        ));
        tracing::info!(provider = %name, program = %program.display(), "starting provider process");
        Ok(Process {
            remote,
            links,
            ready,
            _supervisor: AbortOnDropHandle::new(supervisor),
        })
    }

    /// `lattice-provider-<name>`: in the configured directories, next to this program (or one
    /// level up, where cargo puts binaries beside test executables), then on `PATH`.
    fn find(&self, name: &str) -> anyhow::Result<PathBuf> {
        let file = format!("lattice-provider-{name}");
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from));
        let mut dirs = self.launch.dirs.clone();
        dirs.extend(exe_dir.iter().cloned());
        dirs.extend(exe_dir.iter().filter_map(|d| d.parent().map(PathBuf::from)));
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        dirs.into_iter()
            .map(|d| d.join(&file))
            .find(|p| p.is_file())
            .with_context(|| {
                format!("provider program `{file}` not found next to the host or on PATH; install it beside lattice-host")
            })
    }
}

/// Runs provider process `name` for as long as this task lives: starts it, gives it its links
/// once it answers, and starts it again with backoff whenever it exits.
async fn supervise(
    name: String,
    mut command: tokio::process::Command,
    remote: Remote,
    links: Arc<Mutex<BTreeMap<LinkId, LinkInfo>>>,
    ready_tx: tokio::sync::watch::Sender<bool>,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let started = Instant::now();
        match command.spawn() {
            Ok(mut child) => {
                // Held until the process exits; dropped with this host.
                let _host_pipe = hand_key(&remote, &mut child).await;
                if ready(&remote, &mut child).await {
                    let all: Vec<LinkInfo> = links
                        .lock()
                        .expect("not poisoned")
                        .values()
                        .cloned()
                        .collect();
                    for link in all {
                        if let Err(e) = remote.link_put(link).await {
                            tracing::warn!(provider = %name, error = %e, "the provider refused a link");
                        }
                    }
                    tracing::info!(provider = %name, "provider ready");
                    ready_tx.send_replace(true);
                }
                let status = child.wait().await;
                ready_tx.send_replace(false);
                tracing::warn!(provider = %name, ?status, "provider process exited; starting it again");
            }
            Err(e) => {
                tracing::warn!(provider = %name, error = %e, "cannot start the provider process");
            }
        }
        if started.elapsed() > HEALTHY_AFTER {
            backoff.reset();
        }
        backoff.sleep().await;
    }
}

/// Draws a new call key for the process just started, writes it on its standard input and
/// has `remote` use it; returns the pipe, which must stay open while the process runs.
async fn hand_key(
    remote: &Remote,
    child: &mut tokio::process::Child,
) -> Option<tokio::process::ChildStdin> {
    use tokio::io::AsyncWriteExt as _;
    let key = CallKey::generate();
    let mut pipe = child.stdin.take()?;
    if let Err(e) = pipe.write_all(key.to_line().as_bytes()).await {
        // The process exited at once; the supervisor sees it and starts it again.
        tracing::debug!(error = %e, "could not hand the provider its call key");
    }
    remote.set_key(key);
    Some(pipe)
}

/// Waits until the process answers a ping (or exits, or takes too long).
async fn ready(remote: &Remote, child: &mut tokio::process::Child) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if remote.ping().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
