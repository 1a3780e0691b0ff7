//! Queued delivery of one-way component calls and of messages (links with `delivery: queued`).
//!
//! **Sender.** A queued link's function encodes its call like a cross-host call (an
//! [`RpcCall`], arguments in MessagePack by type); a `wasmcloud:messaging/consumer.publish` on
//! a queued link to `messaging-nats` keeps its subject, body and reply-to. Either is appended,
//! as a [`Queued`] envelope naming the stream subject it goes to, to the host's durable
//! [`Outbox`] (`<state_dir>/outbox`); the guest gets `ok` once the append is committed
//! (fsync'd), so an acknowledged call or message survives a crash or a cut link. A full link
//! (its `capacity` waiting on this host) refuses with a `queue-full` error (`on_full: refuse`)
//! or drops its oldest waiting entry with a warning (`on_full: drop_oldest`).
//!
//! **Forwarder.** One task per host moves outbox entries, oldest first, to the JetStream stream
//! `LATTICE_<lattice>_queue` (subjects `lattice.<lattice>.q.>`, created when missing) on the
//! subject each envelope names (`lattice.<lattice>.q.<app>.<target>` for calls,
//! `lattice.<lattice>.q.@msg.<subject>` for messages), with `Nats-Msg-Id` = the entry's id,
//! and removes them once the stream acknowledged them. Entries that were waiting (a backlog) go
//! in bundles of up to 64 consecutive entries of one lane per stream message ("Bundles" in
//! [`lattice_protocol::queue`]). While the hub is unreachable it retries
//! with backoff (at most 30 s apart), however long that takes; the entries wait in the outbox
//! until their `ttl`.
//!
//! **Target.** Only workloads the assignment names as queue targets consume
//! ([`lattice_protocol::assignment::QueueInbox`]): a target of queued calls through one durable
//! pull consumer on its call subject, a component subscribed through `messaging-nats` through
//! one per subscription (filtered on it, wildcards included). One host at a time pulls each
//! consumer: the holder of its lease in `LATTICE_<lattice>_queue_leases` (the target's other
//! hosts stand by). It takes up to 20,000 items in flight and runs them one at a time, in lane
//! order (one sender's link and subject: the order per sender and target), each in a fresh
//! instance (the called function, or the `wasmcloud:messaging/handler` export). Exactly once in
//! effect, per consumer: each lane's last item run is remembered in the KV bucket
//! `LATTICE_<lattice>_lanes` (kept 30 days), written once per chunk of up to 256 items before
//! they are acknowledged; a copy of an item already run is acknowledged without running, and an
//! item whose predecessors may still come waits for them (see "Lanes" in
//! [`lattice_protocol::queue`]). A failure (a trap, or the function's or handler's own error) is
//! retried in place with backoff, the items behind it waiting; after the link's `max_attempts`
//! it goes, with its last error, to the stream `LATTICE_<lattice>_deadletter` (subject
//! `lattice.<lattice>.dlq.<app>.<component>`). So does an item whose `ttl` passed before it
//! could run (e.g. its target was not running), with the error `expired before delivery: ...`;
//! `ctl requeue` gives it a fresh expiry. A requeued dead letter leaves its lane and keeps its
//! id (`Lattice-Call-Id`) under a new `Nats-Msg-Id`: it is checked against and recorded in the
//! KV bucket `LATTICE_<lattice>_processed` (a call under its id, a message under
//! `<app>.<component>.<id>`), so it is run at most once more in effect. The remaining window: a
//! host that dies after items ran and before their lanes were remembered (at most one chunk)
//! runs them again when the next holder takes over.
//!
//! Queued messages are not republished on their plain NATS subject: a component subscribed to
//! it would otherwise receive each twice (once from NATS, once from the stream). Other NATS
//! clients read them from the stream (`lattice.<lattice>.q.@msg.<subject>`).
//!
//! Layout: this file is the sender side ([`Queue`]); `forward.rs` the forwarder; `inbox.rs` the
//! target's consumer (lease, takeover, lanes); `lanes.rs` the pure lane decisions; `deliver.rs`
//! one item's run, retries and dead letter ([`consume`]). Stream, subject and header names are in
//! [`lattice_protocol::queue`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lattice_protocol::assignment::{OnFull, QueuedDelivery};
use lattice_protocol::envelope;
use lattice_protocol::names::{ComponentName, LatticeName};
use lattice_protocol::queue::{
    Queued, QueuedItem, QueuedMessage, lane_name, message_subject, queue_subject,
};
use lattice_protocol::rpc::{CallError, CallErrorKind, RpcCall};
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;
use tracing::warn;

