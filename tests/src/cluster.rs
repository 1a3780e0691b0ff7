//! A clustered hub for the suites that need one (`tests/tests/cluster.rs`): three real
//! nats-server processes routed into one JetStream cluster ([`NatsCluster`]), each running
//! `deploy/cluster.conf` as shipped with local ports, and a lattice on it ([`ClusterLattice`])
//! whose every bucket and stream has three replicas and whose clients are given all three URLs.
//!
//! ```text
//!   control planes, hosts ──(all three URLs)──> hub-1 ◀──routes──▶ hub-2 ◀──▶ hub-3
//!                                                 ▲ leaf-node ports of all three
//!   edge hosts ──> leaf nats-server (remote lists all three) ┘
//! ```
//!
//! Routes must name the other nodes' ports before they start, so the ports are picked free
//! ([`free_port`]) and a start that finds one taken is tried again on fresh ports. A node is
//! killed with SIGKILL ([`NatsCluster::kill`]) and restarted on the same ports and store
//! ([`NatsCluster::restart`]), as a crashed machine comes back.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use lattice_connect::{NatsOptions, Patience};
use lattice_control::ControlConfig;
use lattice_control::client::CtlClient;
use lattice_control::registry::Registry;
use lattice_host::HostConfig;
use lattice_protocol::claims::{ClaimsOptions, sign_component};
use lattice_protocol::digest::Digest;
use lattice_protocol::jetstream::Storage;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::messages::{AppState, AppStatus};
use lattice_protocol::names::{AppName, LatticeName};
use lattice_protocol::signed::{JoinGrant, JoinToken};
use lattice_protocol::unix_now;
use tokio_util::sync::CancellationToken;

use crate::{ControlHandle, TestHost, WAIT, free_port, http_get};

/// Nodes in the cluster.
pub const NODES: usize = 3;

/// Replicas of every bucket and stream of a [`ClusterLattice`].
pub const REPLICAS: usize = 3;

/// The ports one node listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    route: u16,
    leaf: u16,
    monitor: u16,
}

impl Ports {
    fn pick() -> anyhow::Result<Self> {
        Ok(Self {
            client: free_port()?,
            route: free_port()?,
            leaf: free_port()?,
            monitor: free_port()?,
        })
    }
}

/// One node: its name, ports, configuration file and process (none while killed).
#[derive(Debug)]
struct Node {
    name: String,
    ports: Ports,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = lattice_cli::up::find_nats_server().context(
            "nats-server is not installed: run `make deps` (or apt-get install nats-server)",
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process exited by itself (a port taken, a bad configuration).
    fn exited(&mut self) -> anyhow::Result<Option<String>> {
        let Some(child) = &mut self.child else {
            return Ok(None);
        };
        Ok(child.try_wait()?.map(|status| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let last: Vec<&str> = log.lines().rev().take(5).collect();
            format!(
                "{} exited: {status}; its log ends:\n{}",
                self.name,
                last.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        }))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports.client)
    }

    fn monitor(&self) -> String {
        format!("127.0.0.1:{}", self.ports.monitor)
    }
}

