//! `lattice-tests`: the harness every end-to-end suite uses, and the suites themselves (in
//! `tests/`).
//!
//! - [`NatsServer`]: a real `nats-server -js` on a random port (`-p -1`, read back from its
//!   ports file), in its own temporary directory, killed on drop.
//! - [`TestLattice`]: that server plus a control plane and any number of hosts, all in-process,
//!   with fresh dev keys; helpers to sign, push, deploy and wait.
//! - [`browser`]: `lattice ui` and headless Chromium over WebDriver, for the dashboard.
//! - [`authz`]: a lattice behind the generated nats-server authorization, and intruders.
//! - [`cluster`]: a three-node JetStream hub (`deploy/cluster.conf`) with kill and restart of
//!   each node, and a lattice on it at three replicas.
//! - [`registry::OciRegistry`]: a real OCI registry (`docker-registry`), for component
//!   references.
//! - [`otlp::OtlpReceiver`]: an OTLP/HTTP trace receiver, for hosts exporting their spans.
//! - [`http_get`]: a minimal HTTP/1.1 client, so that tests see exactly what a user's curl sees.
//!
//! The example components are built for `wasm32-wasip2` by this crate's build script, once and
//! cached: [`hello_wasm`] is the signed-nothing component straight from the compiler.
//!
//! Waiting is driven by events: [`TestLattice::wait_for`] re-checks its condition on every host
//! heartbeat, and every wait is bounded.

pub mod authz;
pub mod browser;
pub mod cli;
pub mod cluster;
pub mod edge;
pub mod guest_apps;
pub mod mosquitto;
mod nats;
pub mod otlp;
pub mod proxy;
pub mod queued;
pub mod redis;
pub mod registry;
pub mod tmpfs;

pub use nats::{NatsServer, free_port, on_free_port};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use lattice_control::ControlConfig;
use lattice_control::client::CtlClient;
use lattice_control::registry::Registry;
use lattice_host::HostConfig;
use lattice_protocol::claims::{ClaimsOptions, sign_component};
use lattice_protocol::digest::Digest;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::messages::{AppState, AppStatus};
use lattice_protocol::names::{AppName, LatticeName};
use lattice_protocol::signed::{JoinGrant, JoinToken};
use lattice_protocol::subject::Subject;
use lattice_protocol::unix_now;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The hello component as the compiler produced it (unsigned).
pub fn hello_wasm() -> Vec<u8> {
    std::fs::read(env!("LATTICE_HELLO_WASM")).expect("the build script built hello.wasm")
}

