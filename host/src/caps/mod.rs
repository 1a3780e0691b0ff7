//! What the host lends its guests beyond WASI: the capabilities a workload's links name, and
//! the context every store of that workload shares.
//!
//! - [`bindings`]: host bindings generated from `wit/deps` for the built-in interfaces;
//! - [`logging`] (`wasi:logging`, into the host's tracing, tagged with the component) and
//!   [`config`] (`wasi:config/store` and `/runtime`, the component's named config): always
//!   served, no link needed;
//! - [`keyvalue`]: `wasi:keyvalue` store, atomics and batch, served by the provider a link
//!   names (`keyvalue-nats` inside the host, or a provider process);
//! - [`blobstore`]: `wasi:blobstore` (types, container, blobstore) on the host's filesystem,
//!   for links to `blobstore-fs`: one directory per container under the link's `root`;
//! - [`providers`]: the host's providers: built-in ones in-process, others as processes it
//!   supervises;
//! - [`messaging`]: `wasmcloud:messaging/consumer` (publish, request) over NATS, and delivery of
//!   subscribed subjects to a component's `handler` export;
//! - [`calls`] and [`codec`]: component-to-component calls over the app's own WIT interfaces,
//!   in-process when the target runs on this host, otherwise over NATS, values in MessagePack.
//!
//! Every import a workload has is defined, linked or not: a call to an unlinked one fails at
//! once with an error the guest can handle (or a trap naming the import), never a hang.

#[allow(missing_docs)] // generated from the WIT, whose comments are the documentation
pub mod bindings;
pub mod blobstore;
pub mod calls;
pub mod codec;
pub mod config;
pub mod keyvalue;
pub mod logging;
pub mod messaging;
pub mod providers;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::jetstream;
use lattice_protocol::assignment::{LinkTarget, WorkloadLink};
use lattice_protocol::names::{AppName, ComponentName, HostId, LatticeName};

/// The host's connection to its lattice, shared by every workload's capabilities.
#[derive(Clone, Debug)]
pub struct LatticeLink {
    /// The host's NATS client.
    pub client: async_nats::Client,
    /// JetStream on that client (the lattice's domain).
    pub jetstream: jetstream::Context,
    /// The lattice.
    pub lattice: LatticeName,
    /// This host.
    pub host: HostId,
    /// Limits of the hub's streams and buckets this host creates.
    pub storage: lattice_protocol::jetstream::Storage,
    /// The host's clock and its offset from the hub's: queued items' expiry is in hub time.
    pub clock: crate::clock::HubClock,
}

/// What a host lends every workload: its lattice connection, its call router, its providers.
#[derive(Clone, Debug)]
pub struct HostServices {
    /// The host's NATS connection.
    pub lattice: LatticeLink,
    /// Where components run, for calls between them.
    pub router: Arc<calls::Router>,
    /// Built-in providers and provider processes.
    pub providers: Arc<providers::Providers>,
    /// The outbox of queued calls, when the host has one.
    pub queue: Option<Arc<crate::queue::Queue>>,
}

/// What every store of one workload shares: who it is, its config and links, and the host's
/// services its capabilities use.
#[derive(Debug)]
pub struct WorkloadCtx {
    /// The app.
    pub app: AppName,
    /// The component.
    pub component: ComponentName,
    /// Environment variables the guest sees (its named config, plus the host's own).
    pub env: Vec<(String, String)>,
    /// The component's named config, served by `wasi:config`.
    pub config: BTreeMap<String, String>,
    /// What serves its linked imports.
    pub links: Vec<WorkloadLink>,
    /// The host's NATS connection, when it has joined a lattice (tests may run without).
    pub lattice: Option<LatticeLink>,
    /// Where components run, for calls between them.
    pub router: Option<Arc<calls::Router>>,
    /// The host's providers.
    pub providers: Option<Arc<providers::Providers>>,
    /// The host's outbox of queued calls.
    pub queue: Option<Arc<crate::queue::Queue>>,
    /// The providers' answers to `wasi:keyvalue` `open` on its links, remembered.
    pub kv_buckets: keyvalue::OpenedBuckets,
}

impl WorkloadCtx {
    /// A context with only an environment: no links, no lattice (every linked capability
    /// answers that it is not linked). For components run outside a lattice, e.g. in tests.
    pub fn detached(env: &[(String, String)]) -> Arc<Self> {
        Arc::new(Self {
            app: AppName::new("local").expect("a valid name"),
            component: ComponentName::new("local").expect("a valid name"),
            env: env.to_vec(),
            config: BTreeMap::new(),
            links: Vec::new(),
            lattice: None,
            router: None,
            providers: None,
            queue: None,
            kv_buckets: Default::default(),
        })
    }

    /// A context of `app/component` using `services`.
    pub fn with_services(
        app: AppName,
        component: ComponentName,
        env: Vec<(String, String)>,
        config: BTreeMap<String, String>,
        links: Vec<WorkloadLink>,
        services: &HostServices,
    ) -> Self {
        Self {
            app,
            component,
            env,
            config,
            links,
            lattice: Some(services.lattice.clone()),
            router: Some(services.router.clone()),
            providers: Some(services.providers.clone()),
            queue: services.queue.clone(),
            kv_buckets: Default::default(),
        }
    }

    /// The host's outbox of queued calls, if it has one.
    pub fn queue(&self) -> Option<&Arc<crate::queue::Queue>> {
        self.queue.as_ref()
    }

    /// The host's NATS connection, if it has one.
    pub fn lattice(&self) -> Option<&LatticeLink> {
        self.lattice.as_ref()
    }

    /// The host's call router, if it has one.
    pub fn router(&self) -> Option<&Arc<calls::Router>> {
        self.router.as_ref()
    }

    /// The host's providers, if it has them.
    pub fn providers(&self) -> Option<&Arc<providers::Providers>> {
        self.providers.as_ref()
    }

    /// `app/component`, for logs.
    pub fn name(&self) -> String {
        format!("{}/{}", self.app, self.component)
    }

    /// The links to built-in capability `builtin` serving `namespace:package/interface`.
    pub fn builtin_links<'a>(
        &'a self,
        builtin: &'a str,
        namespace: &'a str,
        package: &'a str,
        interface: &'a str,
    ) -> impl Iterator<Item = &'a WorkloadLink> + 'a {
        self.links.iter().filter(move |l| {
            matches!(&l.target, LinkTarget::Builtin(b) if b == builtin)
                && l.serves(namespace, package, interface)
        })
    }
}
