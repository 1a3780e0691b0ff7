//! Helpers shared by the integration tests: the example component, runtimes
//! and a minimal HTTP/1.1 client.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use lattice_host::compile::{CacheOutcome, CodeCache};
use lattice_host::engine::{EngineConfig, PoolSizing, Runtime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wasmtime::component::Component;

/// Bound on every await in the tests.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// `fut`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(what: &str, fut: F) -> anyhow::Result<F::Output> {
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .with_context(|| format!("timed out: {what}"))
}

/// The bytes of the `hello` example component.
///
/// From `LATTICE_HELLO_WASM` if set; otherwise built once from `examples/`
/// into `target/wasm-components` (the directory the `tests` crate's build
/// script uses, so the two builds share their output).
pub fn hello_wasm() -> anyhow::Result<Vec<u8>> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let path = PATH
        .get_or_init(|| locate_hello().map_err(|err| format!("{err:#}")))
        .as_ref()
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn locate_hello() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LATTICE_HELLO_WASM") {
        return Ok(PathBuf::from(path));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("host/ has no parent directory")?;
    let target_dir = repo.join("target").join("wasm-components");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(repo.join("examples").join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .stdout(Stdio::null());
    // Settings meant for the outer (native) build would break a wasm build.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_TARGET_")
            || matches!(
                key,
                "RUSTFLAGS" | "CARGO_ENCODED_RUSTFLAGS" | "RUSTC_WORKSPACE_WRAPPER"
            )
        {
            command.env_remove(key);
        }
    }
    let status = command
        .status()
        .context("running cargo to build the example components")?;
    if !status.success() {
        bail!(
            "building the example components failed ({status}); run \
             `cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml`"
        );
    }
    Ok(target_dir.join("wasm32-wasip2/release/hello.wasm"))
}

/// The `sha256:<hex>` digest of `bytes`.
pub fn digest(bytes: &[u8]) -> lattice_protocol::digest::Digest {
    lattice_protocol::digest::Digest::of(bytes)
}

/// A runtime with a small pool, light enough to make one per test.
pub fn small_runtime() -> anyhow::Result<Runtime> {
    Runtime::new(&EngineConfig {
        pool: PoolSizing::Pooled { instances: 16 },
        ..EngineConfig::default()
    })
}

/// The hello component for `runtime`, through a code cache shared by the
/// tests of this binary (so only the first test pays for compiling).
pub fn hello_component(runtime: &Runtime) -> anyhow::Result<Component> {
    static CACHE: OnceLock<Result<(tempfile::TempDir, CodeCache), String>> = OnceLock::new();
    let (_dir, cache) = CACHE
        .get_or_init(|| {
            let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
            let cache = CodeCache::new(dir.path().join("code")).map_err(|err| err.to_string())?;
            Ok((dir, cache))
        })
        .as_ref()
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let bytes = hello_wasm()?;
    let (component, outcome) = cache.load(runtime, &digest(&bytes), &bytes)?;
    assert!(matches!(
        outcome,
        CacheOutcome::Hit | CacheOutcome::Compiled
    ));
    Ok(component)
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// A minimal HTTP/1.1 client over one keep-alive connection: enough to see
/// exactly which connection a request travels on.
pub struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = within("connecting", TcpStream::connect(addr))
            .await?
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(Self {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Sends `GET path` and reads the whole response.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
            .await
    }

    /// Sends `head` (a request without body) and reads the whole response.
    pub async fn send(&mut self, head: &str) -> anyhow::Result<Reply> {
        within("sending a request", self.stream.write_all(head.as_bytes())).await??;
        within("reading a response", self.read_response()).await?
    }

    async fn read_response(&mut self) -> anyhow::Result<Reply> {
        let header_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8(self.buffer[..header_end].to_vec())?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .context("no status line")?
            .parse()?;
        let length: usize = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .context("the test client needs a content-length")?
            .1
            .trim()
            .parse()?;
        while self.buffer.len() < header_end + length {
            self.fill().await?;
        }
        let body = String::from_utf8(self.buffer[header_end..header_end + length].to_vec())?;
        self.buffer.drain(..header_end + length);
        Ok(Reply { status, body })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
