//! `wasi:keyvalue` (store, atomics, batch) on NATS JetStream KV, as a Lattice provider
//! (`keyvalue-nats`): no server beyond the lattice's NATS.
//!
//! Each link names one bucket (target config `bucket`; the control plane writes the app's name
//! when the manifest gives none). `open(identifier)` hands out that bucket for `""`,
//! `"default"`, the bucket's name or the link's name, and `no-such-store` otherwise. A bucket is
//! created on first use. Counters are decimal text (so `get` reads them as a person would),
//! incremented by compare-and-set. `list-keys` cursors are offsets into the sorted keys.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use futures::TryStreamExt as _;
use lattice_provider_sdk::{Call, LinkId, LinkInfo, Provider, ProviderError, Reply, unsupported};

/// The provider's name in links.
pub const NAME: &str = lattice_provider_sdk::catalog::KEYVALUE_NATS.name;

/// Keys per `list-keys` page.
const PAGE: usize = 1000;

/// Attempts at a compare-and-set increment before giving up (each loses only to a concurrent
/// writer of the same key).
const INCREMENT_ATTEMPTS: usize = 64;

/// The provider: links to buckets, and the buckets opened so far.
#[derive(Debug)]
pub struct NatsKv {
    jetstream: jetstream::Context,
    storage: lattice_protocol::jetstream::Storage,
    links: Mutex<HashMap<LinkId, (String, String)>>,
    buckets: Mutex<HashMap<String, kv::Store>>,
}

fn other(what: impl std::fmt::Display) -> ProviderError {
    ProviderError::Other(what.to_string())
}

impl NatsKv {
    /// A provider storing in `jetstream`'s KV buckets, making those that are missing with the
    /// copies and byte limit of `storage` (`replicas`, `kv_max_bytes`): the host's own, so that
    /// they are as its buckets are (three copies on a three-node hub). Buckets that exist are
    /// used as they are.
    pub fn new(
        jetstream: jetstream::Context,
        storage: lattice_protocol::jetstream::Storage,
    ) -> Self {
        Self {
            jetstream,
            storage,
            links: Mutex::default(),
            buckets: Mutex::default(),
        }
    }

    /// The link's bucket and link name.
    fn link(&self, link: &LinkId) -> Result<(String, String), ProviderError> {
        self.links
            .lock()
            .expect("not poisoned")
            .get(link)
            .cloned()
            .ok_or_else(|| ProviderError::UnknownLink(link.to_string()))
    }

    async fn store(&self, link: &LinkId, bucket: &str) -> Result<kv::Store, ProviderError> {
        // A guest names only buckets its own link opened: the host passes back what `open`
        // returned, and this checks it again.
        let (linked, _) = self.link(link)?;
        if linked != bucket {
            return Err(ProviderError::AccessDenied);
        }
        if let Some(store) = self.buckets.lock().expect("not poisoned").get(bucket) {
            return Ok(store.clone());
        }
        let store = match self.jetstream.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => {
                let made = lattice_protocol::jetstream::Bucket {
                    name: bucket,
                    history: 1,
                    max_age: std::time::Duration::ZERO,
                    description: "Lattice key-value storage (wasi:keyvalue)",
                };
                lattice_protocol::jetstream::open_kv(&self.jetstream, made, &self.storage)
                    .await
                    .map_err(|e| other(format!("opening bucket `{bucket}`: {e:#}")))?
            }
        };
        self.buckets
            .lock()
            .expect("not poisoned")
            .insert(bucket.to_string(), store.clone());
        Ok(store)
    }
}

async fn get(store: &kv::Store, key: &str) -> Result<Option<Vec<u8>>, ProviderError> {
    store
        .get(key)
        .await
        .map(|v| v.map(|b| b.to_vec()))
        .map_err(|e| other(format!("get `{key}`: {e}")))
}

async fn set(store: &kv::Store, key: &str, value: Vec<u8>) -> Result<(), ProviderError> {
    store
        .put(key, value.into())
        .await
        .map(drop)
        .map_err(|e| other(format!("set `{key}`: {e}")))
}

async fn delete(store: &kv::Store, key: &str) -> Result<(), ProviderError> {
    store
        .delete(key)
        .await
        .map_err(|e| other(format!("delete `{key}`: {e}")))
}

