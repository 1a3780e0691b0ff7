//! The host's artifact cache: component bytes by digest, fetched from the lattice's object store
//! when missing and checked against their digest before they are kept. A kept artifact is
//! fsync'd (file and directory) before it is used; one that cannot be kept (a full disk) fails
//! the workload that needed it, saying so.

use std::path::{Path, PathBuf};

use anyhow::Context;
use async_nats::jetstream;
use lattice_protocol::code;
use lattice_protocol::digest::Digest;
use lattice_protocol::jetstream::get_object;
use lattice_protocol::names::LatticeName;
use lattice_protocol::subject::Buckets;
use tokio::io::AsyncReadExt;

/// Artifacts on disk, filled from the lattice.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    js: jetstream::Context,
    bucket: String,
}

impl ArtifactCache {
    /// A cache in `dir` for `lattice`.
    pub fn new(dir: PathBuf, js: jetstream::Context, lattice: &LatticeName) -> Self {
        Self {
            dir,
            js,
            bucket: Buckets::new(lattice).artifacts(),
        }
    }

    /// The bytes of `digest`, from disk or fetched (and then kept).
    pub async fn get(&self, digest: &Digest, max_bytes: usize) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join(format!("{}.wasm", digest.hex()));
        if let Ok(bytes) = tokio::fs::read(&path).await
            && Digest::of(&bytes) == *digest
        {
            return Ok(bytes);
        }
        let bytes = self
            .fetch(digest.hex(), &format!("artifact {digest}"), max_bytes)
            .await?
            .with_context(|| {
                format!("artifact {digest} is not in the lattice; push it with `lattice push`")
            })?;
        if Digest::of(&bytes) != *digest {
            anyhow::bail!("artifact {digest} fetched from the lattice does not match its digest");
        }
        let tmp = path.with_extension("tmp");
        tokio::task::spawn_blocking(move || write_durably(&tmp, &path, &bytes).map(|()| bytes))
            .await
            .context("the artifact writer failed")?
            .map_err(|e| {
                anyhow::anyhow!(
                    "keeping artifact {digest} in {}: {e}{}",
                    self.dir.display(),
                    disk_full_advice(&e)
                )
            })
    }

    /// The stored precompiled code of `digest` for the engine with `fingerprint`
    /// (`lattice_protocol::code`), if the lattice has some; not kept (the code cache keeps what
    /// it loads).
    pub async fn precompiled(
        &self,
        digest: &Digest,
        fingerprint: &str,
        max_bytes: usize,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let name = code::object_name(digest, fingerprint);
        self.fetch(&name, &format!("precompiled code {name}"), max_bytes)
            .await
    }

    /// The object `name` of the artifact store, `None` if there is none; `what` names it in
    /// errors.
    async fn fetch(
        &self,
        name: &str,
        what: &str,
        max_bytes: usize,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let store = self
            .js
            .get_object_store(&self.bucket)
            .await
            .context("the lattice's artifact store is not reachable")?;
        let Some(mut object) = get_object(&self.js, &store, &self.bucket, name)
            .await
            .with_context(|| format!("fetching {what}"))?
        else {
            return Ok(None);
        };
        if object.info().size > max_bytes {
            anyhow::bail!(
                "{what} is {} bytes, more than the {max_bytes} bytes this host accepts",
                object.info().size
            );
        }
        let mut bytes = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("reading {what}"))?;
        Ok(Some(bytes))
    }
}

/// Writes `data` to `path` through `tmp`, durably: the file's contents and then its name (the
/// directory) reach the disk before it is used, so a crash never leaves a name over missing
/// bytes.
pub(crate) fn write_durably(tmp: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let written = (|| {
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(tmp, path)?;
        sync_dir(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// What to do about `e` when it is a full disk (nothing otherwise).
pub(crate) fn disk_full_advice(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::StorageFull {
        "; the state disk is full: free space there, or move the state directory to a larger disk"
    } else {
        ""
    }
}

/// Makes the names in `path`'s directory durable (after a rename into it).
pub(crate) fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
