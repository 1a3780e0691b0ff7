//! [`RedisServer`]: a real `redis-server` on a free port, in its own temporary directory, with
//! nothing saved to disk, killed on drop (for the `keyvalue-redis` provider's suite).

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
        crate::on_free_port(|port| Self::start_on(&binary, port)).await
    }

    async fn start_on(binary: &PathBuf, port: u16) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let child = std::process::Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ping(port).await {
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

/// Whether a Redis on `port` answers `PING` (inline command, `+PONG` reply).
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut answer = [0u8; 7];
        stream.read_exact(&mut answer).await?;
        std::io::Result::Ok(&answer == b"+PONG\r\n")
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