/// Three nats-server processes in one JetStream cluster (domain `hub`), killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts the three nodes and waits until they have a JetStream meta leader and each
    /// answers `$JS.API.INFO`. A node that cannot bind its ports starts the cluster over on
    /// fresh ones (up to 5 times).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_sync(true).await
    }

    /// As [`NatsCluster::start`]; `sync_always: false` takes `sync_interval: always` out of
    /// `deploy/cluster.conf` (JetStream's default sync, every two minutes), so that a benchmark
    /// can measure what the setting costs. Where the server refuses the setting (2.9) it is out
    /// either way ([`sync_always_supported`]).
    pub async fn start_with_sync(sync_always: bool) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(sync_always).await {
                Ok(cluster) => return Ok(cluster),
                Err(e) if attempt < 5 => {
                    eprintln!("the cluster did not start, trying other ports: {e:#}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_once(sync_always: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<Ports> = (0..NODES)
            .map(|_| Ports::pick())
            .collect::<anyhow::Result<_>>()?;
        let mut nodes = Vec::new();
        for (i, own) in ports.iter().enumerate() {
            let name = format!("hub-{}", i + 1);
            let config = dir.path().join(format!("{name}.conf"));
            let text = node_config(&name, *own, &ports, dir.path(), sync_always);
            std::fs::write(&config, text)?;
            nodes.push(Node {
                log: dir.path().join(format!("{name}.log")),
                name,
                ports: *own,
                config,
                child: None,
            });
        }
        let mut cluster = Self { nodes, dir };
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated: what `--nats-url` takes for this hub.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Every node's leaf-node URL (`nats-leaf://...`), for a leaf's remote.
    pub fn leaf_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats-leaf://127.0.0.1:{}", n.ports.leaf))
            .collect()
    }

    /// Node `i`'s server name (`hub-<i + 1>`).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node named `server_name`.
    pub fn index_of(&self, server_name: &str) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == server_name)
            .with_context(|| format!("no node of the cluster is named {server_name}"))
    }

    /// A client given every node's URL, connected through `lattice_connect` as Lattice's
    /// programs connect.
    pub async fn client(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        lattice_connect::connect_with(
            &NatsOptions::default(),
            &self.urls(),
            name,
            Patience::FailFast,
        )
        .await
    }

    /// SIGKILLs node `i`, as a machine that loses power.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports and store, and waits until the cluster is ready.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].kill();
        self.nodes[i].spawn()?;
        self.wait_ready().await
    }

    /// Waits until every running node knows the JetStream meta leader (`/jsz`) and answers
    /// `$JS.API.INFO` without an error; fails at once when a node exits by itself.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let nodes = &mut self.nodes;
        let last = std::sync::Mutex::new(String::new());
        // Nothing announces an election to an outside observer: polled.
        let ready = crate::eventually(WAIT, "the cluster to be ready", || {
            let exited = nodes.iter_mut().find_map(|node| node.exited().transpose());
            // What the check needs of each running node, owned: the nodes stay borrowed here.
            let running: Vec<(String, String, String)> = nodes
                .iter()
                .filter(|n| n.child.is_some())
                .map(|n| (n.name.clone(), n.monitor(), n.url()))
                .collect();
            let last = &last;
            async move {
                if let Some(exit) = exited {
                    bail!("{}", exit?);
                }
                let why = match not_ready(&running).await {
                    Ok(None) => return Ok(true),
                    Ok(Some(why)) => why,
                    Err(e) => format!("{e:#}"),
                };
                *last.lock().unwrap_or_else(|p| p.into_inner()) = why;
                Ok(false)
            }
        })
        .await;
        ready.with_context(|| {
            format!(
                "last seen: {}",
                last.lock().unwrap_or_else(|p| p.into_inner())
            )
        })
    }

    /// How many leaf nodes are connected to node `i` (its `/leafz`); none when it is down.
    pub async fn leaf_nodes(&self, i: usize) -> anyhow::Result<u64> {
        let node = &self.nodes[i];
        if node.child.is_none() {
            return Ok(0);
        }
        let leafz = monitor_json(&node.monitor(), "/leafz").await?;
        Ok(leafz["leafnodes"].as_u64().unwrap_or(0))
    }

    /// The directory of the nodes' configurations, logs and stores.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// Why the cluster is not ready yet, if it is not, asking each running node (name, monitoring
/// address, client URL).
async fn not_ready(running: &[(String, String, String)]) -> anyhow::Result<Option<String>> {
    for (name, monitor, url) in running {
        let jsz = monitor_json(monitor, "/jsz").await?;
        if jsz["meta_cluster"]["leader"]
            .as_str()
            .unwrap_or("")
            .is_empty()
        {
            return Ok(Some(format!("{name} knows no meta leader yet")));
        }
        let client = async_nats::connect(url.as_str()).await?;
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client.request("$JS.API.INFO", "".into()),
        )
        .await
        .context("$JS.API.INFO")??;
        let info: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        if !info["error"].is_null() {
            return Ok(Some(format!("{name}: $JS.API.INFO: {}", info["error"])));
        }
    }
    Ok(None)
}

