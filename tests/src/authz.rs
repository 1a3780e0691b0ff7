//! A lattice behind the nats-server authorization `lattice nats authz` generates: every
//! identity (control plane, hosts, operators) connects with its own key as a NATS nkey, and an
//! [`Intruder`] connects with some identity's key to try what its permissions refuse.
//!
//! One server may carry several lattices ([`SecuredLattice::start`] with more than one name),
//! each an account of its own, as the hub of `deploy/hub.conf` does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use lattice_connect::{NatsOptions, Patience};
use lattice_control::client::CtlClient;
use lattice_control::registry::Registry;
use lattice_host::HostConfig;
use lattice_protocol::claims::{ClaimsOptions, sign_component};
use lattice_protocol::digest::Digest;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::names::{AppName, LatticeName};
use lattice_protocol::permissions::{self, LatticeAuthz, LeafLink, render_account, render_leaf};
use lattice_protocol::signed::{JoinGrant, JoinToken};
use lattice_protocol::unix_now;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{ControlHandle, NatsServer, TestHost, WAIT};

/// The keys of one lattice on the server.
#[derive(Debug)]
pub struct LatticeKeys {
    /// The lattice.
    pub lattice: LatticeName,
    /// The control plane.
    pub control: KeyPair,
    /// An admin operator.
    pub admin: KeyPair,
    /// Hosts the authorization names, by name.
    pub hosts: Vec<(String, KeyPair)>,
    /// Signs components.
    pub issuer: KeyPair,
    /// The hub's JetStream domain, when hosts reach it from a leaf node.
    pub js_domain: Option<String>,
}

impl LatticeKeys {
    fn new(lattice: &str, hosts: &[&str]) -> anyhow::Result<Self> {
        Ok(Self {
            lattice: LatticeName::new(lattice)?,
            control: KeyPair::generate(KeyRole::Operator),
            admin: KeyPair::generate(KeyRole::User),
            hosts: hosts
                .iter()
                .map(|h| (h.to_string(), KeyPair::generate(KeyRole::Host)))
                .collect(),
            issuer: KeyPair::generate(KeyRole::Issuer),
            js_domain: None,
        })
    }

    /// The authorization `lattice nats authz` makes for these keys.
    pub fn authz(&self) -> LatticeAuthz {
        LatticeAuthz {
            lattice: self.lattice.clone(),
            control: vec![self.control.public_key()],
            hosts: self.hosts.iter().map(|(_, k)| k.public_key()).collect(),
            operators: vec![self.admin.public_key()],
            js_domain: self.js_domain.clone(),
            app_subjects: Vec::new(),
            app_buckets: Vec::new(),
        }
    }

    /// Host `name`'s key.
    pub fn host(&self, name: &str) -> &KeyPair {
        &self
            .hosts
            .iter()
            .find(|(n, _)| n == name)
            .expect("a host of the authorization")
            .1
    }
}

/// A server running the generated authorization of one or more lattices, and the first
/// lattice's control plane, with an admin's API client.
#[derive(Debug)]
pub struct SecuredLattice {
    /// The server.
    pub nats: NatsServer,
    /// Every lattice's keys; the first is the one served here.
    pub lattices: Vec<LatticeKeys>,
    /// The first lattice's API client, connected and signing as its admin.
    pub ctl: CtlClient,
    /// The admin's NATS connection.
    pub admin_client: async_nats::Client,
    /// An edge leaf node of the server, when started with one: hosts connect there.
    pub leaf: Option<NatsServer>,
    control: ControlHandle,
    dir: tempfile::TempDir,
}

impl SecuredLattice {
    /// A server with the authorization of `lattices` (each `(name, hosts)`), and the first
    /// one's control plane.
    pub async fn start(lattices: &[(&str, &[&str])]) -> anyhow::Result<Self> {
        Self::start_with(lattices, false).await
    }

