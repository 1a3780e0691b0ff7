//! The Lattice host: runs WebAssembly components with wasmtime and serves
//! them.
//!
//! The wasm half of the crate follows wasmtime's own layering, each layer
//! paying once for what the next one reuses:
//!
//! - [`engine`]: the one [`wasmtime::Engine`] per host (pooling allocator
//!   sized from the machine, epoch ticker) and the limits guests run under;
//! - [`compile`]: components compiled once per digest, the compiled code
//!   cached on disk;
//! - [`limits`]: what one workload may take: memory per store and for all guests together,
//!   instances at once;
//! - [`wasi`]: the per-invocation [`wasmtime::Store`] data (WASI P2 and
//!   `wasi:http` contexts, limits) and the linker that provides them;
//! - [`caps`]: what guests get beyond WASI: logging, config, key-value, messaging and calls to
//!   other components, as their links say;
//! - [`http`]: the built-in HTTP server that runs a fresh instance of a
//!   `wasi:http/incoming-handler` component for every request.
//!
//! The lattice half joins NATS and converges on what the control plane asks:
//!
//! - [`agent`]: watches this host's signed assignment (verifying signature,
//!   addressee, expiry, revision and leadership epoch), converges the running
//!   workloads on it (fetch, verify claims before compiling, compile, trial
//!   instantiation, bind), and heartbeats what runs;
//! - [`artifacts`]: component bytes by digest, fetched from the lattice's
//!   object store and kept on disk;
//! - [`state`]: the host's identity key and its last accepted assignment in
//!   an embedded redb database, so a restarted host serves at once, offline too;
//! - [`metrics`]: what the host exports for Prometheus (`--metrics-addr`);
//! - [`queue`]: queued delivery as one pipeline: enqueue → the durable outbox (appends committed
//!   with fsync, group commit) → forwarder → the hub's stream → consumer → lanes → run.
//!
//! [`run`] ties them together: it re-applies the saved assignment, then follows
//! the lattice until its shutdown token is cancelled. The `lattice-host` program
//! (`src/bin/lattice-host/`) is [`run`] behind its command-line flags.
//!
//! ```no_run
//! # async fn demo(client: async_nats::Client) -> anyhow::Result<()> {
//! use lattice_host::{HostConfig, run};
//! use lattice_protocol::{keys::PublicKey, names::LatticeName};
//! let mut config = HostConfig::new(LatticeName::new("default")?, "/var/lib/lattice".into());
//! config.trusted_operators = vec![PublicKey::parse("OCYJLQEDEZL47B3ZE3L5PV2YK5I4C6RWE7UZQBJIQ345VZDWJIYTD6ZU")?];
//! run(config, client, tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```
#![deny(missing_docs)]

pub mod agent;
pub mod artifacts;
pub mod backoff;
pub mod caps;
pub mod clock;
pub mod compile;
pub mod engine;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod queue;
pub mod state;
pub mod wasi;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use lattice_protocol::keys::PublicKey;
use lattice_protocol::names::LatticeName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::info;

use crate::engine::EngineConfig;

