//! The hub's side of the pipeline, created on first use by whichever layer reaches it first:
//! the queue stream (the forwarder publishes into it, consumers read it), the dead-letter stream,
//! and the KV buckets a consumer remembers what it ran in (lane states, processed ids). Only
//! JetStream setup lives here; what travels in them is in [`lattice_protocol::queue`].

use async_nats::jetstream::{self, kv, stream};
use lattice_protocol::jetstream::{Bucket, Storage, ensure_stream, open_kv};
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{deadletter_stream, lanes_bucket, processed_bucket, queue_stream};
use lattice_protocol::subject::Subject;

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
