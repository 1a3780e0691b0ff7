//! [`OciRegistry`]: a real OCI registry (Debian's `docker-registry`, the distribution API v2)
//! over plain HTTP on a port it picks itself (read back from its log), storing in its own
//! temporary directory, optionally behind htpasswd basic authentication; killed on drop.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running registry.
#[derive(Debug)]
pub struct OciRegistry {
    _child: tokio::process::Child,
    /// `127.0.0.1:<port>`: the registry part of a reference, and what `--insecure-registry`
    /// names.
    pub host: String,
    _dir: tempfile::TempDir,
}

/// Where `docker-registry` is: on `PATH`, or where Debian puts it.
fn find_registry() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("docker-registry"))
        .find(|path| path.is_file())
}

impl OciRegistry {
    /// A registry anyone may pull from and push to.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// A registry that admits only `user` with `password` (htpasswd, bcrypt).
    pub async fn start_with_user(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(Some((user, password))).await
    }

    async fn start_with(user: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let binary = find_registry().context(
            "docker-registry is not installed: run scripts/install-deps.sh (or apt-get install \
             docker-registry)",
        )?;
        let dir = tempfile::tempdir()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage)?;
        let auth = match user {
            Some((user, password)) => {
                let htpasswd = dir.path().join("htpasswd");
                // The lowest cost bcrypt allows: the test checks the scheme, not its strength.
                let hash = bcrypt::hash(password, 4)?;
                std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: lattice-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n{auth}",
                storage.display()
            ),
        )?;
        let mut child = tokio::process::Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting docker-registry")?;
        let stderr = child.stderr.take().context("the registry's log")?;
        let host = tokio::time::timeout(crate::WAIT, listening_on(stderr))
            .await
            .context("docker-registry did not say where it listens")??;
        Ok(Self {
            _child: child,
            host,
            _dir: dir,
        })
    }
}

/// Reads the registry's log until `listening on <addr>`, then keeps draining it in the
/// background so the registry never blocks on a full pipe.
async fn listening_on(stderr: tokio::process::ChildStderr) -> anyhow::Result<String> {
    let mut lines = BufReader::new(stderr).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest
                .split(|c: char| c == '"' || c.is_whitespace())
                .next()
                .unwrap_or_default()
                .to_string();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(addr);
        }
    }
    bail!("docker-registry exited before listening")
}