use super::{LatticeLink, WorkloadCtx};
use crate::outbox::{Outbox, OutboxConfig, OutboxEntry, OutboxError, OutboxEvent, Sequence};

mod deliver;
mod forward;
mod inbox;
mod lanes;
mod stats;

pub use deliver::consume;

/// How long processed ids are remembered: longer than any outage a queued call may wait out.
const PROCESSED_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries forwarded per batch.
const BATCH: usize = 256;
/// The longest wait between two attempts to reach the hub.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The delay before a failed queued item is tried again, by its attempt number.
const ITEM_RETRY: crate::backoff::Backoff =
    crate::backoff::Backoff::new(Duration::from_millis(250), MAX_BACKOFF);
/// How long a delivered call may run.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The outbox's own limits, all queued links together ([`crate::HostConfig::outbox_max_entries`]
/// and [`crate::HostConfig::outbox_max_bytes`]); each link's `capacity` bounds its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// The most entries it keeps.
    pub entries: u64,
    /// The most bytes of entries it keeps.
    pub bytes: u64,
}

impl Default for OutboxLimits {
    /// A host's defaults ([`crate::DEFAULT_OUTBOX_MAX_ENTRIES`], [`crate::DEFAULT_OUTBOX_MAX_BYTES`]).
    fn default() -> Self {
        Self {
            entries: crate::DEFAULT_OUTBOX_MAX_ENTRIES,
            bytes: crate::DEFAULT_OUTBOX_MAX_BYTES,
        }
    }
}

/// Calls waiting per stream key, kept beside the outbox for the per-link capacity.
type Counts = Arc<Mutex<Option<HashMap<String, u64>>>>;

/// The host's queue: its outbox, and the forwarder's wake-up.
#[derive(Debug)]
pub struct Queue {
    outbox: Outbox,
    counts: Counts,
    wake: Arc<Notify>,
    /// The lattice, whose queue stream the entries go to.
    lattice: LatticeName,
    /// Dropped and expired calls per link, for the heartbeat (`stats.rs`).
    totals: Arc<stats::Totals>,
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
    /// Opens the outbox at `path` with the default [`OutboxLimits`] (blocking: it may repair
    /// the database after a crash) and starts the forwarder, which runs until the returned
    /// handle is dropped.
    pub fn open(
        path: &Path,
        lattice: LatticeLink,
    ) -> Result<(Arc<Self>, AbortOnDropHandle<()>), OutboxError> {
        Self::open_with(path, lattice, OutboxLimits::default())
    }

