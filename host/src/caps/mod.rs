//! What the host lends its guests beyond WASI: the capabilities a workload's links name, and
//! the context every store of that workload shares.
//!
//! - [`bindings`]: host bindings generated from `wit/deps` for the built-in interfaces;
//! - [`logging`] (`wasi:logging`, into the host's tracing, tagged with the component) and
//!   [`config`] (`wasi:config/store` and `/runtime`, the component's named config): always
//!   served, no link needed;
//! - [`keyvalue`]: `wasi:keyvalue` store, atomics and batch on a NATS KV bucket, served when a
//!   link names the `keyvalue-nats` capability;
//! - [`messaging`]: `wasmcloud:messaging/consumer` (publish, request) over NATS, and delivery of
//!   subscribed subjects to a component's `handler` export;
//! - [`calls`] and [`codec`]: component-to-component calls over the app's own WIT interfaces,
//!   in-process when the target runs on this host, otherwise over NATS, values in MessagePack.
//!
//! Every import a workload has is defined, linked or not: a call to an unlinked one fails at
//! once with an error the guest can handle (or a trap naming the import), never a hang.

#[allow(missing_docs)] // generated from the WIT, whose comments are the documentation
pub mod bindings;
pub mod calls;
pub mod codec;
pub mod config;
pub mod keyvalue;
pub mod logging;
pub mod messaging;

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
}

/// What every store of one workload shares: who it is, its config and links, and the
/// connections its capabilities use.
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
    /// The lattice, when the host has joined one (tests may run without).
    pub lattice: Option<LatticeLink>,
    /// Component calls: where targets run.
    pub router: Option<Arc<calls::Router>>,
    /// Key-value buckets opened so far, by bucket name.
    pub(crate) buckets: keyvalue::BucketCache,
}

impl WorkloadCtx {
    /// A context with only an environment: no links, no lattice (every linked capability
    /// answers that it is not linked). For components run outside a lattice, e.g. in tests.
    pub fn detached(env: &[(String, String)]) -> Arc<Self> {
        Arc::new(Self::new(
            AppName::new("local").expect("a valid name"),
            ComponentName::new("local").expect("a valid name"),
            env.to_vec(),
            BTreeMap::new(),
            Vec::new(),
            None,
            None,
        ))
    }

    /// A context for a workload.
    pub fn new(
        app: AppName,
        component: ComponentName,
        env: Vec<(String, String)>,
        config: BTreeMap<String, String>,
        links: Vec<WorkloadLink>,
        lattice: Option<LatticeLink>,
        router: Option<Arc<calls::Router>>,
    ) -> Self {
        Self {
            app,
            component,
            env,
            config,
            links,
            lattice,
            router,
            buckets: keyvalue::BucketCache::default(),
        }
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
