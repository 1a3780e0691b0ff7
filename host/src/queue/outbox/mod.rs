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
//! batch queues up, so the busier the outbox, the more appends share an fsync. A batch of reads
//! alone is not committed; a forwarder's bulk removal (256 entries or more, with no append in
//! its batch or the one before) is committed without fsync, made durable by the next durable
//! commit (at the latest the 32nd): a removal lost in a crash only brings back an entry the hub
//! already has, which the receiver of its lane knows as a copy.
//!
//! **Order.** Sequences are assigned by the writer in arrival order and never reused (the next
//! sequence is stored with the entries); [`Outbox::peek`] returns entries in sequence order, so
//! the entries of one stream key (sender → target) come out in the order their appends were made
//! by a caller that awaits each append before the next.
//!
//! **Lanes.** Each entry belongs to an ordering lane ([`OutboxEntry::lane`], by default its stream
//! key): downstream, the entries of one lane are delivered in order. The writer gives each entry
//! its lane sequence ([`OutboxEntry::lane_seq`]: 1, 2, 3, … per lane) in the append's own
//! transaction, where the lane's next sequence is stored, so a sequence is never reused: not
//! after its entry is removed, dropped or expired, not after a reopen, and a batch that fails to
//! commit consumes none. With it, the receiver of a lane tells a gap (an entry it has not seen
//! yet) from a duplicate with one number per lane instead of one record per entry;
//! [`Outbox::id`] names the outbox the lanes belong to, and [`Outbox::lanes`] gives a forwarder
//! every lane's next sequence after a restart.
//!
//! **Limits.** [`OutboxConfig::capacity_entries`] and [`OutboxConfig::capacity_bytes`] bound the
//! outbox (bytes are the entries' encoded size: payload, stream key, lane and 53 bytes). When an
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
//!
//! **Layout.** This file is the public API: [`Outbox`] (the handle, whose operations are
//! messages to the writer), [`OutboxEntry`] and its encoding, [`OutboxConfig`], [`OutboxError`],
//! [`OutboxStats`] and [`OutboxEvent`]. `store` is the writer thread: its redb database, the
//! batches it commits, capacity, expiry, lane sequences and recovery after a storage failure.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use store::{Op, Reply, Store};

mod store;

// Entry encoding (integers little-endian), version 2:
//
//   offset  size  field
//        0     1  format version (2)
//        1    16  id (UUID bytes)
//       17     8  created_at, ns since the Unix epoch
//       25     8  ttl, ns
//       33     4  flags, reserved (0)
//       37     4  stream key length K
//       41     8  lane sequence (written by the writer at append: see `set_lane_seq`)
//       49     4  lane length L
//       53     K  stream key (UTF-8)
//     53+K     L  lane (UTF-8)
//   53+K+L     …  payload (to the end)
//
// The fixed-size fields come first, so the writer can set the lane sequence in place without
// re-encoding. Version 1 (no lane) was a development format that no release wrote: it is refused
// like any unknown version.
const FORMAT_VERSION: u8 = 2;
/// Where the lane sequence is: after the version, id, times, flags and key length.
const LANE_SEQ_AT: usize = 1 + 16 + 8 + 8 + 4 + 4;
/// The header: every fixed-size field.
const HEADER: usize = LANE_SEQ_AT + 8 + 4;
/// Encoded size of an entry beyond its stream key, lane and payload.
const ENTRY_OVERHEAD: usize = HEADER;

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
    /// Sender and target, e.g. `app/source-component -> target`; the default lane.
    pub stream_key: String,
    /// The ordering lane: entries of one lane are delivered in order downstream.
    pub lane: String,
    /// The entry's sequence in its lane: 1, 2, 3, … assigned by the writer at append (what the
    /// caller sets is ignored), never reused.
    pub lane_seq: u64,
    /// When the message was made (kept to the nanosecond until the year 2554).
    pub created_at: SystemTime,
    /// How long after `created_at` the message is still worth delivering.
    pub ttl: Duration,
    /// The message itself.
    pub payload: Bytes,
}

impl OutboxEntry {
    /// A new entry made now, with a fresh UUID v7, in the lane of its stream key.
    pub fn new(stream_key: impl Into<String>, payload: impl Into<Bytes>, ttl: Duration) -> Self {
        let stream_key = stream_key.into();
        Self {
            id: Uuid::now_v7(),
            lane: stream_key.clone(),
            stream_key,
            lane_seq: 0,
            created_at: SystemTime::now(),
            ttl,
            payload: payload.into(),
        }
    }

    /// The same entry in ordering lane `lane` instead of its stream key's.
    pub fn in_lane(mut self, lane: impl Into<String>) -> Self {
        self.lane = lane.into();
        self
    }

    /// When the entry expires (saturating).
    pub fn expires_at(&self) -> SystemTime {
        self.created_at
            .checked_add(self.ttl)
            .unwrap_or_else(|| UNIX_EPOCH + Duration::from_nanos(u64::MAX))
    }

    /// The size the entry takes in the outbox (what [`OutboxConfig::capacity_bytes`] counts).
    pub fn encoded_len(&self) -> usize {
        ENTRY_OVERHEAD + self.stream_key.len() + self.lane.len() + self.payload.len()
    }

    /// When an encoded entry expires, read from its header alone, without copying its key, lane
    /// or payload.
    fn encoded_expires_ns(bytes: &[u8]) -> Option<u64> {
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        Some(u64_at(17)?.saturating_add(u64_at(25)?))
    }

    fn expires_ns(&self) -> u64 {
        nanos(self.created_at)
            .saturating_add(u64::try_from(self.ttl.as_nanos()).unwrap_or(u64::MAX))
    }

