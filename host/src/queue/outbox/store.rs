//! The outbox's writer thread: [`Store`] owns the redb database and is the only code that touches
//! it. [`Outbox`](super::Outbox) sends it [`Op`]s; [`Store::run`] gathers them into batches,
//! [`Store::apply`] applies a batch's writes in one write transaction (capacity, drop-oldest and
//! expiry included) and commits it, [`Store::answer`] replies to each caller, and
//! [`Store::reopen`] recovers after a storage failure (reloading the gauges from the last commit).
//!
//! Tables: `outbox_entries` (sequence → encoded entry), `outbox_expiry` (the expiry index),
//! `outbox_meta` (the next sequence, the pending bytes and the outbox's id) and `outbox_lanes`
//! (lane → its next lane sequence). An append sets its entry's lane sequence from `outbox_lanes`
//! and stores the lane's next one in the same transaction, so a batch that fails to commit
//! consumes none.
//!
//! Layout: the tables and the messages; `Store` and its batch cycle; then the table helpers
//! (`sweep`, `remove_entry`, `oldest_created`) that `apply` uses inside a transaction.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    FullPolicy, OutboxConfig, OutboxEntry, OutboxError, OutboxEvent, OutboxStats, RemovedEntry,
    Sequence, Shared, nanos,
};

/// Commits without appends made in a row without fsync (see `Store::apply`).
const LAZY_COMMITS: u32 = 32;
/// The fewest removals a commit without fsync makes: a forwarder draining a backlog.
const LAZY_REMOVALS: usize = 256;

/// Entries by sequence: the encoded entry.
const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("outbox_entries");
/// Expiry index: (expires at, in ns since the Unix epoch; sequence).
const EXPIRY: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new("outbox_expiry");
/// Counters kept with the entries, and the outbox's id.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("outbox_meta");
const NEXT_SEQ: &str = "next_seq";
/// The pending entries' encoded bytes, and how many entries they were counted for, written with
/// every commit: reopening a large backlog then reads no entry. Counted from the entries when
/// missing or made for another number of entries (the file was written by a release that did not
/// keep them).
const BYTES: &str = "bytes";
const BYTES_OF: &str = "bytes_of";
/// The outbox's id ([`Uuid::as_u64_pair`]), written once, when the database is first opened.
const ID_HIGH: &str = "id_high";
const ID_LOW: &str = "id_low";
/// Lanes: the lane's next lane sequence (1 + the last one assigned).
const LANES: TableDefinition<'_, &str, u64> = TableDefinition::new("outbox_lanes");

fn storage(e: impl Into<redb::Error>) -> OutboxError {
    OutboxError::Storage(e.into().to_string())
}

