//! The hub a `queue_drain` run measures against: one nats-server (JetStream's default sync, or
//! `sync_interval: always`) or the harness's three-node JetStream cluster (every stream at three
//! replicas, `deploy/cluster.conf` as shipped), for part 1 ([`Hub`]) and part 2
//! ([`DeliveryLattice`]: a control plane and one host running greeter on such a hub).

use lattice_protocol::jetstream::Storage;
use lattice_protocol::names::LatticeName;
use lattice_tests::cluster::{
    ClusterControl, ClusterLattice, NatsCluster, REPLICAS, sync_always_supported,
};
use lattice_tests::{NatsServer, TestHost, TestLattice, WAIT, eventually};

/// A single server's configuration that makes JetStream fsync every write before acknowledging
/// it (nats-server 2.10 and later).
const SYNC_ALWAYS_CONFIG: &str = "jetstream {\n  sync_interval: always\n}\n";

/// Which hub: one server or the three-node cluster, with or without `sync_interval: always`.
#[derive(Debug, Clone, Copy)]
pub struct HubKind {
    /// The three-node cluster rather than one server.
    pub cluster: bool,
    /// `sync_interval: always` (only where the server accepts it: see [`HubKind::new`]).
    pub sync_always: bool,
}

impl HubKind {
    /// A hub of that shape; `sync_always` is dropped (with a note) where the server refuses
    /// the setting (2.9), so that the run still measures something.
    pub fn new(cluster: bool, sync_always: bool) -> Self {
        Self {
            cluster,
            sync_always: sync_always && sync_always_supported(),
        }
    }

    /// Its stream replicas.
    pub fn replicas(self) -> usize {
        if self.cluster { REPLICAS } else { 1 }
    }

    /// The storage settings the lattice's programs get on it (the replicas above).
    pub fn storage(self) -> Storage {
        Storage {
            replicas: self.replicas(),
            ..Storage::default()
        }
    }

    /// What it is, in words.
    pub fn describe(self) -> String {
        let shape = if self.cluster {
            format!("the three-node JetStream cluster, streams at {REPLICAS} replicas")
        } else {
            "one nats-server".to_string()
        };
        let sync = if self.sync_always {
            "`sync_interval: always`"
        } else {
            "JetStream's default sync (every 2 minutes)"
        };
        format!("{shape}, {sync}")
    }

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match (self.cluster, self.sync_always) {
            (false, false) => "one server, default sync",
            (false, true) => "one server, sync always",
            (true, false) => "cluster R3, default sync",
            (true, true) => "cluster R3, sync always",
        }
    }
}

/// A running hub for part 1, stopped on drop.
pub enum Hub {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Hub {
    /// Starts a hub of `kind`.
    pub async fn start(kind: HubKind) -> anyhow::Result<Self> {
        Ok(if kind.cluster {
            Self::Cluster(NatsCluster::start_with_sync(kind.sync_always).await?)
        } else {
            Self::Single(single_server(kind.sync_always).await?)
        })
    }

    /// A client of the hub (given every node's URL on the cluster).
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        match self {
            Self::Single(server) => server.client().await,
            Self::Cluster(cluster) => cluster.client("queue_drain bench").await,
        }
    }
}

/// One nats-server with JetStream, with `sync_interval: always` or JetStream's default sync.
async fn single_server(sync_always: bool) -> anyhow::Result<NatsServer> {
    if sync_always {
        NatsServer::start_with_config(SYNC_ALWAYS_CONFIG).await
    } else {
        NatsServer::start().await
    }
}

/// Part 2's lattice: a control plane and one host labelled `role=cloud` on a hub of a
/// [`HubKind`], in this process.
pub struct DeliveryLattice {
    /// The bench's own client.
    pub client: async_nats::Client,
    /// The lattice.
    pub lattice: LatticeName,
    /// The control-plane API client (the bootstrap admin).
    pub ctl: lattice_control::client::CtlClient,
    /// The host.
    pub host: TestHost,
    lattice_handle: LatticeHandle,
}

/// What keeps the lattice's servers and control plane alive.
enum LatticeHandle {
    Single(Box<TestLattice>),
    Cluster(Box<ClusterLattice>, ClusterControl),
}

impl DeliveryLattice {
    /// Starts the hub, a control plane and host `cloud-1`, and waits until the host reports.
    pub async fn start(kind: HubKind) -> anyhow::Result<Self> {
        if kind.cluster {
            let c = ClusterLattice::start_with_sync(kind.sync_always).await?;
            let control = c.start_control(|_| {}).await?;
            let mut config = c.host_config("cloud-1");
            config.labels.insert("role".into(), "cloud".into());
            let host = c.start_host(config).await?;
            c.wait_for("host cloud-1 to report", || async {
                Ok(c.ctl.hosts().await?.iter().any(|h| h.name == "cloud-1"))
            })
            .await?;
            Ok(Self {
                client: c.client.clone(),
                lattice: c.lattice.clone(),
                ctl: c.ctl.clone(),
                host,
                lattice_handle: LatticeHandle::Cluster(Box::new(c), control),
            })
        } else {
            let nats = single_server(kind.sync_always).await?;
            let t = TestLattice::start_on(nats, |_| {}).await?;
            let host = t.add_labelled_host("cloud-1", "role", "cloud").await?;
            Ok(Self {
                client: t.client.clone(),
                lattice: t.lattice.clone(),
                ctl: t.ctl.clone(),
                host,
                lattice_handle: LatticeHandle::Single(Box::new(t)),
            })
        }
    }

    /// Signs the example component at `path` as `name` with the lattice's issuer and pushes it.
    pub async fn push_example(
        &self,
        path: &str,
        name: &str,
    ) -> anyhow::Result<lattice_protocol::digest::Digest> {
        match &self.lattice_handle {
            LatticeHandle::Single(t) => t.push_example(path, name).await,
            LatticeHandle::Cluster(c, _) => c.push_signed(&std::fs::read(path)?, name).await,
        }
    }

    /// Ends the host and the control plane (abruptly: their hub goes next), so that nothing of
    /// this lattice runs beside the next measurement.
    pub async fn end(self) {
        self.host.kill().await;
        match self.lattice_handle {
            LatticeHandle::Single(mut t) => t.kill_control().await,
            LatticeHandle::Cluster(_, control) => control.handle.kill().await,
        }
    }

    /// Waits until `check` holds, for at most the harness's [`WAIT`].
    pub async fn wait_for<F, Fut>(&self, what: &str, check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        eventually(WAIT, what, check).await
    }
}
