//! The durable outbox for queued (one-way) calls: an entry is on disk, committed with fsync,
//! before [`Outbox::append`] returns, so a guest told "queued" keeps its message through a crash,
//! a power cut or a cut link; a forwarder later moves entries on ([`Outbox::peek`], then
//! [`Outbox::remove`] once the hub has them).
//!
//! **One writer, group commit.** [`Outbox::open`] starts a dedicated thread that owns the redb
//! database. Every operation is a message to it; each caller waits on its own oneshot. The
//! writer takes the first waiting message, then everything else already queued (up to
//! [`OutboxConfig::max_batch`] appends), applies them in arrival order in **one** write
//! transaction and commits it (redb's `Durability::Immediate`: fsync before `commit` returns),
//! then answers them all. No timer gathers a batch: while one commit is being fsynced, the next
//! batch queues up, so the busier the outbox, the more appends share an fsync.
//!
//! **Order.** Sequences are assigned by the writer in arrival order and never reused (the next
//! sequence is stored with the entries); [`Outbox::peek`] returns entries in sequence order, so
//! the entries of one stream key (sender → target) come out in the order their appends were made
//! by a caller that awaits each append before the next.
//!
//! **Limits.** [`OutboxConfig::capacity_entries`] and [`OutboxConfig::capacity_bytes`] bound the
//! outbox (bytes are the entries' encoded size: payload, stream key and 41 bytes). When an
//! append does not fit, expired entries go first; then [`FullPolicy::Refuse`] answers
//! [`OutboxError::Full`], while [`FullPolicy::DropOldest`] removes the oldest entries in the same
//! transaction and reports them ([`OutboxEvent::Dropped`] to [`OutboxConfig::on_event`], and
//! [`OutboxStats::dropped_total`]).
//!
//! **Expiry.** An entry expires at `created_at + ttl`. Expired entries are never returned by
//! [`Outbox::peek`]; they are removed (durably, counted in [`OutboxStats::expired_total`] and
//! reported as [`OutboxEvent::Expired`]) by `peek`, [`Outbox::sweep`], and by an append that
//! finds the outbox full.
//!
//! **Storage failures.** A failed write or fsync (a full disk, `EFBIG`, an I/O error) fails the
//! whole batch with [`OutboxError::Storage`] (none of its appends is acknowledged), is reported as
//! [`OutboxEvent::StorageFailed`], and the writer reopens the database (redb stops using a
//! database after an I/O error; reopening recovers its last commit), so reads keep working and
//! appends work again once there is room. Nothing in the writer panics on an error.
//!
//! **Crash safety.** redb commits are atomic and checksummed: after a crash (SIGKILL, power cut)
//! the database reopens at its last commit, which holds everything an `append` acknowledged.
//! Tested with a child process killed by SIGKILL mid-stream (`host/tests/outbox.rs`).
//!
//! Dropping the last [`Outbox`] handle stops the writer once the queued operations are done and
//! waits for it (at most one commit), so the same path can be reopened at once.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Entries by sequence: the encoded entry.
const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("outbox_entries");
/// Expiry index: (expires at, in ns since the Unix epoch; sequence).
const EXPIRY: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new("outbox_expiry");
/// Counters kept with the entries.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("outbox_meta");
const NEXT_SEQ: &str = "next_seq";

const FORMAT_VERSION: u8 = 1;
/// Encoded size of an entry beyond its stream key and payload.
const ENTRY_OVERHEAD: usize = 1 + 16 + 8 + 8 + 4 + 4;

/// An entry's place in the outbox: assigned by the writer, increasing, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sequence(pub u64);

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Unique id (a UUID v7 from [`OutboxEntry::new`]: time-ordered), for deduplication downstream.
    pub id: Uuid,
    /// The ordering key: sender and target, e.g. `app/source-component -> target`.
    pub stream_key: String,
    /// When the message was made (kept to the nanosecond until the year 2554).
    pub created_at: SystemTime,
    /// How long after `created_at` the message is still worth delivering.
    pub ttl: Duration,
    /// The message itself.
    pub payload: Bytes,
}

impl OutboxEntry {
    /// A new entry made now, with a fresh UUID v7.
    pub fn new(stream_key: impl Into<String>, payload: impl Into<Bytes>, ttl: Duration) -> Self {
        Self {
            id: Uuid::now_v7(),
            stream_key: stream_key.into(),
            created_at: SystemTime::now(),
            ttl,
            payload: payload.into(),
        }
    }

