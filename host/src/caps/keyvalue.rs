//! `wasi:keyvalue` (0.2.0-draft: store, atomics, batch) on NATS JetStream KV: the
//! `keyvalue-nats` built-in capability, needing no server beyond the lattice's NATS.
//!
//! A link to `keyvalue-nats` names one bucket (target config `bucket`, set by the control plane
//! to the app's name when the manifest gives none). `open` hands out the bucket of the link
//! whose bucket or link name is the identifier; with one link, `""` and `"default"` also open
//! it, since that is what most guests written for wasmCloud pass. A bucket is created on first
//! use. Counters (`atomics`) are decimal text, so `get` reads them as a person would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv;
use futures::TryStreamExt as _;
use wasmtime::component::Resource;

use super::WorkloadCtx;
use super::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::wasi::HostState;

/// The built-in capability's name in links.
pub const BUILTIN: &str = "keyvalue-nats";

/// Keys per `list-keys` page.
const PAGE: usize = 1000;

/// Attempts at a compare-and-set increment before giving up (each loses only to a concurrent
/// writer of the same key).
const INCREMENT_ATTEMPTS: usize = 64;

/// An open bucket, as the guest holds it.
#[derive(Debug)]
pub struct Bucket {
    name: String,
    store: kv::Store,
}

/// Buckets a workload opened, kept for its next stores.
#[derive(Debug, Default)]
pub(crate) struct BucketCache(Mutex<HashMap<String, kv::Store>>);

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

fn other(what: impl std::fmt::Display) -> store::Error {
    store::Error::Other(what.to_string())
}

impl HostState {
    /// The bucket `identifier` names among this workload's key-value links.
    fn bucket_for(&self, identifier: &str) -> Result<String, store::Error> {
        let ctx = &self.ctx;
        let links: Vec<_> = ctx
            .builtin_links(BUILTIN, "wasi", "keyvalue", "store")
            .collect();
        let bucket = |l: &lattice_protocol::assignment::WorkloadLink| {
            l.target_config
                .get("bucket")
                .cloned()
                .unwrap_or_else(|| ctx.app.to_string())
        };
        if links.is_empty() {
            return Err(other(format!(
                "wasi:keyvalue is not linked for `{}`: add a link trait from it to a `builtin:keyvalue-nats` capability",
                ctx.name()
            )));
        }
        if let Some(l) = links
            .iter()
            .find(|l| bucket(l) == identifier || l.name == identifier)
        {
            return Ok(bucket(l));
        }
        if links.len() == 1 && (identifier.is_empty() || identifier == "default") {
            return Ok(bucket(links[0]));
        }
        Err(store::Error::NoSuchStore)
    }

    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(String, kv::Store)> {
        let b = self.table.get(bucket)?;
        Ok((b.name.clone(), b.store.clone()))
    }
}

/// The bucket `name`, opened (and created when missing) once per workload. Takes the context
/// rather than the store's state, which may not be held across an await.
async fn open_bucket(ctx: Arc<WorkloadCtx>, name: &str) -> Result<kv::Store, store::Error> {
    {
        if let Some(store) = ctx.buckets.0.lock().expect("not poisoned").get(name) {
            return Ok(store.clone());
        }
        let lattice = ctx.lattice.as_ref().ok_or_else(|| {
            other("this host is not connected to a lattice, so it has no key-value storage")
        })?;
        let store = lattice_protocol::jetstream::ensure_kv(
            &lattice.jetstream,
            name,
            1,
            "Lattice key-value storage (wasi:keyvalue)",
        )
        .await
        .map_err(|e| other(format!("opening bucket `{name}`: {e:#}")))?;
        ctx.buckets
            .0
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), store.clone());
        Ok(store)
    }
}

async fn get(store: &kv::Store, key: &str) -> Result<Option<Vec<u8>>, store::Error> {
    store
        .get(key)
        .await
        .map(|v| v.map(|b| b.to_vec()))
        .map_err(|e| other(format!("get `{key}`: {e}")))
}

async fn set(store: &kv::Store, key: &str, value: Vec<u8>) -> Result<(), store::Error> {
    store
        .put(key, value.into())
        .await
        .map(drop)
        .map_err(|e| other(format!("set `{key}`: {e}")))
}

async fn delete(store: &kv::Store, key: &str) -> Result<(), store::Error> {
    store
        .delete(key)
        .await
        .map_err(|e| other(format!("delete `{key}`: {e}")))
}

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        let name = match self.bucket_for(&identifier) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        let store = match open_bucket(self.ctx.clone(), &name).await {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(self.table.push(Bucket { name, store })?))
    }
}

impl store::HostBucket for HostState {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let (_, store) = self.bucket(&bucket)?;
        Ok(get(&store, &key).await)
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let (_, store) = self.bucket(&bucket)?;
        Ok(set(&store, &key, value).await)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        let (_, store) = self.bucket(&bucket)?;
        Ok(delete(&store, &key).await)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        let (_, store) = self.bucket(&bucket)?;
        Ok(get(&store, &key).await.map(|v| v.is_some()))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let (name, store) = self.bucket(&bucket)?;
        let keys: Result<Vec<String>, _> = match store.keys().await {
            Ok(stream) => stream.try_collect().await,
            Err(e) => return Ok(Err(other(format!("listing keys of `{name}`: {e}")))),
        };
        let mut keys = match keys {
            Ok(k) => k,
            Err(e) => return Ok(Err(other(format!("listing keys of `{name}`: {e}")))),
        };
        // The cursor is an offset into the sorted keys: stable while the bucket is unchanged.
        keys.sort_unstable();
        let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let page: Vec<String> = keys.iter().skip(start).take(PAGE).cloned().collect();
        let next = start.saturating_add(page.len());
        Ok(Ok(store::KeyResponse {
            cursor: (next < keys.len()).then_some(next as u64),
            keys: page,
        }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        let (_, store) = self.bucket(&bucket)?;
        for _ in 0..INCREMENT_ATTEMPTS {
            let entry = match store.entry(&key).await {
                Ok(e) => e.filter(|e| e.operation == kv::Operation::Put),
                Err(e) => return Ok(Err(other(format!("increment `{key}`: {e}")))),
            };
            let (current, revision) = match &entry {
                Some(e) => match std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    Some(n) => (n, Some(e.revision)),
                    None => {
                        return Ok(Err(other(format!(
                            "increment `{key}`: its value is not a decimal number"
                        ))));
                    }
                },
                None => (0, None),
            };
            let Some(next) = current.checked_add(delta) else {
                return Ok(Err(other(format!(
                    "increment `{key}`: {current} + {delta} overflows u64"
                ))));
            };
            let value = next.to_string().into_bytes().into();
            // Compare-and-set: a concurrent writer makes this attempt fail, and it retries.
            let written = match revision {
                Some(r) => store.update(&key, value, r).await.map(drop).is_ok(),
                None => store.create(&key, value).await.map(drop).is_ok(),
            };
            if written {
                return Ok(Ok(next));
            }
        }
        Ok(Err(other(format!(
            "increment `{key}`: too many concurrent writers, try again"
        ))))
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let (_, store) = self.bucket(&bucket)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match get(&store, &key).await {
                Ok(v) => out.push(v.map(|v| (key, v))),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let (_, store) = self.bucket(&bucket)?;
        for (key, value) in key_values {
            if let Err(e) = set(&store, &key, value).await {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let (_, store) = self.bucket(&bucket)?;
        for key in keys {
            if let Err(e) = delete(&store, &key).await {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}
