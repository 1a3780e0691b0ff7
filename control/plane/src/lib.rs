//! `lattice-control`: the control plane. It keeps the lattice's desired state (app manifests,
//! versioned, in JetStream KV), places components on hosts by their labels, writes each host's
//! signed assignment, and answers the operator's `lattice ctl` requests.
//!
//! # Layout
//!
//! - [`model`]: what is stored: apps, versions, and the resolved form placement works on.
//! - [`resolve`]: manifest -> resolved app at deploy time (tags to digests, capabilities to
//!   bindings), refusing what cannot work with every reason.
//! - `decide` (private): every decision, as one pure function from the state (apps, hosts as
//!   last seen, assignments written, the time as a value) and one input (a heartbeat, a tick,
//!   a request, a write's outcome) to actions (write an assignment, store an app, emit an
//!   event, answer a request). Property tested.
//! - [`placement`]: pure placement of components on hosts (rendezvous hashing, property tested).
//! - [`rollout`]: pure rollout decisions: next batch, completion, rollback.
//! - [`status`]: pure app status from the plan and host heartbeats.
//! - `worker` (private): the I/O around `decide`: the one task that owns the state takes
//!   heartbeats (believed only when signed by the host their subject names), requests and ticks, carries the actions out and feeds each write's outcome back;
//!   deploys and scales are prepared (manifest parsed, artifacts read, links resolved) in tasks
//!   of their own, so heartbeats never wait behind the object store.
//! - `queues` (private): `ctl get queues`, `get deadletters`, `requeue` (read from JetStream and
//!   the hosts' heartbeats), and the events for queued calls dropped, expired or dead-lettered.
//! - leadership among several control planes, with fencing epochs: a lease
//!   ([`lattice_protocol::lease`]) under the key `leader`.
//! - [`client`]: a typed client of the control-plane API (`lattice ctl`, tests), written, like
//!   the worker's dispatch, against [`lattice_protocol::messages::Verb`].
//! - `secrets` (private): secret config values, sealed to the control plane's key: checked at
//!   deploy, compared by keyed hash, resealed to each host when its assignment is written.
//! - [`registry`]: the artifact object store and tags, shared with `lattice push`.
//! - [`events`]: the events stream (`LATTICE_<lattice>_events`), kept for `lattice ctl watch
//!   --since`, and its publisher, which never holds the worker up.
//!
//! # Key decision
//!
//! Decisions are pure: `decide` (with `placement::plan`, `rollout::next_step`,
//! `status::app_status` under it) reads no clock and does no I/O, so the same state and input
//! always give the same actions; the worker only feeds it and acts on its output. A single task
//! owns all mutable state, so there are no locks and requests are answered in the order they
//! arrive (a deploy or scale once it is prepared).
//!
//! ```no_run
//! # async fn demo(client: async_nats::Client) -> anyhow::Result<()> {
//! use lattice_control::{ControlConfig, run};
//! use lattice_protocol::{keys::{KeyPair, KeyRole}, names::LatticeName};
//! let config = ControlConfig::new(LatticeName::new("default")?, KeyPair::generate(KeyRole::Operator));
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! run(config, client, shutdown).await
//! # }
//! ```
#![deny(missing_docs)]

use std::time::Duration;

use lattice_protocol::jetstream::StorageRefused;
use lattice_protocol::keys::KeyPair;
use lattice_protocol::lease::Claim;
use lattice_protocol::names::LatticeName;
use tokio_util::sync::CancellationToken;

pub mod client;
mod decide;
pub mod events;
pub mod metrics;
pub mod model;
pub mod placement;
mod queues;
pub mod registry;
pub mod resolve;
pub mod rollout;
mod secrets;
pub mod status;
mod worker;

/// How the control plane runs.
#[derive(Debug)]
pub struct ControlConfig {
    /// The lattice it controls.
    pub lattice: LatticeName,
    /// Its operator key: signs every assignment. Hosts trust its public half.
    pub key: KeyPair,
    /// How long a host may be silent before its movable work is placed elsewhere, for
    /// components whose manifest sets no `tolerance`. Also when `ctl get hosts` calls it lost.
    pub host_tolerance: Duration,
    /// How long after start to only listen (so that a restarted control plane learns what runs
    /// before it changes anything).
    pub startup_grace: Duration,
    /// How often to re-check hosts and expiries without any event.
    pub tick: Duration,
    /// Validity of a signed assignment; re-signed when half of it has passed.
    pub assignment_ttl: Duration,
    /// How long a leader's lease lasts without renewal: a standby takes over this long after
    /// the leader dies.
    pub lease_ttl: Duration,
    /// How long a host may be silent before it is forgotten: dropped from `ctl get hosts` and
    /// from planning, its assignment key cleared. A host not admitted is forgotten sooner,
    /// after [`ControlConfig::host_tolerance`]: it holds no work, and invented host ids must
    /// not grow memory or the cost of planning.
    pub host_retention: Duration,
    /// Users (`U...` keys) who are admins from the start: the role table begins with them, so
    /// a new lattice has someone who may grant roles (`lattice up` passes its local admin key).
    pub admins: Vec<lattice_protocol::keys::PublicKey>,
    /// Limits and replicas of the streams and buckets it makes or opens (existing ones are
    /// updated to them): `lattice control --replicas`, `--artifacts-max-bytes`, ...
    pub storage: lattice_protocol::jetstream::Storage,
    /// Where to serve Prometheus metrics (`--metrics-addr`; `None`: nowhere). The endpoint
    /// tells the address it bound ([`lattice_telemetry::metrics::MetricsEndpoint::bound`]).
    pub metrics: Option<lattice_telemetry::metrics::MetricsEndpoint>,
}