    /// When the entry expires (saturating).
    pub fn expires_at(&self) -> SystemTime {
        self.created_at
            .checked_add(self.ttl)
            .unwrap_or_else(|| UNIX_EPOCH + Duration::from_nanos(u64::MAX))
    }

    /// The size the entry takes in the outbox (what [`OutboxConfig::capacity_bytes`] counts).
    pub fn encoded_len(&self) -> usize {
        ENTRY_OVERHEAD + self.stream_key.len() + self.payload.len()
    }

    fn expires_ns(&self) -> u64 {
        nanos(self.created_at)
            .saturating_add(u64::try_from(self.ttl.as_nanos()).unwrap_or(u64::MAX))
    }

    fn encode(&self) -> Result<Vec<u8>, OutboxError> {
        let key_len = u32::try_from(self.stream_key.len())
            .map_err(|_| OutboxError::InvalidEntry("stream key longer than 4 GiB".into()))?;
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&nanos(self.created_at).to_le_bytes());
        out.extend_from_slice(
            &u64::try_from(self.ttl.as_nanos())
                .unwrap_or(u64::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&0u32.to_le_bytes()); // flags, reserved
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(self.stream_key.as_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let header = bytes
            .get(..ENTRY_OVERHEAD)
            .ok_or_else(|| format!("entry of {} bytes is shorter than its header", bytes.len()))?;
        if header[0] != FORMAT_VERSION {
            return Err(format!("unknown entry format {}", header[0]));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&header[1..17]);
        let created_ns = u64_at(17);
        let ttl_ns = u64_at(25);
        let mut key_len = [0u8; 4];
        key_len.copy_from_slice(&header[37..41]);
        let key_end = ENTRY_OVERHEAD + u32::from_le_bytes(key_len) as usize;
        let key = bytes
            .get(ENTRY_OVERHEAD..key_end)
            .ok_or("entry's stream key runs past its end")?;
        let stream_key = String::from_utf8(key.to_vec()).map_err(|e| e.to_string())?;
        Ok(Self {
            id: Uuid::from_bytes(id),
            stream_key,
            created_at: UNIX_EPOCH + Duration::from_nanos(created_ns),
            ttl: Duration::from_nanos(ttl_ns),
            payload: Bytes::copy_from_slice(&bytes[key_end..]),
        })
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What an append does when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Refuse the new entry with [`OutboxError::Full`]; the caller (the guest) decides.
    #[default]
    Refuse,
    /// Remove the oldest entries to make room, reporting them ([`OutboxEvent::Dropped`]).
    DropOldest,
}

/// Something the host should log, count or turn into a lattice event.
#[derive(Debug, Clone)]
pub enum OutboxEvent {
    /// Entries removed to make room ([`FullPolicy::DropOldest`]), in a committed batch.
    Dropped(Vec<RemovedEntry>),
    /// Entries removed because their time to live had passed, in a committed batch.
    Expired(Vec<RemovedEntry>),
    /// A batch failed to commit (the message is the storage error); its operations failed.
    StorageFailed(String),
}

/// An entry removed without being delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedEntry {
    /// Its sequence.
    pub seq: Sequence,
    /// Its id.
    pub id: Uuid,
    /// Its stream key.
    pub stream_key: String,
    /// When it was made.
    pub created_at: SystemTime,
    /// Its encoded size.
    pub bytes: u64,
}

/// Called on the writer thread after a batch: must be quick and must not block on the outbox.
pub type EventHook = Arc<dyn Fn(&OutboxEvent) + Send + Sync>;

/// How an outbox is bounded and reports.
#[derive(Clone)]
pub struct OutboxConfig {
    /// At most this many pending entries.
    pub capacity_entries: u64,
    /// At most this many bytes of pending entries ([`OutboxEntry::encoded_len`]).
    pub capacity_bytes: u64,
    /// What an append does when either capacity would be exceeded.
    pub policy: FullPolicy,
    /// At most this many appends per commit (1 makes one fsync per append).
    pub max_batch: usize,
    /// Receives [`OutboxEvent`]s (drops, expiries, storage failures), if set.
    pub on_event: Option<EventHook>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            capacity_entries: 100_000,
            capacity_bytes: 256 << 20,
            policy: FullPolicy::Refuse,
            max_batch: 4096,
            on_event: None,
        }
    }
}

impl fmt::Debug for OutboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxConfig")
            .field("capacity_entries", &self.capacity_entries)
            .field("capacity_bytes", &self.capacity_bytes)
            .field("policy", &self.policy)
            .field("max_batch", &self.max_batch)
            .field("on_event", &self.on_event.as_ref().map(|_| "<hook>"))
            .finish()
    }
}