async fn monitor_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (code, body) = http_get(addr, path).await?;
    anyhow::ensure!(code == 200, "GET {addr}{path}: {code} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// `deploy/cluster.conf` as shipped, made local for node `name`: its name first (as
/// `deploy/cluster-<n>.conf` gives it), loopback ports, routes to the nodes' route ports, its
/// own store under `dir`; without `sync_interval: always` unless `sync_always`. Panics when the
/// file no longer has the expected shape.
fn node_config(name: &str, own: Ports, all: &[Ports], dir: &Path, sync_always: bool) -> String {
    let store = dir.join(name);
    let mut replacements = vec![
        (
            "listen: 0.0.0.0:4222\n".to_string(),
            format!("listen: 127.0.0.1:{}\n", own.client),
        ),
        (
            "http: 0.0.0.0:8222\n".to_string(),
            format!("http: 127.0.0.1:{}\n", own.monitor),
        ),
        (
            "  store_dir: /data/jetstream\n".to_string(),
            format!("  store_dir: \"{}\"\n", store.display()),
        ),
        (
            "  listen: 0.0.0.0:6222\n".to_string(),
            format!("  listen: 127.0.0.1:{}\n", own.route),
        ),
        (
            "  listen: 0.0.0.0:7422\n".to_string(),
            format!("  listen: 127.0.0.1:{}\n", own.leaf),
        ),
    ];
    if !sync_always {
        replacements.push(("  sync_interval: always\n".to_string(), String::new()));
    }
    for (i, ports) in all.iter().enumerate() {
        replacements.push((
            format!("nats-route://nats-hub-{}:6222", i + 1),
            format!("nats-route://127.0.0.1:{}", ports.route),
        ));
    }
    let replacements: Vec<(&str, &str)> = replacements
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let node_file = crate::edge::deploy_file(&format!("cluster-{}.conf", &name[4..]), &[]);
    assert!(
        node_file.contains(&format!("server_name: {name}\n"))
            && node_file.contains("include \"cluster.conf\""),
        "deploy/cluster-{}.conf no longer names the node {name} and includes cluster.conf: update lattice_tests::cluster",
        &name[4..]
    );
    crate::nats::with_declared_store(&format!(
        "server_name: {name}\n{}",
        crate::edge::deploy_file("cluster.conf", &replacements)
    ))
}

/// The (major, minor) version of the nats-server the suites run (`nats-server --version`).
pub fn server_version() -> anyhow::Result<(u32, u32)> {
    let binary = lattice_cli::up::find_nats_server().context("nats-server")?;
    let out = Command::new(binary).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "nats-server: v2.9.10"
    let version = text
        .rsplit('v')
        .next()
        .with_context(|| format!("no version in {text:?}"))?;
    let mut parts = version.trim().split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
        _ => bail!("cannot read the version in {text:?}"),
    }
}

/// The file `deploy/<name>` as shipped, for the nats-server the suites run (without
/// `sync_interval: always` where it refuses that, see [`sync_always_supported`]).
pub fn deploy_config(name: &str) -> String {
    crate::edge::deploy_file(name, &[])
}

/// Whether the nats-server the suites run accepts `sync_interval: always` (2.10 and later; 2.9
/// refuses the field). Asked once, with `nats-server -t`; the answer is printed.
pub fn sync_always_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let check = || -> anyhow::Result<bool> {
            let binary = lattice_cli::up::find_nats_server().context("nats-server")?;
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("sync.conf");
            std::fs::write(&path, "jetstream {\n  sync_interval: always\n}\n")?;
            let status = Command::new(binary)
                .arg("-t")
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            Ok(status.success())
        };
        let supported = check().unwrap_or(false);
        if !supported {
            eprintln!(
                "this nats-server refuses `sync_interval: always` (2.9 has no such setting): \
                 the hub configurations run without it"
            );
        }
        supported
    })
}

