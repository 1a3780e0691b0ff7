//! Capability providers over NATS: what a host sends the provider processes it runs, and what
//! they answer. The same [`Call`]s reach a provider running inside the host, so one provider
//! implementation serves both ways.
//!
//! A host talks to each provider process it started on
//! [`crate::subject::Subject::Provider`] (`lattice.<l>.prov.<host>.<provider>`), request/reply,
//! each request a [`ProviderRequest`] in an envelope. Links are told to the provider with
//! [`ProviderRequest::LinkPut`] before the first call that uses them, and again after a restart.
//! Providers deliver to components (an MQTT message to a `wasmcloud:messaging/handler`) with an
//! ordinary component call ([`crate::rpc::RpcCall`]).
//!
//! Every request carries the [`auth::CALL_AUTH_HEADER`] header: an HMAC under a key the host
//! drew when it started the process and wrote on the process's standard input, over a counter
//! and the request's bytes. A process checks it before decoding the request and answers
//! anything else with [`ProviderError::Unauthenticated`] ([`auth`] says how, for a provider
//! written in another language).
//!
//! [`catalog`] declares each provider once (name, how it runs, what it serves and delivers, its
//! links' config keys and checks), for the control plane and hosts alike.

pub mod auth;
pub mod catalog;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{AppName, ComponentName};

/// Names one link on one host: the importing (or handling) component's app and name, the link
/// name, the WIT package (`wasi:keyvalue`) and the direction (a component may both receive
/// messages from a provider and publish through it, under the same package and link name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LinkId {
    /// The app.
    pub app: AppName,
    /// The component at the other end.
    pub component: ComponentName,
    /// The link name (`default` when the manifest gives none).
    pub name: String,
    /// `namespace:package` of the linked interfaces.
    pub package: String,
    /// Which way the link's calls go.
    #[serde(default)]
    pub direction: LinkDirection,
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} {} ({})",
            self.app, self.component, self.package, self.name
        )
    }
}

/// A link as a provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// Which link.
    pub id: LinkId,
    /// The linked interfaces of the package, e.g. `store`, `atomics`.
    pub interfaces: Vec<String>,
    /// Whether the component imports the interfaces (it calls the provider) or the provider
    /// delivers to the component's export (`wasmcloud:messaging/handler`).
    pub direction: LinkDirection,
    /// Configuration of the component's end.
    #[serde(default)]
    pub source_config: BTreeMap<String, String>,
    /// Configuration of the provider's end.
    #[serde(default)]
    pub target_config: BTreeMap<String, String>,
}

/// Which way a link's calls go.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LinkDirection {
    /// The component calls the provider.
    #[default]
    Import,
    /// The provider calls the component's export.
    Export,
}