    /// As [`SecuredLattice::start`], with an edge leaf node when `leaf` (the first lattice's
    /// authorization then names the hub's JetStream domain, [`HUB_DOMAIN`], and a leaf link):
    /// hosts connect to the leaf, as `deploy/leaf-authz.conf` has them.
    pub async fn start_with(lattices: &[(&str, &[&str])], leaf: bool) -> anyhow::Result<Self> {
        let mut lattices: Vec<LatticeKeys> = lattices
            .iter()
            .map(|(l, hosts)| LatticeKeys::new(l, hosts))
            .collect::<anyhow::Result<_>>()?;
        if leaf {
            lattices[0].js_domain = Some(HUB_DOMAIN.to_string());
        }
        let link = LeafLink {
            name: "edge".into(),
            password: random_password(),
        };
        let mut files = Vec::new();
        let mut includes = String::new();
        for (i, keys) in lattices.iter().enumerate() {
            let name = format!("lattice-{}.conf", keys.lattice);
            includes.push_str(&format!("  include \"{name}\"\n"));
            let links = if leaf && i == 0 {
                std::slice::from_ref(&link)
            } else {
                &[]
            };
            files.push((name, render_account(&keys.authz(), links)));
        }
        // As deploy/hub-authz.conf: the generated accounts, included.
        let accounts = format!("accounts {{\n{includes}}}\n");
        let (nats, leaf) = if leaf {
            let (hub, leaf_port) = crate::on_free_port(|port| {
                let config = format!(
                    "jetstream {{ domain: {HUB_DOMAIN} }}\nleafnodes {{ listen: \"127.0.0.1:{port}\" }}\n{accounts}"
                );
                let files = files.clone();
                async move { anyhow::Ok((NatsServer::start_with_files(&config, &files).await?, port)) }
            })
            .await?;
            let hub_url = format!("nats-leaf://127.0.0.1:{leaf_port}");
            let leaf_config = render_leaf(&lattices[0].authz(), &link, &[hub_url]);
            (
                hub,
                Some(NatsServer::start_with_config_no_js(&leaf_config).await?),
            )
        } else {
            (NatsServer::start_with_files(&accounts, &files).await?, None)
        };
        let dir = tempfile::tempdir()?;
        let first = &lattices[0];
        let admin_client = connect(&nats.url, &key_file(&dir, "admin", &first.admin)?).await?;
        let ctl = CtlClient::new(
            admin_client.clone(),
            first.lattice.clone(),
            KeyPair::from_seed(&first.admin.seed())?,
            vec![first.control.public_key()],
        );
        let mut config = lattice_control::ControlConfig::new(
            first.lattice.clone(),
            KeyPair::from_seed(&first.control.seed())?,
        );
        config.startup_grace = Duration::ZERO;
        config.tick = Duration::from_millis(200);
        config.admins = vec![first.admin.public_key()];
        let control_client =
            connect(&nats.url, &key_file(&dir, "control", &first.control)?).await?;
        let token = CancellationToken::new();
        let task = tokio::spawn(lattice_control::run(config, control_client, token.clone()));
        let t = Self {
            nats,
            lattices,
            ctl,
            admin_client,
            leaf,
            control: ControlHandle { token, task },
            dir,
        };
        crate::eventually(WAIT, "the control plane answers", || async {
            Ok(t.ctl.apps().await.is_ok())
        })
        .await?;
        Ok(t)
    }

    /// The first lattice's keys.
    pub fn keys(&self) -> &LatticeKeys {
        &self.lattices[0]
    }

    /// Where a key file of `name` is (written on first use).
    pub fn key_path(&self, name: &str, key: &KeyPair) -> anyhow::Result<PathBuf> {
        key_file(&self.dir, name, key)
    }

    /// Starts host `name` of the first lattice, connected with its own key, with its provider
    /// processes connecting as it does; waits until it reports.
    pub async fn start_host(&self, name: &str) -> anyhow::Result<TestHost> {
        let keys = self.keys();
        let state_dir = self.dir.path().join(name);
        std::fs::create_dir_all(&state_dir)?;
        // The host's identity is the key the authorization names.
        let key_path = state_dir.join("host.nk");
        std::fs::write(&key_path, keys.host(name).to_file_contents())?;
        let mut c = HostConfig::new(keys.lattice.clone(), state_dir.clone());
        c.name = Some(name.to_string());
        c.trusted_issuers = vec![keys.issuer.public_key()];
        c.trusted_operators = vec![keys.control.public_key()];
        c.heartbeat_interval = Duration::from_secs(1);
        let url = self.leaf.as_ref().unwrap_or(&self.nats).url.clone();
        c.js_domain = keys.js_domain.clone();
        c.providers.js_domain = keys.js_domain.clone();
        c.providers.nats_url = Some(url.clone());
        c.providers.nats = options(&key_path);
        c.join_token = Some(
            JoinToken::sign(
                &JoinGrant {
                    lattice: keys.lattice.clone(),
                    expires_at: unix_now() + 24 * 3600,
                    host: None,
                    labels: Default::default(),
                    note: "authorized hosts".into(),
                },
                &keys.admin,
            )
            .to_text(),
        );
        let client = connect(&url, &key_path).await?;
        let host = TestHost::spawn(c, client);
        crate::eventually(WAIT, &format!("host {name} to report"), || async {
            Ok(self.ctl.hosts().await?.iter().any(|h| h.name == name))
        })
        .await?;
        Ok(host)
    }