/// How a host runs.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The lattice it joins.
    pub lattice: LatticeName,
    /// Where it keeps its key, its last assignment, artifacts and compiled code.
    pub state_dir: PathBuf,
    /// The only directory `blobstore-fs` roots may live in (`--blob-root-base`): a link's
    /// `root` is a path relative to it, by default the app's name. It may neither contain nor
    /// lie inside [`HostConfig::state_dir`] ([`check_blob_root_base`]), so no link reaches the
    /// host's keys or compiled code. Default: [`default_blob_root_base`].
    pub blob_root_base: PathBuf,
    /// Its human name; the machine's hostname when `None`.
    pub name: Option<String>,
    /// Labels on top of the built-in `arch`, `os` and `hostname`.
    pub labels: BTreeMap<String, String>,
    /// Issuers whose signed components it runs.
    pub trusted_issuers: Vec<PublicKey>,
    /// Control-plane keys whose assignments it accepts.
    pub trusted_operators: Vec<PublicKey>,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Engine limits and allocation.
    pub engine: EngineConfig,
    /// The built-in HTTP server's settings.
    pub http: http::HttpOptions,
    /// How provider processes are found and connected.
    pub providers: caps::providers::ProviderLaunch,
    /// The JetStream domain of the lattice's JetStream (`None`: the default API prefix,
    /// `$JS.API`). A host on an edge NATS leaf node without JetStream of its own sets the hub's
    /// domain, so that its assignment watch and artifact downloads reach the hub's JetStream
    /// across the leaf-node link (`$JS.<domain>.API`).
    pub js_domain: Option<String>,
    /// The most entries the outbox keeps, all queued links together (`--outbox-max-entries`);
    /// a link's own `capacity` bounds it further.
    pub outbox_max_entries: u64,
    /// The most bytes of entries the outbox keeps, all queued links together
    /// (`--outbox-max-bytes`).
    pub outbox_max_bytes: u64,
    /// Limits and replicas of the hub's queue and dead-letter streams and the buckets the host
    /// creates (`--queue-max-bytes`, `--replicas`, ...); existing ones are updated to them.
    pub storage: lattice_protocol::jetstream::Storage,
    /// The host's wall clock: the system's; a test runs a host whose clock is off.
    pub clock: lattice_protocol::clock::Clock,
    /// The join token presented in heartbeats until the control plane admits the host
    /// (`--join-token`; see [`lattice_protocol::signed::JoinToken`]). `None`: the host waits,
    /// unadmitted, for an operator's `lattice ctl hosts admit`.
    pub join_token: Option<String>,
    /// Where to serve Prometheus metrics (`--metrics-addr`; `None`: nowhere). The endpoint
    /// tells the address it bound ([`lattice_telemetry::metrics::MetricsEndpoint::bound`]).
    pub metrics: Option<lattice_telemetry::metrics::MetricsEndpoint>,
}

/// The default of [`HostConfig::outbox_max_entries`]: sized for a gateway that queues calls
/// through a long outage (e.g. one a second for 11 days, or ten a second for a day).
pub const DEFAULT_OUTBOX_MAX_ENTRIES: u64 = 1_000_000;
/// The default of [`HostConfig::outbox_max_bytes`]: a million entries of about 1 KiB each, a
/// disk's worth any gateway has; the outbox uses disk only for what is waiting.
pub const DEFAULT_OUTBOX_MAX_BYTES: u64 = 1 << 30;

impl HostConfig {
    /// Defaults for a host of `lattice` keeping its state in `state_dir`.
    pub fn new(lattice: LatticeName, state_dir: PathBuf) -> Self {
        Self {
            lattice,
            blob_root_base: default_blob_root_base(&state_dir),
            state_dir,
            name: None,
            labels: BTreeMap::new(),
            trusted_issuers: Vec::new(),
            trusted_operators: Vec::new(),
            heartbeat_interval: Duration::from_secs(5),
            engine: EngineConfig::default(),
            http: http::HttpOptions::default(),
            providers: Default::default(),
            js_domain: None,
            outbox_max_entries: DEFAULT_OUTBOX_MAX_ENTRIES,
            outbox_max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            storage: lattice_protocol::jetstream::Storage::default(),
            clock: lattice_protocol::clock::Clock::system(),
            join_token: None,
            metrics: None,
        }
    }

    /// The JetStream context of the lattice's JetStream, in [`HostConfig::js_domain`]: every
    /// JetStream use of the host goes through one.
    pub fn jetstream(&self, client: &async_nats::Client) -> jetstream::Context {
        lattice_protocol::jetstream::context(client, self.js_domain.as_deref())
    }
}

