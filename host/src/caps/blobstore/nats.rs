//! `blobstore-nats` as a provider: `wasi:blobstore` on a NATS JetStream object store, for
//! wasmCloud's `blobstore-nats` users and for blobs that must outlive a gateway's disk.
//!
//! One object store per link, named by its target config `bucket` (default: the app's name,
//! checked at deploy as a key-value bucket name is), created at the lattice's replica count
//! and per-bucket size limit. Containers live inside it: container `c` is the marker object
//! `c/<c>` (empty; its time is the container's), object `o` of it is `o/<c>/<o>`. *Why not one
//! object store per container, as wasmCloud's provider did:* NATS permissions name streams
//! whole, so a host may only be allowed the stores the operator knows of (`lattice nats authz
//! --app-bucket`), and containers are the guest's to invent.
//!
//! Names follow `blobstore-fs`'s rules (`fs::check_name`), so a component moves
//! between the two unchanged. It runs in-process ([`super::super::providers`] registers it);
//! every refusal is [`ProviderError::Other`] with the text the guest gets as its WIT `error`.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::jetstream::{self, object_store};
use futures::StreamExt as _;
use lattice_protocol::jetstream::Storage;
use lattice_protocol::provider::catalog::{BLOBSTORE_NATS, BUCKET_KEY};
use lattice_protocol::provider::{BlobCall, BlobRef, Call, LinkId, LinkInfo, ProviderError, Reply};
use lattice_provider_sdk::{Provider, unsupported};
use tokio::io::AsyncReadExt as _;

use super::MAX_VALUE_BYTES;
use super::fs::check_name;

type BlobResult<T> = Result<T, String>;

/// The provider: the lattice's JetStream, its storage limits, each link's bucket, and the
/// object stores opened so far.
pub struct NatsBlobs {
    js: jetstream::Context,
    storage: Storage,
    links: Mutex<HashMap<LinkId, String>>,
    stores: tokio::sync::Mutex<HashMap<String, object_store::ObjectStore>>,
}

impl std::fmt::Debug for NatsBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBlobs").finish_non_exhaustive()
    }
}

impl NatsBlobs {
    /// A provider with no links yet, on `js`, making object stores within `storage`.
    pub fn new(js: jetstream::Context, storage: Storage) -> Self {
        Self {
            js,
            storage,
            links: Mutex::default(),
            stores: tokio::sync::Mutex::default(),
        }
    }

    /// The object store of `link`, opened (or created) once.
    async fn store(&self, link: &LinkId) -> Result<object_store::ObjectStore, ProviderError> {
        let bucket = self
            .links
            .lock()
            .expect("not poisoned")
            .get(link)
            .cloned()
            .ok_or_else(|| ProviderError::UnknownLink(link.to_string()))?;
        let mut stores = self.stores.lock().await;
        if let Some(store) = stores.get(&bucket) {
            return Ok(store.clone());
        }
        let store = match self.js.get_object_store(&bucket).await {
            Ok(store) => store,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    description: Some(format!(
                        "wasi:blobstore of links to {}",
                        BLOBSTORE_NATS.name
                    )),
                    max_bytes: self.storage.kv_max_bytes,
                    num_replicas: self.storage.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    let doing = format!("opening object store `{bucket}`");
                    let e =
                        lattice_protocol::jetstream::refused(&doing, self.storage.kv_max_bytes, e);
                    ProviderError::Other(format!("{e:#}"))
                })?,
        };
        stores.insert(bucket, store.clone());
        Ok(store)
    }
}

#[lattice_provider_sdk::async_trait]
impl Provider for NatsBlobs {
    fn name(&self) -> &str {
        BLOBSTORE_NATS.name
    }

    // The bucket was checked at deploy; the app's name is its default.
    async fn link_put(&self, link: LinkInfo) -> Result<(), ProviderError> {
        let bucket = link
            .target_config
            .get(BUCKET_KEY)
            .cloned()
            .unwrap_or_else(|| link.id.app.to_string());
        self.links
            .lock()
            .expect("not poisoned")
            .insert(link.id, bucket);
        Ok(())
    }

    async fn link_del(&self, link: &LinkId) {
        self.links.lock().expect("not poisoned").remove(link);
    }

