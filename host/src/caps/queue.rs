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
//! runs it again on redelivery.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use futures::StreamExt as _;
use lattice_protocol::assignment::{OnFull, QueuedDelivery};
use lattice_protocol::envelope;
use lattice_protocol::names::{ComponentName, LatticeName};
use lattice_protocol::rpc::{CallError, CallErrorKind, RpcCall};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use super::calls::{Loaded, deliver};
use super::{LatticeLink, WorkloadCtx};
use crate::outbox::{Outbox, OutboxConfig, OutboxEntry, OutboxError, OutboxEvent, Sequence};

/// How long processed ids are remembered: longer than any outage a queued call may wait out.
const PROCESSED_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries forwarded per batch.
const BATCH: usize = 256;
/// The longest wait between two attempts to reach the hub.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a delivered call may run.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Header: the delivery attempts the link allows.
const MAX_ATTEMPTS_HEADER: &str = "Lattice-Max-Attempts";
/// Header (dead letters): the last error.
const ERROR_HEADER: &str = "Lattice-Error";

/// The stream queued calls travel in.
pub fn queue_stream(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_queue")
}

/// The stream calls that failed `max_attempts` times go to.
pub fn deadletter_stream(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_deadletter")
}

/// The KV bucket of the ids of calls that were run.
pub fn processed_bucket(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_processed")
}

/// The subject queued calls to `app`'s `component` travel on.
pub fn queue_subject(lattice: &LatticeName, app: &str, component: &str) -> String {
    format!("lattice.{lattice}.q.{app}.{component}")
}

/// What one queued call carries, in an outbox entry and in the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QueuedCall {
    /// Delivery attempts before dead-lettering.
    max_attempts: u32,
    /// Unix ms after which the call is not worth running.
    expires_at_ms: u64,
    /// The call.
    call: RpcCall,
}

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
        let task = tokio::spawn(forward(outbox, counts, lattice, wake));
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

/// Creates the queue stream when missing.
async fn queue_stream_ready(js: &jetstream::Context, lattice: &LatticeName) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: queue_stream(lattice),
        subjects: vec![format!("lattice.{lattice}.q.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the queue stream: {e}"))?;
    Ok(())
}