/// Table `def` as of `tx`; `None` when no commit has made it yet (an empty outbox).
fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &redb::ReadTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, OutboxError> {
    match tx.open_table(def) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, OutboxError>>;

pub(super) enum Op {
    Append {
        entry: OutboxEntry,
        encoded: Vec<u8>,
        reply: Reply<Sequence>,
    },
    Remove {
        seqs: Vec<Sequence>,
        reply: Reply<usize>,
    },
    Sweep {
        reply: Reply<usize>,
    },
    Peek {
        after: Option<Sequence>,
        max: usize,
        reply: Reply<Vec<(Sequence, OutboxEntry)>>,
    },
    Lanes {
        reply: Reply<Vec<(String, u64)>>,
    },
}

/// The writer's side: owns the database.
pub(super) struct Store {
    path: PathBuf,
    /// `None` after a storage failure that reopening could not repair yet.
    db: Option<Database>,
    pub(super) id: Uuid,
    next_seq: u64,
    /// Commits without fsync since the last one with (see [`LAZY_COMMITS`]).
    lazy_commits: u32,
    /// Whether the next commit is durable whatever it holds: after appends (a removal making
    /// room for the next ones frees pages they can reuse only once it is durable) and after a
    /// storage failure.
    durable_next: bool,
    pub(super) shared: Shared,
    pub(super) published: Arc<Mutex<Shared>>,
    pub(super) config: OutboxConfig,
}

/// What one operation of a batch did, before the commit.
enum Outcome {
    Appended(Sequence),
    Refused(OutboxError),
    Removed(usize),
    /// A read, answered after the commit.
    Read,
}

impl Store {
    pub(super) fn open(path: &Path) -> Result<Self, OutboxError> {
        let mut store = Self {
            path: path.to_path_buf(),
            db: None,
            id: Uuid::nil(),
            next_seq: 1,
            lazy_commits: 0,
            durable_next: false,
            shared: Shared::default(),
            published: Arc::default(),
            config: OutboxConfig::default(),
        };
        store.reopen()?;
        store.id = store.load_or_create_id()?;
        Ok(store)
    }

    /// The stored id, or a new one stored now (the only write at open: [`Store::reopen`], also
    /// used after a storage failure, only reads).
    fn load_or_create_id(&self) -> Result<Uuid, OutboxError> {
        let db = self.db.as_ref().ok_or(OutboxError::Closed)?;
        let tx = db.begin_read().map_err(storage)?;
        if let Some(meta) = read_table(&tx, META)? {
            let high = meta.get(ID_HIGH).map_err(storage)?.map(|v| v.value());
            let low = meta.get(ID_LOW).map_err(storage)?.map(|v| v.value());
            if let (Some(high), Some(low)) = (high, low) {
                return Ok(Uuid::from_u64_pair(high, low));
            }
        }
        drop(tx);
        let id = Uuid::new_v4();
        let (high, low) = id.as_u64_pair();
        let tx = db.begin_write().map_err(storage)?;
        {
            let mut meta = tx.open_table(META).map_err(storage)?;
            meta.insert(ID_HIGH, high).map_err(storage)?;
            meta.insert(ID_LOW, low).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        Ok(id)
    }

    /// (Re)opens the database and reloads the gauges from it.
    fn reopen(&mut self) -> Result<(), OutboxError> {
        self.db = None;
        let db = Database::create(&self.path).map_err(storage)?;
        // Read only: after a storage failure the disk may have no room for a commit.
        let tx = db.begin_read().map_err(storage)?;
        let (next_seq, pending, bytes, oldest) = match read_table(&tx, ENTRIES)? {
            None => (1, 0, 0, None),
            Some(entries) => {
                let pending = entries.len().map_err(storage)?;
                let (stored, bytes) = match read_table(&tx, META)? {
                    Some(meta) => {
                        let get = |key| Ok(meta.get(key).map_err(storage)?.map(|v| v.value()));
                        let bytes = match (get(BYTES)?, get(BYTES_OF)?) {
                            (Some(bytes), Some(of)) if of == pending => Some(bytes),
                            _ => None,
                        };
                        (get(NEXT_SEQ)?, bytes)
                    }
                    None => (None, None),
                };
                let bytes = match bytes {
                    Some(bytes) => bytes,
                    None => {
                        let mut bytes = 0u64;
                        for item in entries.iter().map_err(storage)? {
                            let (_, v) = item.map_err(storage)?;
                            bytes += v.value().len() as u64;
                        }
                        bytes
                    }
                };
                let last = entries.last().map_err(storage)?.map(|(k, _)| k.value());
                let next = stored.unwrap_or(1).max(last.map_or(1, |l| l + 1));
                (next, pending, bytes, oldest_created(&entries)?)
            }
        };
        drop(tx);
        self.next_seq = next_seq;
        self.shared.stats.pending = pending;
        self.shared.stats.bytes = bytes;
        self.shared.oldest_created_ns = oldest;
        self.db = Some(db);
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let mut published = match self.published.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        *published = self.shared.clone();
    }

    fn emit(&self, event: OutboxEvent) {
        if let Some(hook) = &self.config.on_event {
            hook(&event);
        }
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Op>) {
        let mut queue = VecDeque::new();
        while let Ok(first) = rx.recv() {
            queue.push_back(first);
            // Whatever queued while the last commit was being fsynced joins this batch.
            let mut appends = usize::from(matches!(queue.front(), Some(Op::Append { .. })));
            while appends < self.config.max_batch {
                match rx.try_recv() {
                    Ok(op) => {
                        appends += usize::from(matches!(op, Op::Append { .. }));
                        queue.push_back(op);
                    }
                    Err(_) => break,
                }
            }
            self.batch(queue.drain(..).collect());
        }
    }

    fn batch(&mut self, mut ops: Vec<Op>) {
        if self.db.is_none()
            && let Err(e) = self.reopen()
        {
            fail_all(ops, &e);
            return;
        }
        let mut removed = Removed::default();
        let before = (self.next_seq, self.shared.clone());
        match self.apply(&mut ops, &mut removed) {
            Ok(outcomes) => {
                if !removed.dropped.is_empty() {
                    self.shared.stats.dropped_total += removed.dropped.len() as u64;
                }
                self.shared.stats.expired_total += removed.expired.len() as u64;
                self.shared.stats.appended_total += outcomes
                    .iter()
                    .filter(|o| matches!(o, Outcome::Appended(_)))
                    .count() as u64;
                self.publish();
                if !removed.dropped.is_empty() {
                    self.emit(OutboxEvent::Dropped(removed.dropped));
                }
                if !removed.expired.is_empty() {
                    self.emit(OutboxEvent::Expired(removed.expired));
                }
                self.answer(ops, outcomes);
            }
            Err(e) => {
                // Nothing of the batch is committed: restore the gauges, reopen the database
                // (redb refuses every operation after an I/O error) and fail the writes.
                (self.next_seq, self.shared) = before;
                self.shared.stats.storage_failures += 1;
                // A commit without fsync cannot reuse the pages earlier ones freed: on a full
                // disk it may need room a durable one does not, so the next one is durable.
                self.durable_next = true;
                let message = match &e {
                    OutboxError::Storage(m) => m.clone(),
                    other => other.to_string(),
                };
                self.emit(OutboxEvent::StorageFailed(message));
                let reopened = self.reopen();
                self.publish();
                let mut reads = Vec::new();
                for op in ops {
                    match op {
                        Op::Append { reply, .. } => drop(reply.send(Err(e.clone()))),
                        Op::Remove { reply, .. } | Op::Sweep { reply } => {
                            drop(reply.send(Err(e.clone())))
                        }
                        read @ (Op::Peek { .. } | Op::Lanes { .. }) => reads.push(read),
                    }
                }
                // Reads still work from the last commit, if the database reopened.
                match reopened {
                    Ok(()) => self.answer(reads, Vec::new()),
                    Err(e) => fail_all(reads, &e),
                }
            }
        }
    }

    /// Applies the batch's writes in one transaction and commits it. Sets the lane sequence in
    /// each appended entry's encoding.
    fn apply(
        &mut self,
        ops: &mut [Op],
        removed: &mut Removed,
    ) -> Result<Vec<Outcome>, OutboxError> {
        let Some(db) = &self.db else {
            return Err(OutboxError::Storage("the database is not open".into()));
        };
        let now = nanos(SystemTime::now());
        let mut tx = db.begin_write().map_err(storage)?;
        let mut outcomes = Vec::with_capacity(ops.len());
        {
            let mut writes = Writes {
                entries: tx.open_table(ENTRIES).map_err(storage)?,
                expiry: tx.open_table(EXPIRY).map_err(storage)?,
                lanes: tx.open_table(LANES).map_err(storage)?,
                lane_next: HashMap::new(),
                stats: &mut self.shared.stats,
                config: &self.config,
                next_seq: &mut self.next_seq,
                swept: false,
                now,
                removed,
            };
            for op in ops.iter_mut() {
                outcomes.push(writes.apply(op)?);
            }
            for (lane, next) in &writes.lane_next {
                writes.lanes.insert(lane.as_str(), *next).map_err(storage)?;
            }
            let oldest = oldest_created(&writes.entries)?;
            drop(writes);
            let mut meta = tx.open_table(META).map_err(storage)?;
            meta.insert(NEXT_SEQ, self.next_seq).map_err(storage)?;
            meta.insert(BYTES, self.shared.stats.bytes)
                .map_err(storage)?;
            meta.insert(BYTES_OF, self.shared.stats.pending)
                .map_err(storage)?;
            self.shared.oldest_created_ns = oldest;
        }
        let appended = outcomes.iter().any(|o| matches!(o, Outcome::Appended(_)));
        let removed_now: usize = ops
            .iter()
            .zip(&outcomes)
            .map(|(op, o)| match (op, o) {
                (Op::Remove { .. }, Outcome::Removed(n)) => *n,
                _ => 0,
            })
            .sum();
        // Reads alone (the forwarder's peeks) change nothing: no commit, no fsync. Except after
        // a storage failure: a durable commit, even an empty one, is what frees the pages
        // earlier commits left, which a nearly full disk needs.
        if !appended
            && !self.durable_next
            && removed_now == 0
            && removed.dropped.is_empty()
            && removed.expired.is_empty()
        {
            tx.abort().map_err(storage)?;
            return Ok(outcomes);
        }
        // Only appends must be on disk before they are answered. A removal lost in a crash
        // brings back an entry that was already forwarded, which its lane's receiver knows as
        // a copy; so a forwarder's bulk removals skip the fsync, and the writer is free for its
        // next read sooner. Not after appends or a storage failure (a commit without fsync
        // cannot reuse the pages earlier ones freed, so on a nearly full disk the room it makes
        // would not be room for the next append), and every `LAZY_COMMITS`th is durable anyway.
        if !appended
            && removed_now >= LAZY_REMOVALS
            && !self.durable_next
            && self.lazy_commits < LAZY_COMMITS
        {
            tx.set_durability(Durability::None).map_err(storage)?;
            self.lazy_commits += 1;
        } else {
            self.lazy_commits = 0;
        }
        self.durable_next = appended;
        tx.commit().map_err(storage)?;
        self.shared.stats.commits += 1;
        Ok(outcomes)
    }

    /// Answers a committed batch (or, after a failure, its reads alone).
    fn answer(&self, ops: Vec<Op>, outcomes: Vec<Outcome>) {
        let mut outcomes = outcomes.into_iter();
        for op in ops {
            let outcome = outcomes.next();
            match (op, outcome) {
                (Op::Append { reply, .. }, Some(Outcome::Appended(seq))) => {
                    drop(reply.send(Ok(seq)))
                }
                (Op::Append { reply, .. }, Some(Outcome::Refused(e))) => drop(reply.send(Err(e))),
                (Op::Remove { reply, .. } | Op::Sweep { reply }, Some(Outcome::Removed(n))) => {
                    drop(reply.send(Ok(n)))
                }
                (Op::Peek { after, max, reply }, _) => drop(reply.send(self.read(after, max))),
                (Op::Lanes { reply }, _) => drop(reply.send(self.lanes())),
                (Op::Append { reply, .. }, _) => {
                    drop(reply.send(Err(OutboxError::Storage("internal: no outcome".into()))))
                }
                (Op::Remove { reply, .. } | Op::Sweep { reply }, _) => {
                    drop(reply.send(Err(OutboxError::Storage("internal: no outcome".into()))))
                }
            }
        }
    }

    /// Committed, unexpired entries after `after`, in order.
    fn read(
        &self,
        after: Option<Sequence>,
        max: usize,
    ) -> Result<Vec<(Sequence, OutboxEntry)>, OutboxError> {
        let db = self.db.as_ref().ok_or(OutboxError::Closed)?;
        let tx = db.begin_read().map_err(storage)?;
        let Some(entries) = read_table(&tx, ENTRIES)? else {
            return Ok(Vec::new());
        };
        let now = SystemTime::now();
        let start = after.map_or(0, |s| s.0.saturating_add(1));
        let mut out = Vec::new();
        for item in entries.range(start..).map_err(storage)? {
            if out.len() >= max {
                break;
            }
            let (k, v) = item.map_err(storage)?;
            let entry = OutboxEntry::decode(v.value()).map_err(|e| {
                OutboxError::Storage(format!("entry {} is unreadable: {e}", k.value()))
            })?;
            if entry.expires_at() > now {
                out.push((Sequence(k.value()), entry));
            }
        }
        Ok(out)
    }

    /// Every lane with its next lane sequence, as committed.
    fn lanes(&self) -> Result<Vec<(String, u64)>, OutboxError> {
        let db = self.db.as_ref().ok_or(OutboxError::Closed)?;
        let tx = db.begin_read().map_err(storage)?;
        let Some(lanes) = read_table(&tx, LANES)? else {
            return Ok(Vec::new());
        };
        lanes
            .iter()
            .map_err(storage)?
            .map(|item| {
                item.map(|(k, v)| (k.value().to_string(), v.value()))
                    .map_err(storage)
            })
            .collect()
    }
}

/// One batch's writes, inside its transaction: the open tables and what the batch changes.
struct Writes<'a, 't> {
    entries: redb::Table<'t, u64, &'static [u8]>,
    expiry: redb::Table<'t, (u64, u64), ()>,
    lanes: redb::Table<'t, &'static str, u64>,
    /// The batch's lanes' next sequences, read from the table on first use and written back
    /// before the commit: lost with the transaction if it fails.
    lane_next: HashMap<String, u64>,
    stats: &'a mut OutboxStats,
    config: &'a OutboxConfig,
    next_seq: &'a mut u64,
    /// Expired entries are swept at most once per batch (by a peek, a sweep or an append that
    /// finds the outbox full).
    swept: bool,
    now: u64,
    removed: &'a mut Removed,
}

impl Writes<'_, '_> {
    /// Applies one operation's writes (reads are answered after the commit).
    fn apply(&mut self, op: &mut Op) -> Result<Outcome, OutboxError> {
        Ok(match op {
            Op::Append { entry, encoded, .. } => self.append(entry, encoded)?,
            Op::Remove { seqs, .. } => {
                let mut n = 0;
                for seq in seqs {
                    if remove_delivered(&mut self.entries, &mut self.expiry, seq.0, self.stats)? {
                        n += 1;
                    }
                }
                Outcome::Removed(n)
            }
            Op::Sweep { .. } => {
                self.swept = true;
                Outcome::Removed(self.sweep()?)
            }
            Op::Peek { .. } => {
                if !self.swept {
                    self.swept = true;
                    self.sweep()?;
                }
                Outcome::Read
            }
            Op::Lanes { .. } => Outcome::Read,
        })
    }

    fn sweep(&mut self) -> Result<usize, OutboxError> {
        sweep(
            &mut self.entries,
            &mut self.expiry,
            self.now,
            self.stats,
            self.removed,
        )
    }

    /// Appends `entry` when it fits (after sweeping expired entries, and under
    /// [`FullPolicy::DropOldest`] dropping the oldest), setting its lane sequence in `encoded`.
    fn append(&mut self, entry: &OutboxEntry, encoded: &mut [u8]) -> Result<Outcome, OutboxError> {
        let size = encoded.len() as u64;
        let cfg = self.config;
        if size > cfg.capacity_bytes || cfg.capacity_entries == 0 {
            return Ok(Outcome::Refused(OutboxError::TooLarge {
                size,
                capacity_bytes: cfg.capacity_bytes,
            }));
        }
        let fits = |s: &OutboxStats| {
            s.pending < cfg.capacity_entries && s.bytes + size <= cfg.capacity_bytes
        };
        if !fits(self.stats) && !self.swept {
            self.swept = true;
            self.sweep()?;
        }
        if !fits(self.stats) && cfg.policy == FullPolicy::DropOldest {
            while !fits(self.stats) {
                let Some(first) = self
                    .entries
                    .first()
                    .map_err(storage)?
                    .map(|(k, _)| k.value())
                else {
                    break;
                };
                if let Some(entry) =
                    remove_entry(&mut self.entries, &mut self.expiry, first, self.stats)?
                {
                    self.removed.dropped.push(entry);
                }
            }
        }
        if !fits(self.stats) {
            return Ok(Outcome::Refused(OutboxError::Full {
                pending: self.stats.pending,
                capacity_entries: cfg.capacity_entries,
                bytes: self.stats.bytes,
                capacity_bytes: cfg.capacity_bytes,
            }));
        }
        let seq = *self.next_seq;
        *self.next_seq += 1;
        let next = match self.lane_next.get_mut(entry.lane.as_str()) {
            Some(next) => next,
            None => {
                let stored = self
                    .lanes
                    .get(entry.lane.as_str())
                    .map_err(storage)?
                    .map_or(1, |v| v.value());
                self.lane_next.entry(entry.lane.clone()).or_insert(stored)
            }
        };
        OutboxEntry::set_lane_seq(encoded, *next);
        *next += 1;
        self.entries.insert(seq, &*encoded).map_err(storage)?;
        self.expiry
            .insert((entry.expires_ns(), seq), ())
            .map_err(storage)?;
        self.stats.pending += 1;
        self.stats.bytes += size;
        Ok(Outcome::Appended(Sequence(seq)))
    }
}

#[derive(Default)]
struct Removed {
    dropped: Vec<RemovedEntry>,
    expired: Vec<RemovedEntry>,
}

fn fail_all(ops: Vec<Op>, e: &OutboxError) {
    for op in ops {
        match op {
            Op::Append { reply, .. } => drop(reply.send(Err(e.clone()))),
            Op::Remove { reply, .. } | Op::Sweep { reply } => drop(reply.send(Err(e.clone()))),
            Op::Peek { reply, .. } => drop(reply.send(Err(e.clone()))),
            Op::Lanes { reply } => drop(reply.send(Err(e.clone()))),
        }
    }
}

fn oldest_created(
    entries: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Option<u64>, OutboxError> {
    match entries.first().map_err(storage)? {
        None => Ok(None),
        Some((_, v)) => Ok(OutboxEntry::decode(v.value())
            .ok()
            .map(|e| nanos(e.created_at))),
    }
}

/// Removes the entries expired at `now`; returns how many.
fn sweep(
    entries: &mut redb::Table<'_, u64, &[u8]>,
    expiry: &mut redb::Table<'_, (u64, u64), ()>,
    now: u64,
    stats: &mut OutboxStats,
    removed: &mut Removed,
) -> Result<usize, OutboxError> {
    let due: Vec<(u64, u64)> = expiry
        .range(..=(now, u64::MAX))
        .map_err(storage)?
        .map(|item| item.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    let mut n = 0;
    for (expires, seq) in due {
        expiry.remove((expires, seq)).map_err(storage)?;
        if let Some(entry) = remove_entry(entries, expiry, seq, stats)? {
            removed.expired.push(entry);
            n += 1;
        }
    }
    Ok(n)
}

/// Removes entry `seq`'s row, updating the gauges; `read` sees its encoded bytes first. `None`
/// when it was not there.
fn take_row<T>(
    entries: &mut redb::Table<'_, u64, &[u8]>,
    seq: u64,
    stats: &mut OutboxStats,
    read: impl FnOnce(&[u8]) -> T,
) -> Result<Option<(T, u64)>, OutboxError> {
    let Some(value) = entries.remove(seq).map_err(storage)? else {
        return Ok(None);
    };
    let bytes = value.value().len() as u64;
    let read = read(value.value());
    drop(value);
    stats.pending = stats.pending.saturating_sub(1);
    stats.bytes = stats.bytes.saturating_sub(bytes);
    Ok(Some((read, bytes)))
}

/// Removes a delivered entry: like [`remove_entry`], but reads only its header (the forwarder
/// removes every entry it forwarded, so this is the outbox's busiest write).
fn remove_delivered(
    entries: &mut redb::Table<'_, u64, &[u8]>,
    expiry: &mut redb::Table<'_, (u64, u64), ()>,
    seq: u64,
    stats: &mut OutboxStats,
) -> Result<bool, OutboxError> {
    let Some((expires, _)) = take_row(entries, seq, stats, OutboxEntry::encoded_expires_ns)? else {
        return Ok(false);
    };
    // An entry we cannot read is gone now; its index row expires harmlessly.
    if let Some(expires) = expires {
        expiry.remove((expires, seq)).map_err(storage)?;
    }
    Ok(true)
}

/// Removes entry `seq` and its expiry index row, updating the gauges.
fn remove_entry(
    entries: &mut redb::Table<'_, u64, &[u8]>,
    expiry: &mut redb::Table<'_, (u64, u64), ()>,
    seq: u64,
    stats: &mut OutboxStats,
) -> Result<Option<RemovedEntry>, OutboxError> {
    let Some((decoded, bytes)) = take_row(entries, seq, stats, OutboxEntry::decode)? else {
        return Ok(None);
    };
    match decoded {
        Ok(entry) => {
            expiry.remove((entry.expires_ns(), seq)).map_err(storage)?;
            Ok(Some(RemovedEntry {
                seq: Sequence(seq),
                id: entry.id,
                stream_key: entry.stream_key,
                lane: entry.lane,
                lane_seq: entry.lane_seq,
                created_at: entry.created_at,
                bytes,
            }))
        }
        // An entry we cannot read is gone now; its index row expires harmlessly.
        Err(_) => Ok(Some(RemovedEntry {
            seq: Sequence(seq),
            id: Uuid::nil(),
            stream_key: String::new(),
            lane: String::new(),
            lane_seq: 0,
            created_at: UNIX_EPOCH,
            bytes,
        })),
    }
}
