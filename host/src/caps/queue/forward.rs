//! The forwarder: moves outbox entries, oldest first, to the hub's queue stream and removes them
//! once the stream acknowledged them. It knows nothing of calls or messages: each entry's
//! envelope ([`Queued`]) names its stream subject.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, stream};
use lattice_protocol::envelope;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{
    CALL_ID_HEADER, LINK_HEADER, MAX_ATTEMPTS_HEADER, MSG_ID_HEADER, QUEUE_SUBJECT_HEADER, Queued,
    queue_stream, queue_stream_subjects, queue_subject,
};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{BATCH, Counts, MAX_BACKOFF, forget};
use crate::caps::LatticeLink;
use crate::outbox::{Outbox, OutboxError, Sequence};

/// Creates the queue stream when missing.
pub(super) async fn queue_stream_ready(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<()> {
    ensure_stream(js, queue_stream(lattice), queue_stream_subjects(lattice)).await
}

/// Creates the stream `name` over `subjects` when missing, as the queue and dead-letter streams
/// are: Limits retention, file storage.
pub(super) async fn ensure_stream(
    js: &jetstream::Context,
    name: String,
    subjects: String,
) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subjects],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the stream {name}: {e}"))?;
    Ok(())
}

/// The forwarder: outbox → hub stream, until aborted.
pub(super) async fn forward(
    outbox: Outbox,
    counts: Counts,
    lattice: LatticeLink,
    wake: Arc<Notify>,
) {
    let mut backoff = Duration::from_millis(200);
    // Whether the stream is known to exist: checked again only after a failure, so that a hub
    // slow to answer API requests does not hold up publishing.
    let mut ready = false;
    loop {
        match drain(&outbox, &counts, &lattice, &mut ready).await {
            Ok(()) => {
                backoff = Duration::from_millis(200);
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            Err(e) => {
                ready = false;
                debug!(error = %format!("{e:#}"), retry_in = ?backoff, "forwarding queued entries failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Entries published and not yet acknowledged by the stream (nats.go's default for async
/// publish is 4,000): enough to keep the link busy across a round trip.
const WINDOW: usize = 4096;
/// Acknowledged entries removed from the outbox per operation.
const REMOVE_CHUNK: usize = 1024;
/// Removals in progress at once; the outbox's writer commits them together.
const REMOVALS: usize = 8;

/// An entry published, its acknowledgement awaited.
type InFlight = (Sequence, String, PublishAckFuture);

/// Forwards everything the outbox holds, in sequence order, until nothing is left that was not
/// published and acknowledged.
///
/// Pipelined: entries are published while the acknowledgements of up to [`WINDOW`] earlier ones
/// are awaited, and acknowledged entries are removed in chunks by tasks of their own, so neither
/// the round trip to the hub nor the outbox's fsync stalls the stream of publishes. An entry is
/// removed only once the stream has it. After a failure, everything not yet acknowledged is
/// published again from the oldest (the stream drops copies by `Nats-Msg-Id` within its
/// duplicate window; the target's processed ids catch the rest), so order per link holds.
async fn drain(
    outbox: &Outbox,
    counts: &Counts,
    lattice: &LatticeLink,
    ready: &mut bool,
) -> anyhow::Result<()> {
    let mut removals: VecDeque<JoinHandle<Result<(), OutboxError>>> = VecDeque::new();
    let mut acked: Vec<(Sequence, String)> = Vec::new();
    let result = publish_all(outbox, counts, lattice, ready, &mut acked, &mut removals).await;
    // What the stream acknowledged is removed even after a failure, and every removal is done
    // before the next drain peeks from the oldest entry again.
    if !acked.is_empty() {
        removals.push_back(remove(outbox, counts, std::mem::take(&mut acked)));
    }
    let mut removal_failed = None;
    for removal in removals {
        if let Err(e) = removal
            .await
            .map_err(|e| OutboxError::Storage(e.to_string()))
            .and_then(|r| r)
        {
            removal_failed = Some(e);
        }
    }
    result?;
    match removal_failed {
        Some(e) => Err(anyhow::anyhow!(
            "removing forwarded entries from the outbox: {e}"
        )),
        None => Ok(()),
    }
}

async fn publish_all(
    outbox: &Outbox,
    counts: &Counts,
    lattice: &LatticeLink,
    ready: &mut bool,
    acked: &mut Vec<(Sequence, String)>,
    removals: &mut VecDeque<JoinHandle<Result<(), OutboxError>>>,
) -> anyhow::Result<()> {
    let js = &lattice.jetstream;
    let mut cursor: Option<Sequence> = None;
    let mut window: VecDeque<InFlight> = VecDeque::with_capacity(WINDOW);
    loop {
        let batch = match cursor {
            None => outbox.peek(BATCH).await?,
            Some(after) => outbox.peek_after(after, BATCH).await?,
        };
        if batch.is_empty() {
            if window.is_empty() {
                return Ok(());
            }
            // Nothing more to publish for now: settle what is in flight, then look again.
            while !window.is_empty() {
                settle_oldest(&mut window, acked).await?;
            }
            continue;
        }
        if !*ready {
            queue_stream_ready(js, &lattice.lattice).await?;
            *ready = true;
        }
        for (seq, entry) in batch {
            cursor = Some(seq);
            let queued: Option<Queued> = envelope::decode(&entry.payload).ok();
            let Some(subject) =
                stream_subject(&lattice.lattice, queued.as_ref(), &entry.stream_key)
            else {
                warn!(stream = %entry.stream_key, "dropping a queued entry with no stream subject (undecodable, with a malformed stream key)");
                acked.push((seq, entry.stream_key));
                continue;
            };
            let mut headers = HeaderMap::new();
            let id = entry.id.to_string();
            headers.insert(MSG_ID_HEADER, id.as_str());
            headers.insert(CALL_ID_HEADER, id.as_str());
            headers.insert(LINK_HEADER, entry.stream_key.as_str());
            headers.insert(QUEUE_SUBJECT_HEADER, subject.as_str());
            if let Some(q) = &queued {
                headers.insert(MAX_ATTEMPTS_HEADER, q.max_attempts.to_string().as_str());
            }
            if window.len() >= WINDOW {
                settle_oldest(&mut window, acked).await?;
            }
            let ack = js
                .publish_with_headers(subject, headers, entry.payload)
                .await
                .context("publishing a queued entry")?;
            window.push_back((seq, entry.stream_key, ack));
            if acked.len() >= REMOVE_CHUNK {
                if removals.len() >= REMOVALS
                    && let Some(oldest) = removals.pop_front()
                {
                    oldest
                        .await
                        .map_err(|e| OutboxError::Storage(e.to_string()))??;
                }
                removals.push_back(remove(outbox, counts, std::mem::take(acked)));
            }
        }
    }
}

/// Awaits the oldest acknowledgement in flight.
async fn settle_oldest(
    window: &mut VecDeque<InFlight>,
    acked: &mut Vec<(Sequence, String)>,
) -> anyhow::Result<()> {
    let Some((seq, key, ack)) = window.pop_front() else {
        return Ok(());
    };
    match tokio::time::timeout(Duration::from_secs(10), ack).await {
        Ok(Ok(_)) => {
            acked.push((seq, key));
            Ok(())
        }
        Ok(Err(e)) => Err(anyhow::anyhow!("the stream refused a queued entry: {e}")),
        Err(_) => Err(anyhow::anyhow!("no acknowledgement from the stream")),
    }
}

/// Removes forwarded entries from the outbox in a task of its own.
fn remove(
    outbox: &Outbox,
    counts: &Counts,
    done: Vec<(Sequence, String)>,
) -> JoinHandle<Result<(), OutboxError>> {
    let (outbox, counts) = (outbox.clone(), counts.clone());
    tokio::spawn(async move {
        let (seqs, keys): (Vec<Sequence>, Vec<String>) = done.into_iter().unzip();
        outbox.remove(&seqs).await?;
        forget(&counts, keys);
        Ok(())
    })
}

/// Where an entry goes: the subject its envelope names; for entries written before envelopes
/// named one (calls only), the call subject of its stream key `app/source -> target`.
fn stream_subject(lattice: &LatticeName, queued: Option<&Queued>, key: &str) -> Option<String> {
    if let Some(q) = queued.filter(|q| !q.subject.is_empty()) {
        return Some(q.subject.clone());
    }
    let (from, target) = key.split_once(" -> ")?;
    Some(queue_subject(lattice, from.split_once('/')?.0, target))
}