    /// Signs `component` as `name` 0.1.0 with the first lattice's issuer and pushes it as its
    /// admin.
    pub async fn push(&self, component: &[u8], name: &str) -> anyhow::Result<Digest> {
        let signed = sign_component(
            component,
            &self.keys().issuer,
            &ClaimsOptions::named(name, "0.1.0"),
            unix_now(),
        )?;
        let js = async_nats::jetstream::new(self.admin_client.clone());
        let registry = Registry::open(&js, &self.keys().lattice).await?;
        Ok(registry.push(&signed, None).await?.digest)
    }

    /// Deploys `manifest` and waits until app `name` serves: its HTTP endpoint.
    pub async fn deploy_and_serve(&self, manifest: &str, name: &str) -> anyhow::Result<String> {
        self.ctl.deploy(manifest).await?;
        let app = AppName::new(name)?;
        let ctl = &self.ctl;
        crate::eventually(WAIT, &format!("app {name} to be deployed"), || async {
            Ok(ctl.status(&app).await?.status == lattice_protocol::messages::AppState::Deployed)
        })
        .await?;
        crate::endpoint(&ctl.status(&app).await?)
    }

    /// An intruder connected with `key` (a key of some lattice's authorization).
    pub async fn intruder(&self, name: &str, key: &KeyPair) -> anyhow::Result<Intruder> {
        Intruder::connect(&self.nats.url, &self.key_path(name, key)?).await
    }
}

impl Drop for SecuredLattice {
    fn drop(&mut self) {
        self.control.token.cancel();
    }
}

/// The hub's JetStream domain when the lattice has an edge leaf node.
pub const HUB_DOMAIN: &str = "hub";

/// A password no one guesses (a fresh key's public half: 32 random bytes, base32).
fn random_password() -> String {
    KeyPair::generate(KeyRole::User).public_key().to_string()
}

fn key_file(dir: &tempfile::TempDir, name: &str, key: &KeyPair) -> anyhow::Result<PathBuf> {
    let path = dir.path().join(format!("{name}.nk"));
    if !path.exists() {
        std::fs::write(&path, key.to_file_contents())?;
    }
    Ok(path)
}

fn options(key: &std::path::Path) -> NatsOptions {
    NatsOptions {
        nkey: Some(key.to_path_buf()),
        ..Default::default()
    }
}

/// Connects as a Lattice program does with `--nkey <key>`.
pub async fn connect(url: &str, key: &std::path::Path) -> anyhow::Result<async_nats::Client> {
    lattice_connect::connect_with(&options(key), url, "lattice-test", Patience::FailFast).await
}

/// A client that tries what its permissions refuse, and hears the server's refusals.
#[derive(Debug)]
pub struct Intruder {
    /// Its connection.
    pub client: async_nats::Client,
    refusals: mpsc::UnboundedReceiver<String>,
}

impl Intruder {
    /// Connects with the key in `key` (as `--nkey` does), listening for the server's errors.
    pub async fn connect(url: &str, key: &std::path::Path) -> anyhow::Result<Self> {
        let (seed, user) = permissions::user_seed(&std::fs::read_to_string(key)?)?;
        let (tx, refusals) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .nkey(seed)
            .custom_inbox_prefix(permissions::inbox_prefix(&user))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(url)
            .await?;
        Ok(Self { client, refusals })
    }

    /// Waits for the server's permission refusal naming `subject`: the refusal of what was just
    /// tried.
    pub async fn refused(&mut self, subject: &str) -> anyhow::Result<String> {
        let wait = async {
            while let Some(error) = self.refusals.recv().await {
                if error.contains("Permissions Violation") && error.contains(subject) {
                    return Ok(error);
                }
            }
            anyhow::bail!("the connection ended without a refusal of {subject}")
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .with_context(|| format!("no permissions violation for {subject}"))?
    }
}
