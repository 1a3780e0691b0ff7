//! The hub's side of the pipeline, created on first use by whichever layer reaches it first:
//! the queue stream (the forwarder publishes into it, consumers read it), the dead-letter stream,
//! and the KV buckets a consumer remembers what it ran in (lane states, processed ids). Only
//! JetStream setup lives here; what travels in them is in [`lattice_protocol::queue`].

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures::StreamExt as _;
use lattice_protocol::jetstream::{Bucket, Storage, ensure_stream, open_kv};
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{deadletter_stream, lanes_bucket, processed_bucket, queue_stream};
use lattice_protocol::subject::Subject;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::PROCESSED_MAX_AGE;
use crate::caps::LatticeLink;

/// Creates the queue stream when missing, or updates its limits when they differ: the host's
/// `--queue-max-bytes`, an age above any queued item's `ttl`, refusing new items when full (the
/// forwarder keeps them in the outbox meanwhile).
pub(super) async fn queue_stream_ready(lattice: &LatticeLink) -> anyhow::Result<()> {
    let (js, l, storage) = (&lattice.jetstream, &lattice.lattice, &lattice.storage);
    let config = config(queue_stream(l), Subject::all_queued(l).to_string());
    let config = storage.limit(config, storage.queue_max_bytes, Storage::QUEUE_MAX_AGE);
    ensure_stream(js, config).await?;
    Ok(())
}

/// The queue and dead-letter streams' configuration before limits: `name` over `subjects`,
/// Limits retention, file storage.
fn config(name: String, subjects: String) -> stream::Config {
    stream::Config {
        name,
        subjects: vec![subjects],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Creates the dead-letter stream when missing, or updates its limits when they differ.
pub(super) async fn deadletter_stream_ready(lattice: &LatticeLink) -> anyhow::Result<()> {
    let (js, l, storage) = (&lattice.jetstream, &lattice.lattice, &lattice.storage);
    let config = config(
        deadletter_stream(l),
        Subject::all_dead_letters(l).to_string(),
    );
    let config = storage.limit(
        config,
        storage.deadletter_max_bytes,
        storage.deadletter_max_age,
    );
    ensure_stream(js, config).await?;
    Ok(())
}

/// Opens (creating) the bucket of ids of requeued items that ran.
pub(super) async fn processed_store(lattice: &LatticeLink) -> anyhow::Result<kv::Store> {
    let what = "ids of queued calls and messages that were run";
    let (js, l) = (&lattice.jetstream, &lattice.lattice);
    remembering_bucket(js, &processed_bucket(l), what, &lattice.storage).await
}

/// Opens (creating) the bucket of each consumer's lane states.
pub(super) async fn lanes_store(
    js: &jetstream::Context,
    lattice: &LatticeName,
    storage: &Storage,
) -> anyhow::Result<kv::Store> {
    let what = "per queue consumer and lane, the last item run";
    remembering_bucket(js, &lanes_bucket(lattice), what, storage).await
}

/// Opens (creating) a bucket of what the target side remembers of items it ran, kept
/// [`PROCESSED_MAX_AGE`]: the processed ids, the lane states.
async fn remembering_bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    storage: &Storage,
) -> anyhow::Result<kv::Store> {
    let bucket = Bucket {
        name,
        history: 1,
        max_age: PROCESSED_MAX_AGE,
        description,
    };
    open_kv(js, bucket, storage).await
}

/// How often a target's consumer removes what it settled from the queue stream.
const PURGE_EVERY: Duration = Duration::from_secs(5);
/// The share of its byte limit (in percent) past which the queue stream's settled messages are
/// removed.
const RECLAIM_FROM: u64 = 50;

/// Removes from the queue stream, every [`PURGE_EVERY`] until `stop` and while the stream is
/// over half full ([`RECLAIM_FROM`]), the messages on `filter` that every consumer reading them
/// has settled, so that they no longer count against the stream's byte limit. Below that, settled
/// messages stay (an operator may still read them) until the stream's age limit.
///
/// Why: the stream keeps messages by limits (a consumer taken over restarts from its
/// acknowledgement floor, and a target not yet running finds what was queued for it), so a
/// settled message would otherwise stay until the stream's age limit, and with `discard: new`
/// a busy lattice would fill the stream with messages no one needs. A message is removed only
/// once the acknowledgement floor of every consumer whose filter overlaps `filter` is past it.
pub(super) async fn purge_settled(lattice: LatticeLink, filter: String, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match purge_once(&lattice, &filter).await {
            Ok(0) => {}
            Ok(purged) => debug!(%filter, purged, "removed settled items from the queue stream"),
            Err(e) => debug!(%filter, error = %format!("{e:#}"), "removing settled items failed"),
        }
    }
}

async fn purge_once(lattice: &LatticeLink, filter: &str) -> anyhow::Result<u64> {
    let stream = lattice
        .jetstream
        .get_stream(queue_stream(&lattice.lattice))
        .await?;
    let info = stream.cached_info();
    let limit = u64::try_from(info.config.max_bytes).unwrap_or(0);
    if limit == 0 || info.state.bytes * 100 < limit * RECLAIM_FROM {
        return Ok(0);
    }
    let mut floor = u64::MAX;
    let mut consumers = stream.consumers();
    while let Some(info) = consumers.next().await {
        let info = info?;
        let theirs = &info.config.filter_subject;
        if theirs.is_empty() || subjects_overlap(theirs, filter) {
            floor = floor.min(info.ack_floor.stream_sequence);
        }
    }
    if floor == u64::MAX || floor == 0 {
        return Ok(0);
    }
    // Removes the messages on `filter` below `floor + 1`: those every reader has settled.
    let purged = stream.purge().filter(filter).sequence(floor + 1).await?;
    Ok(purged.purged)
}

/// Whether a message could match both subject filters (`*` one token, `>` the rest).
fn subjects_overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subjects_overlap;

    #[test]
    fn subject_filters_overlap_when_a_message_could_match_both() {
        assert!(subjects_overlap("a.b.c", "a.b.c"));
        assert!(subjects_overlap("a.*.c", "a.b.c"));
        assert!(subjects_overlap("a.>", "a.b.c"));
        assert!(subjects_overlap("a.b.c", "a.*.>"));
        assert!(!subjects_overlap("a.b.c", "a.b.d"));
        assert!(!subjects_overlap("a.b", "a.b.c"));
        assert!(!subjects_overlap("a.>", "a"));
        assert!(!subjects_overlap("a.*", "b.*"));
    }
}
