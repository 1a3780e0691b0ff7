//! The hub's side of the pipeline, created on first use by whichever layer reaches it first:
//! the queue stream (the forwarder publishes into it, consumers read it), the dead-letter stream,
//! and the KV buckets a consumer remembers what it ran in (lane states, processed ids). Only
//! JetStream setup lives here; what travels in them is in [`lattice_protocol::queue`].

use async_nats::jetstream::{self, kv, stream};
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{deadletter_stream, lanes_bucket, processed_bucket, queue_stream};
use lattice_protocol::subject::Subject;

use super::PROCESSED_MAX_AGE;

/// Creates the queue stream when missing.
pub(super) async fn queue_stream_ready(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<()> {
    ensure_stream(
        js,
        queue_stream(lattice),
        Subject::all_queued(lattice).to_string(),
    )
    .await
}

/// Creates the stream `name` over `subjects` when missing, as the queue and dead-letter streams
/// are: Limits retention, file storage.
async fn ensure_stream(
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

/// Creates the dead-letter stream when missing.
pub(super) async fn deadletter_stream_ready(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<()> {
    ensure_stream(
        js,
        deadletter_stream(lattice),
        Subject::all_dead_letters(lattice).to_string(),
    )
    .await
}

/// Opens (creating) the bucket of ids of requeued items that ran.
pub(super) async fn processed_store(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<kv::Store> {
    let what = "ids of queued calls and messages that were run";
    remembering_bucket(js, &processed_bucket(lattice), what).await
}

/// Opens (creating) the bucket of each consumer's lane states.
pub(super) async fn lanes_store(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<kv::Store> {
    let what = "per queue consumer and lane, the last item run";
    remembering_bucket(js, &lanes_bucket(lattice), what).await
}

/// Opens (creating) a bucket of what the target side remembers of items it ran, kept
/// [`PROCESSED_MAX_AGE`]: the processed ids, the lane states.
async fn remembering_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
) -> anyhow::Result<kv::Store> {
    lattice_protocol::jetstream::ensure_kv_expiring(js, bucket, 1, PROCESSED_MAX_AGE, description)
        .await
        .map_err(|e| anyhow::anyhow!("opening bucket {bucket}: {e:#}"))
}