    async fn call(&self, link: &LinkId, call: Call) -> Result<Reply, ProviderError> {
        let Call::Blob(call) = call else {
            return Err(unsupported(&call));
        };
        let store = self.store(link).await?;
        blob(&store, call).await.map_err(ProviderError::Other)
    }
}

/// The marker object of container `name`.
fn marker(name: &str) -> BlobResult<String> {
    check_name("container", name)?;
    Ok(format!("c/{name}"))
}

/// The objects of container `name` start with this.
fn prefix(name: &str) -> BlobResult<String> {
    check_name("container", name)?;
    Ok(format!("o/{name}/"))
}

/// The stored name of `object`.
fn object_key(object: &BlobRef) -> BlobResult<String> {
    check_name("object", &object.object)?;
    Ok(format!("{}{}", prefix(&object.container)?, object.object))
}

fn nats_error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Performs `call` in `store`.
async fn blob(store: &object_store::ObjectStore, call: BlobCall) -> BlobResult<Reply> {
    match call {
        BlobCall::CreateContainer(name) => {
            let marker = marker(&name)?;
            if info(store, &marker).await?.is_none() {
                put(store, &marker, &[], &format!("creating container `{name}`")).await?;
            }
            Ok(Reply::Unit)
        }
        BlobCall::GetContainer(name) => existing(store, &name).await.map(|_| Reply::Unit),
        BlobCall::DeleteContainer(name) => {
            clear(store, &name).await?;
            delete(store, &marker(&name)?).await?;
            Ok(Reply::Unit)
        }
        BlobCall::ContainerExists(name) => {
            Ok(Reply::Bool(info(store, &marker(&name)?).await?.is_some()))
        }
        BlobCall::ContainerInfo(name) => {
            let created = existing(store, &name).await?;
            Ok(Reply::Number(seconds(&created)))
        }
        BlobCall::CopyObject { src, dest } => {
            copy(store, &src, &dest).await?;
            Ok(Reply::Unit)
        }
        BlobCall::MoveObject { src, dest } => {
            if src != dest {
                copy(store, &src, &dest).await?;
                delete(store, &object_key(&src)?).await?;
            }
            Ok(Reply::Unit)
        }
        BlobCall::GetData { object, start, end } => {
            if start > end {
                return Err(format!(
                    "reading {}: the range starts ({start}) after it ends ({end}); both ends are included",
                    describe(&object)
                ));
            }
            let data = read(store, &object).await?;
            let len = data.len() as u64;
            let slice = if start >= len {
                Vec::new()
            } else {
                data[start as usize..=end.min(len - 1) as usize].to_vec()
            };
            Ok(Reply::Value(Some(serde_bytes::ByteBuf::from(slice))))
        }
        BlobCall::CheckWrite(object) => {
            object_key(&object)?;
            existing(store, &object.container).await?;
            Ok(Reply::Unit)
        }
        BlobCall::WriteData { object, data } => {
            let key = object_key(&object)?;
            if data.len() > MAX_VALUE_BYTES {
                return Err(format!(
                    "{} is larger than {MAX_VALUE_BYTES} bytes",
                    describe(&object)
                ));
            }
            existing(store, &object.container).await?;
            put(store, &key, &data, &describe(&object)).await?;
            Ok(Reply::Unit)
        }
        BlobCall::ListObjects(name) => {
            let prefix = prefix(&name)?;
            existing(store, &name).await?;
            let mut keys: Vec<String> = keys(store, &prefix)
                .await?
                .into_iter()
                .map(|k| k[prefix.len()..].to_string())
                .collect();
            keys.sort();
            Ok(Reply::Keys { keys, cursor: None })
        }
        BlobCall::DeleteObject(object) => {
            delete(store, &object_key(&object)?).await?;
            Ok(Reply::Unit)
        }
        BlobCall::DeleteObjects { container, objects } => {
            // Refuse a bad name before deleting anything.
            let keys = objects
                .into_iter()
                .map(|object| {
                    object_key(&BlobRef {
                        container: container.clone(),
                        object,
                    })
                })
                .collect::<BlobResult<Vec<_>>>()?;
            for key in keys {
                delete(store, &key).await?;
            }
            Ok(Reply::Unit)
        }
        BlobCall::HasObject(object) => Ok(Reply::Bool(
            info(store, &object_key(&object)?).await?.is_some(),
        )),
        BlobCall::ObjectInfo(object) => match info(store, &object_key(&object)?).await? {
            Some(i) => Ok(Reply::ObjectInfo {
                created_at: seconds(&i),
                size: i.size as u64,
            }),
            None => Err(format!("{} does not exist", describe(&object))),
        },
        BlobCall::Clear(name) => {
            clear(store, &name).await?;
            Ok(Reply::Unit)
        }
    }
}

