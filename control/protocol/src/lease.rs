//! Leases in JetStream KV keys, taken and renewed by compare-and-set on the key's revision, so
//! that at most one holder acts at a time: the control plane's leadership (key `leader`), and
//! the one host that consumes a queue target's deliveries (key: the consumer's name).
//!
//! Each time a lease changes hands its `epoch` grows. The control plane's leader stamps the
//! epoch on every assignment it signs and, on taking over, re-signs every assignment, which (a)
//! makes every KV revision a deposed leader remembers stale, so its compare-and-set writes are
//! refused, and (b) lets hosts refuse any assignment with an epoch lower than one they have seen.
//!
//! A holder stops acting when a renewal fails (every third of the TTL); another may take the
//! lease only once the TTL has passed since the last renewal, so the two never act at once while
//! a renewal's round trip is shorter than two thirds of the TTL.

use std::time::Duration;

use crate::envelope;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

/// What the lease key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it (a control plane instance id).
    pub holder: String,
    /// Unix milliseconds after which anyone may take it.
    pub expires_at_ms: u64,
    /// Grows by one each time the lease changes hands.
    pub epoch: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    kv: kv::Store,
    key: String,
    holder: String,
    ttl: Duration,
    revision: u64,
    /// The fencing epoch of this leadership.
    pub epoch: u64,
}

impl Lease {
    /// Takes the lease `key` if it is free, expired, or already ours; `None` if someone else holds it.
    pub async fn try_acquire(
        kv: &kv::Store,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> anyhow::Result<Option<Lease>> {
        let expires_at_ms = now_ms() + ttl.as_millis() as u64;
        let entry = kv.entry(key).await?;
        let (epoch, result) = match entry.filter(|e| e.operation == kv::Operation::Put) {
            None => {
                let record = LeaseRecord {
                    holder: holder.to_string(),
                    expires_at_ms,
                    epoch: 1,
                };
                (
                    1,
                    kv.create(key, envelope::encode(&record).into()).await.ok(),
                )
            }
            Some(entry) => {
                let current: LeaseRecord = envelope::decode(&entry.value)?;
                if current.holder != holder && current.expires_at_ms > now_ms() {
                    return Ok(None);
                }
                let record = LeaseRecord {
                    holder: holder.to_string(),
                    expires_at_ms,
                    epoch: current.epoch + 1,
                };
                let bytes = envelope::encode(&record);
                (
                    record.epoch,
                    kv.update(key, bytes.into(), entry.revision).await.ok(),
                )
            }
        };
        Ok(result.map(|revision| Lease {
            kv: kv.clone(),
            key: key.to_string(),
            holder: holder.to_string(),
            ttl,
            revision,
            epoch,
        }))
    }

    /// Extends the lease; false if it was lost (someone else changed the key).
    pub async fn renew(&mut self) -> bool {
        let record = LeaseRecord {
            holder: self.holder.clone(),
            expires_at_ms: now_ms() + self.ttl.as_millis() as u64,
            epoch: self.epoch,
        };
        match self
            .kv
            .update(&self.key, envelope::encode(&record).into(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                true
            }
            Err(e) => {
                warn!(error = %e, epoch = self.epoch, "lease renewal refused: lease lost");
                false
            }
        }
    }

    /// Gives the lease up at once, so that another holder takes over without waiting.
    pub async fn release(self) {
        let record = LeaseRecord {
            holder: self.holder.clone(),
            expires_at_ms: 0,
            epoch: self.epoch,
        };
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
            let mut tick = tokio::time::interval(self.ttl / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        info!(epoch = self.epoch, "giving up the lease");
                        self.release().await;
                        return;
                    }
                    _ = tick.tick() => {
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