/// The default blob root base of a host whose state is in `state_dir`: its sibling
/// `<state dir>-blobs` (`~/.lattice/host-blobs` for `~/.lattice/host`), outside the state
/// directory and apart from any other host's on the same machine.
pub fn default_blob_root_base(state_dir: &Path) -> PathBuf {
    let mut name = state_dir
        .file_name()
        .map_or_else(|| "lattice".into(), ToOwned::to_owned);
    name.push("-blobs");
    state_dir.with_file_name(name)
}

/// Creates the blob root base and refuses it when it contains the state directory or lies
/// inside it (the same directory included): a `blobstore-fs` link could then read the host's
/// keys or plant compiled code. Both are compared as resolved (symbolic links followed).
pub fn check_blob_root_base(state_dir: &Path, base: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let resolve = |dir: &Path, what: &str| {
        std::fs::create_dir_all(dir)
            .and_then(|()| dir.canonicalize())
            .with_context(|| format!("creating the {what} {}", dir.display()))
    };
    let state = resolve(state_dir, "state directory")?;
    let blobs = resolve(base, "blob root base")?;
    if state.starts_with(&blobs) || blobs.starts_with(&state) {
        anyhow::bail!(
            "the blob root base {} {} the state directory {}: blob links could read this host's \
             keys and compiled code; give --blob-root-base a directory apart from the state \
             directory (e.g. {})",
            base.display(),
            if state.starts_with(&blobs) {
                "contains"
            } else {
                "is inside"
            },
            state_dir.display(),
            default_blob_root_base(&state).display()
        );
    }
    Ok(())
}

/// How often a host retries workloads that failed to start.
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// What a running host does beside applying assignments. The tasks end with [`run`], however
/// it ends (even when its future is dropped).
struct Background {
    /// Measures the clock's offset from the hub, for the heartbeats; ends with them.
    _probe: AbortOnDropHandle<()>,
    /// Watches the host's signed assignment and sends accepted ones to the apply loop.
    watcher: AbortOnDropHandle<()>,
    /// Heartbeats, until `tasks` is cancelled (the last one says "stopping").
    beats: AbortOnDropHandle<()>,
}

impl Background {
    fn start(
        agent: &agent::Agent,
        config: HostConfig,
        client: &async_nats::Client,
        accepted: tokio::sync::mpsc::Sender<agent::Accepted>,
        tasks: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let js = config.jetstream(client);
        let probe = tokio::spawn(clock::keep_measuring(
            js.clone(),
            config.lattice.clone(),
            config.storage.clone(),
            agent.host.clone(),
            agent.shared.clock.clone(),
            tasks.clone(),
        ));
        let key = agent.store.host_key()?;
        let ids = Arc::new((config, agent.host.clone()));
        let watcher = tokio::spawn(agent::watch_assignments(
            js,
            ids.clone(),
            agent.shared.clone(),
            accepted,
        ));
        let beats = tokio::spawn(agent::heartbeats(
            client.clone(),
            ids,
            (agent.name.clone(), key),
            agent.shared.clone(),
            tasks.clone(),
        ));
        Ok(Self {
            _probe: AbortOnDropHandle::new(probe),
            watcher: AbortOnDropHandle::new(watcher),
            beats: AbortOnDropHandle::new(beats),
        })
    }
}