/// Replaces `dest` with a copy of `src`.
async fn copy(store: &object_store::ObjectStore, src: &BlobRef, dest: &BlobRef) -> BlobResult<()> {
    let data = read(store, src).await?;
    existing(store, &dest.container).await?;
    put(store, &object_key(dest)?, &data, &describe(dest)).await
}

/// Deletes every object of container `name`, which must exist.
async fn clear(store: &object_store::ObjectStore, name: &str) -> BlobResult<()> {
    existing(store, name).await?;
    for key in keys(store, &prefix(name)?).await? {
        delete(store, &key).await?;
    }
    Ok(())
}

fn describe(object: &BlobRef) -> String {
    format!("object `{}/{}`", object.container, object.object)
}

/// When `info`'s object was last written, in seconds since the Unix epoch.
fn seconds(info: &object_store::ObjectInfo) -> u64 {
    info.modified
        .map_or(0, |t| u64::try_from(t.unix_timestamp()).unwrap_or(0))
}

/// What the store knows of `key`, or `None` when it holds no such object.
async fn info(
    store: &object_store::ObjectStore,
    key: &str,
) -> BlobResult<Option<object_store::ObjectInfo>> {
    match store.info(key).await {
        Ok(info) if !info.deleted => Ok(Some(info)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
        Err(e) => Err(nats_error(format!("reading `{key}`"), e)),
    }
}

/// Container `name`'s marker, which must exist.
async fn existing(
    store: &object_store::ObjectStore,
    name: &str,
) -> BlobResult<object_store::ObjectInfo> {
    info(store, &marker(name)?)
        .await?
        .ok_or_else(|| format!("container `{name}` does not exist"))
}

/// The whole of `object`, which must exist.
async fn read(store: &object_store::ObjectStore, object: &BlobRef) -> BlobResult<Vec<u8>> {
    let key = object_key(object)?;
    let what = describe(object);
    // `get` reads the object's info itself: its size is checked from there, not asked again.
    let mut reader = match store.get(&key).await {
        Ok(reader) => reader,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
            return Err(format!("{what} does not exist"));
        }
        Err(e) => return Err(nats_error(format!("reading {what}"), e)),
    };
    if reader.info().size > MAX_VALUE_BYTES {
        return Err(format!(
            "reading {what}: it is larger than the {MAX_VALUE_BYTES} bytes one value may carry"
        ));
    }
    let mut data = Vec::new();
    reader
        .read_to_end(&mut data)
        .await
        .map_err(|e| nats_error(format!("reading {what}"), e))?;
    Ok(data)
}

/// Stores `data` as `key`, replacing it whole.
async fn put(
    store: &object_store::ObjectStore,
    key: &str,
    data: &[u8],
    what: &str,
) -> BlobResult<()> {
    let mut reader = data;
    store
        .put(key, &mut reader)
        .await
        .map(drop)
        .map_err(|e| nats_error(format!("storing {what}"), e))
}

/// Deletes `key`; an absent object is no error.
async fn delete(store: &object_store::ObjectStore, key: &str) -> BlobResult<()> {
    match store.delete(key).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
        Err(e) => Err(nats_error(format!("deleting `{key}`"), e)),
    }
}

/// The stored names starting with `prefix`.
async fn keys(store: &object_store::ObjectStore, prefix: &str) -> BlobResult<Vec<String>> {
    let mut list = store
        .list()
        .await
        .map_err(|e| nats_error("listing the object store", e))?;
    let mut keys = Vec::new();
    while let Some(info) = list.next().await {
        let info = info.map_err(|e| nats_error("listing the object store", e))?;
        if !info.deleted && info.name.starts_with(prefix) {
            keys.push(info.name);
        }
    }
    Ok(keys)
}
