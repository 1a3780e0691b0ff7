//! A small filesystem a test can fill: a tmpfs mounted for as long as a [`Tmpfs`] lives
//! (full-disk tests of the outbox and of the host's state directory). Needs root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted on a directory for as long as this lives; unmounted on drop (also
/// when the test fails), lazily if something still holds it.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Where it is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. `64m`) on `dir`, creating it. Fails,
    /// saying so, when the test does not run as root or may not mount.
    pub fn mount(dir: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Ok(Self {
                dir: dir.to_path_buf(),
            }),
            Ok(out) => anyhow::bail!(
                "this test needs root (it mounts a tmpfs to fill up): `mount -t tmpfs` on {} \
                 failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => anyhow::bail!(
                "this test needs root and `mount` (it mounts a tmpfs to fill up): {e}"
            ),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("--lazy").arg(&self.dir).status();
        }
    }
}
