//! JetStream contexts (with the hub's domain, for edge hosts), creating KV buckets and streams
//! in a way every supported nats-server accepts and within the lattice's [`Storage`] limits,
//! copying a message's headers, and reading objects consistently on a clustered hub
//! ([`get_object`]).
//!
//! Every stream and bucket Lattice makes is bounded (bytes, and age where its contents expire)
//! and refuses new messages at its limit (`discard: new`) rather than silently dropping old
//! ones: a writer sees the refusal and keeps what it could not store (the forwarder keeps queued
//! items in the outbox). A stream that exists with other limits (made by an older release, or
//! under other flags) is updated in place, never recreated, so nothing in it is lost.
//!
//! async-nats 0.51's `create_key_value` cannot read nats-server 2.9's reply (the one Debian
//! ships), so Lattice creates the bucket's backing stream itself, with the configuration that
//! defines a KV bucket (`KV_<bucket>` over `$KV.<bucket>.>`, rollups allowed, deletes denied,
//! direct get), and then opens it as a KV store. Servers of every version accept that.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, object_store, stream};
use tracing::info;

use crate::clock::{MAX_QUEUED_TTL, MAX_SKEW};

/// One mebibyte.
const MIB: i64 = 1024 * 1024;

/// How much of the hub's JetStream storage a lattice's streams and buckets may take, and how
/// many copies of each a clustered hub keeps. The control plane and hosts take it from their
/// flags; streams are updated to the limits of whoever opened them last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Replicas of every stream and bucket (1 for a single server, 3 for a three-node hub).
    pub replicas: usize,
    /// Bytes the queue stream may hold.
    pub queue_max_bytes: i64,
    /// Bytes the dead-letter stream may hold.
    pub deadletter_max_bytes: i64,
    /// How long a dead letter is kept.
    pub deadletter_max_age: Duration,
    /// Bytes the artifact store may hold.
    pub artifacts_max_bytes: i64,
    /// Bytes each KV bucket may hold.
    pub kv_max_bytes: i64,
    /// Bytes the events stream may hold (the oldest events go first at the limit).
    pub events_max_bytes: i64,
    /// How long an event is kept.
    pub events_max_age: Duration,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            replicas: 1,
            queue_max_bytes: 1024 * MIB,
            deadletter_max_bytes: 256 * MIB,
            deadletter_max_age: Duration::from_secs(30 * 24 * 3600),
            artifacts_max_bytes: 2048 * MIB,
            kv_max_bytes: 256 * MIB,
            events_max_bytes: 64 * MIB,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Storage {
    /// How long the queue stream keeps a message: longer than any queued item's `ttl`
    /// ([`MAX_QUEUED_TTL`]) and the clock skew its readers allow, so age never removes an item
    /// its `ttl` would still deliver.
    pub const QUEUE_MAX_AGE: Duration =
        Duration::from_secs(MAX_QUEUED_TTL.as_secs() + MAX_SKEW.as_secs() + 24 * 3600);

    /// `config` with this lattice's limits for a stream of `max_bytes` and `max_age`
    /// (zero: unbounded age), refusing new messages at the limit.
    pub fn limit(
        &self,
        config: stream::Config,
        max_bytes: i64,
        max_age: Duration,
    ) -> stream::Config {
        stream::Config {
            max_bytes,
            max_age,
            discard: stream::DiscardPolicy::New,
            num_replicas: self.replicas,
            ..config
        }
    }
}

/// Whether `existing` lacks the limits `wanted` sets (bytes, age, discard policy, replicas).
fn limits_differ(existing: &stream::Config, wanted: &stream::Config) -> bool {
    existing.max_bytes != wanted.max_bytes
        || existing.max_age != wanted.max_age
        || existing.discard != wanted.discard
        || existing.num_replicas.max(1) != wanted.num_replicas.max(1)
}

