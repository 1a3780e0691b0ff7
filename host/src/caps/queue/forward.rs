//! The forwarder: moves outbox entries, oldest first, to the hub's queue stream and removes them
//! once the stream acknowledged them. It knows nothing of calls or messages: each entry's
//! envelope ([`Queued`]) names its stream subject.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use lattice_protocol::envelope;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{
    CALL_ID_HEADER, LINK_HEADER, MAX_ATTEMPTS_HEADER, MSG_ID_HEADER, QUEUE_SUBJECT_HEADER, Queued,
    queue_stream, queue_stream_subjects, queue_subject,
};
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::{BATCH, Counts, MAX_BACKOFF, forget};
use crate::caps::LatticeLink;
use crate::outbox::Outbox;

/// Creates the queue stream when missing.
pub(super) async fn queue_stream_ready(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: queue_stream(lattice),
        subjects: vec![queue_stream_subjects(lattice)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the queue stream: {e}"))?;
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
        let queued: Option<Queued> = envelope::decode(&entry.payload).ok();
        let Some(subject) = stream_subject(&lattice.lattice, queued.as_ref(), &entry.stream_key)
        else {
            warn!(stream = %entry.stream_key, "dropping a queued entry with no stream subject (undecodable, with a malformed stream key)");
            outbox.remove(&[*seq]).await?;
            forget(counts, [entry.stream_key.clone()]);
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
        let ack = js
            .publish_with_headers(subject, headers, entry.payload.clone())
            .await
            .context("publishing a queued entry")?;
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
                failed = Some(anyhow::anyhow!("the stream refused a queued entry: {e}"));
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

/// Where an entry goes: the subject its envelope names; for entries written before envelopes
/// named one (calls only), the call subject of its stream key `app/source -> target`.
fn stream_subject(lattice: &LatticeName, queued: Option<&Queued>, key: &str) -> Option<String> {
    if let Some(q) = queued.filter(|q| !q.subject.is_empty()) {
        return Some(q.subject.clone());
    }
    let (from, target) = key.split_once(" -> ")?;
    Some(queue_subject(lattice, from.split_once('/')?.0, target))
}
