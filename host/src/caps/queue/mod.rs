//! Queued delivery of one-way component calls (links with `delivery: queued`).
//!
//! **Sender.** A queued link's function encodes its call like a cross-host call (an
//! [`RpcCall`], arguments in MessagePack by type) and appends it to the host's durable
//! [`Outbox`] (`<state_dir>/outbox`); the guest gets `ok` once the append is committed (fsync'd),
//! so an acknowledged call survives a crash or a cut link. A full link (its `capacity` of calls
//! waiting on this host) refuses the call with a `queue-full` error (`on_full: refuse`) or drops
//! its oldest waiting call with a warning (`on_full: drop_oldest`).
//!
//! **Forwarder.** One task per host moves outbox entries, oldest first, to the JetStream stream
//! `LATTICE_<lattice>_queue` (subjects `lattice.<lattice>.q.>`, created when missing) on subject
//! `lattice.<lattice>.q.<app>.<target>`, with `Nats-Msg-Id` = the entry's id, and removes them
//! once the stream acknowledged them. While the hub is unreachable it retries with backoff
//! (at most 30 s apart), however long that takes; the entries wait in the outbox until their
//! `ttl`.
//!
//! **Target.** Each workload serving calls consumes its subject through a durable pull consumer
//! (one per app and component, `max_ack_pending = 1`: one call at a time, in stream order) and
//! runs each call in a fresh instance. Exactly once in effect: the entry's id is looked up in the
//! KV bucket `LATTICE_<lattice>_processed` (kept 30 days) first and skipped when present, and
//! recorded there after the call succeeded. A failed call (a trap, or the function's own error)
//! is retried with backoff; after the link's `max_attempts` it goes, with its last error, to the
//! stream `LATTICE_<lattice>_deadletter` (subject `lattice.<lattice>.dlq.<app>.<target>`).
//! The remaining window: a host that dies after a call succeeded and before its id was recorded
//! runs it again on redelivery. A requeued dead letter keeps its call id (`Lattice-Call-Id`)
//! under a new `Nats-Msg-Id`, so it is run at most once more in effect.
//!
//! Layout: this file is the sender side ([`Queue`]); `forward.rs` the forwarder; `deliver.rs`
//! the target side ([`consume`]). Stream, subject and header names are in
//! [`lattice_protocol::queue`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lattice_protocol::assignment::{OnFull, QueuedDelivery};
use lattice_protocol::envelope;
use lattice_protocol::names::ComponentName;
use lattice_protocol::queue::QueuedCall;
use lattice_protocol::rpc::{CallError, CallErrorKind, RpcCall};
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;
use tracing::warn;

use super::{LatticeLink, WorkloadCtx};
use crate::outbox::{Outbox, OutboxConfig, OutboxEntry, OutboxError, OutboxEvent, Sequence};

mod deliver;
mod forward;

pub use deliver::consume;

/// How long processed ids are remembered: longer than any outage a queued call may wait out.
const PROCESSED_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries forwarded per batch.
const BATCH: usize = 256;
/// The longest wait between two attempts to reach the hub.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a delivered call may run.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Calls waiting per stream key, kept beside the outbox for the per-link capacity.
type Counts = Arc<Mutex<Option<HashMap<String, u64>>>>;

/// The host's queue: its outbox, and the forwarder's wake-up.
#[derive(Debug)]
pub struct Queue {
    outbox: Outbox,
    counts: Counts,
    wake: Arc<Notify>,
}

fn lock(counts: &Counts) -> std::sync::MutexGuard<'_, Option<HashMap<String, u64>>> {
    counts.lock().unwrap_or_else(|p| p.into_inner())
}