/// Creates the stream `config` names when missing; when it exists with other limits, updates
/// them in place (keeping everything else of its configuration, and its messages).
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<stream::Stream> {
    let name = config.name.clone();
    let mut stream = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(_) => {
            let max_bytes = config.max_bytes;
            return js
                .get_or_create_stream(config)
                .await
                .map_err(|e| refused(&format!("creating the stream {name}"), max_bytes, e));
        }
    };
    let existing = stream.cached_info().config.clone();
    if limits_differ(&existing, &config) {
        let updated = stream::Config {
            max_bytes: config.max_bytes,
            max_age: config.max_age,
            discard: config.discard,
            num_replicas: config.num_replicas,
            ..existing.clone()
        };
        js.update_stream(&updated).await.map_err(|e| {
            refused(
                &format!(
                    "updating the limits of the stream {name} (max age {:?}, {} replicas; check \
                     that the hub has as many servers)",
                    updated.max_age, updated.num_replicas
                ),
                updated.max_bytes,
                e,
            )
        })?;
        info!(
            stream = %name,
            from_max_bytes = existing.max_bytes,
            max_bytes = updated.max_bytes,
            max_age = ?updated.max_age,
            replicas = updated.num_replicas,
            "updated the stream's limits"
        );
        stream.info().await?;
    }
    Ok(stream)
}

/// A stream the hub refused to make or grow for want of room: JetStream reserves a stream's
/// limit when the stream is made, within the server's `max_file_store`, which is 75 % of the
/// disk's free space unless its configuration sets one. A hub on a small or full disk refuses
/// Lattice's buckets long before anything is written to them, and trying again does not help
/// until an operator acts; its message says what to do.
#[derive(Debug, thiserror::Error)]
#[error(
    "{doing}: {reason}: the hub's JetStream cannot reserve the {mib} MiB this stream may hold. \
     JetStream reserves every stream's limit up front, within the server's max_file_store (75 % \
     of its disk's free space unless its configuration sets one); Lattice's streams reserve \
     about 6 GiB in all with the default limits. Free disk space on the hub, set `jetstream {{ \
     max_file_store: 16G }}` in its configuration, or lower Lattice's limits (--kv-max-bytes, \
     --queue-max-bytes, --deadletter-max-bytes of the control plane and hosts; \
     --artifacts-max-bytes, --events-max-bytes of the control plane)"
)]
pub struct StorageRefused {
    doing: String,
    reason: String,
    mib: i64,
}

/// The error of `doing` (creating or updating a stream of `max_bytes`) that the server refused
/// with `e`: a [`StorageRefused`] when it refused for room.
pub fn refused(doing: &str, max_bytes: i64, e: impl std::fmt::Display) -> anyhow::Error {
    let reason = e.to_string();
    if reason.contains("insufficient storage") {
        anyhow::Error::new(StorageRefused {
            doing: doing.to_string(),
            reason,
            mib: max_bytes / MIB,
        })
    } else {
        anyhow::anyhow!("{doing}: {reason}")
    }
}

/// A KV bucket as Lattice makes it.
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    /// Its name.
    pub name: &'a str,
    /// Values kept per key.
    pub history: i64,
    /// How long a value is kept (zero: until replaced).
    pub max_age: Duration,
    /// What it holds, for people listing the hub's streams.
    pub description: &'a str,
}

/// A copy of `headers` (none: empty) without the headers named in `drop` (any case), every
/// value of the others kept: what a message republished elsewhere (a dead letter, a requeued
/// one) carries over.
pub fn headers_without(headers: Option<&HeaderMap>, drop: &[&str]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if drop.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            continue;
        }
        for value in values {
            out.append(name, value.as_str());
        }
    }
    out
}

/// JetStream on `client`, under `domain` when one is set: a host, or a provider process it
/// starts, on an edge leaf reaches the hub's JetStream by the hub's domain.
pub fn context(client: &async_nats::Client, domain: Option<&str>) -> jetstream::Context {
    match domain {
        Some(domain) => jetstream::with_domain(client.clone(), domain),
        None => jetstream::new(client.clone()),
    }
}

/// Opens the KV bucket `name`, creating it (keeping `history` values per key) with the default
/// [`Storage`] limits if missing. An existing bucket is opened as it is: this is also how a
/// provider opens a bucket someone else made; the lattice's own buckets use [`open_kv`].
pub async fn ensure_kv(
    js: &jetstream::Context,
    name: &str,
    history: i64,
    description: &str,
) -> anyhow::Result<kv::Store> {
    ensure_kv_expiring(js, name, history, std::time::Duration::ZERO, description).await
}

/// [`ensure_kv`] for a bucket whose values expire after `max_age` (zero: never).
pub async fn ensure_kv_expiring(
    js: &jetstream::Context,
    name: &str,
    history: i64,
    max_age: Duration,
    description: &str,
) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let bucket = Bucket {
        name,
        history,
        max_age,
        description,
    };
    open_kv(js, bucket, &Storage::default()).await
}

