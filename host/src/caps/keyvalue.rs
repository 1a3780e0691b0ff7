//! `wasi:keyvalue` (0.2.0-draft: store, atomics, batch) for guests, served by whichever provider
//! the workload's link names: `keyvalue-nats` inside the host (NATS JetStream KV), or a provider
//! process such as `keyvalue-redis`. The bucket resource stays here; the provider sees its name.
//!
//! `open(identifier)` picks the link: the one the guest chose by name for `wasi:keyvalue/store`
//! ([`super::bus`]), else the one named `identifier`, else the only one, else the one whose
//! `bucket` is `identifier`; the provider then says which bucket that is (or `no-such-store`).
//! The answer depends on the link alone, so the workload's context remembers it
//! ([`OpenedBuckets`]): a guest opening its bucket on every request (instances are fresh per
//! request) asks a provider process once, not once per request.
//!
//! A unit on its own: [`KeyvalueGrant`] (the workload's key-value links, worked out once when it
//! starts, and the buckets they opened) and [`add_to_linker`], which takes a function giving a
//! [`KeyvalueView`] of a store's data. Each call is a `lattice.kv.<operation>` span (debug
//! level, so the hot path pays nothing unless asked), which never carries keys or values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lattice_protocol::assignment::{LinkTarget, WorkloadLink};
use lattice_protocol::names::{AppName, ComponentName};
use lattice_protocol::provider::{Call, LinkId, ProviderError, Reply};
use lattice_provider_sdk::Provider;
use tracing::instrument;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::WorkloadCtx;
use super::bindings::wasi::keyvalue::{atomics, batch, store};
use super::bus::LinkNames;
use super::providers::link_id;

/// The most answers to `open` one workload remembers (the providers here accept at most four
/// identifiers per link; this only bounds a provider that accepts any).
const MAX_OPENED: usize = 64;

/// The buckets a workload's links opened, by link name and identifier: the providers' answers to
/// `open` (`Call::KvOpen`), which depend on the link alone. A workload context lives as long as
/// its links (an assignment that changes them starts the workload again, with a new context), so
/// nothing here goes stale. Refusals and errors are not remembered: they are asked again.
#[derive(Debug, Default)]
pub struct OpenedBuckets(Mutex<HashMap<(String, String), String>>);

impl OpenedBuckets {
    fn get(&self, link: &str, identifier: &str) -> Option<String> {
        self.0
            .lock()
            .expect("not poisoned")
            .get(&(link.to_string(), identifier.to_string()))
            .cloned()
    }

    fn insert(&self, link: &str, identifier: String, bucket: &str) {
        let mut opened = self.0.lock().expect("not poisoned");
        if opened.len() < MAX_OPENED {
            opened.insert((link.to_string(), identifier), bucket.to_string());
        }
    }
}

/// What a workload may open: its links to key-value providers, and the buckets they opened.
#[derive(Debug, Default)]
pub struct KeyvalueGrant {
    /// The links, and their ids as providers know them.
    pub(super) links: Vec<(WorkloadLink, LinkId)>,
    opened: OpenedBuckets,
}

impl KeyvalueGrant {
    /// The grant of `app/component`, whose links are `links`.
    pub fn new(app: &AppName, component: &ComponentName, links: &[WorkloadLink]) -> Self {
        Self {
            links: links
                .iter()
                .filter(|l| keyvalue_link(l))
                .map(|l| (l.clone(), link_id(app, component, l)))
                .collect(),
            opened: OpenedBuckets::default(),
        }
    }
}

/// One store's view for `wasi:keyvalue`: its resource table (where open buckets live) and its
/// workload.
#[derive(Debug)]
pub struct KeyvalueView<'a> {
    /// The store's resources.
    pub table: &'a mut ResourceTable,
    /// The workload, with its [`KeyvalueGrant`].
    pub ctx: &'a WorkloadCtx,
    /// The links the guest chose by name.
    pub names: &'a LinkNames,
}

struct Keyvalue;

impl HasData for Keyvalue {
    type Data<'a> = KeyvalueView<'a>;
}