impl ControlConfig {
    /// Defaults for `lattice` and `key`.
    pub fn new(lattice: LatticeName, key: KeyPair) -> Self {
        Self {
            lattice,
            key,
            // Three missed heartbeats at the hosts' default interval (5 s), and a second.
            host_tolerance: Duration::from_secs(16),
            // Longer than a host's default heartbeat interval (5 s), so that every live host
            // has reported before anything is re-placed.
            startup_grace: Duration::from_secs(6),
            tick: Duration::from_secs(1),
            assignment_ttl: Duration::from_secs(7 * 24 * 3600),
            lease_ttl: Duration::from_secs(3),
            // A day: a gateway off the network overnight is still known (and keeps its pinned
            // work) when it returns.
            host_retention: Duration::from_secs(24 * 3600),
            admins: Vec::new(),
            storage: lattice_protocol::jetstream::Storage::default(),
            metrics: None,
        }
    }
}

/// Runs the control plane until `shutdown` is cancelled. Several may run on one lattice: one
/// leads (holds the lease) and acts; the others stand by and take over when it goes.
pub async fn run(
    config: ControlConfig,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = std::sync::Arc::new(config);
    let metrics = std::sync::Arc::new(metrics::ControlMetrics::new());
    // Served by standbys too: `lattice_control_leading` tells which one leads.
    let _metrics = match &config.metrics {
        Some(endpoint) => {
            Some(lattice_telemetry::metrics::serve(endpoint, metrics.render()).await?)
        }
        None => None,
    };
    let js = async_nats::jetstream::new(client.clone());
    let bucket = lattice_protocol::subject::Buckets::new(&config.lattice).control();
    let leases = lattice_protocol::jetstream::open_kv(
        &js,
        lattice_protocol::jetstream::Bucket {
            name: &bucket,
            history: 1,
            max_age: Duration::ZERO,
            description: "Lattice control-plane leader lease",
        },
        &config.storage,
    )
    .await?;
    // Unique per process run: a restarted control plane is a new holder.
    let holder = format!("control-{}", uuid::Uuid::new_v4());
    let mut standby_logged = false;
    let mut claim = Claim::new(&leases, "leader", &holder, config.lease_ttl);
    // Checked often, so that a lease given up gracefully is taken at once.
    let pause = (config.lease_ttl / 3).min(Duration::from_millis(500));
    let mut failing = false;
    loop {
        let lease = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            lease = claim.try_acquire() => lease,
        };
        // The lease's bucket can be briefly out of reach (a clustered hub electing a new
        // leader for it, a reconnect): stand by and try again rather than exit. Errors that
        // do not pass (no such hub, limits it refuses) ended `run` above, at the first open,
        // or end it below.
        let lease = match lease {
            Ok(lease) => {
                failing = false;
                lease
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot read the leader lease ({e:#}); trying again");
                    failing = true;
                }
                None
            }
        };
        let Some(lease) = lease else {
            if !standby_logged && !failing {
                tracing::info!("another control plane leads; standing by");
                standby_logged = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(pause) => continue,
            }
        };
        standby_logged = false;
        let epoch = lease.epoch;
        let outcome = lead(&config, lease, &client, &shutdown, &metrics).await;
        match outcome {
            Ok(true) => return Ok(()),
            Ok(false) => continue,
            // A hub without room for the lattice's buckets stays so until an operator acts:
            // told once, as an error that ends the process, not every half second.
            Err(e) if e.downcast_ref::<StorageRefused>().is_some() => return Err(e),
            // Starting to lead reads and opens the hub's buckets: a failure there (the hub
            // unreachable for a moment) gives the lease up to be taken again, by this control
            // plane or another, rather than ending the process.
            Err(e) => {
                tracing::warn!(
                    epoch,
                    "could not lead ({e:#}); standing by and trying again"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        }
    }
}

/// Leads for as long as `lease` holds: starts the worker and runs it, keeping the lease
/// renewed meanwhile. `Ok(true)`: shut down; `Ok(false)`: the lease was lost.
async fn lead(
    config: &std::sync::Arc<ControlConfig>,
    lease: lattice_protocol::lease::Lease,
    client: &async_nats::Client,
    shutdown: &CancellationToken,
    metrics: &std::sync::Arc<metrics::ControlMetrics>,
) -> anyhow::Result<bool> {
    let epoch = lease.epoch;
    let stop_lease = CancellationToken::new();
    let (leading, keeper) = lease.keep(stop_lease.clone());
    // If this future is dropped (the process dies), renewal dies with it, as it would.
    let keeper = tokio_util::task::AbortOnDropHandle::new(keeper);
    let worker = worker::Worker::start(config.clone(), epoch, client.clone()).await;
    metrics.set_leading(worker.is_ok());
    let worker = worker.map(|w| w.with_metrics(metrics.clone()));
    let outcome = match worker {
        // A task of its own, not a part of this future: a binary blocks on this future in
        // its main thread, where every heartbeat delivered would cost a thread wake-up; a
        // runtime task is woken on the thread that read the message. Aborted if this
        // future is dropped, like the lease keeper.
        Ok(w) => {
            let task = tokio::spawn(w.run(shutdown.clone(), leading));
            match tokio_util::task::AbortOnDropHandle::new(task).await {
                Ok(outcome) => outcome,
                Err(e) => Err(anyhow::anyhow!("the control-plane worker failed: {e}")),
            }
        }
        Err(e) => Err(e),
    };
    metrics.set_leading(false);
    stop_lease.cancel();
    let _ = keeper.await;
    outcome
}
