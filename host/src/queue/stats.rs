//! Per-link outbox statistics, reported in every heartbeat (`lattice ctl get queues`): calls
//! waiting and the age of the oldest, read from the outbox; calls dropped (full,
//! `on_full: drop_oldest`) and expired (`ttl` passed) since the host started, counted as they
//! happen. The control plane turns growing totals into events, so no call leaves an outbox
//! unnoticed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use lattice_protocol::queue::ops::{LinkOutboxStats, QueueLink};
use tokio::sync::Notify;

use super::outbox::{Outbox, Sequence};
use super::waiting::Waiting;

/// Entries read per outbox scan step.
const SCAN_BATCH: usize = 1024;
/// The oldest entries one report reads for the links' oldest ages: a heartbeat must stay cheap
/// with a backlog of a million entries. A link with nothing among them reports no age (its
/// oldest call is younger than all of them).
const SCAN_LIMIT: usize = 4 * SCAN_BATCH;

/// Dropped and expired calls per stream key since the host started.
#[derive(Debug, Default)]
pub(super) struct Totals {
    by_key: Mutex<BTreeMap<String, Counted>>,
    changed: Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    dropped: u64,
    expired: u64,
}

impl Totals {
    /// Counts calls of `keys` (one per call) as dropped or expired, and wakes the heartbeat.
    pub(super) fn record<'a>(&self, dropped: bool, keys: impl IntoIterator<Item = &'a str>) {
        {
            let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
            for key in keys {
                let c = map.entry(key.to_string()).or_default();
                if dropped {
                    c.dropped += 1;
                } else {
                    c.expired += 1;
                }
            }
        }
        self.changed.notify_one();
    }

    /// Resolves when calls were counted since the last call.
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn snapshot(&self) -> BTreeMap<String, Counted> {
        self.by_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Each queued link's outbox on this host: waiting calls (the sender's tally, loaded from the
/// outbox once), the oldest one's age (from the oldest entries), and the dropped and expired
/// totals. Reading the oldest entries also sweeps expired ones, so they are counted now rather
/// than at the next forward.
pub(super) async fn link_stats(
    outbox: &Outbox,
    waiting: &Waiting,
    totals: &Totals,
) -> Vec<LinkOutboxStats> {
    let now = SystemTime::now();
    // An outbox that cannot be read reports what it has; the next beat tries again.
    let _ = waiting.load(outbox).await;
    let mut oldest: BTreeMap<String, SystemTime> = BTreeMap::new();
    let mut after: Option<Sequence> = None;
    let mut read = 0;
    while read < SCAN_LIMIT {
        let batch = match after {
            None => outbox.peek(SCAN_BATCH).await,
            Some(a) => outbox.peek_after(a, SCAN_BATCH).await,
        };
        let Ok(batch) = batch else { break };
        let Some((last, _)) = batch.last() else { break };
        after = Some(*last);
        read += batch.len();
        for (_, entry) in &batch {
            oldest
                .entry(entry.stream_key.clone())
                .or_insert(entry.created_at);
        }
    }
    // Links that sent since the host started are reported even when nothing waits.
    let waiting: BTreeMap<String, (u64, Option<SystemTime>)> = waiting
        .snapshot()
        .map(|counts| {
            counts
                .iter()
                .map(|(key, n)| (key.clone(), (*n, oldest.get(key).copied())))
                .collect()
        })
        .unwrap_or_default();
    let totals = totals.snapshot();
    let keys: std::collections::BTreeSet<&String> = waiting.keys().chain(totals.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            // Keys of other kinds of queued traffic, if any, are not links.
            let link: QueueLink = key.parse().ok()?;
            let (pending, oldest) = waiting
                .get(key)
                .copied()
                .map_or((0, None), |(n, t)| (n, t.filter(|_| n > 0)));
            let counted = totals.get(key).copied().unwrap_or_default();
            Some(LinkOutboxStats {
                link,
                pending,
                oldest_age_ms: oldest
                    .map(|t| now.duration_since(t).map_or(0, |d| d.as_millis() as u64)),
                dropped_total: counted.dropped,
                expired_total: counted.expired,
            })
        })
        .collect()
}
