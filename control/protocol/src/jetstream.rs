//! JetStream contexts (with the hub's domain, for edge hosts), creating KV buckets in a way
//! every supported nats-server accepts, and copying a message's headers.
//!
//! async-nats 0.51's `create_key_value` cannot read nats-server 2.9's reply (the one Debian
//! ships), so Lattice creates the bucket's backing stream itself, with the configuration that
//! defines a KV bucket (`KV_<bucket>` over `$KV.<bucket>.>`, rollups allowed, deletes denied,
//! direct get), and then opens it as a KV store. Servers of every version accept that.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};

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
}