/// The forwarder: outbox → hub stream, until aborted.
async fn forward(outbox: Outbox, counts: Counts, lattice: LatticeLink, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(200);
    let mut ready = false;
    loop {
        match forward_batch(&outbox, &counts, &lattice, &mut ready).await {
            Ok(0) => {
                backoff = Duration::from_millis(200);
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            Ok(_) => backoff = Duration::from_millis(200),
            Err(e) => {
                ready = false;
                debug!(error = %format!("{e:#}"), retry_in = ?backoff, "forwarding queued calls failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Forwards one batch; returns how many entries the stream acknowledged.
async fn forward_batch(
    outbox: &Outbox,
    counts: &Counts,
    lattice: &LatticeLink,
    ready: &mut bool,
) -> anyhow::Result<usize> {
    let batch = outbox.peek(BATCH).await?;
    if batch.is_empty() {
        return Ok(0);
    }
    let js = &lattice.jetstream;
    if !*ready {
        queue_stream_ready(js, &lattice.lattice).await?;
        *ready = true;
    }
    // Published in order, then the acks awaited in order: an entry is removed only once the
    // stream has it, and everything after a failure is published again (deduplicated by id).
    let mut acks = Vec::with_capacity(batch.len());
    for (seq, entry) in &batch {
        let Some((app, target)) = entry
            .stream_key
            .split_once(" -> ")
            .and_then(|(from, target)| Some((from.split_once('/')?.0, target)))
        else {
            warn!(stream = %entry.stream_key, "dropping a queued call with a malformed stream key");
            outbox.remove(&[*seq]).await?;
            continue;
        };
        let queued: Option<QueuedCall> = envelope::decode(&entry.payload).ok();
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", entry.id.to_string().as_str());
        if let Some(q) = &queued {
            headers.insert(MAX_ATTEMPTS_HEADER, q.max_attempts.to_string().as_str());
        }
        let subject = queue_subject(&lattice.lattice, app, target);
        let ack = js
            .publish_with_headers(subject, headers, entry.payload.clone())
            .await
            .context("publishing a queued call")?;
        acks.push((*seq, entry.stream_key.clone(), ack));
    }
    let (mut done, mut keys, mut failed) = (Vec::new(), Vec::new(), None);
    for (seq, key, ack) in acks {
        match tokio::time::timeout(Duration::from_secs(10), ack).await {
            Ok(Ok(_)) => {
                done.push(seq);
                keys.push(key);
            }
            Ok(Err(e)) => {
                failed = Some(anyhow::anyhow!("the stream refused a queued call: {e}"));
                break;
            }
            Err(_) => {
                failed = Some(anyhow::anyhow!("no acknowledgement from the stream"));
                break;
            }
        }
    }
    if !done.is_empty() {
        outbox.remove(&done).await?;
        forget(counts, keys);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(done.len()),
    }
}

/// Delivers the queued calls to `loaded`'s component, until the handle is dropped.
pub fn consume(loaded: Arc<Loaded>, lattice: LatticeLink) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = Instant::now();
            if let Err(e) = consume_once(&loaded, &lattice).await {
                debug!(workload = %loaded.ctx.name(), error = %format!("{e:#}"), "consuming queued calls failed; retrying");
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(200);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }))
}

async fn processed_store(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<kv::Store> {
    let bucket = processed_bucket(lattice);
    lattice_protocol::jetstream::ensure_kv_expiring(
        js,
        &bucket,
        1,
        PROCESSED_MAX_AGE,
        "ids of queued calls that were run",
    )
    .await
    .map_err(|e| anyhow::anyhow!("opening bucket {bucket}: {e:#}"))
}

async fn consume_once(loaded: &Arc<Loaded>, lattice: &LatticeLink) -> anyhow::Result<()> {
    let js = &lattice.jetstream;
    let l = &lattice.lattice;
    queue_stream_ready(js, l).await?;
    let processed = processed_store(js, l).await?;
    let stream = js
        .get_stream(queue_stream(l))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (app, component) = (&loaded.ctx.app, &loaded.ctx.component);
    let durable = format!("queue-{app}-{component}");
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: queue_subject(l, app.as_str(), component.as_str()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: DELIVERY_TIMEOUT + Duration::from_secs(30),
                max_ack_pending: 1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating consumer {durable}: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    info!(workload = %loaded.ctx.name(), "delivering queued calls");
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        handle(loaded, lattice, &processed, message).await?;
    }
    Ok(())
}

/// Runs one queued call, at most once in effect, and settles the message.
async fn handle(
    loaded: &Loaded,
    lattice: &LatticeLink,
    processed: &kv::Store,
    message: jetstream::Message,
) -> anyhow::Result<()> {
    let msg = &message;
    let ack = |kind| async move { msg.ack_with(kind).await.map_err(|e| anyhow::anyhow!("{e}")) };
    let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (delivered, stream_seq) = (info.delivered, info.stream_sequence);
    let id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.to_string())
        .unwrap_or_else(|| format!("seq-{stream_seq}"));
    let queued: QueuedCall = match envelope::decode(&message.payload) {
        Ok(q) => q,
        Err(e) => {
            deadletter(loaded, lattice, &message, &id, &format!("undecodable: {e}")).await?;
            return ack(AckKind::Term).await;
        }
    };
    if unix_ms(SystemTime::now()) > queued.expires_at_ms {
        warn!(workload = %loaded.ctx.name(), %id, "a queued call expired before delivery; dropped");
        return ack(AckKind::Term).await;
    }
    if processed
        .get(&id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .is_some()
    {
        debug!(%id, "queued call already processed; skipping");
        return ack(AckKind::Ack).await;
    }
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    match deliver(loaded, &queued.call, deadline).await {
        Ok(()) => {
            if let Err(e) = processed.create(&id, bytes::Bytes::new()).await
                && !matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
            {
                warn!(%id, error = %e, "could not record a processed call");
            }
            message
                .double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
        Err(e) if delivered >= i64::from(queued.max_attempts) => {
            warn!(workload = %loaded.ctx.name(), %id, attempts = delivered, error = %e, "queued call failed for good; dead-lettered");
            deadletter(loaded, lattice, &message, &id, &e.to_string()).await?;
            ack(AckKind::Term).await
        }
        Err(e) => {
            let delay = Duration::from_millis(250 << delivered.clamp(0, 7)).min(MAX_BACKOFF);
            debug!(%id, attempt = delivered, error = %e, ?delay, "queued call failed; will retry");
            ack(AckKind::Nak(Some(delay))).await
        }
    }
}

async fn deadletter(
    loaded: &Loaded,
    lattice: &LatticeLink,
    message: &jetstream::Message,
    id: &str,
    error: &str,
) -> anyhow::Result<()> {
    let (js, l) = (&lattice.jetstream, &lattice.lattice);
    js.get_or_create_stream(stream::Config {
        name: deadletter_stream(l),
        subjects: vec![format!("lattice.{l}.dlq.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the dead-letter stream: {e}"))?;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers.insert(ERROR_HEADER, error.replace(['\r', '\n'], " ").as_str());
    let subject = format!(
        "lattice.{l}.dlq.{}.{}",
        loaded.ctx.app, loaded.ctx.component
    );
    js.publish_with_headers(subject, headers, message.payload.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .await
        .map_err(|e| anyhow::anyhow!("dead-lettering: {e}"))?;
    Ok(())
}