/// Opens `bucket`, creating it within `storage`'s limits if missing, or updating its limits when
/// they differ.
pub async fn open_kv(
    js: &jetstream::Context,
    bucket: Bucket<'_>,
    storage: &Storage,
) -> anyhow::Result<kv::Store> {
    let name = bucket.name;
    let config = stream::Config {
        name: format!("KV_{name}"),
        description: Some(bucket.description.to_string()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: bucket.history,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    };
    let config = storage.limit(config, storage.kv_max_bytes, bucket.max_age);
    ensure_stream(js, config)
        .await
        .with_context(|| format!("opening the bucket {name}"))?;
    Ok(js.get_key_value(name).await?)
}

/// How long [`get_object`] waits for a replica to catch up with an object its leader has.
const REPLICA_CATCH_UP: Duration = Duration::from_secs(2);

/// Object `name` of `store` (the object store `bucket`), `None` if it has none.
///
/// `ObjectStore::get` reads the object's entry with a direct get, which on a clustered hub any
/// replica answers: one that has not caught up yet says "not found" for an object just pushed.
/// So a "not found" is checked with the stream's leader, and when the leader has the object the
/// get is tried again until a replica has it too (a few milliseconds, at most
/// [`REPLICA_CATCH_UP`]).
pub async fn get_object(
    js: &jetstream::Context,
    store: &object_store::ObjectStore,
    bucket: &str,
    name: &str,
) -> anyhow::Result<Option<object_store::Object>> {
    use object_store::GetErrorKind;
    let give_up = tokio::time::Instant::now() + REPLICA_CATCH_UP;
    let mut checked = false;
    loop {
        match store.get(name).await {
            Ok(object) => return Ok(Some(object)),
            Err(e) if e.kind() == GetErrorKind::NotFound => {
                if !checked {
                    let stream = js
                        .get_stream(format!("OBJ_{bucket}"))
                        .await
                        .with_context(|| format!("opening the object store {bucket}"))?;
                    if !object_stored(&stream, name).await? {
                        return Ok(None);
                    }
                }
                checked = true;
                if tokio::time::Instant::now() >= give_up {
                    anyhow::bail!(
                        "object {name} is stored but no replica of {bucket} serves it yet; \
                         try again"
                    );
                }
                // Polled: a replica catching up announces nothing to wait for.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("reading object {name} of {bucket}")),
        }
    }
}

/// Whether the object store whose backing stream is `stream` (`OBJ_<bucket>`) holds `name` (not
/// deleted), as the stream's leader says.
pub async fn object_stored(stream: &stream::Stream, name: &str) -> anyhow::Result<bool> {
    use base64::Engine as _;
    let stream_name = &stream.cached_info().config.name;
    let bucket = stream_name.strip_prefix("OBJ_").unwrap_or(stream_name);
    let subject = format!(
        "$O.{bucket}.M.{}",
        base64::engine::general_purpose::URL_SAFE.encode(name)
    );
    match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => Ok(
            serde_json::from_slice::<object_store::ObjectInfo>(&message.payload)
                .is_ok_and(|info| !info.deleted),
        ),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading object {name} of {bucket}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_without_drops_the_named_ones_in_any_case_and_keeps_every_value() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "1");
        headers.append("Lattice-Link", "a");
        headers.append("Lattice-Link", "b");
        let out = headers_without(Some(&headers), &["nats-msg-id"]);
        assert!(out.get("Nats-Msg-Id").is_none());
        let links: Vec<&str> = out.get_all("Lattice-Link").map(|v| v.as_str()).collect();
        assert_eq!(links, ["a", "b"]);
        assert!(headers_without(None, &[]).is_empty());
    }

    #[test]
    fn limits_refuse_new_messages_and_differ_on_any_limit() {
        let storage = Storage::default();
        let wanted = storage.limit(stream::Config::default(), 1024, Duration::from_secs(60));
        assert_eq!(wanted.discard, stream::DiscardPolicy::New);
        assert!(!limits_differ(&wanted, &wanted));
        let unbounded = stream::Config::default();
        assert!(
            limits_differ(&unbounded, &wanted),
            "a stream made without limits gets them"
        );
        let more = Storage {
            replicas: 3,
            ..Storage::default()
        };
        let replicated = more.limit(stream::Config::default(), 1024, Duration::from_secs(60));
        assert!(limits_differ(&wanted, &replicated));
        assert!(Storage::QUEUE_MAX_AGE > MAX_QUEUED_TTL + MAX_SKEW);
    }
}
