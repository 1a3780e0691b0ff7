//! A real nats-server with JetStream for each test ([`NatsServer`]), and free ports for the
//! other servers the suites start.

use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The JetStream storage every test server declares. Lattice's streams reserve their limits up
/// front (about 6 GiB with the default limits, more on a cluster), and a server that declares
/// nothing allows 75 % of its disk's free space: on a machine whose disk the build had filled,
/// the control plane's buckets were refused and tests waited for it in vain. What the tests
/// write is far less; a test that fills a disk does it for real (see [`crate::tmpfs`]).
const DECLARED_STORE: &str = "max_file_store: 64G";

/// `config` with [`DECLARED_STORE`] in its `jetstream` block (one added if it has none), unless
/// it declares its own.
pub(crate) fn with_declared_store(config: &str) -> String {
    if config
        .lines()
        .any(|line| line.trim_start().starts_with("max_file_store"))
    {
        config.to_string()
    } else if config.contains("jetstream {") {
        config.replacen(
            "jetstream {",
            &format!("jetstream {{\n  {DECLARED_STORE}\n"),
            1,
        )
    } else {
        format!("{config}\njetstream {{\n  {DECLARED_STORE}\n}}\n")
    }
}

/// A real nats-server with JetStream, on a random port, stopped on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: std::process::Child,
    /// Its client URL.
    pub url: String,
    /// Its client port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server in a fresh temporary directory.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Self::start_in(dir, None).await
    }

    /// Starts a server in a fresh temporary directory with a configuration file (for
    /// authorization, TLS, leaf nodes); the port stays random.
    pub async fn start_with_config(config: &str) -> anyhow::Result<Self> {
        Self::start_with_files(config, &[]).await
    }

    /// As [`NatsServer::start_with_config`], with `files` (name, content) written beside the
    /// configuration first, for it to include (a generated authorization).
    pub async fn start_with_files(
        config: &str,
        files: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content)?;
        }
        let path = dir.path().join("server.conf");
        std::fs::write(&path, with_declared_store(config))?;
        let path = path.display().to_string();
        Self::start_args(dir, None, &["-c", &path]).await
    }

    /// As [`NatsServer::start_with_config`], without JetStream unless `config` enables it (an
    /// edge leaf node that uses the hub's JetStream).
    pub async fn start_with_config_no_js(config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("server.conf");
        std::fs::write(&path, config)?;
        let path = path.display().to_string();
        Self::start_js(dir, None, &["-c", &path], false).await
    }

    /// Starts a server in `dir`, on `port` or a random one.
    pub async fn start_in(dir: tempfile::TempDir, port: Option<u16>) -> anyhow::Result<Self> {
        let path = dir.path().join("server.conf");
        std::fs::write(&path, with_declared_store(""))?;
        let path = path.display().to_string();
        Self::start_args(dir, port, &["-c", &path]).await
    }

    async fn start_args(
        dir: tempfile::TempDir,
        port: Option<u16>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_js(dir, port, extra, true).await
    }

    async fn start_js(
        dir: tempfile::TempDir,
        port: Option<u16>,
        extra: &[&str],
        jetstream: bool,
    ) -> anyhow::Result<Self> {
        let binary = lattice_cli::up::find_nats_server().context(
            "nats-server is not installed: run `make deps` (or apt-get install nats-server)",
        )?;
        let ports = dir.path().join("ports");
        std::fs::create_dir_all(&ports)?;
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let mut command = std::process::Command::new(binary);
        command
            .args(extra)
            .args(["-a", "127.0.0.1", "-p", &port_arg]);
        if jetstream {
            command.args(["-js", "-sd"]).arg(dir.path().join("js"));
        }
        // Its log, for when it exits at start (a port taken, a bad configuration).
        let log = dir.path().join("nats-server.log");
        let child = command
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut server = Self {
            child,
            url: String::new(),
            port: 0,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(url) = read_ports(&ports) {
                server.port = url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .context("port in the ports file")?;
                server.url = url;
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let last: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "nats-server exited at start: {status}; its log ends:\n{}",
                    last.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!("nats-server wrote no ports file within 20 s");
            }
            // The ports file is the only signal nats-server gives; poll it briefly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A new client connection.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::connect(&self.url).await?)
    }

    /// The server's directory (JetStream data lives in `js/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (SIGKILL) and gives its directory back, to restart on the same data.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }
}

/// A port free right now (the OS picked it; nothing holds it after this returns).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr().context("local address")?.port())
}

/// Starts, with `start`, something that must be given its port (it cannot pick one and say
/// which) on a [`free_port`]. Another process may take the port between the pick and the bind
/// (parallel tests open connections all the time): a failed start is tried again on another
/// port, up to 5 times; the last failure is returned.
pub async fn on_free_port<T, F, Fut>(mut start: F) -> anyhow::Result<T>
where
    F: FnMut(u16) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        let port = free_port()?;
        match start(port).await {
            Ok(started) => return Ok(started),
            Err(e) if attempt < 5 => {
                eprintln!("could not start on port {port}, trying another: {e:#}");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_ports(dir: &Path) -> Option<String> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(entry.path()).ok()?).ok()?;
    json["nats"].get(0)?.as_str().map(str::to_string)
}