/// The `lattice` binary built next to this test (`make test` builds it first).
pub fn lattice_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    // target/<profile>/deps/<test> -> target/<profile>/lattice
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("lattice"))
        .expect("a target directory");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` first (`make test` does)",
        bin.display()
    );
    bin
}

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// How long a test watches for something that must not happen (a duplicate delivery, a call
/// crossing a cut link) before it concludes that it did not: an absence has no event to wait for.
pub const QUIET: Duration = Duration::from_secs(2);

/// Waits until `check` holds, re-checking every 50 ms, for at most `within`: for what no
/// lattice event announces (a log line, a stream's state, a process answering).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await? {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Returns once the server has handled everything `client` sent before: a message to a fresh
/// inbox of its own has come back through the server, which handles one connection's commands in
/// order. A subscription made before is then surely held, so a message another connection
/// publishes next reaches it. (`flush` only writes to the socket; it does not wait for the
/// server, and under load another client's message can overtake the subscription.)
pub async fn synced(client: &async_nats::Client) -> anyhow::Result<()> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, "sync".into()).await?;
    tokio::time::timeout(WAIT, echo.next())
        .await
        .context("the server did not echo a message to our own inbox")?
        .context("the inbox subscription ended")?;
    Ok(())
}

/// A host running in-process.
#[derive(Debug)]
pub struct TestHost {
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    /// Its state directory.
    pub state_dir: PathBuf,
}

impl TestHost {
    /// Runs a host with `config` on `client` (the hub's, a leaf node's, one through a proxy).
    pub fn spawn(config: HostConfig, client: async_nats::Client) -> Self {
        let token = CancellationToken::new();
        let state_dir = config.state_dir.clone();
        let task = tokio::spawn(lattice_host::run(config, client, token.clone()));
        Self {
            token,
            task,
            state_dir,
        }
    }

    /// Ends the host abruptly, as a crash or a cut cable would: no last heartbeat.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits for the host to end by itself (e.g. asked to stop by the control plane).
    pub async fn finished(self) -> anyhow::Result<()> {
        tokio::time::timeout(WAIT, self.task).await???;
        Ok(())
    }

    /// Stops the host gracefully and waits for it to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.task).await???;
        Ok(())
    }
}

/// A control plane running in-process.
#[derive(Debug)]
pub struct ControlHandle {
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl ControlHandle {
    /// Stops it gracefully (it gives its lease up).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.task).await???;
        Ok(())
    }

    /// Ends it abruptly, as SIGKILL would: its lease expires on its own.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A lattice for one test: real NATS, control plane and hosts in-process, fresh keys.
#[derive(Debug)]
pub struct TestLattice {
    /// The NATS server.
    pub nats: NatsServer,
    /// A client connection for the test itself.
    pub client: async_nats::Client,
    /// The lattice name.
    pub lattice: LatticeName,
    /// Signs components; every host trusts it.
    pub issuer: KeyPair,
    /// The control plane's key; every host trusts it.
    pub operator: KeyPair,
    /// A user key (`U...`) the control plane knows as an admin from the start.
    pub admin: KeyPair,
    /// The control-plane API client, signing as [`TestLattice::admin`].
    pub ctl: CtlClient,
    control: Option<ControlHandle>,
    dir: tempfile::TempDir,
}

impl TestLattice {
    /// NATS and a control plane.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// NATS and a control plane configured by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut ControlConfig)) -> anyhow::Result<Self> {
        Self::start_on(NatsServer::start().await?, configure).await
    }

    /// A control plane configured by `configure` on `nats` (a hub of an
    /// [`edge::EdgeTopology`]).
    pub async fn start_on(
        nats: NatsServer,
        configure: impl FnOnce(&mut ControlConfig),
    ) -> anyhow::Result<Self> {
        // `RUST_LOG=warn cargo nextest run ... --no-capture` shows what the control plane and
        // hosts log; quiet otherwise.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let client = nats.client().await?;
        let lattice = LatticeName::new("test")?;
        let operator = KeyPair::generate(KeyRole::Operator);
        let admin = KeyPair::generate(KeyRole::User);
        // The test's own client signs as the bootstrap admin and believes only this lattice's
        // control plane.
        let ctl = CtlClient::new(
            client.clone(),
            lattice.clone(),
            KeyPair::from_seed(&admin.seed())?,
            vec![operator.public_key()],
        );
        let mut t = Self {
            ctl,
            nats,
            client,
            lattice,
            issuer: KeyPair::generate(KeyRole::Issuer),
            operator,
            admin,
            control: None,
            dir: tempfile::tempdir()?,
        };
        t.start_control(configure).await?;
        Ok(t)
    }

    /// Starts another control plane on this lattice (a standby while one leads).
    pub async fn spawn_control(
        &self,
        configure: impl FnOnce(&mut ControlConfig),
    ) -> anyhow::Result<ControlHandle> {
        let mut config = ControlConfig::new(
            self.lattice.clone(),
            KeyPair::from_seed(&self.operator.seed())?,
        );
        config.startup_grace = Duration::ZERO;
        config.tick = Duration::from_millis(200);
        config.admins = vec![self.admin.public_key()];
        configure(&mut config);
        let token = CancellationToken::new();
        let client = self.nats.client().await?;
        let task = tokio::spawn(lattice_control::run(config, client, token.clone()));
        Ok(ControlHandle { token, task })
    }

    /// Stops the first control plane gracefully (it gives its lease up).
    pub async fn stop_control(&mut self) -> anyhow::Result<()> {
        match self.control.take() {
            Some(control) => control.stop().await,
            None => Ok(()),
        }
    }

    /// Ends the first control plane abruptly (no lease release), as SIGKILL would.
    pub async fn kill_control(&mut self) {
        if let Some(control) = self.control.take() {
            control.kill().await;
        }
    }

    /// Starts the control plane (again).
    pub async fn start_control(
        &mut self,
        configure: impl FnOnce(&mut ControlConfig),
    ) -> anyhow::Result<()> {
        let mut control = self.spawn_control(configure).await?;
        // The control plane answers once its subscriptions are in place. One that ended (it
        // could not open its buckets, say) is told with its reason, not waited for.
        tokio::select! {
            answered = self.wait_for("the control plane answers", || async {
                Ok(self.ctl.apps().await.is_ok())
            }) => answered?,
            ended = &mut control.task => {
                let ended = ended?.err();
                return Err(ended
                    .unwrap_or_else(|| anyhow::anyhow!("it returned without an error"))
                    .context("the control plane ended before answering"));
            }
        }
        self.control = Some(control);
        Ok(())
    }

    /// A join token for any host of this lattice, valid for a day, signed by [`Self::admin`]
    /// (as `lattice ctl hosts token` makes one).
    pub fn join_token(&self) -> String {
        self.join_token_with(JoinGrant {
            lattice: self.lattice.clone(),
            expires_at: unix_now() + 24 * 3600,
            host: None,
            labels: Default::default(),
            note: "test hosts".into(),
        })
    }

    /// A join token with `grant`, signed by [`Self::admin`].
    pub fn join_token_with(&self, grant: JoinGrant) -> String {
        JoinToken::sign(&grant, &self.admin).to_text()
    }

    /// A host configuration trusting this lattice's keys, with a fresh state directory and a
    /// valid join token (so it is admitted when it first reports).
    pub fn host_config(&self, name: &str) -> HostConfig {
        let mut c = HostConfig::new(self.lattice.clone(), self.dir.path().join(name));
        c.name = Some(name.to_string());
        c.trusted_issuers = vec![self.issuer.public_key()];
        c.trusted_operators = vec![self.operator.public_key()];
        c.heartbeat_interval = Duration::from_secs(1);
        c.providers.nats_url = Some(self.nats.url.clone());
        c.join_token = Some(self.join_token());
        c
    }

    /// Starts a host with `config`.
    pub async fn start_host(&self, config: HostConfig) -> anyhow::Result<TestHost> {
        Ok(TestHost::spawn(config, self.nats.client().await?))
    }

    /// Starts a host named `name` and waits until the control plane sees it.
    pub async fn add_host(&self, name: &str) -> anyhow::Result<TestHost> {
        self.add_host_with(self.host_config(name)).await
    }

    /// Starts a host with `config` (from [`TestLattice::host_config`]) and waits until it
    /// reports.
    pub async fn add_host_with(&self, config: HostConfig) -> anyhow::Result<TestHost> {
        let name = config.name.clone().unwrap_or_default();
        let host = self.start_host(config).await?;
        self.wait_for(&format!("host {name} to report"), || async {
            Ok(self.ctl.hosts().await?.iter().any(|h| h.name == name))
        })
        .await?;
        Ok(host)
    }

    /// Signs `component` with this lattice's issuer.
    pub fn sign(&self, component: &[u8], name: &str, version: &str) -> Vec<u8> {
        sign_component(
            component,
            &self.issuer,
            &ClaimsOptions::named(name, version),
            unix_now(),
        )
        .expect("signs")
    }

    /// Pushes an artifact; returns its digest.
    pub async fn push(&self, bytes: &[u8]) -> anyhow::Result<Digest> {
        let registry = Registry::open(
            &async_nats::jetstream::new(self.client.clone()),
            &self.lattice,
        )
        .await?;
        Ok(registry.push(bytes, None).await?.digest)
    }

    /// Signs the example component built at `path` as `name` 0.1.0 with this lattice's issuer,
    /// and pushes it.
    pub async fn push_example(&self, path: &str, name: &str) -> anyhow::Result<Digest> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{path}: the build script builds the example components"))?;
        self.push(&self.sign(&bytes, name, "0.1.0")).await
    }

    /// Starts host `name` with the label `key=value` and waits until it reports.
    pub async fn add_labelled_host(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> anyhow::Result<TestHost> {
        let mut config = self.host_config(name);
        config.labels.insert(key.into(), value.into());
        let host = self.start_host(config).await?;
        self.wait_for(&format!("host {name} to report"), || async {
            Ok(self.ctl.hosts().await?.iter().any(|h| h.name == name))
        })
        .await?;
        Ok(host)
    }

    /// Waits until `check` is true, re-checking on every heartbeat (and at least every 250 ms).
    pub async fn wait_for<F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        self.wait_until(what, || {
            let fut = check();
            async move { Ok(fut.await?.then_some(())) }
        })
        .await
    }

    /// Waits until `check` gives a value, re-checking on every heartbeat (and at least every
    /// 250 ms), for at most [`WAIT`].
    pub async fn wait_until<T, F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Option<T>>>,
    {
        let mut beats = self
            .client
            .subscribe(Subject::all_heartbeats(&self.lattice))
            .await?;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last_err = None;
        loop {
            match check().await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            tokio::select! {
                _ = beats.next() => {}
                _ = tick.tick() => {}
                () = tokio::time::sleep_until(deadline) => {
                    bail!("timed out waiting for {what} (last error: {last_err:?})");
                }
            }
        }
    }

    /// Waits until app `name` has a status accepted by `done`, and returns it.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&AppStatus) -> bool,
    ) -> anyhow::Result<AppStatus> {
        let name = AppName::new(name)?;
        let last = std::sync::Mutex::new(None);
        let (done, last_ref, name_ref) = (&done, &last, &name);
        self.wait_until(what, || async move {
            let s = self.ctl.status(name_ref).await?;
            let ok = done(&s);
            *last_ref.lock().expect("not poisoned") = Some(s.clone());
            Ok(ok.then_some(s))
        })
        .await
        .with_context(|| format!("last status: {:?}", last.lock().expect("not poisoned")))
    }

    /// Waits until app `name` is deployed; returns the status.
    pub async fn wait_deployed(&self, name: &str) -> anyhow::Result<AppStatus> {
        self.wait_status(name, &format!("{name} to be deployed"), |s| {
            s.status == AppState::Deployed
        })
        .await
    }
}

impl Drop for TestLattice {
    fn drop(&mut self) {
        if let Some(control) = &self.control {
            control.token.cancel();
        }
    }
}

/// A manifest for the hello component, served over HTTP on `address` (`127.0.0.1:0`: any port).
/// New versions roll out without a health period, so tests need not wait one.
pub fn hello_manifest(
    app: &str,
    version: &str,
    image: &str,
    greeting: &str,
    address: &str,
) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {app}
  annotations:
    version: {version}
spec:
  rollout:
    healthy_for: 0s
  components:
    - name: hello
      type: component
      properties:
        image: {image}
        config:
          - name: greeting
            properties:
              GREETING: "{greeting}"
      traits:
        - type: spreadscaler
          properties:
            instances: 1
    - name: httpserver
      type: capability
      properties:
        image: builtin:http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            target:
              name: hello
            source:
              config:
                - name: default-http
                  properties:
                    address: {address}
"#
    )
}

/// blob-store behind the HTTP server; linked to `blobstore-fs` when `link` is given, with
/// `root` as its target config when that is given too.
pub fn blob_store_manifest(app: &str, image: &Digest, link: bool, root: Option<&str>) -> String {
    let config = root.map_or(String::new(), |root| {
        format!(
            r#"
              config:
                - name: blobs
                  properties:
                    root: "{root}""#
        )
    });
    let (link, capability) = if link {
        (
            format!(
                r#"
        - type: link
          properties:
            namespace: wasi
            package: blobstore
            interfaces: [blobstore, container, types]
            target:
              name: blobs{config}"#
            ),
            "
    - name: blobs
      type: capability
      properties:
        image: builtin:blobstore-fs",
        )
    } else {
        (String::new(), "")
    };
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {app}
  annotations:
    version: v1
spec:
  rollout:
    healthy_for: 0s
  components:
    - name: store
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1{link}{capability}
    - name: httpserver
      type: capability
      properties:
        image: builtin:http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            target:
              name: store
            source:
              config:
                - name: http
                  properties:
                    address: 127.0.0.1:0
"#
    )
}

/// kv-counter as app `app`, its `wasi:keyvalue` store and atomics linked to `provider`
/// (`builtin:keyvalue-nats`, `provider:keyvalue-nats`, ...) with bucket `bucket`, served over
/// HTTP on a port of its own.
pub fn kv_counter_manifest(app: &str, image: &Digest, provider: &str, bucket: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {app}
  annotations:
    version: v1
spec:
  components:
    - name: counter
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            namespace: wasi
            package: keyvalue
            interfaces: [store, atomics]
            target:
              name: kv
              config:
                - name: bucket
                  properties:
                    bucket: {bucket}
    - name: kv
      type: capability
      properties:
        image: {provider}
    - name: httpserver
      type: capability
      properties:
        image: builtin:http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            target:
              name: counter
            source:
              config:
                - name: http
                  properties:
                    address: 127.0.0.1:0
"#
    )
}

/// The endpoint of the first component of a status that reports one.
pub fn endpoint(status: &AppStatus) -> anyhow::Result<String> {
    status
        .components
        .iter()
        .find_map(|c| c.endpoint.clone())
        .context("no component reports an HTTP endpoint")
}

/// GET `http://{addr}{path}`: status code and body.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(addr, "GET", path, "").await
}

/// `method` `http://{addr}{path}` with `body`: status code and body (de-chunked).
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    http_request_for(addr, addr, method, path, body).await
}

/// [`http_request`] with `Host: {host}`, for servers that route by host.
pub async fn http_request_for(
    addr: &str,
    host: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no status code")?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        anyhow::Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(30), fut).await?
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
