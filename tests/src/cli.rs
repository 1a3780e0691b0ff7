//! The real `lattice` binary pointed at a test lattice, as an operator runs it: `ctl` commands
//! sign as the lattice's admin and believe its control plane; files live in a directory of the
//! test's own.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::ensure;

use crate::{TestLattice, WAIT, lattice_bin};

/// The `lattice` binary for one test lattice.
#[derive(Debug)]
pub struct Cli {
    dir: tempfile::TempDir,
    connect: Vec<String>,
    ctl: Vec<String>,
}

impl Cli {
    /// A CLI for `t`, with an empty directory of its own.
    pub fn new(t: &TestLattice) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("admin.nk");
        std::fs::write(&key, t.admin.to_file_contents())?;
        Ok(Self {
            connect: vec![
                "--nats-url".into(),
                t.nats.url.clone(),
                "--lattice".into(),
                t.lattice.to_string(),
            ],
            ctl: vec![
                "--key".into(),
                key.display().to_string(),
                "--control-key".into(),
                t.operator.public_key().to_string(),
            ],
            dir,
        })
    }

    /// Runs `lattice ARGS` (with the lattice's connection unless `local`), away from the test's
    /// directory so relative paths are the manifest's; returns (success, stdout, stderr).
    pub async fn run(&self, args: &[&str], local: bool) -> anyhow::Result<(bool, String, String)> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if !local {
            all.extend(self.connect.iter().cloned());
        }
        // `lattice config` is `lattice ctl config`: it signs as `ctl` does.
        if matches!(args.first(), Some(&"ctl" | &"config")) {
            all.extend(self.ctl.iter().cloned());
        }
        let out = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new(lattice_bin())
                .args(&all)
                .current_dir(std::env::temp_dir())
                .env("LATTICE_STATE_DIR", self.dir.path())
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await??;
        Ok((
            out.status.success(),
            String::from_utf8(out.stdout)?,
            String::from_utf8(out.stderr)?,
        ))
    }

    /// Runs a command against the lattice that must succeed; returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let (success, stdout, stderr) = self.run(args, false).await?;
        ensure!(success, "lattice {args:?} failed: {stderr}");
        Ok(stdout)
    }

    /// Runs a command that needs no lattice (`inspect`, `sign`); returns its stdout.
    pub async fn local(&self, args: &[&str]) -> anyhow::Result<String> {
        let (success, stdout, stderr) = self.run(args, true).await?;
        ensure!(success, "lattice {args:?} failed: {stderr}");
        Ok(stdout)
    }

    /// Runs a command against the lattice that must fail; returns its stderr.
    pub async fn refused(&self, args: &[&str]) -> anyhow::Result<String> {
        let (success, stdout, stderr) = self.run(args, false).await?;
        ensure!(!success, "lattice {args:?} succeeded: {stdout}");
        Ok(stderr)
    }

    /// Writes `bytes` as `name` (a relative path) in the test's directory; returns its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, bytes)?;
        Ok(path)
    }
}

/// A path as a command-line argument.
pub fn arg(path: &Path) -> String {
    path.display().to_string()
}

/// Asserts that `text` contains every one of `needles`.
pub fn assert_says(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "`{needle}` not in: {text}");
    }
}

/// `lattice up` running in the background: SIGTERM on drop, so that it stops its nats-server,
/// then SIGKILL if it has not exited within 10 s.
#[derive(Debug)]
pub struct UpProcess(pub std::process::Child);

impl UpProcess {
    /// `lattice up` with a NATS port of its own choosing and `state` as its state directory;
    /// `more` adds arguments and environment; its stderr goes to `log`.
    pub fn spawn(
        state: &Path,
        log: std::fs::File,
        more: impl FnOnce(&mut std::process::Command),
    ) -> anyhow::Result<Self> {
        let mut command = std::process::Command::new(lattice_bin());
        command
            .args(["up", "--nats-port", "0", "--state-dir"])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        more(&mut command);
        Ok(Self(command.spawn()?))
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.terminate()?;
        Ok(self.0.wait()?)
    }

    fn terminate(&self) -> std::io::Result<std::process::ExitStatus> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        let _ = self.terminate();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
