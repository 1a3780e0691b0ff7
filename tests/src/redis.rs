//! [`RedisServer`]: a real `redis-server` on a free port, in its own temporary directory, with
//! nothing saved to disk, killed on drop (for the `keyvalue-redis` provider's suite); with a
//! password (`requirepass`) when asked, for link secrets.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A real redis-server on a free port, stopped on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: std::process::Child,
    /// Its URL, `redis://127.0.0.1:<port>`.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// The password it requires (`requirepass`), if any; not in [`RedisServer::url`].
    pub password: Option<String>,
    _dir: tempfile::TempDir,
}

/// Where `redis-server` is: on `PATH`, or where Debian puts it.
fn find_redis_server() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
}

impl RedisServer {
    /// Starts a server in a fresh temporary directory.
    pub async fn start() -> anyhow::Result<Self> {
        let binary = find_redis_server().context(
            "redis-server is not installed: run `make deps` (or apt-get install redis-server)",
        )?;
        // redis-server cannot pick its own port and tell it (`--port 0` turns TCP off).
        crate::on_free_port(|port| Self::start_on(&binary, port, None)).await
    }

    /// Starts a server that refuses every client not authenticated with `password`.
    pub async fn start_with_password(password: &str) -> anyhow::Result<Self> {
        let binary = find_redis_server().context(
            "redis-server is not installed: run `make deps` (or apt-get install redis-server)",
        )?;
        crate::on_free_port(|port| Self::start_on(&binary, port, Some(password))).await
    }

    /// Its URL with the password in it (`redis://:<password>@127.0.0.1:<port>`), as a link
    /// gives it to the `keyvalue-redis` provider.
    pub fn url_with_password(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => self.url.clone(),
        }
    }

    async fn start_on(binary: &PathBuf, port: u16, password: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut command = std::process::Command::new(binary);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path());
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
            port,
            password: password.map(str::to_string),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ping(port, password).await {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("redis-server exited at start (port {port} taken?): {status}");
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING within 20 s");
            }
            // Answering is the only signal redis-server gives; poll it briefly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl RedisServer {
    /// Its process id (to stop and continue it with signals, as a hung server would).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Whether a Redis on `port` answers `PING` (inline command, `+PONG` reply), after `AUTH`
/// with `password` (`+OK`) when it has one.
async fn ping(port: u16, password: Option<&str>) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut expected = Vec::new();
        if let Some(password) = password {
            stream
                .write_all(format!("AUTH {password}\r\n").as_bytes())
                .await?;
            expected.extend_from_slice(b"+OK\r\n");
        }
        stream.write_all(b"PING\r\n").await?;
        expected.extend_from_slice(b"+PONG\r\n");
        let mut answer = vec![0u8; expected.len()];
        stream.read_exact(&mut answer).await?;
        std::io::Result::Ok(answer == expected)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