/// A lattice on a [`NatsCluster`]: keys, the test's own client and control-plane API client
/// (both given every node's URL), and control planes and hosts started in-process with every
/// bucket and stream at [`REPLICAS`] replicas.
#[derive(Debug)]
pub struct ClusterLattice {
    /// The hub.
    pub cluster: NatsCluster,
    /// A client for the test itself.
    pub client: async_nats::Client,
    /// The lattice name.
    pub lattice: LatticeName,
    /// Signs components; every host trusts it.
    pub issuer: KeyPair,
    /// The control plane's key; every host trusts it.
    pub operator: KeyPair,
    /// The bootstrap admin.
    pub admin: KeyPair,
    /// The control-plane API client, signing as [`ClusterLattice::admin`].
    pub ctl: CtlClient,
    dir: tempfile::TempDir,
}

/// A control plane of a [`ClusterLattice`], and the node its connection went to.
#[derive(Debug)]
pub struct ClusterControl {
    /// The control plane.
    pub handle: ControlHandle,
    /// The server name of the node it connected to first.
    pub node: String,
}

impl ClusterLattice {
    /// A cluster and the lattice's keys and clients; no control plane yet.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_sync(true).await
    }

    /// As [`ClusterLattice::start`], on a cluster started by [`NatsCluster::start_with_sync`].
    pub async fn start_with_sync(sync_always: bool) -> anyhow::Result<Self> {
        let cluster = NatsCluster::start_with_sync(sync_always).await?;
        let client = cluster.client("lattice test").await?;
        let lattice = LatticeName::new("test")?;
        let operator = KeyPair::generate(KeyRole::Operator);
        let admin = KeyPair::generate(KeyRole::User);
        let ctl = CtlClient::new(
            client.clone(),
            lattice.clone(),
            KeyPair::from_seed(&admin.seed())?,
            vec![operator.public_key()],
        );
        Ok(Self {
            cluster,
            client,
            lattice,
            issuer: KeyPair::generate(KeyRole::Issuer),
            operator,
            admin,
            ctl,
            dir: tempfile::tempdir()?,
        })
    }

    /// The storage every program of this lattice is given: three replicas.
    pub fn storage() -> Storage {
        Storage {
            replicas: REPLICAS,
            ..Storage::default()
        }
    }

    /// Starts a control plane configured by `configure` (after the test defaults: no startup
    /// grace, a 200 ms tick, three replicas).
    pub async fn spawn_control(
        &self,
        configure: impl FnOnce(&mut ControlConfig),
    ) -> anyhow::Result<ClusterControl> {
        let mut config = ControlConfig::new(
            self.lattice.clone(),
            KeyPair::from_seed(&self.operator.seed())?,
        );
        config.startup_grace = Duration::ZERO;
        config.tick = Duration::from_millis(200);
        config.admins = vec![self.admin.public_key()];
        config.storage = Self::storage();
        configure(&mut config);
        let token = CancellationToken::new();
        let client = self.cluster.client("lattice control").await?;
        let node = client.server_info().server_name;
        let task = tokio::spawn(lattice_control::run(config, client, token.clone()));
        Ok(ClusterControl {
            handle: ControlHandle { token, task },
            node,
        })
    }

    /// Starts a control plane and waits until it answers.
    pub async fn start_control(
        &self,
        configure: impl FnOnce(&mut ControlConfig),
    ) -> anyhow::Result<ClusterControl> {
        let control = self.spawn_control(configure).await?;
        self.wait_for("the control plane answers", || async {
            Ok(self.ctl.apps().await.is_ok())
        })
        .await?;
        Ok(control)
    }

    /// A host configuration trusting this lattice's keys, admitted by a join token, with three
    /// replicas and providers given every node's URL.
    pub fn host_config(&self, name: &str) -> HostConfig {
        let mut c = HostConfig::new(self.lattice.clone(), self.dir.path().join(name));
        c.name = Some(name.to_string());
        c.trusted_issuers = vec![self.issuer.public_key()];
        c.trusted_operators = vec![self.operator.public_key()];
        c.heartbeat_interval = Duration::from_secs(1);
        c.providers.nats_url = Some(self.cluster.urls());
        c.storage = Self::storage();
        c.join_token = Some(
            JoinToken::sign(
                &JoinGrant {
                    lattice: self.lattice.clone(),
                    expires_at: unix_now() + 24 * 3600,
                    host: None,
                    labels: Default::default(),
                    note: "cluster test hosts".into(),
                },
                &self.admin,
            )
            .to_text(),
        );
        c
    }

    /// Starts a host with `config`, connected with every node's URL.
    pub async fn start_host(&self, config: HostConfig) -> anyhow::Result<TestHost> {
        let client = self.cluster.client("lattice host").await?;
        self.start_host_on(config, client)
    }

    /// Starts a host with `config` on `client` (e.g. a leaf node's).
    pub fn start_host_on(
        &self,
        config: HostConfig,
        client: async_nats::Client,
    ) -> anyhow::Result<TestHost> {
        Ok(TestHost::spawn(config, client))
    }

    /// Signs `component` as `name` 0.1.0 with this lattice's issuer and pushes it.
    pub async fn push_signed(&self, component: &[u8], name: &str) -> anyhow::Result<Digest> {
        let signed = sign_component(
            component,
            &self.issuer,
            &ClaimsOptions::named(name, "0.1.0"),
            unix_now(),
        )?;
        let registry = Registry::open(
            &async_nats::jetstream::new(self.client.clone()),
            &self.lattice,
        )
        .await?;
        Ok(registry.push(&signed, None).await?.digest)
    }

    /// The server name of the node leading stream `stream` (a bucket's is `KV_<bucket>`).
    pub async fn stream_leader(&self, stream: &str) -> anyhow::Result<String> {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut stream = js.get_stream(stream).await?;
        let info = stream.info().await?;
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .with_context(|| {
                format!(
                    "stream {} has no leader: {:?}",
                    info.config.name, info.cluster
                )
            })
    }

    /// Waits until `check` holds, re-checking it as [`crate::eventually`] does for at most
    /// [`WAIT`]; an error from `check` (a request to a node that just went away) counts as "not
    /// yet", and the last one is told when the wait times out.
    pub async fn wait_for<F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let last_err = std::sync::Mutex::new(None::<String>);
        let done = crate::eventually(WAIT, what, || {
            let check = check();
            let last_err = &last_err;
            async move {
                Ok(check.await.unwrap_or_else(|e| {
                    *last_err.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                    false
                }))
            }
        })
        .await;
        done.with_context(|| {
            format!(
                "last error: {:?}",
                last_err.lock().unwrap_or_else(|p| p.into_inner())
            )
        })
    }

    /// Waits until app `name`'s status satisfies `done`, and returns it.
    pub async fn wait_status(
        &self,
        name: &str,
        done: impl Fn(&AppStatus) -> bool,
    ) -> anyhow::Result<AppStatus> {
        let app = AppName::new(name)?;
        let found = std::sync::Mutex::new(None);
        self.wait_for(&format!("the status wanted of {name}"), || async {
            let status = self.ctl.status(&app).await?;
            let ok = done(&status);
            *found.lock().expect("not poisoned") = Some(status);
            Ok(ok)
        })
        .await
        .with_context(|| format!("last status: {:?}", found.lock().expect("not poisoned")))?;
        found
            .into_inner()
            .expect("not poisoned")
            .context("a status")
    }

    /// Waits until app `name` is deployed with an HTTP endpoint; returns the endpoint.
    pub async fn wait_serving(&self, name: &str) -> anyhow::Result<String> {
        let status = self
            .wait_status(name, |s| {
                s.status == AppState::Deployed && s.components.iter().any(|c| c.endpoint.is_some())
            })
            .await?;
        crate::endpoint(&status)
    }
}

/// A leaf node's configuration: `deploy/leaf.conf` as shipped, with no fixed client port and
/// its remote listing every node of `cluster`, so that it moves to a surviving node when its
/// own goes. Panics when the file no longer has the expected shape.
pub fn leaf_config(cluster: &NatsCluster) -> String {
    let urls = cluster
        .leaf_urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    crate::edge::deploy_file(
        "leaf.conf",
        &[
            ("listen: 0.0.0.0:4222\n", ""),
            (
                "{ url: \"nats-leaf://nats-hub:7422\" }",
                &format!("{{ urls: [{urls}] }}"),
            ),
        ],
    )
}
