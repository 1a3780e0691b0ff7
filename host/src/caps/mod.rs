//! What the host lends its guests beyond WASI: the capabilities a workload's links name, and
//! the context every store of that workload shares.
//!
//! - [`bindings`]: host bindings generated from `wit/deps` for the built-in interfaces;
//! - [`logging`] (`wasi:logging`, into the host's tracing, tagged with the component) and
//!   [`config`] (`wasi:config/store` and `/runtime`, the component's named config): always
//!   served, no link needed;
//! - [`outgoing_http`]: outgoing `wasi:http`, only to the hosts the workload's `http-client`
//!   links allow;
//! - [`keyvalue`]: `wasi:keyvalue` store, atomics and batch, served by the provider a link
//!   names (`keyvalue-nats` inside the host, or a provider process);
//! - [`blobstore`]: `wasi:blobstore` (types, container, blobstore) on the host's filesystem,
//!   for links to `blobstore-fs`: one directory per container under the link's `root`;
//! - [`providers`]: the host's providers: built-in ones in-process, others as processes it
//!   supervises;
//! - [`messaging`]: `wasmcloud:messaging/consumer` (publish, request), and 0.3.0's `producer`
//!   and `request-reply` ([`messaging::v0_3`]), over NATS, and delivery of
//!   subscribed subjects to a component's `handler` export;
//! - [`calls`] and [`codec`]: component-to-component calls over the app's own WIT interfaces,
//!   in-process when the target runs on this host, otherwise over NATS, values in MessagePack;
//! - [`bus`]: `wasmcloud:bus/lattice`, a guest's choice of link by name for the capabilities
//!   above (kept per store, read by each of them);
//! - [`secrets`]: `wasmcloud:secrets`, the component's secrets as handles: always served.
//!
//! Each capability is a unit: its per-workload state (with the workload's grants, worked out
//! once in [`WorkloadCtx::new`]), a view of a store's data, and one `add_to_linker`
//! ([`crate::wasi::new_linker`] adds them all).
//!
//! Every import a workload has is defined, linked or not: a call to an unlinked one fails at
//! once with an error the guest can handle (or a trap naming the import), never a hang.

#[allow(missing_docs)] // generated from the WIT, whose comments are the documentation
pub mod bindings;
pub mod blobstore;
pub mod bus;
pub mod calls;
pub mod codec;
pub mod config;
pub mod keyvalue;
pub mod logging;
pub mod messaging;
pub mod outgoing_http;
pub mod providers;
pub mod secrets;

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

/// Who a workload is and what its assignment gives it: what [`WorkloadCtx::new`] works its
/// grants out from.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// The app.
    pub app: AppName,
    /// The component.
    pub component: ComponentName,
    /// Environment variables the guest sees (its named config, plus the host's own).
    pub env: Vec<(String, String)>,
    /// The component's named config, served by `wasi:config`.
    pub config: BTreeMap<String, String>,
    /// Its secrets, opened, served by `wasmcloud:secrets` (and in `config` too).
    pub secrets: secrets::SecretsState,
    /// What serves its linked imports.
    pub links: Vec<WorkloadLink>,
}

/// The host's services a workload's capabilities use. Any may be missing: a host that has not
/// joined a lattice (tests, benchmarks) answers that the capability is not available.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// The host's NATS connection.
    pub lattice: Option<LatticeLink>,
    /// Where components run, for calls between them.
    pub router: Option<Arc<calls::Router>>,
    /// The host's providers.
    pub providers: Option<Arc<providers::Providers>>,
    /// The host's outbox of queued calls.
    pub queue: Option<Arc<crate::queue::Queue>>,
}

impl From<&HostServices> for Services {
    fn from(services: &HostServices) -> Self {
        Self {
            lattice: Some(services.lattice.clone()),
            router: Some(services.router.clone()),
            providers: Some(services.providers.clone()),
            queue: services.queue.clone(),
        }
    }
}

/// What every store of one workload shares: who it is, and each capability's state with the
/// grants worked out once when the workload starts (which buckets, blob root, outgoing hosts),
/// so no call looks them up in the links again.
#[derive(Debug)]
pub struct WorkloadCtx {
    /// The app.
    pub app: AppName,
    /// The component.
    pub component: ComponentName,
    env: Vec<(String, String)>,
    links: Vec<WorkloadLink>,
    services: Services,
    /// `wasi:config`.
    pub(crate) config: config::ConfigState,
    /// `wasi:logging`.
    pub(crate) logging: logging::LoggingState,
    /// `wasmcloud:secrets`.
    pub(crate) secrets: secrets::SecretsState,
    /// `wasi:keyvalue`: the links it may open, and what they opened.
    pub(crate) keyvalue: keyvalue::KeyvalueGrant,
    /// `wasmcloud:messaging/consumer`: the links it publishes through.
    pub(crate) messaging: messaging::MessagingGrant,
    /// `wasi:blobstore`: its blob-store link (and a `blobstore-fs` link's root), or why there
    /// is none.
    pub(crate) blob: Result<blobstore::BlobGrant, String>,
    /// Outgoing `wasi:http`: the hosts its `http-client` links allow.
    pub(crate) outgoing_http: outgoing_http::OutgoingGrant,
}

impl WorkloadCtx {
    /// The context of `spec`, using `services`: each capability's grants are worked out here.
    pub fn new(spec: WorkloadSpec, services: Services) -> Self {
        let WorkloadSpec {
            app,
            component,
            env,
            config,
            secrets,
            links,
        } = spec;
        let name = format!("{app}/{component}");
        Self {
            config: config::ConfigState::new(config),
            logging: logging::LoggingState::new(name.clone()),
            secrets,
            keyvalue: keyvalue::KeyvalueGrant::new(&app, &component, &links),
            messaging: messaging::MessagingGrant::new(&app, &component, &links),
            blob: blobstore::BlobGrant::new(&app, &component, &links, &name, None),
            outgoing_http: outgoing_http::OutgoingGrant::new(&links),
            app,
            component,
            env,
            links,
            services,
        }
    }

