//! How many entries wait in the outbox per stream key (per queued link), kept beside the outbox
//! for each link's `capacity`: counted up by an append, down by the forwarder's removals and by
//! the outbox's drops and expiries. Loaded from the outbox once, on first use. The removals that
//! were forwards are also tallied per key, for the host's metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::outbox::{Outbox, OutboxError, Sequence};

/// Entries waiting per stream key (`None` until loaded), and entries forwarded per stream key
/// since the host started; clones share the counts.
#[derive(Debug, Clone, Default)]
pub(super) struct Waiting(
    Arc<Mutex<Option<HashMap<String, u64>>>>,
    Arc<Mutex<HashMap<String, u64>>>,
);

impl Waiting {
    fn lock(&self) -> MutexGuard<'_, Option<HashMap<String, u64>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the outbox's entries per stream key, unless done already.
    pub(super) async fn load(&self, outbox: &Outbox) -> Result<(), OutboxError> {
        if self.lock().is_some() {
            return Ok(());
        }
        let mut map: HashMap<String, u64> = HashMap::new();
        let mut after: Option<Sequence> = None;
        loop {
            let batch = match after {
                None => outbox.peek(4096).await?,
                Some(a) => outbox.peek_after(a, 4096).await?,
            };
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = Some(*last);
            for (_, entry) in &batch {
                *map.entry(entry.stream_key.clone()).or_default() += 1;
            }
        }
        self.lock().get_or_insert(map);
        Ok(())
    }

    /// The entries of `key` waiting.
    pub(super) fn of(&self, key: &str) -> u64 {
        self.lock()
            .as_ref()
            .and_then(|m| m.get(key).copied())
            .unwrap_or(0)
    }

    /// One more entry of `key`.
    pub(super) fn add(&self, key: &str) {
        *self
            .lock()
            .get_or_insert_with(HashMap::new)
            .entry(key.to_string())
            .or_default() += 1;
    }

    /// One entry fewer per key given (one per entry gone).
    pub(super) fn forget(&self, keys: impl IntoIterator<Item = String>) {
        if let Some(map) = self.lock().as_mut() {
            for key in keys {
                if let Some(n) = map.get_mut(&key) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }

    /// One entry fewer per key given, each gone because it was forwarded to the hub.
    pub(super) fn forwarded(&self, keys: Vec<String>) {
        {
            let mut forwarded = self.1.lock().unwrap_or_else(|p| p.into_inner());
            for key in &keys {
                *forwarded.entry(key.clone()).or_default() += 1;
            }
        }
        self.forget(keys);
    }

    /// Entries forwarded per key since the host started.
    pub(super) fn forwarded_totals(&self) -> HashMap<String, u64> {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every key with its count, once loaded.
    pub(super) fn snapshot(&self) -> Option<HashMap<String, u64>> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_up_and_down_per_key_and_never_below_zero() {
        let waiting = Waiting::default();
        waiting.add("a");
        waiting.add("a");
        waiting.add("b");
        waiting.forget(["a".to_string(), "b".to_string(), "b".to_string()]);
        assert_eq!(
            (waiting.of("a"), waiting.of("b"), waiting.of("c")),
            (1, 0, 0)
        );
        waiting.forwarded(vec!["a".to_string()]);
        assert_eq!(waiting.of("a"), 0);
        assert_eq!(waiting.forwarded_totals().get("a"), Some(&1));
    }
}
