//! The production edge topology: a hub NATS with JetStream (the control plane's side) and an
//! edge leaf NATS joined to it through a [`Proxy`] the test can cut.
//!
//! ```text
//!   control plane, cloud hosts ──> hub nats-server (JetStream, domain `hub`, leafnode port)
//!                                        ^
//!                                        │ leaf-node link, through the cuttable Proxy
//!                                        │
//!   edge hosts ────────────────────> leaf nats-server (no JetStream)
//! ```
//!
//! The leaf has no JetStream of its own. Edge hosts reach the hub's JetStream (the assignment
//! watch, the artifact store) across the link with the JetStream domain `hub`
//! ([`HostConfig::js_domain`], `lattice host --js-domain hub`): their API requests go to
//! `$JS.hub.API.>`, which the hub answers. Both servers run the configuration files shipped in
//! `deploy/` (`hub.conf`, `leaf.conf`), with local ports; the leaf also maps the default API
//! prefix to the hub's domain, for clients without a domain setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use lattice_control::ControlConfig;
use lattice_host::HostConfig;

use crate::proxy::Proxy;
use crate::{NatsServer, TestHost, TestLattice, WAIT, lattice_bin, on_free_port};

/// The hub's JetStream domain.
pub const HUB_DOMAIN: &str = "hub";

/// A hub, a leaf joined to it through a cuttable proxy, and a control plane on the hub.
#[derive(Debug)]
pub struct EdgeTopology {
    /// The hub side: its NATS (JetStream, domain [`HUB_DOMAIN`]), control plane, keys and the
    /// test's own client; hosts started through it connect to the hub.
    pub hub: TestLattice,
    /// The edge NATS, a leaf node of the hub; no JetStream.
    pub leaf: NatsServer,
    /// The link between the leaf and the hub's leaf-node port.
    pub proxy: Proxy,
    /// A client of the leaf, for the test.
    pub leaf_client: async_nats::Client,
}