fn forget(counts: &Counts, keys: impl IntoIterator<Item = String>) {
    if let Some(map) = lock(counts).as_mut() {
        for key in keys {
            if let Some(n) = map.get_mut(&key) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl Queue {
    /// Opens the outbox at `path` (blocking: it may repair the database after a crash) and
    /// starts the forwarder, which runs until the returned handle is dropped.
    pub fn open(
        path: &Path,
        lattice: LatticeLink,
    ) -> Result<(Arc<Self>, AbortOnDropHandle<()>), OutboxError> {
        let counts: Counts = Arc::default();
        let hook_counts = counts.clone();
        let config = OutboxConfig {
            on_event: Some(Arc::new(move |event: &OutboxEvent| match event {
                OutboxEvent::Dropped(gone) | OutboxEvent::Expired(gone) => {
                    let what = if matches!(event, OutboxEvent::Dropped(_)) {
                        "dropped (outbox full)"
                    } else {
                        "expired"
                    };
                    warn!(count = gone.len(), "queued calls {what} before delivery");
                    forget(&hook_counts, gone.iter().map(|e| e.stream_key.clone()));
                }
                OutboxEvent::StorageFailed(e) => warn!(error = %e, "the outbox failed to commit"),
            })),
            ..OutboxConfig::default()
        };
        let outbox = Outbox::open(path, config)?;
        let wake = Arc::new(Notify::new());
        let queue = Arc::new(Self {
            outbox: outbox.clone(),
            counts: counts.clone(),
            wake: wake.clone(),
        });
        let task = tokio::spawn(forward::forward(outbox, counts, lattice, wake));
        Ok((queue, AbortOnDropHandle::new(task)))
    }

    /// The outbox (for stats).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Loads the per-key counts from the outbox, once.
    async fn load_counts(&self) -> Result<(), OutboxError> {
        if lock(&self.counts).is_some() {
            return Ok(());
        }
        let mut map: HashMap<String, u64> = HashMap::new();
        let mut after: Option<Sequence> = None;
        loop {
            let batch = match after {
                None => self.outbox.peek(4096).await?,
                Some(a) => self.outbox.peek_after(a, 4096).await?,
            };
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = Some(*last);
            for (_, entry) in &batch {
                *map.entry(entry.stream_key.clone()).or_default() += 1;
            }
        }
        lock(&self.counts).get_or_insert(map);
        Ok(())
    }

    /// Queues `call` from `caller` to `target` durably; `Ok` once it is on disk.
    pub async fn enqueue(
        &self,
        caller: &WorkloadCtx,
        target: &ComponentName,
        call: RpcCall,
        delivery: &QueuedDelivery,
    ) -> Result<(), CallError> {
        let full = |e: OutboxError| CallError::new(CallErrorKind::QueueFull, e.to_string());
        self.load_counts().await.map_err(full)?;
        let key = format!("{}/{} -> {}", caller.app, caller.component, target);
        let waiting = lock(&self.counts)
            .as_ref()
            .and_then(|m| m.get(&key).copied())
            .unwrap_or(0);
        if waiting >= delivery.capacity {
            match delivery.on_full {
                OnFull::Refuse => {
                    return Err(CallError::new(
                        CallErrorKind::QueueFull,
                        format!(
                            "the queue to `{target}` is full ({waiting} of {} calls waiting on this host); the call was not queued: retry later or drop it",
                            delivery.capacity
                        ),
                    ));
                }
                OnFull::DropOldest => self.drop_oldest(&key).await.map_err(full)?,
            }
        }
        let ttl = Duration::from_secs(delivery.ttl_secs);
        let queued = QueuedCall {
            max_attempts: delivery.max_attempts.max(1),
            expires_at_ms: unix_ms(SystemTime::now() + ttl),
            call,
        };
        let entry = OutboxEntry::new(key.clone(), envelope::encode(&queued), ttl);
        // Counted before the append, so concurrent calls cannot overshoot the capacity.
        *lock(&self.counts)
            .get_or_insert_with(HashMap::new)
            .entry(key.clone())
            .or_default() += 1;
        match self.outbox.append(entry).await {
            Ok(_) => {
                self.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                forget(&self.counts, [key]);
                Err(full(e))
            }
        }
    }

    /// Removes the oldest waiting call of `key` (policy `drop_oldest`), with a warning. Scans
    /// the outbox from its oldest entry.
    async fn drop_oldest(&self, key: &str) -> Result<(), OutboxError> {
        let mut after: Option<Sequence> = None;
        loop {
            let batch = match after {
                None => self.outbox.peek(1024).await?,
                Some(a) => self.outbox.peek_after(a, 1024).await?,
            };
            let Some((last, _)) = batch.last() else {
                return Ok(());
            };
            after = Some(*last);
            if let Some((seq, entry)) = batch.iter().find(|(_, e)| e.stream_key == key) {
                if self.outbox.remove(&[*seq]).await? > 0 {
                    warn!(stream = key, id = %entry.id, "queue full: dropped its oldest call (on_full: drop_oldest)");
                    forget(&self.counts, [key.to_string()]);
                }
                return Ok(());
            }
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
