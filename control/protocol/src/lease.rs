//! Leases in JetStream KV keys, taken and renewed by compare-and-set on the key's revision, so
//! that at most one holder acts at a time: the control plane's leadership (key `leader`), and
//! the one host that consumes a queue target's deliveries (key: the consumer's name).
//!
//! Each time a lease changes hands its `epoch` grows. The control plane's leader stamps the
//! epoch on every assignment it signs and, on taking over, re-signs every assignment, which (a)
//! makes every KV revision a deposed leader remembers stale, so its compare-and-set writes are
//! refused, and (b) lets hosts refuse any assignment with an epoch lower than one they have seen.
//!
//! A holder renews every third of the TTL. A renewal the hub does not answer (a clustered hub
//! electing a leader for the bucket, a link down for a moment) is tried again, each try bounded,
//! until two thirds of a TTL have passed since the last write the hub acknowledged was sent;
//! only then, or when someone else changed the key, does the holder stop acting. A renewal
//! refused because the key moved on is checked first: when the record is the holder's own (an
//! earlier try landed and its answer was lost), the holder goes on from it. Whether a lease has
//! expired is judged on the **reader's monotonic clock**, never by comparing the holder's wall
//! clock with the reader's: a [`Claim`] remembers the key's revision and when it first saw it,
//! and takes the lease only once that revision has stood unchanged for the holder's TTL (or the
//! holder released it). The holder wrote that revision before the reader first saw it, so by
//! then the holder's own renewal (due a third of a TTL after its write) has been refused or has
//! changed the revision: the two never act at once while a renewal's round trip is shorter than
//! two thirds of the TTL, however far apart their wall clocks are. The record's
//! `expires_at_ms` (the holder's wall clock) is kept for people reading the bucket and for
//! releases that predate this rule.

use std::time::Duration;

use crate::clock::Clock;
use crate::envelope;
use async_nats::jetstream::kv::{self, UpdateErrorKind};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// What the lease key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it (a control plane instance id).
    pub holder: String,
    /// Unix milliseconds, by the holder's clock, after which it would be free; 0: released.
    /// Informational: readers judge expiry by `ttl_ms` on their own monotonic clock.
    pub expires_at_ms: u64,
    /// Grows by one each time the lease changes hands.
    pub epoch: u64,
    /// The holder's TTL: how long the record may stand unchanged before anyone may take it
    /// (absent from records of releases that predate it: the reader's own TTL then).
    #[serde(default)]
    pub ttl_ms: u64,
}

/// A would-be holder of the lease `key`: remembers what it saw of the key, so that it judges
/// expiry by how long the key stood unchanged on its own monotonic clock (see the module docs).
#[derive(Debug)]
pub struct Claim {
    kv: kv::Store,
    key: String,
    holder: String,
    ttl: Duration,
    clock: Clock,
    /// The revision last seen held by another, and when it was first seen.
    seen: Option<(u64, Instant)>,
}

impl Claim {
    /// A claim by `holder` on `key`, held for `ttl` once taken.
    pub fn new(kv: &kv::Store, key: &str, holder: &str, ttl: Duration) -> Self {
        Self {
            kv: kv.clone(),
            key: key.to_string(),
            holder: holder.to_string(),
            ttl,
            clock: Clock::system(),
            seen: None,
        }
    }

    /// The same claim with its wall clock replaced (a test runs a holder whose clock is off).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Takes the lease if it is free, released, ours, or its record has stood unchanged for its
    /// holder's TTL since this claim first saw it; `None` if someone else holds it.
    pub async fn try_acquire(&mut self) -> anyhow::Result<Option<Lease>> {
        let entry = self.kv.entry(&self.key).await?;
        let sent = Instant::now();
        let (epoch, result) = match entry.filter(|e| e.operation == kv::Operation::Put) {
            None => {
                let bytes = envelope::encode(&self.record(1));
                (1, self.kv.create(&self.key, bytes.into()).await.ok())
            }
            Some(entry) => {
                let current: LeaseRecord = envelope::decode(&entry.value)?;
                if current.holder != self.holder
                    && current.expires_at_ms != 0
                    && !self.stood_for(entry.revision, &current)
                {
                    return Ok(None);
                }
                let record = self.record(current.epoch + 1);
                let bytes = envelope::encode(&record);
                let taken = self
                    .kv
                    .update(&self.key, bytes.into(), entry.revision)
                    .await;
                (record.epoch, taken.ok())
            }
        };
        self.seen = None;
        Ok(result.map(|revision| Lease {
            kv: self.kv.clone(),
            key: self.key.clone(),
            holder: self.holder.clone(),
            ttl: self.ttl,
            clock: self.clock,
            revision,
            written: sent,
            epoch,
        }))
    }