    fn encode(&self) -> Result<Vec<u8>, OutboxError> {
        let key_len = u32::try_from(self.stream_key.len())
            .map_err(|_| OutboxError::InvalidEntry("stream key longer than 4 GiB".into()))?;
        let lane_len = u32::try_from(self.lane.len())
            .map_err(|_| OutboxError::InvalidEntry("lane longer than 4 GiB".into()))?;
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
        out.extend_from_slice(&self.lane_seq.to_le_bytes());
        out.extend_from_slice(&lane_len.to_le_bytes());
        out.extend_from_slice(self.stream_key.as_bytes());
        out.extend_from_slice(self.lane.as_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Sets the lane sequence of an entry encoded by [`OutboxEntry::encode`], in place.
    fn set_lane_seq(encoded: &mut [u8], lane_seq: u64) {
        if let Some(at) = encoded.get_mut(LANE_SEQ_AT..LANE_SEQ_AT + 8) {
            at.copy_from_slice(&lane_seq.to_le_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let version = *bytes.first().ok_or("empty entry")?;
        if version != FORMAT_VERSION {
            return Err(format!("unknown entry format {version}"));
        }
        let header_len = HEADER;
        let header = bytes
            .get(..header_len)
            .ok_or_else(|| format!("entry of {} bytes is shorter than its header", bytes.len()))?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let len_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&header[at..at + 4]);
            u32::from_le_bytes(b) as usize
        };
        let text = |range: std::ops::Range<usize>, what: &str| {
            let raw = bytes
                .get(range)
                .ok_or_else(|| format!("entry's {what} runs past its end"))?;
            String::from_utf8(raw.to_vec()).map_err(|e| format!("entry's {what}: {e}"))
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&header[1..17]);
        let created_ns = u64_at(17);
        let ttl_ns = u64_at(25);
        let key_end = header_len.saturating_add(len_at(37));
        let stream_key = text(header_len..key_end, "stream key")?;
        let lane_end = key_end.saturating_add(len_at(LANE_SEQ_AT + 8));
        let (lane, lane_seq, payload_at) = (
            text(key_end..lane_end, "lane")?,
            u64_at(LANE_SEQ_AT),
            lane_end,
        );
        Ok(Self {
            id: Uuid::from_bytes(id),
            stream_key,
            lane,
            lane_seq,
            created_at: UNIX_EPOCH + Duration::from_nanos(created_ns),
            ttl: Duration::from_nanos(ttl_ns),
            payload: Bytes::copy_from_slice(&bytes[payload_at..]),
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
    /// Its lane.
    pub lane: String,
    /// Its lane sequence, which the lane's receiver will never see (0 if the entry could not be
    /// read).
    pub lane_seq: u64,
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
    /// Write transactions committed since the outbox was opened (every one holding an append
    /// fsync'd).
    pub commits: u64,
    /// Batches that failed to commit since the outbox was opened.
    pub storage_failures: u64,
}

#[derive(Debug, Default, Clone)]
struct Shared {
    stats: OutboxStats,
    oldest_created_ns: Option<u64>,
}

/// A handle on an open outbox; clones share it. See the [module docs](self).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    id: Uuid,
    tx: Option<mpsc::Sender<Op>>,
    shared: Arc<Mutex<Shared>>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.inner.path)
            .field("id", &self.inner.id)
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
        let id = store.id;
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
                id,
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

    /// The outbox's identity: a random UUID (v4) stored in the database when it was created
    /// (or first opened by a build that has it), the same on every reopen of the file. With a
    /// lane it names a sequence of [`OutboxEntry::lane_seq`]s.
    pub fn id(&self) -> Uuid {
        self.inner.id
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

    /// Every lane the outbox has ever assigned a sequence in, with its next lane sequence (one
    /// more than the last assigned), in lane order; lanes whose entries are all gone included.
    /// A forwarder reads it after a restart to learn where each lane stands.
    pub async fn lanes(&self) -> Result<Vec<(String, u64)>, OutboxError> {
        self.call(|reply| Op::Lanes { reply }).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_2_round_trips_and_encoded_len_counts_every_byte() {
        let mut entry = OutboxEntry::new("app/a -> t", b"payload".to_vec(), Duration::from_secs(9))
            .in_lane("lane-1");
        entry.lane_seq = 7;
        let mut encoded = entry.encode().expect("encode");
        assert_eq!(encoded[0], FORMAT_VERSION);
        assert_eq!(encoded.len(), entry.encoded_len());
        assert_eq!(OutboxEntry::decode(&encoded).expect("decode"), entry);

        // The writer sets the lane sequence in place.
        OutboxEntry::set_lane_seq(&mut encoded, 42);
        let decoded = OutboxEntry::decode(&encoded).expect("decode");
        assert_eq!(decoded.lane_seq, 42);
        assert_eq!(
            (decoded.lane.as_str(), decoded.payload),
            ("lane-1", entry.payload)
        );
    }

    #[test]
    fn truncated_or_unknown_entries_are_errors() {
        let entry = OutboxEntry::new("key", b"p".to_vec(), Duration::from_secs(1)).in_lane("lane");
        let encoded = entry.encode().expect("encode");
        // Cut inside the lane.
        let cut = HEADER + "key".len() + 2;
        assert!(OutboxEntry::decode(&encoded[..cut]).is_err());
        assert!(OutboxEntry::decode(&encoded[..HEADER - 1]).is_err());
        assert!(OutboxEntry::decode(&[]).is_err());
        // Version 1, a development format without lanes, is no longer read.
        for version in [1, 3] {
            let mut unknown = encoded.clone();
            unknown[0] = version;
            assert!(OutboxEntry::decode(&unknown).is_err());
        }
    }
}