    /// A context with only an environment: no links, no lattice (every linked capability
    /// answers that it is not linked). For components run outside a lattice, e.g. in tests.
    pub fn detached(env: &[(String, String)]) -> Arc<Self> {
        Arc::new(Self::new(
            WorkloadSpec {
                app: AppName::new("local").expect("a valid name"),
                component: ComponentName::new("local").expect("a valid name"),
                env: env.to_vec(),
                config: BTreeMap::new(),
                secrets: Default::default(),
                links: Vec::new(),
            },
            Services::default(),
        ))
    }

    /// The environment variables the guest sees.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// What serves its linked imports.
    pub fn links(&self) -> &[WorkloadLink] {
        &self.links
    }

    /// The host's outbox of queued calls, if it has one.
    pub fn queue(&self) -> Option<&Arc<crate::queue::Queue>> {
        self.services.queue.as_ref()
    }

    /// The host's NATS connection, if it has one.
    pub fn lattice(&self) -> Option<&LatticeLink> {
        self.services.lattice.as_ref()
    }

    /// The host's call router, if it has one.
    pub fn router(&self) -> Option<&Arc<calls::Router>> {
        self.services.router.as_ref()
    }

    /// The host's providers, if it has them.
    pub fn providers(&self) -> Option<&Arc<providers::Providers>> {
        self.services.providers.as_ref()
    }

    /// `app/component`, for logs.
    pub fn name(&self) -> String {
        format!("{}/{}", self.app, self.component)
    }
}

/// The links of `links` to built-in capability `builtin` serving
/// `namespace:package/interface`.
pub(crate) fn builtin_links<'a>(
    links: &'a [WorkloadLink],
    builtin: &'a str,
    namespace: &'a str,
    package: &'a str,
    interface: &'a str,
) -> impl Iterator<Item = &'a WorkloadLink> + 'a {
    links.iter().filter(move |l| {
        matches!(&l.target, LinkTarget::Builtin(b) if b == builtin)
            && l.serves(namespace, package, interface)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(
        package: &str,
        interfaces: &[&str],
        name: &str,
        target: LinkTarget,
        config: &[(&str, &str)],
    ) -> WorkloadLink {
        let (namespace, package) = package.split_once(':').expect("namespace:package");
        WorkloadLink {
            namespace: namespace.into(),
            package: package.into(),
            interfaces: interfaces.iter().map(|i| i.to_string()).collect(),
            name: name.into(),
            target,
            source_config: BTreeMap::new(),
            target_config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source_secrets: Default::default(),
            target_secrets: Default::default(),
            queued: None,
        }
    }

    #[test]
    fn grants_are_worked_out_from_the_links_when_the_workload_starts() {
        let builtin = |name: &str| LinkTarget::Builtin(name.into());
        let links = vec![
            link(
                "wasi:keyvalue",
                &["store", "atomics"],
                "cache",
                builtin("keyvalue-nats"),
                &[("bucket", "orders")],
            ),
            link(
                "wasi:http",
                &["outgoing-handler"],
                "default",
                builtin("http-client"),
                &[("allowed_hosts", " API.example.com, example.org:8443,")],
            ),
            link(
                "wasi:blobstore",
                &["blobstore", "container", "types"],
                "default",
                builtin("blobstore-fs"),
                &[("root", "shop/photos")],
            ),
            link(
                "wasmcloud:messaging",
                &["consumer"],
                "default",
                builtin("messaging-nats"),
                &[],
            ),
            link(
                "acme:greet",
                &["greeter"],
                "default",
                LinkTarget::Component(ComponentName::new("greeter").expect("a name")),
                &[],
            ),
        ];
        let spec = WorkloadSpec {
            app: AppName::new("shop").expect("a name"),
            component: ComponentName::new("api").expect("a name"),
            env: Vec::new(),
            config: BTreeMap::from([("mode".to_string(), "test".to_string())]),
            secrets: Default::default(),
            links,
        };
        let ctx = WorkloadCtx::new(spec, Services::default());
        let kv: Vec<String> = ctx
            .keyvalue
            .links
            .iter()
            .map(|(l, id)| format!("{} {id}", l.name))
            .collect();
        assert_eq!(kv, ["cache shop/api wasi:keyvalue (cache)"]);
        assert!(ctx.outgoing_http.allows("api.example.com", Some(443)));
        assert!(ctx.outgoing_http.allows("example.org", Some(8443)));
        assert!(!ctx.outgoing_http.allows("example.org", Some(443)));
        assert_eq!(
            ctx.blob.as_ref().map(|g| g.root.as_deref()),
            Ok(Some(std::path::Path::new("shop/photos")))
        );
        let (consumer, id) = ctx.messaging.consumers.first().expect("a consumer link");
        assert_eq!(consumer.name, "default");
        assert_eq!(id.to_string(), "shop/api wasmcloud:messaging (default)");
        assert_eq!(ctx.config.values()["mode"], "test");
    }

    #[test]
    fn a_detached_workload_is_granted_nothing() {
        let ctx = WorkloadCtx::detached(&[]);
        assert!(ctx.keyvalue.links.is_empty());
        assert!(ctx.messaging.consumers.is_empty());
        assert!(!ctx.outgoing_http.allows("example.com", Some(80)));
        assert!(
            ctx.blob
                .as_ref()
                .map(|g| &g.root)
                .is_err_and(|e| e.contains("not linked"))
        );
    }
}