/// Adds `wasi:keyvalue/store`, `/atomics` and `/batch` to `linker`, served through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KeyvalueView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, Keyvalue>(linker, view)?;
    atomics::add_to_linker::<T, Keyvalue>(linker, view)?;
    batch::add_to_linker::<T, Keyvalue>(linker, view)
}

/// An open bucket, as the guest holds it.
pub struct Bucket {
    provider: Arc<dyn Provider>,
    link: LinkId,
    name: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("link", &self.link)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

/// What `get-many` answers: each key's entry, if it has one.
type KeyValues = Vec<Option<(String, Vec<u8>)>>;

fn other(what: impl std::fmt::Display) -> store::Error {
    store::Error::Other(what.to_string())
}

fn from_provider(e: ProviderError) -> store::Error {
    match e {
        ProviderError::NoSuchStore => store::Error::NoSuchStore,
        ProviderError::AccessDenied => store::Error::AccessDenied,
        e => other(e),
    }
}

fn unexpected(reply: &Reply) -> store::Error {
    other(format!("the provider answered {reply:?}"))
}

/// Whether `link` serves key-value storage through a provider.
fn keyvalue_link(link: &WorkloadLink) -> bool {
    link.serves("wasi", "keyvalue", "store")
        && matches!(
            link.target,
            LinkTarget::Builtin(_) | LinkTarget::Provider(_)
        )
}

/// The link `identifier` opens, by the rules above.
fn choose<'a>(
    links: &'a [(WorkloadLink, LinkId)],
    identifier: &str,
    chosen: Option<&str>,
) -> Option<&'a (WorkloadLink, LinkId)> {
    if let Some(name) = chosen {
        return links.iter().find(|(l, _)| l.name == name);
    }
    links
        .iter()
        .find(|(l, _)| l.name == identifier)
        .or_else(|| (links.len() == 1).then(|| &links[0]))
        .or_else(|| {
            links.iter().find(|(l, _)| {
                l.target_config.get("bucket").map(String::as_str) == Some(identifier)
            })
        })
}

async fn open(
    ctx: &WorkloadCtx,
    identifier: String,
    chosen: Option<&str>,
) -> Result<Bucket, store::Error> {
    let links = &ctx.keyvalue.links;
    if links.is_empty() {
        return Err(other(format!(
            "wasi:keyvalue is not linked for `{}`: add a link trait from it to a key-value capability (e.g. `builtin:keyvalue-nats`)",
            ctx.name()
        )));
    }
    let Some((link, id)) = choose(links, &identifier, chosen) else {
        return Err(match chosen {
            Some(name) => other(format!(
                "no key-value link named `{name}` (chosen with wasmcloud:bus/lattice.set-link-name) for `{}`: name one of its links to a key-value capability",
                ctx.name()
            )),
            None => store::Error::NoSuchStore,
        });
    };
    let providers = ctx.providers().ok_or_else(|| {
        other("this host is not connected to a lattice, so it has no key-value storage")
    })?;
    let provider = providers.get(&link.target).await.ok_or_else(|| {
        other(format!(
            "the key-value provider of link `{}` is not running on this host",
            link.name
        ))
    })?;
    let id = id.clone();
    if let Some(name) = ctx.keyvalue.opened.get(&link.name, &identifier) {
        return Ok(Bucket {
            provider,
            link: id,
            name,
        });
    }
    match provider
        .call(
            &id,
            Call::KvOpen {
                identifier: identifier.clone(),
            },
        )
        .await
        .map_err(from_provider)?
    {
        Reply::Bucket(name) => {
            ctx.keyvalue.opened.insert(&link.name, identifier, &name);
            Ok(Bucket {
                provider,
                link: id,
                name,
            })
        }
        reply => Err(unexpected(&reply)),
    }
}

impl KeyvalueView<'_> {
    /// Runs `call(bucket name)` on the bucket's provider. The bucket stays borrowed from the
    /// table for the call, so nothing but its name is copied.
    async fn kv(
        &mut self,
        bucket: &Resource<Bucket>,
        call: impl FnOnce(String) -> Call,
    ) -> wasmtime::Result<Result<Reply, store::Error>> {
        let b = self.table.get(bucket)?;
        Ok(b.provider
            .call(&b.link, call(b.name.clone()))
            .await
            .map_err(from_provider))
    }
}

