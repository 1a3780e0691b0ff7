//! The dashboard's harness: `lattice ui` as an operator runs it ([`Dashboard`]), and headless
//! Chromium driven over WebDriver ([`Browser`]): Debian's `chromium` and `chromedriver`, one
//! chromedriver per test on a free port, a temporary profile, `--no-sandbox` (CI runs as root).
//! Waits poll the page's DOM with a timeout ([`Browser::wait_js`]).
//!
//! Chromium missing is a failure, not a skip: `scripts/install-deps.sh` installs it, and CI runs
//! that script.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use fantoccini::{Client, ClientBuilder, Locator};
use lattice_protocol::keys::KeyPair;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::{TestLattice, WAIT, eventually, free_port, lattice_bin};

/// Where `LATTICE_SCREENSHOTS` asks the tests to write their PNGs (`scripts/screenshots.sh`).
pub const SCREENSHOTS_ENV: &str = "LATTICE_SCREENSHOTS";

/// `lattice ui` serving a test lattice, signing as one user.
#[derive(Debug)]
pub struct Dashboard {
    /// The page's address, `http://127.0.0.1:PORT/`.
    pub url: String,
    /// `127.0.0.1:PORT`, for plain HTTP requests.
    pub addr: String,
    child: Child,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Dashboard {
    /// Starts `lattice ui --addr 127.0.0.1:0` for `t`, signing with `user`, and waits for the
    /// address it prints.
    pub async fn start(t: &TestLattice, user: &KeyPair) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("user.nk");
        std::fs::write(&key, user.to_file_contents())?;
        let mut child = Command::new(lattice_bin())
            .args(["ui", "--addr", "127.0.0.1:0", "--nats-url", &t.nats.url])
            .args(["--lattice", t.lattice.as_ref()])
            .arg("--key")
            .arg(&key)
            .args(["--control-key", &t.operator.public_key().to_string()])
            .env("LATTICE_STATE_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting `lattice ui`")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(read_log(stderr, log.clone(), tx));
        let url = match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(url)) => url,
            _ => anyhow::bail!(
                "`lattice ui` did not say where it serves within {WAIT:?}; its log:\n{}",
                log.lock().map(|l| l.clone()).unwrap_or_default()
            ),
        };
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            url,
            addr,
            child,
            log,
            _dir: dir,
        })
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Collects `lattice ui`'s log; sends the page's address once it is printed.
async fn read_log(
    stderr: tokio::process::ChildStderr,
    log: Arc<Mutex<String>>,
    tx: tokio::sync::oneshot::Sender<String>,
) {
    let mut tx = Some(tx);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(rest) = line
            .split(" on http://")
            .nth(1)
            .filter(|_| line.contains("serving the dashboard"))
        {
            let addr = rest.split('/').next().unwrap_or_default();
            if let Some(tx) = tx.take() {
                let _ = tx.send(format!("http://{addr}/"));
            }
        }
        if let Ok(mut log) = log.lock() {
            log.push_str(&line);
            log.push('\n');
        }
    }
}

/// Headless Chromium under its own chromedriver.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

/// `name`'s path on `PATH` (or in `/usr/bin`, where Debian puts chromium and chromedriver).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session through it.
    pub async fn start() -> anyhow::Result<Self> {
        let chromium = find_program("chromium")
            .or_else(|| find_program("chromium-browser"))
            .context("Chromium is not installed (no `chromium` on PATH): run scripts/install-deps.sh, which installs Debian's chromium and chromium-driver (CI runs it)")?;
        let driver = find_program("chromedriver").context(
            "chromedriver is not installed (Debian's chromium-driver puts it at /usr/bin/chromedriver): run scripts/install-deps.sh (CI runs it)",
        )?;
        let port = free_port()?;
        let driver = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        let addr = format!("127.0.0.1:{port}");
        // It listens once it is ready for sessions (and keeps connections open, so a plain
        // request would not see the end of its answer).
        eventually(WAIT, "chromedriver to listen", || async {
            Ok(tokio::net::TcpStream::connect(&addr).await.is_ok())
        })
        .await?;
        let profile = tempfile::tempdir()?;
        let capabilities = capabilities(&chromium, profile.path());
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            WAIT,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&format!("http://{addr}")),
        )
        .await
        .context("Chromium did not start within the wait")?
        .context("starting a Chromium session through chromedriver")?;
        Ok(Self {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        tokio::time::timeout(WAIT, self.client.goto(url))
            .await
            .context("the page did not load in time")??;
        Ok(())
    }

    /// Runs `script` (a function body: `return ...;`) in the page; its value.
    pub async fn js(&self, script: &str) -> anyhow::Result<Value> {
        Ok(tokio::time::timeout(WAIT, self.client.execute(script, Vec::new())).await??)
    }

    /// Polls `script` until its value satisfies `done` (for at most [`WAIT`]); that value. On
    /// a timeout the error carries the page's notice and what the script saw last.
    pub async fn wait_js(
        &self,
        what: &str,
        script: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.js(script).await?;
            if done(&value) {
                return Ok(value);
            }
            if tokio::time::Instant::now() > deadline {
                let notice = self.text("#notice").await.unwrap_or_default();
                anyhow::bail!(
                    "timed out after {WAIT:?} waiting for {what}; the page showed {value} (notice: {notice:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching `css` (empty when hidden).
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let element = self.client.find(Locator::Css(css)).await?;
        Ok(element.text().await?)
    }

    /// Clicks the first element matching `css`, as a user would.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = tokio::time::timeout(WAIT, self.client.find(Locator::Css(css))).await??;
        element.click().await?;
        Ok(())
    }

    /// Writes a PNG of the page as `name` into the directory `LATTICE_SCREENSHOTS` names, when
    /// it names one (`scripts/screenshots.sh`); otherwise does nothing.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let Some(dir) = std::env::var_os(SCREENSHOTS_ENV) else {
            return Ok(());
        };
        let png = self.client.screenshot().await?;
        let path = Path::new(&dir).join(name);
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Ends the session (Chromium exits; chromedriver is killed on drop).
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// Headless Chromium with a throwaway profile, sized for readable screenshots.
fn capabilities(chromium: &Path, profile: &Path) -> serde_json::Map<String, Value> {
    let options = json!({
        "binary": chromium.display().to_string(),
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".into(), options);
    capabilities
}