    /// The record of this claim's holder at `epoch`.
    fn record(&self, epoch: u64) -> LeaseRecord {
        LeaseRecord {
            holder: self.holder.clone(),
            expires_at_ms: self.clock.now_ms() + self.ttl.as_millis() as u64,
            epoch,
            ttl_ms: self.ttl.as_millis() as u64,
        }
    }

    /// Whether the record at `revision` has stood unchanged for its holder's TTL since this
    /// claim first saw it (remembering it when new).
    fn stood_for(&mut self, revision: u64, record: &LeaseRecord) -> bool {
        let ttl = match record.ttl_ms {
            0 => self.ttl,
            ms => Duration::from_millis(ms),
        };
        match self.seen {
            Some((seen, since)) if seen == revision => since.elapsed() >= ttl,
            _ => {
                self.seen = Some((revision, Instant::now()));
                false
            }
        }
    }
}

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    kv: kv::Store,
    key: String,
    holder: String,
    ttl: Duration,
    clock: Clock,
    revision: u64,
    /// When the write of `revision` was sent: no rival takes the lease sooner than a TTL after.
    written: Instant,
    /// The fencing epoch of this leadership.
    pub epoch: u64,
}

impl Lease {
    /// Extends the lease; false if it was lost: someone else changed the key, or no renewal got
    /// through within two thirds of a TTL of the last acknowledged write (a rival may take the
    /// lease a TTL after it; the last third is the holder's time to stop acting).
    pub async fn renew(&mut self) -> bool {
        let give_up = self.written + self.ttl * 2 / 3;
        // Bounded, so that a try whose answer was lost (a dropped connection) is followed by
        // another before the margin is spent.
        let each = self.ttl / 6;
        let pause = (self.ttl / 30).max(Duration::from_millis(50));
        loop {
            let sent = Instant::now();
            let record = self.record(self.clock.now_ms() + self.ttl.as_millis() as u64);
            let write = self
                .kv
                .update(&self.key, envelope::encode(&record).into(), self.revision);
            let error = match tokio::time::timeout_at(give_up.min(sent + each), write).await {
                Ok(Ok(revision)) => {
                    self.revision = revision;
                    self.written = sent;
                    return true;
                }
                Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    match self.own_revision(give_up).await {
                        Some(revision) => {
                            // An earlier try landed unanswered: renew from it.
                            self.revision = revision;
                            continue;
                        }
                        None => {
                            warn!(
                                epoch = self.epoch,
                                "lease taken by another holder: lease lost"
                            );
                            return false;
                        }
                    }
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_string(),
            };
            if Instant::now() + pause >= give_up {
                warn!(%error, epoch = self.epoch, "lease renewal not acknowledged in time: lease lost");
                return false;
            }
            tracing::debug!(%error, epoch = self.epoch, "lease renewal failed; trying again");
            tokio::time::sleep(pause).await;
        }
    }

    /// The key's revision when it still holds this holder's record of this epoch (a renewal
    /// that landed though its answer was lost), read before `give_up`.
    async fn own_revision(&self, give_up: Instant) -> Option<u64> {
        let entry = tokio::time::timeout_at(give_up, self.kv.entry(&self.key))
            .await
            .ok()?
            .ok()??;
        if entry.operation != kv::Operation::Put {
            return None;
        }
        let record: LeaseRecord = envelope::decode(&entry.value).ok()?;
        (record.holder == self.holder && record.epoch == self.epoch && record.expires_at_ms != 0)
            .then_some(entry.revision)
    }

    /// This holder's record at this epoch, free after `expires_at_ms` (0: released).
    fn record(&self, expires_at_ms: u64) -> LeaseRecord {
        LeaseRecord {
            holder: self.holder.clone(),
            expires_at_ms,
            epoch: self.epoch,
            ttl_ms: self.ttl.as_millis() as u64,
        }
    }

    /// Gives the lease up at once, so that another holder takes over without waiting.
    pub async fn release(self) {
        let record = self.record(0);
        let _ = self
            .kv
            .update(&self.key, envelope::encode(&record).into(), self.revision)
            .await;
    }

    /// Renews every third of the TTL in a task of its own (so a slow request never costs the
    /// lease); the returned receiver turns `false` when the lease is lost, and the handle gives
    /// the lease back when the task is stopped through `stop`.
    pub fn keep(
        mut self,
        stop: tokio_util::sync::CancellationToken,
    ) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(true);
        let handle = tokio::spawn(async move {
            loop {
                // A third of a TTL after the last acknowledged write was sent, however long
                // that renewal took to get through.
                tokio::select! {
                    () = stop.cancelled() => {
                        info!(epoch = self.epoch, "giving up the lease");
                        self.release().await;
                        return;
                    }
                    () = tokio::time::sleep_until(self.written + self.ttl / 3) => {
                        if !self.renew().await {
                            let _ = tx.send(false);
                            return;
                        }
                    }
                }
            }
        });
        (rx, handle)
    }
}