/// Runs a host until `shutdown` is cancelled: re-applies its saved assignment, then follows the
/// lattice.
pub async fn run(
    config: HostConfig,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.trusted_operators.is_empty() {
        anyhow::bail!(
            "no trusted operator key: give the control plane's public key with --trust-operator"
        );
    }
    check_blob_root_base(&config.state_dir, &config.blob_root_base)?;
    let mut agent = agent::Agent::new(config.clone(), &client)?;
    info!(
        host = %agent.host,
        name = %agent.name,
        lattice = %config.lattice,
        pool = %agent.runtime.pool_description(),
        "host starting"
    );
    // Bound before anything is applied: a wrong address fails the start, and a scrape sees
    // the workloads come up.
    let _metrics = match &config.metrics {
        Some(endpoint) => {
            let render = agent.shared.metrics.render(agent.shared.queue.clone());
            Some(lattice_telemetry::metrics::serve(endpoint, render).await?)
        }
        None => None,
    };
    agent.boot_from_disk().await?;
    let tasks = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let Background {
        _probe,
        watcher,
        beats,
    } = Background::start(&agent, config, &client, tx, &tasks)?;
    let mut retry = tokio::time::interval(RETRY_FAILED);
    retry.tick().await;
    // An accepted assignment the state disk could not take, tried again at each retry.
    let mut unsaved: Option<agent::Accepted> = None;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            // Compiles run off this loop; a finished one is started (or failed) here.
            done = agent.next_loaded() => {
                agent.finish_load(done).await;
                continue;
            }
            _ = retry.tick() => match unsaved.take() {
                Some(accepted) => accepted,
                None => {
                    agent.retry_failed().await;
                    continue;
                }
            },
            accepted = rx.recv() => match accepted {
                Some(accepted) => accepted,
                None => break,
            },
        };
        // Durable first: once accepted, this is what the host runs after a restart. A disk that
        // cannot take it fails this assignment only: what runs keeps running, the heartbeat
        // says why, and the retry (or a newer revision) tries again.
        if let Err(e) = agent.store.save_assignment(&accepted.signed) {
            agent.refuse_unsaved(accepted.assignment.revision, &e);
            unsaved = Some(accepted);
            continue;
        }
        unsaved = None;
        let assignment = accepted.assignment;
        info!(
            revision = assignment.revision,
            workloads = assignment.workloads.len(),
            "applying assignment"
        );
        let stop = assignment.stop;
        agent.apply(assignment).await;
        if stop {
            info!("the control plane asked this host to stop");
            break;
        }
    }
    watcher.abort();
    // Say "stopping" first, so the control plane places movable work elsewhere while this host
    // still serves; then stop.
    tasks.cancel();
    let _ = beats.await;
    agent.stop_all().await;
    info!("host stopped");
    Ok(())
}

/// The machine's hostname.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Labels every host has: `arch`, `os` and `hostname`.
pub fn builtin_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("arch".to_string(), std::env::consts::ARCH.to_string()),
        ("os".to_string(), std::env::consts::OS.to_string()),
        ("hostname".to_string(), hostname()),
    ])
}

/// Keeps wasmtime from capturing a backtrace on every dropped Store (measured: +28 µs per
/// request with `RUST_BACKTRACE=1`), while panics still print theirs. Call before any thread starts.
pub fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        #[expect(
            unsafe_code,
            reason = "set_var is sound here: no other thread exists yet"
        )]
        // SAFETY: called first thing in main, before the runtime or any thread is started.
        unsafe {
            std::env::set_var("RUST_LIB_BACKTRACE", "0");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_blob_root_base_is_the_state_dirs_sibling() {
        assert_eq!(
            default_blob_root_base(Path::new("/var/lib/lattice/host")),
            Path::new("/var/lib/lattice/host-blobs")
        );
        assert_eq!(
            default_blob_root_base(Path::new("/")),
            Path::new("/lattice-blobs")
        );
    }

    #[test]
    fn a_blob_root_base_around_or_inside_the_state_dir_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let state = dir.path().join("host");
        for (base, needle) in [
            (dir.path().to_path_buf(), "contains the state directory"),
            (state.clone(), "contains the state directory"),
            (state.join("blobs"), "is inside the state directory"),
        ] {
            let e = check_blob_root_base(&state, &base).expect_err("refused");
            let e = format!("{e:#}");
            assert!(e.contains(needle) && e.contains("--blob-root-base"), "{e}");
        }
        // Through a symbolic link: compared as resolved.
        std::os::unix::fs::symlink(&state, dir.path().join("alias")).expect("a symlink");
        assert!(check_blob_root_base(&state, &dir.path().join("alias")).is_err());
        check_blob_root_base(&state, &default_blob_root_base(&state)).expect("a sibling");
        check_blob_root_base(&state, &dir.path().join("elsewhere/blobs")).expect("apart");
    }
}
