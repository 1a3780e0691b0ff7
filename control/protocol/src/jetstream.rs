//! JetStream contexts (with the hub's domain, for edge hosts) and creating KV buckets in a way
//! every supported nats-server accepts.
//!
//! async-nats 0.51's `create_key_value` cannot read nats-server 2.9's reply (the one Debian
//! ships), so Lattice creates the bucket's backing stream itself, with the configuration that
//! defines a KV bucket (`KV_<bucket>` over `$KV.<bucket>.>`, rollups allowed, deletes denied,
//! direct get), and then opens it as a KV store. Servers of every version accept that.

use async_nats::jetstream::{self, kv, stream};

/// JetStream on `client`, under `domain` when one is set: a host, or a provider process it
/// starts, on an edge leaf reaches the hub's JetStream by the hub's domain.
pub fn context(client: &async_nats::Client, domain: Option<&str>) -> jetstream::Context {
    match domain {
        Some(domain) => jetstream::with_domain(client.clone(), domain),
        None => jetstream::new(client.clone()),
    }
}

/// Opens the KV bucket `name`, creating it (keeping `history` values per key) if missing.
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
    max_age: std::time::Duration,
    description: &str,
) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.to_string()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: history,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(name).await?)
}