/// An operation a component asks of a provider, by interface. Resources (a key-value bucket)
/// stay in the host; the provider sees their names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// `wasi:keyvalue/store.open`: whether the link may open `identifier`, and which bucket
    /// that is. The answer must depend on the link alone (its config): a host remembers a
    /// bucket for as long as the link lives (not a refusal).
    KvOpen {
        /// What the guest passed.
        identifier: String,
    },
    /// `bucket.get`.
    KvGet {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// `bucket.set`.
    KvSet {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// `bucket.delete`.
    KvDelete {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// `bucket.exists`.
    KvExists {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// `bucket.list-keys`.
    KvListKeys {
        /// Bucket.
        bucket: String,
        /// Where the previous page ended.
        cursor: Option<u64>,
    },
    /// `atomics.increment`.
    KvIncrement {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Added.
        delta: u64,
    },
    /// `batch.get-many`.
    KvGetMany {
        /// Bucket.
        bucket: String,
        /// Keys.
        keys: Vec<String>,
    },
    /// `batch.set-many`.
    KvSetMany {
        /// Bucket.
        bucket: String,
        /// Keys and values.
        entries: Vec<(String, serde_bytes::ByteBuf)>,
    },
    /// `batch.delete-many`.
    KvDeleteMany {
        /// Bucket.
        bucket: String,
        /// Keys.
        keys: Vec<String>,
    },
    /// `wasmcloud:messaging/consumer.publish`.
    Publish {
        /// Subject (or topic).
        subject: String,
        /// Body.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// Where answers go.
        reply_to: Option<String>,
        /// Headers (`wasmcloud:messaging@0.3.0` metadata and content type); only
        /// `messaging-nats` carries them, others are refused them by the host.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<(String, String)>,
    },
    /// `wasmcloud:messaging/consumer.request`.
    Request {
        /// Subject (or topic).
        subject: String,
        /// Body.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// How long to wait for the answer.
        timeout_ms: u32,
    },
    /// `wasi:blobstore` operations, on containers and objects by name. The host keeps the
    /// guest's resources (an open container, a value being written) and checks nothing the
    /// provider does not check again.
    Blob(BlobCall),
}

/// A `wasi:blobstore` operation ([`Call::Blob`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobCall {
    /// `blobstore.create-container` (opens it if it exists): answers `Unit`.
    CreateContainer(String),
    /// `blobstore.get-container`, which must exist: answers `Unit`.
    GetContainer(String),
    /// `blobstore.delete-container`.
    DeleteContainer(String),
    /// `blobstore.container-exists`: answers `Bool`.
    ContainerExists(String),
    /// `container.info`: answers `Number` (created at, seconds since the Unix epoch).
    ContainerInfo(String),
    /// `blobstore.copy-object`.
    CopyObject {
        /// From.
        src: BlobRef,
        /// To (replaced whole).
        dest: BlobRef,
    },
    /// `blobstore.move-object`.
    MoveObject {
        /// From.
        src: BlobRef,
        /// To.
        dest: BlobRef,
    },
    /// `container.get-data`: bytes `start..=end` (clamped), answers `Value`.
    GetData {
        /// Which object.
        object: BlobRef,
        /// First byte.
        start: u64,
        /// Last byte (included).
        end: u64,
    },
    /// Whether `object` may be written (its container exists, its name is valid): `Unit`.
    CheckWrite(BlobRef),
    /// `outgoing-value.finish` after `container.write-data`: stores `data` whole.
    WriteData {
        /// Which object.
        object: BlobRef,
        /// Its bytes.
        data: serde_bytes::ByteBuf,
    },
    /// `container.list-objects`: answers `Keys` (sorted, no cursor).
    ListObjects(String),
    /// `container.delete-object` (an absent object is no error).
    DeleteObject(BlobRef),
    /// `container.delete-objects`: no name may be invalid.
    DeleteObjects {
        /// Container.
        container: String,
        /// Objects.
        objects: Vec<String>,
    },
    /// `container.has-object`: answers `Bool`.
    HasObject(BlobRef),
    /// `container.object-info`: answers `ObjectInfo`.
    ObjectInfo(BlobRef),
    /// `container.clear`.
    Clear(String),
}

/// An object in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Container.
    pub container: String,
    /// Object.
    pub object: String,
}

/// A provider's answer to a [`Call`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done, nothing to return.
    Unit,
    /// A bucket name (`KvOpen`).
    Bucket(String),
    /// A value or none (`KvGet`).
    Value(Option<serde_bytes::ByteBuf>),
    /// `KvExists`.
    Bool(bool),
    /// `KvIncrement`.
    Number(u64),
    /// `KvListKeys`.
    Keys {
        /// This page.
        keys: Vec<String>,
        /// Where the next page starts, if there is one.
        cursor: Option<u64>,
    },
    /// `KvGetMany`, in the order asked.
    Values(Vec<Option<(String, serde_bytes::ByteBuf)>>),
    /// `BlobCall::ObjectInfo`'s answer.
    ObjectInfo {
        /// Created at (or last modified), seconds since the Unix epoch.
        created_at: u64,
        /// Bytes.
        size: u64,
    },
    /// `Request`'s answer.
    Message {
        /// The subject it came on.
        subject: String,
        /// Its body.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
}

/// Why a provider did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ProviderError {
    /// No store by that identifier (`wasi:keyvalue`'s `no-such-store`).
    #[error("no such store")]
    NoSuchStore,
    /// Not allowed.
    #[error("access denied")]
    AccessDenied,
    /// The provider does not serve this call.
    #[error("this provider does not serve {0}")]
    Unsupported(String),
    /// The link was never put (or was deleted).
    #[error("unknown link {0}")]
    UnknownLink(String),
    /// The provider could not be reached or is restarting.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The request was not sent by the host that started the provider process (no or a wrong
    /// [`auth::CALL_AUTH_HEADER`], or a replay): why.
    #[error("refused: {0}")]
    Unauthenticated(String),
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

/// What a host sends a provider process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderRequest {
    /// Are you there? Answered with [`ProviderResponse::Ready`].
    Ping,
    /// A link to serve (again), to a provider in the host's process.
    LinkPut(LinkInfo),
    /// A link to serve (again), to a provider process: its [`LinkInfo`] in an envelope, sealed
    /// with [`auth::CallKey::seal`] (its configuration may hold opened secrets). A process
    /// takes links only this way.
    SealedLinkPut(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A link that is gone.
    LinkDel(LinkId),
    /// An operation on a link.
    Call {
        /// The link.
        link: LinkId,
        /// The operation.
        call: Call,
    },
}

/// A provider process's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderResponse {
    /// To `Ping`: the provider's name and the links it holds.
    Ready {
        /// Its name.
        name: String,
        /// How many links it holds.
        links: usize,
    },
    /// To a call or link change: done.
    Ok(Reply),
    /// It failed.
    Err(ProviderError),
}