impl EdgeTopology {
    /// Hub, proxy, leaf and a control plane; returns once the leaf-node link is up.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// As [`EdgeTopology::start`], with the control plane configured by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut ControlConfig)) -> anyhow::Result<Self> {
        Self::start_leaf(configure, leaf_config).await
    }

    /// As [`EdgeTopology::start`], with a leaf that does not map the default JetStream API
    /// prefix to the hub's domain: only clients that use the domain reach JetStream.
    pub async fn start_without_default_domain() -> anyhow::Result<Self> {
        Self::start_leaf(|_| {}, |hub| {
            let mapping = format!("default_js_domain: {{ \"$G\": \"{HUB_DOMAIN}\" }}\n");
            let config = leaf_config(hub);
            assert!(
                config.contains(&mapping),
                "deploy/leaf.conf no longer maps the default domain as {mapping:?}: update lattice_tests::edge"
            );
            config.replace(&mapping, "")
        })
        .await
    }

    async fn start_leaf(
        configure: impl FnOnce(&mut ControlConfig),
        leaf_config: impl FnOnce(SocketAddr) -> String,
    ) -> anyhow::Result<Self> {
        // The proxy forwards to the hub's leaf-node listener, whose port the hub must be given.
        let (proxy, hub) = on_free_port(|leafnode_port| async move {
            let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], leafnode_port))).await?;
            let hub = NatsServer::start_with_config(&hub_config(leafnode_port, proxy.addr)).await?;
            anyhow::Ok((proxy, hub))
        })
        .await?;
        let leaf = NatsServer::start_with_config_no_js(&leaf_config(proxy.addr)).await?;
        let leaf_client = leaf.client().await?;
        let hub = TestLattice::start_on(hub, configure).await?;
        let topology = Self {
            hub,
            leaf,
            proxy,
            leaf_client,
        };
        topology.wait_linked().await?;
        Ok(topology)
    }

    /// A host configuration for an edge host: the hub's keys, a fresh state directory, the
    /// hub's JetStream domain, providers connecting to the leaf in that domain.
    pub fn edge_host_config(&self, name: &str) -> HostConfig {
        let mut c = self.hub.host_config(name);
        c.js_domain = Some(HUB_DOMAIN.to_string());
        c.providers.nats_url = Some(self.leaf.url.clone());
        c.providers.js_domain = Some(HUB_DOMAIN.to_string());
        c
    }

    /// Starts a host connected to the leaf (it starts even when the link is cut).
    pub async fn start_edge_host(&self, config: HostConfig) -> anyhow::Result<TestHost> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(&self.leaf.url)
            .await?;
        Ok(TestHost::spawn(config, client))
    }

    /// Starts an edge host named `name` with `labels` and waits until the control plane sees
    /// it.
    pub async fn add_edge_host(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<TestHost> {
        let mut config = self.edge_host_config(name);
        config.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let host = self.start_edge_host(config).await?;
        self.hub
            .wait_for(&format!("edge host {name} to report"), || async {
                Ok(self.hub.ctl.hosts().await?.iter().any(|h| h.name == name))
            })
            .await?;
        Ok(host)
    }

    /// Starts a real `lattice-host` process on the leaf, named `name`, with `labels` and its
    /// state in `state_dir`; it logs (`RUST_LOG=warn`) to [`HostProcess::log`].
    pub fn start_host_process(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        state_dir: &Path,
    ) -> anyhow::Result<HostProcess> {
        let t = &self.hub;
        let log = state_dir.with_extension("log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(lattice_bin().with_file_name("lattice-host"));
        command
            .args(["--nats-url", &self.leaf.url])
            .args(["--lattice", t.lattice.as_str(), "--name", name])
            .args(["--js-domain", HUB_DOMAIN])
            .args(["--trust-issuer", t.issuer.public_key().as_str()])
            .args(["--trust-operator", t.operator.public_key().as_str()])
            .env("LATTICE_JOIN_TOKEN", t.join_token())
            .args(["--heartbeat-secs", "1", "--state-dir"])
            .arg(state_dir);
        for (k, v) in labels {
            command.args(["--label", &format!("{k}={v}")]);
        }
        let child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting lattice-host (`cargo build --bins` builds it)")?;
        Ok(HostProcess { child, log })
    }

    /// Cuts the link and waits until no message crosses it; checks again after the leaf's
    /// reconnect interval (1 s), so that the leaf found no way around the proxy.
    pub async fn cut(&self) -> anyhow::Result<()> {
        self.proxy.cut();
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.crosses().await? {
            if tokio::time::Instant::now() > deadline {
                bail!("messages still cross the cut link");
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if self.crosses().await? {
            bail!("the leaf reconnected to the hub around the cut proxy");
        }
        Ok(())
    }

    /// Heals the link and waits until messages cross it again.
    pub async fn heal(&self) -> anyhow::Result<()> {
        self.proxy.heal();
        self.wait_linked().await
    }

    /// Waits until a message published on the leaf reaches a subscriber on the hub.
    pub async fn wait_linked(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.crosses().await? {
            if tokio::time::Instant::now() > deadline {
                bail!("the leaf-node link did not come up within {WAIT:?}");
            }
        }
        Ok(())
    }

    /// Whether a message published on the leaf reaches the hub within 200 ms.
    async fn crosses(&self) -> anyhow::Result<bool> {
        let subject = format!("edge.probe.{}", rand_suffix());
        let mut sub = self.hub.client.subscribe(subject.clone()).await?;
        self.hub.client.flush().await?;
        let until = tokio::time::Instant::now() + Duration::from_millis(200);
        while tokio::time::Instant::now() < until {
            self.leaf_client
                .publish(subject.clone(), "probe".into())
                .await?;
            self.leaf_client.flush().await?;
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A `lattice-host` process, SIGKILLed on drop.
#[derive(Debug)]
pub struct HostProcess {
    child: Child,
    /// Where its stderr goes (appended to across restarts on the same state directory).
    pub log: PathBuf,
}

impl HostProcess {
    /// A real `lattice-host` process joining `t`'s NATS directly as `name`, with `flags`
    /// besides, its state in `state_dir`, logging at `info` to `<state_dir>.log`.
    pub fn start_direct(
        t: &TestLattice,
        name: &str,
        state_dir: &Path,
        flags: &[&str],
    ) -> anyhow::Result<Self> {
        let log = state_dir.with_extension("log");
        let child = Command::new(lattice_bin().with_file_name("lattice-host"))
            .args(flags)
            .args(["--nats-url", &t.nats.url, "--lattice", t.lattice.as_str()])
            .args(["--name", name, "--heartbeat-secs", "1"])
            .args(["--trust-issuer", t.issuer.public_key().as_str()])
            .args(["--trust-operator", t.operator.public_key().as_str()])
            .env("LATTICE_JOIN_TOKEN", t.join_token())
            .arg("--state-dir")
            .arg(state_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting lattice-host (`cargo build --bins` builds it)")?;
        Ok(Self { child, log })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(mut self) {
        self.kill_now();
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// `deploy/hub.conf` as shipped, made local: no fixed client or monitoring port (the harness
/// picks one), the harness's JetStream directory, the leaf-node listener on `leafnode_port` and
/// advertising `advertise` (the proxy) to leaf nodes, so that a leaf cannot reconnect around a
/// cut. Panics when the file no longer has the expected shape.
pub fn hub_config(leafnode_port: u16, advertise: SocketAddr) -> String {
    deploy_file(
        "hub.conf",
        &[
            ("listen: 0.0.0.0:4222\n", ""),
            ("http: 0.0.0.0:8222\n", ""),
            ("  store_dir: /data/jetstream\n", ""),
            (
                "  listen: 0.0.0.0:7422\n",
                &format!("  listen: \"127.0.0.1:{leafnode_port}\"\n  advertise: \"{advertise}\"\n"),
            ),
        ],
    )
}

/// `deploy/leaf.conf` as shipped, made local: no fixed client port, dialling the hub at `hub`
/// (the proxy). Panics when the file no longer has the expected shape.
pub fn leaf_config(hub: SocketAddr) -> String {
    deploy_file(
        "leaf.conf",
        &[
            ("listen: 0.0.0.0:4222\n", ""),
            ("nats-leaf://nats-hub:7422", &format!("nats-leaf://{hub}")),
        ],
    )
}

/// The file `deploy/<name>` with `replacements` made (each must match), without its
/// `sync_interval: always` line when this nats-server refuses it (2.9, see
/// [`crate::cluster::sync_always_supported`]).
pub(crate) fn deploy_file(name: &str, replacements: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "{} no longer contains {from:?}: update lattice_tests::edge",
            path.display()
        );
        text = text.replace(from, to);
    }
    const SYNC_ALWAYS: &str = "  sync_interval: always\n";
    if text.contains(SYNC_ALWAYS) && !crate::cluster::sync_always_supported() {
        text = text.replace(SYNC_ALWAYS, "");
    }
    assert!(
        text.contains(&format!("domain: {HUB_DOMAIN}")) || name != "hub.conf",
        "deploy/hub.conf's JetStream domain is no longer `{HUB_DOMAIN}`"
    );
    text
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    u64::from(std::process::id()) << 32 | n
}