async fn increment(store: &kv::Store, key: &str, delta: u64) -> Result<u64, ProviderError> {
    for _ in 0..INCREMENT_ATTEMPTS {
        let entry = store
            .entry(key)
            .await
            .map_err(|e| other(format!("increment `{key}`: {e}")))?
            .filter(|e| e.operation == kv::Operation::Put);
        let (current, revision) = match &entry {
            Some(e) => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        other(format!(
                            "increment `{key}`: its value is not a decimal number"
                        ))
                    })?;
                (n, Some(e.revision))
            }
            None => (0, None),
        };
        let next = current.checked_add(delta).ok_or_else(|| {
            other(format!(
                "increment `{key}`: {current} + {delta} overflows u64"
            ))
        })?;
        let value = next.to_string().into_bytes().into();
        // Compare-and-set: a concurrent writer makes this attempt fail, and it retries.
        let written = match revision {
            Some(r) => store.update(key, value, r).await.is_ok(),
            None => store.create(key, value).await.is_ok(),
        };
        if written {
            return Ok(next);
        }
    }
    Err(other(format!(
        "increment `{key}`: too many concurrent writers, try again"
    )))
}

async fn list_keys(store: &kv::Store, cursor: Option<u64>) -> Result<Reply, ProviderError> {
    let mut keys: Vec<String> = store
        .keys()
        .await
        .map_err(|e| other(format!("listing keys: {e}")))?
        .try_collect()
        .await
        .map_err(|e| other(format!("listing keys: {e}")))?;
    // The cursor is an offset into the sorted keys: stable while the bucket is unchanged.
    keys.sort_unstable();
    let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
    let page: Vec<String> = keys.iter().skip(start).take(PAGE).cloned().collect();
    let next = start.saturating_add(page.len());
    Ok(Reply::Keys {
        cursor: (next < keys.len()).then_some(next as u64),
        keys: page,
    })
}

#[async_trait]
impl Provider for NatsKv {
    fn name(&self) -> &str {
        NAME
    }

    async fn link_put(&self, link: LinkInfo) -> Result<(), ProviderError> {
        let bucket = link
            .target_config
            .get("bucket")
            .cloned()
            .unwrap_or_else(|| link.id.app.to_string());
        let name = link.id.name.clone();
        self.links
            .lock()
            .expect("not poisoned")
            .insert(link.id, (bucket, name));
        Ok(())
    }

    async fn link_del(&self, link: &LinkId) {
        self.links.lock().expect("not poisoned").remove(link);
    }

    async fn call(&self, link: &LinkId, call: Call) -> Result<Reply, ProviderError> {
        match call {
            Call::KvOpen { identifier } => {
                let (bucket, name) = self.link(link)?;
                if [bucket.as_str(), name.as_str(), "", "default"].contains(&identifier.as_str()) {
                    Ok(Reply::Bucket(bucket))
                } else {
                    Err(ProviderError::NoSuchStore)
                }
            }
            Call::KvGet { bucket, key } => {
                let store = self.store(link, &bucket).await?;
                Ok(Reply::Value(get(&store, &key).await?.map(Into::into)))
            }
            Call::KvSet { bucket, key, value } => {
                let store = self.store(link, &bucket).await?;
                set(&store, &key, value).await.map(|()| Reply::Unit)
            }
            Call::KvDelete { bucket, key } => {
                let store = self.store(link, &bucket).await?;
                delete(&store, &key).await.map(|()| Reply::Unit)
            }
            Call::KvExists { bucket, key } => {
                let store = self.store(link, &bucket).await?;
                Ok(Reply::Bool(get(&store, &key).await?.is_some()))
            }
            Call::KvListKeys { bucket, cursor } => {
                list_keys(&self.store(link, &bucket).await?, cursor).await
            }
            Call::KvIncrement { bucket, key, delta } => {
                let store = self.store(link, &bucket).await?;
                increment(&store, &key, delta).await.map(Reply::Number)
            }
            Call::KvGetMany { bucket, keys } => {
                let store = self.store(link, &bucket).await?;
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    let value = get(&store, &key).await?;
                    out.push(value.map(|v| (key, v.into())));
                }
                Ok(Reply::Values(out))
            }
            Call::KvSetMany { bucket, entries } => {
                let store = self.store(link, &bucket).await?;
                for (key, value) in entries {
                    set(&store, &key, value.into_vec()).await?;
                }
                Ok(Reply::Unit)
            }
            Call::KvDeleteMany { bucket, keys } => {
                let store = self.store(link, &bucket).await?;
                for key in keys {
                    delete(&store, &key).await?;
                }
                Ok(Reply::Unit)
            }
            other => Err(unsupported(&other)),
        }
    }
}
