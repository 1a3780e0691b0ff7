//! The first layer: the API capabilities call. [`Queue::enqueue`] (a call on a queued link) and
//! [`Queue::enqueue_message`] (a message on a queued `messaging-nats` link) wrap the item in a
//! [`Queued`] envelope naming its stream subject, check the link's `capacity` (refuse, or drop
//! its oldest entry) and append it to the durable [`Outbox`]; the guest hears `ok` once the
//! append is committed. [`Queue::open_with`] opens the outbox and starts the forwarder.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lattice_protocol::assignment::{OnFull, QueuedDelivery};
use lattice_protocol::envelope;
use lattice_protocol::keys::KeyPair;
use lattice_protocol::names::{ComponentName, LatticeName};
use lattice_protocol::queue::ops::{LinkOutboxStats, QueueLink};
use lattice_protocol::queue::{
    Lane, MAX_QUEUED_MESSAGE_BYTES, Queued, QueuedItem, QueuedMessage, TraceContext,
};
use lattice_protocol::rpc::{CallError, CallErrorKind, RpcCall};
use lattice_protocol::subject::Subject;
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;
use tracing::warn;

use super::forward;
use super::outbox::{Outbox, OutboxConfig, OutboxEntry, OutboxError, OutboxEvent, Sequence};
use super::stats::{self, Totals};
use super::waiting::Waiting;
use crate::caps::{LatticeLink, WorkloadCtx, messaging};

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

/// The host's queue: its outbox, and the forwarder's wake-up.
#[derive(Debug)]
pub struct Queue {
    outbox: Outbox,
    /// Entries waiting per link, for its `capacity`.
    waiting: Waiting,
    wake: Arc<Notify>,
    /// The lattice, whose queue stream the entries go to.
    lattice: LatticeName,
    /// Dropped and expired calls per link, for the heartbeat (`stats.rs`).
    totals: Arc<Totals>,
    /// The hub's time, in which an item's expiry is stamped (the target judges it in the same).
    clock: crate::clock::HubClock,
}

impl Queue {
    /// Opens the outbox at `path` with the default [`OutboxLimits`] (blocking: it may repair
    /// the database after a crash) and starts the forwarder, which runs until the returned
    /// handle is dropped.
    /// The forwarder signs every stream message with `key`, the host's (its public key is
    /// `lattice.host`): targets run only what a host of the lattice signed.
    pub fn open(
        path: &Path,
        lattice: LatticeLink,
        key: Arc<KeyPair>,
    ) -> Result<(Arc<Self>, AbortOnDropHandle<()>), OutboxError> {
        Self::open_with(path, lattice, OutboxLimits::default(), key)
    }

    /// [`Queue::open`] with `limits` (a host's `--outbox-max-entries` and `--outbox-max-bytes`).
    pub fn open_with(
        path: &Path,
        lattice: LatticeLink,
        limits: OutboxLimits,
        key: Arc<KeyPair>,
    ) -> Result<(Arc<Self>, AbortOnDropHandle<()>), OutboxError> {
        let waiting = Waiting::default();
        let hook_waiting = waiting.clone();
        let totals = Arc::new(Totals::default());
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
                    hook_waiting.forget(gone.iter().map(|e| e.stream_key.clone()));
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
            waiting: waiting.clone(),
            wake: wake.clone(),
            lattice: lattice.lattice.clone(),
            totals,
            clock: lattice.clock.clone(),
        });
        let task = tokio::spawn(forward::forward(outbox, waiting, lattice, wake, key));
        Ok((queue, AbortOnDropHandle::new(task)))
    }

    /// The outbox (for stats).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Each queued link's outbox on this host, for the heartbeat: calls waiting, the oldest
    /// one's age, and the calls dropped and expired since the host started (`stats.rs`).
    pub async fn link_stats(&self) -> Vec<LinkOutboxStats> {
        stats::link_stats(&self.outbox, &self.waiting, &self.totals).await
    }

    /// Entries forwarded to the hub per queued link since the host started (for metrics).
    pub fn forwarded_totals(&self) -> std::collections::HashMap<QueueLink, u64> {
        self.waiting
            .forwarded_totals()
            .into_iter()
            .filter_map(|(key, n)| Some((key.parse().ok()?, n)))
            .collect()
    }

    /// Resolves when calls were dropped or expired since the last call, so that the heartbeat
    /// reports it at once.
    pub async fn stats_changed(&self) {
        self.totals.changed().await;
    }

    /// Queues `call` from `caller` to `target` durably; `Ok` once it is on disk.
    pub async fn enqueue(
        &self,
        caller: &WorkloadCtx,
        target: &ComponentName,
        call: RpcCall,
        delivery: &QueuedDelivery,
    ) -> Result<(), CallError> {
        let subject = Subject::queued_calls(&self.lattice, &caller.app, target);
        let to = Link {
            link: link_of(caller, target),
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
        let subject = Subject::queued_messages(&self.lattice, &message.subject);
        let to = Link {
            link: link_of(caller, &messaging_target()),
            what: "message",
        };
        self.append(to, subject, QueuedItem::Message(message), delivery)
            .await
    }

    /// Appends `item` for stream `subject` to the outbox, within `to`'s capacity.
    async fn append(
        &self,
        to: Link,
        subject: Subject,
        item: QueuedItem,
        delivery: &QueuedDelivery,
    ) -> Result<(), CallError> {
        let Link { link, what } = to;
        let key = link.header_value();
        let full = |e: OutboxError| CallError::new(CallErrorKind::QueueFull, outbox_full(&e, what));
        self.waiting.load(&self.outbox).await.map_err(full)?;
        let waiting = self.waiting.of(&key);
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
            expires_at_ms: self
                .clock
                .hub_now_ms()
                .saturating_add(ttl.as_millis() as u64),
            subject: subject.to_string(),
            item,
            // The delivery, after however long an outage, continues this trace.
            trace: TraceContext::from_pairs(&lattice_telemetry::propagation::current_pairs()),
        };
        let lane = Lane::new(subject, link).to_string();
        let envelope = envelope::encode(&queued);
        // Its target would refuse it as too large: said now, to the guest, rather than in a
        // dead letter later.
        if envelope.len() > MAX_QUEUED_MESSAGE_BYTES {
            return Err(CallError::new(
                CallErrorKind::InvalidPayload,
                format!(
                    "the queued {what} is {} bytes encoded, above the {MAX_QUEUED_MESSAGE_BYTES} a queued item may hold; it was not queued: send less (or a reference to it, e.g. a blob name)",
                    envelope.len()
                ),
            ));
        }
        let entry = OutboxEntry::new(key.clone(), envelope, ttl).in_lane(lane);
        // Counted before the append, so concurrent calls cannot overshoot the capacity.
        self.waiting.add(&key);
        match self.outbox.append(entry).await {
            Ok(_) => {
                self.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                self.waiting.forget([key]);
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
                    self.waiting.forget([key.to_string()]);
                    self.totals.record(true, [key]);
                }
                return Ok(());
            }
        }
    }
}

/// A queued link (its outbox stream key and `Lattice-Link` header are
/// [`QueueLink::header_value`]), and what it carries, for messages.
struct Link {
    link: QueueLink,
    what: &'static str,
}

fn link_of(caller: &WorkloadCtx, target: &ComponentName) -> QueueLink {
    QueueLink {
        app: caller.app.clone(),
        source: caller.component.clone(),
        target: target.clone(),
    }
}

/// The target of every queued messaging link: the built-in `messaging-nats`.
fn messaging_target() -> ComponentName {
    ComponentName::new(messaging::BUILTIN).expect("`messaging-nats` is a valid component name")
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