/// Why an outbox operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OutboxError {
    /// The outbox is full and its policy is [`FullPolicy::Refuse`]: nothing was queued.
    #[error(
        "the outbox is full ({pending} of {capacity_entries} entries, {bytes} of {capacity_bytes} \
         bytes pending); the message was not queued: retry later or drop it"
    )]
    Full {
        /// Pending entries.
        pending: u64,
        /// The entry limit.
        capacity_entries: u64,
        /// Pending bytes.
        bytes: u64,
        /// The byte limit.
        capacity_bytes: u64,
    },
    /// The entry alone is bigger than the outbox may hold.
    #[error(
        "the message ({size} bytes) is larger than the outbox's capacity ({capacity_bytes} bytes)"
    )]
    TooLarge {
        /// The entry's encoded size.
        size: u64,
        /// The byte limit.
        capacity_bytes: u64,
    },
    /// The entry cannot be stored as given.
    #[error("invalid outbox entry: {0}")]
    InvalidEntry(String),
    /// Writing, syncing or reading the database failed (a full disk, an I/O error); nothing in
    /// the failed batch was committed.
    #[error("outbox storage failed: {0}")]
    Storage(String),
    /// The outbox's writer has stopped.
    #[error("the outbox is closed")]
    Closed,
}

fn storage(e: impl Into<redb::Error>) -> OutboxError {
    OutboxError::Storage(e.into().to_string())
}

/// Counters and gauges, as of the last batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Entries waiting (expired ones included until removed).
    pub pending: u64,
    /// Their encoded size.
    pub bytes: u64,
    /// How long ago the oldest pending entry was made.
    pub oldest_age: Option<Duration>,
    /// Entries removed to make room since the outbox was opened.
    pub dropped_total: u64,
    /// Entries removed as expired since the outbox was opened.
    pub expired_total: u64,
    /// Appends acknowledged since the outbox was opened.
    pub appended_total: u64,
    /// Write transactions committed (each one fsync'd) since the outbox was opened.
    pub commits: u64,
    /// Batches that failed to commit since the outbox was opened.
    pub storage_failures: u64,
}

#[derive(Debug, Default, Clone)]
struct Shared {
    stats: OutboxStats,
    oldest_created_ns: Option<u64>,
}

type Reply<T> = oneshot::Sender<Result<T, OutboxError>>;

enum Op {
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
}

/// A handle on an open outbox; clones share it. See the [module docs](self).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    tx: Option<mpsc::Sender<Op>>,
    shared: Arc<Mutex<Shared>>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the writer once it has answered what is queued.
        self.tx = None;
        if let Some(writer) = self.writer.take()
            && writer.thread().id() != std::thread::current().id()
        {
            let _ = writer.join();
        }
    }
}