impl store::Host for KeyvalueView<'_> {
    #[instrument(name = "lattice.kv.open", level = "debug", skip_all)]
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        let chosen = self.names.chosen("wasi", "keyvalue", "store");
        match open(self.ctx, identifier, chosen).await {
            Ok(bucket) => Ok(Ok(self.table.push(bucket)?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

impl store::HostBucket for KeyvalueView<'_> {
    #[instrument(name = "lattice.kv.get", level = "debug", skip_all)]
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        Ok(
            match self
                .kv(&bucket, |bucket| Call::KvGet { bucket, key })
                .await?
            {
                Ok(Reply::Value(v)) => Ok(v.map(serde_bytes::ByteBuf::into_vec)),
                Ok(reply) => Err(unexpected(&reply)),
                Err(e) => Err(e),
            },
        )
    }

    #[instrument(name = "lattice.kv.set", level = "debug", skip_all)]
    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let reply = self
            .kv(&bucket, |bucket| Call::KvSet { bucket, key, value })
            .await?;
        Ok(reply.map(drop))
    }

    #[instrument(name = "lattice.kv.delete", level = "debug", skip_all)]
    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        let reply = self
            .kv(&bucket, |bucket| Call::KvDelete { bucket, key })
            .await?;
        Ok(reply.map(drop))
    }

    #[instrument(name = "lattice.kv.exists", level = "debug", skip_all)]
    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        Ok(
            match self
                .kv(&bucket, |bucket| Call::KvExists { bucket, key })
                .await?
            {
                Ok(Reply::Bool(b)) => Ok(b),
                Ok(reply) => Err(unexpected(&reply)),
                Err(e) => Err(e),
            },
        )
    }

    #[instrument(name = "lattice.kv.list_keys", level = "debug", skip_all)]
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        Ok(
            match self
                .kv(&bucket, |bucket| Call::KvListKeys { bucket, cursor })
                .await?
            {
                Ok(Reply::Keys { keys, cursor }) => Ok(store::KeyResponse { keys, cursor }),
                Ok(reply) => Err(unexpected(&reply)),
                Err(e) => Err(e),
            },
        )
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KeyvalueView<'_> {
    #[instrument(name = "lattice.kv.increment", level = "debug", skip_all)]
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        Ok(
            match self
                .kv(&bucket, |bucket| Call::KvIncrement { bucket, key, delta })
                .await?
            {
                Ok(Reply::Number(n)) => Ok(n),
                Ok(reply) => Err(unexpected(&reply)),
                Err(e) => Err(e),
            },
        )
    }
}

impl batch::Host for KeyvalueView<'_> {
    #[instrument(name = "lattice.kv.get_many", level = "debug", skip_all)]
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<KeyValues> {
        Ok(
            match self
                .kv(&bucket, |bucket| Call::KvGetMany { bucket, keys })
                .await?
            {
                Ok(Reply::Values(values)) => Ok(values
                    .into_iter()
                    .map(|v| v.map(|(k, v)| (k, v.into_vec())))
                    .collect()),
                Ok(reply) => Err(unexpected(&reply)),
                Err(e) => Err(e),
            },
        )
    }

    #[instrument(name = "lattice.kv.set_many", level = "debug", skip_all)]
    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let entries = key_values
            .into_iter()
            .map(|(k, v)| (k, serde_bytes::ByteBuf::from(v)))
            .collect();
        let reply = self
            .kv(&bucket, |bucket| Call::KvSetMany { bucket, entries })
            .await?;
        Ok(reply.map(drop))
    }

    #[instrument(name = "lattice.kv.delete_many", level = "debug", skip_all)]
    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let reply = self
            .kv(&bucket, |bucket| Call::KvDeleteMany { bucket, keys })
            .await?;
        Ok(reply.map(drop))
    }
}