    /// [`Queue::open`] with `limits` (a host's `--outbox-max-entries` and `--outbox-max-bytes`).
    pub fn open_with(
        path: &Path,
        lattice: LatticeLink,
        limits: OutboxLimits,
    ) -> Result<(Arc<Self>, AbortOnDropHandle<()>), OutboxError> {
        let counts: Counts = Arc::default();
        let hook_counts = counts.clone();
        let totals = Arc::new(stats::Totals::default());
        let hook_totals = totals.clone();
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
                    let dropped = matches!(event, OutboxEvent::Dropped(_));
                    hook_totals.record(dropped, gone.iter().map(|e| e.stream_key.as_str()));
                }
                OutboxEvent::StorageFailed(e) => warn!(error = %e, "the outbox failed to commit"),
            })),
            capacity_entries: limits.entries,
            capacity_bytes: limits.bytes,
            ..OutboxConfig::default()
        };
        let outbox = Outbox::open(path, config)?;
        let wake = Arc::new(Notify::new());
        let queue = Arc::new(Self {
            outbox: outbox.clone(),
            counts: counts.clone(),
            wake: wake.clone(),
            lattice: lattice.lattice.clone(),
            totals,
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
        let subject = queue_subject(&self.lattice, caller.app.as_str(), target.as_str());
        let to = Link {
            key: link_key(caller, target.as_str()),
            what: "call",
        };
        self.append(to, subject, QueuedItem::Call(call), delivery)
            .await
    }

    /// Queues `message`, published by `caller` on its queued messaging link, durably; `Ok`
    /// once it is on disk. The subject was checked by the caller.
    pub async fn enqueue_message(
        &self,
        caller: &WorkloadCtx,
        message: QueuedMessage,
        delivery: &QueuedDelivery,
    ) -> Result<(), CallError> {
        let subject = message_subject(&self.lattice, &message.subject);
        let to = Link {
            key: link_key(caller, super::messaging::BUILTIN),
            what: "message",
        };
        self.append(to, subject, QueuedItem::Message(message), delivery)
            .await
    }

    /// Appends `item` for stream `subject` to the outbox, within `to`'s capacity.
    async fn append(
        &self,
        to: Link,
        subject: String,
        item: QueuedItem,
        delivery: &QueuedDelivery,
    ) -> Result<(), CallError> {
        let Link { key, what } = to;
        let full = |e: OutboxError| CallError::new(CallErrorKind::QueueFull, outbox_full(&e, what));
        self.load_counts().await.map_err(full)?;
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
                            "the queue of link `{key}` is full ({waiting} of {} waiting on this host); the {what} was not queued: retry later or drop it",
                            delivery.capacity
                        ),
                    ));
                }
                OnFull::DropOldest => self.drop_oldest(&key).await.map_err(full)?,
            }
        }
        let ttl = Duration::from_secs(delivery.ttl_secs);
        let queued = Queued {
            max_attempts: delivery.max_attempts.max(1),
            expires_at_ms: unix_ms(SystemTime::now() + ttl),
            subject,
            item,
        };
        let lane = lane_name(&queued.subject, &key);
        let entry = OutboxEntry::new(key.clone(), envelope::encode(&queued), ttl).in_lane(lane);
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
                    self.totals.record(true, [key]);
                }
                return Ok(());
            }
        }
    }
}

/// The outbox stream key of a queued link, `app/source -> target` (also its `Lattice-Link`
/// header), and what it carries, for messages.
struct Link {
    key: String,
    what: &'static str,
}

fn link_key(caller: &WorkloadCtx, target: &str) -> String {
    format!("{}/{} -> {target}", caller.app, caller.component)
}

/// What a guest is told when the outbox refused its `what` (`call` or `message`): when the
/// outbox-wide limit refused it (not the link's `capacity`), says so and names the host's flag.
fn outbox_full(e: &OutboxError, what: &str) -> String {
    match e {
        OutboxError::Full {
            pending,
            capacity_entries,
            bytes,
            capacity_bytes,
        } => {
            let flag = if pending >= capacity_entries {
                "--outbox-max-entries"
            } else {
                "--outbox-max-bytes"
            };
            format!(
                "this host's outbox is full ({pending} of {capacity_entries} entries, {bytes} of {capacity_bytes} bytes waiting, all queued links together; not the link's `capacity`); the {what} was not queued: retry later or drop it, and raise the host's {flag} if its outages last longer"
            )
        }
        OutboxError::TooLarge {
            size,
            capacity_bytes,
        } => format!(
            "the {what} ({size} bytes) is larger than this host's whole outbox ({capacity_bytes} bytes); it was not queued: send less, or raise the host's --outbox-max-bytes"
        ),
        other => format!("the {what} was not queued: {other}"),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(pending: u64, bytes: u64) -> OutboxError {
        OutboxError::Full {
            pending,
            capacity_entries: 10,
            bytes,
            capacity_bytes: 1000,
        }
    }

    #[test]
    fn a_full_outbox_names_the_limit_that_refused() {
        let entries = outbox_full(&full(10, 5), "call");
        assert!(entries.contains("--outbox-max-entries"), "{entries}");
        let bytes = outbox_full(&full(3, 990), "message");
        assert!(
            bytes.contains("--outbox-max-bytes") && bytes.contains("the message was not queued"),
            "{bytes}"
        );
        let large = outbox_full(
            &OutboxError::TooLarge {
                size: 2000,
                capacity_bytes: 1000,
            },
            "call",
        );
        assert!(large.contains("--outbox-max-bytes"), "{large}");
    }
}