impl Outbox {
    /// Opens (creating) the outbox database at `path` and starts its writer thread. Blocking
    /// (it may repair the database after a crash): call it from `spawn_blocking` in async code.
    pub fn open(path: impl AsRef<Path>, config: OutboxConfig) -> Result<Self, OutboxError> {
        let path = path.as_ref().to_path_buf();
        let mut store = Store::open(&path)?;
        let shared = Arc::new(Mutex::new(store.shared.clone()));
        store.config = config;
        store.config.max_batch = store.config.max_batch.max(1);
        store.published = shared.clone();
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("lattice-outbox".into())
            .spawn(move || store.run(rx))
            .map_err(|e| OutboxError::Storage(format!("starting the outbox writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                tx: Some(tx),
                shared,
                writer: Some(writer),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, OutboxError> {
        let (reply, answer) = oneshot::channel();
        let tx = self.inner.tx.as_ref().ok_or(OutboxError::Closed)?;
        tx.send(make(reply)).map_err(|_| OutboxError::Closed)?;
        answer.await.map_err(|_| OutboxError::Closed)?
    }

    /// Queues `entry` durably: returns its sequence once the batch holding it is committed and
    /// fsync'd. Fails with [`OutboxError::Full`] (policy `Refuse`), [`OutboxError::TooLarge`],
    /// or [`OutboxError::Storage`] (then the entry is not in the outbox).
    pub async fn append(&self, entry: OutboxEntry) -> Result<Sequence, OutboxError> {
        let encoded = entry.encode()?;
        self.call(|reply| Op::Append {
            entry,
            encoded,
            reply,
        })
        .await
    }

    /// Up to `max` pending, unexpired entries in sequence order, from the oldest. Removes the
    /// expired entries it meets (see the module docs). Entries stay until [`Outbox::remove`].
    pub async fn peek(&self, max: usize) -> Result<Vec<(Sequence, OutboxEntry)>, OutboxError> {
        self.call(|reply| Op::Peek {
            after: None,
            max,
            reply,
        })
        .await
    }

    /// Like [`Outbox::peek`], but only entries after `after` (for a forwarder with entries in
    /// flight).
    pub async fn peek_after(
        &self,
        after: Sequence,
        max: usize,
    ) -> Result<Vec<(Sequence, OutboxEntry)>, OutboxError> {
        self.call(|reply| Op::Peek {
            after: Some(after),
            max,
            reply,
        })
        .await
    }

    /// Removes these entries (delivered), durably; returns how many were still there.
    pub async fn remove(&self, seqs: &[Sequence]) -> Result<usize, OutboxError> {
        let seqs = seqs.to_vec();
        self.call(|reply| Op::Remove { seqs, reply }).await
    }

    /// Removes the expired entries, durably; returns how many.
    pub async fn sweep(&self) -> Result<usize, OutboxError> {
        self.call(|reply| Op::Sweep { reply }).await
    }

    /// The outbox's counters as of its last batch.
    pub fn stats(&self) -> OutboxStats {
        let shared = match self.inner.shared.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut stats = shared.stats;
        stats.oldest_age = shared
            .oldest_created_ns
            .map(|ns| Duration::from_nanos(nanos(SystemTime::now()).saturating_sub(ns)));
        stats
    }
}

/// The writer's side: owns the database.
struct Store {
    path: PathBuf,
    /// `None` after a storage failure that reopening could not repair yet.
    db: Option<Database>,
    next_seq: u64,
    shared: Shared,
    published: Arc<Mutex<Shared>>,
    config: OutboxConfig,
}

/// What one operation of a batch did, before the commit.
enum Outcome {
    Appended(Sequence),
    Refused(OutboxError),
    Removed(usize),
    Peek,
}

impl Store {
    fn open(path: &Path) -> Result<Self, OutboxError> {
        let mut store = Self {
            path: path.to_path_buf(),
            db: None,
            next_seq: 1,
            shared: Shared::default(),
            published: Arc::default(),
            config: OutboxConfig::default(),
        };
        store.reopen()?;
        Ok(store)
    }

    /// (Re)opens the database and reloads the gauges from it.
    fn reopen(&mut self) -> Result<(), OutboxError> {
        self.db = None;
        let db = Database::create(&self.path).map_err(storage)?;
        // Read only: after a storage failure the disk may have no room for a commit.
        let tx = db.begin_read().map_err(storage)?;
        let (next_seq, pending, bytes, oldest) = match tx.open_table(ENTRIES) {
            Err(redb::TableError::TableDoesNotExist(_)) => (1, 0, 0, None),
            Err(e) => return Err(storage(e)),
            Ok(entries) => {
                let mut bytes = 0u64;
                for item in entries.iter().map_err(storage)? {
                    let (_, v) = item.map_err(storage)?;
                    bytes += v.value().len() as u64;
                }
                let last = entries.last().map_err(storage)?.map(|(k, _)| k.value());
                let stored = match tx.open_table(META) {
                    Ok(meta) => meta.get(NEXT_SEQ).map_err(storage)?.map(|v| v.value()),
                    Err(redb::TableError::TableDoesNotExist(_)) => None,
                    Err(e) => return Err(storage(e)),
                };
                let next = stored.unwrap_or(1).max(last.map_or(1, |l| l + 1));
                let pending = entries.len().map_err(storage)?;
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

    fn run(mut self, rx: mpsc::Receiver<Op>) {
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

    fn batch(&mut self, ops: Vec<Op>) {
        if self.db.is_none()
            && let Err(e) = self.reopen()
        {
            fail_all(ops, &e);
            return;
        }
        let mut removed = Removed::default();
        let before = (self.next_seq, self.shared.clone());
        match self.apply(&ops, &mut removed) {
            Ok(outcomes) => {
                self.shared.stats.commits += 1;
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
                        peek @ Op::Peek { .. } => reads.push(peek),
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

    /// Applies the batch's writes in one transaction and commits it.
    fn apply(&mut self, ops: &[Op], removed: &mut Removed) -> Result<Vec<Outcome>, OutboxError> {
        let Some(db) = &self.db else {
            return Err(OutboxError::Storage("the database is not open".into()));
        };
        let now = nanos(SystemTime::now());
        let tx = db.begin_write().map_err(storage)?;
        let mut outcomes = Vec::with_capacity(ops.len());
        {
            let mut entries = tx.open_table(ENTRIES).map_err(storage)?;
            let mut expiry = tx.open_table(EXPIRY).map_err(storage)?;
            let stats = &mut self.shared.stats;
            // Expired entries are swept at most once per batch (by a peek, a sweep or an append
            // that finds the outbox full).
            let mut swept = false;
            for op in ops {
                let outcome = match op {
                    Op::Append { entry, encoded, .. } => {
                        let size = encoded.len() as u64;
                        let cfg = &self.config;
                        if size > cfg.capacity_bytes || cfg.capacity_entries == 0 {
                            Outcome::Refused(OutboxError::TooLarge {
                                size,
                                capacity_bytes: cfg.capacity_bytes,
                            })
                        } else {
                            let fits = |s: &OutboxStats| {
                                s.pending < cfg.capacity_entries
                                    && s.bytes + size <= cfg.capacity_bytes
                            };
                            if !fits(stats) && !swept {
                                swept = true;
                                sweep(&mut entries, &mut expiry, now, stats, removed)?;
                            }
                            if !fits(stats) && cfg.policy == FullPolicy::DropOldest {
                                while !fits(stats) {
                                    let Some(first) =
                                        entries.first().map_err(storage)?.map(|(k, _)| k.value())
                                    else {
                                        break;
                                    };
                                    if let Some(entry) =
                                        remove_entry(&mut entries, &mut expiry, first, stats)?
                                    {
                                        removed.dropped.push(entry);
                                    }
                                }
                            }
                            if fits(stats) {
                                let seq = self.next_seq;
                                self.next_seq += 1;
                                entries.insert(seq, encoded.as_slice()).map_err(storage)?;
                                expiry
                                    .insert((entry.expires_ns(), seq), ())
                                    .map_err(storage)?;
                                stats.pending += 1;
                                stats.bytes += size;
                                Outcome::Appended(Sequence(seq))
                            } else {
                                Outcome::Refused(OutboxError::Full {
                                    pending: stats.pending,
                                    capacity_entries: cfg.capacity_entries,
                                    bytes: stats.bytes,
                                    capacity_bytes: cfg.capacity_bytes,
                                })
                            }
                        }
                    }
                    Op::Remove { seqs, .. } => {
                        let mut n = 0;
                        for seq in seqs {
                            if remove_entry(&mut entries, &mut expiry, seq.0, stats)?.is_some() {
                                n += 1;
                            }
                        }
                        Outcome::Removed(n)
                    }
                    Op::Sweep { .. } => {
                        swept = true;
                        Outcome::Removed(sweep(&mut entries, &mut expiry, now, stats, removed)?)
                    }
                    Op::Peek { .. } => {
                        if !swept {
                            swept = true;
                            sweep(&mut entries, &mut expiry, now, stats, removed)?;
                        }
                        Outcome::Peek
                    }
                };
                outcomes.push(outcome);
            }
            let mut meta = tx.open_table(META).map_err(storage)?;
            meta.insert(NEXT_SEQ, self.next_seq).map_err(storage)?;
            self.shared.oldest_created_ns = oldest_created(&entries)?;
        }
        tx.commit().map_err(storage)?;
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
        let entries = match tx.open_table(ENTRIES) {
            Ok(entries) => entries,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
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

/// Removes entry `seq` and its expiry index row, updating the gauges.
fn remove_entry(
    entries: &mut redb::Table<'_, u64, &[u8]>,
    expiry: &mut redb::Table<'_, (u64, u64), ()>,
    seq: u64,
    stats: &mut OutboxStats,
) -> Result<Option<RemovedEntry>, OutboxError> {
    let Some(value) = entries.remove(seq).map_err(storage)? else {
        return Ok(None);
    };
    let bytes = value.value().len() as u64;
    let decoded = OutboxEntry::decode(value.value());
    drop(value);
    stats.pending = stats.pending.saturating_sub(1);
    stats.bytes = stats.bytes.saturating_sub(bytes);
    match decoded {
        Ok(entry) => {
            expiry.remove((entry.expires_ns(), seq)).map_err(storage)?;
            Ok(Some(RemovedEntry {
                seq: Sequence(seq),
                id: entry.id,
                stream_key: entry.stream_key,
                created_at: entry.created_at,
                bytes,
            }))
        }
        // An entry we cannot read is gone now; its index row expires harmlessly.
        Err(_) => Ok(Some(RemovedEntry {
            seq: Sequence(seq),
            id: Uuid::nil(),
            stream_key: String::new(),
            created_at: UNIX_EPOCH,
            bytes,
        })),
    }
}
