//! `lattice-provider-sdk`: write a capability provider once, run it inside a host or as a
//! process of its own.
//!
//! A provider implements [`Provider`]: it is told the links it serves ([`Provider::link_put`],
//! again after any restart) and answers [`Call`]s on them. The host holds an
//! `Arc<dyn Provider>` either way:
//!
//! - **in-process**: the provider itself (the host's built-ins, for speed);
//! - **as a process**: a [`Remote`], which sends each request over NATS to the process, where
//!   [`serve`] (or the whole [`run_process`] main loop) hands it to the same implementation.
//!
//! Providers that deliver to components (an MQTT message to a component's
//! `wasmcloud:messaging/handler`) use [`deliver_message`], an ordinary component call.
//!
//! What the control plane knows of each provider (name, interfaces, config keys, how it runs)
//! is its [`ProviderDescription`] in [`catalog`]; a provider takes its name from there.
//!
//! The wire types are in `lattice_protocol::provider`, so a provider in another language needs
//! only that document: MessagePack envelopes on `lattice.<lattice>.prov.<host>.<provider>`, each
//! request authenticated by the host with the key it writes on the process's standard input
//! (`lattice_protocol::provider::auth`).

mod deliver;
mod guard;
mod process;
mod remote;

/// The attribute a [`Provider`] implementation is written with, re-exported so that an
/// in-process provider (the host's built-ins) needs no dependency of its own for it.
pub use async_trait::async_trait;
pub use lattice_protocol::provider::auth::CallKey;
pub use lattice_protocol::provider::catalog::{self, ProviderDescription};
pub use lattice_protocol::provider::{Call, LinkDirection, LinkId, LinkInfo, ProviderError, Reply};

pub use deliver::deliver_message;
pub use process::{ProcessEnv, run_process, serve};
pub use remote::Remote;

/// A capability provider.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Its name in links and subjects, e.g. `keyvalue-redis`.
    fn name(&self) -> &str;

    /// Starts serving `link` (or updates it). Called before the first call on the link, and
    /// again for every link after the provider restarted.
    async fn link_put(&self, link: LinkInfo) -> Result<(), ProviderError>;

    /// Stops serving `link`: the component is gone from this host.
    async fn link_del(&self, link: &LinkId);

    /// Performs `call` for the component at the other end of `link`.
    async fn call(&self, link: &LinkId, call: Call) -> Result<Reply, ProviderError>;
}

/// `Unsupported` for a call this provider does not serve.
pub fn unsupported(call: &Call) -> ProviderError {
    let name = format!("{call:?}");
    ProviderError::Unsupported(name.split([' ', '{', '(']).next().unwrap_or("").to_string())
}
