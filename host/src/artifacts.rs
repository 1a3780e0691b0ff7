//! The host's artifact cache: component bytes by digest, fetched from the lattice's object store
//! when missing and checked against their digest before they are kept.

use std::path::PathBuf;

use anyhow::Context;
use async_nats::jetstream;
use lattice_protocol::digest::Digest;
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
        let store = self
            .js
            .get_object_store(&self.bucket)
            .await
            .context("the lattice's artifact store is not reachable")?;
        let mut object = store.get(digest.hex()).await.with_context(|| {
            format!("artifact {digest} is not in the lattice; push it with `lattice push`")
        })?;
        if object.info().size > max_bytes {
            anyhow::bail!(
                "artifact {digest} is {} bytes, more than the {max_bytes} bytes this host accepts",
                object.info().size
            );
        }
        let mut bytes = Vec::with_capacity(object.info().size);
        object.read_to_end(&mut bytes).await?;
        if Digest::of(&bytes) != *digest {
            anyhow::bail!("artifact {digest} fetched from the lattice does not match its digest");
        }
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(bytes)
    }
}
