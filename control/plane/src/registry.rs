//! The lattice's artifact registry: a JetStream object store holding artifacts by digest, and a
//! KV bucket of `name:version` tags pointing at digests.
//!
//! Used by `lattice push` (through the CLI) and by the control plane when it resolves a manifest's
//! `image` references at deploy time. Pushing the same bytes twice stores them once.

use async_nats::jetstream::{self, kv, object_store, stream};
use lattice_protocol::digest::{Digest, ImageRef, ImageRefError};
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::jetstream::{Bucket, Storage, ensure_stream, get_object, object_stored};
use lattice_protocol::names::LatticeName;
use lattice_protocol::subject::{Buckets, tag_key};
use lattice_protocol::wit::{Interfaces, component_interfaces};
use tokio::io::AsyncReadExt;

/// Opens (creating if needed) the artifact store and tag bucket of a lattice.
#[derive(Clone)]
pub struct Registry {
    tags: kv::Store,
    objects: object_store::ObjectStore,
    /// The object store's backing stream, whose limit a push is checked against.
    backing: stream::Stream,
    js: jetstream::Context,
    bucket: String,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The artifact's content address.
    pub digest: Digest,
    /// False when the bytes were already stored.
    pub stored: bool,
    /// The tag now pointing at it, if any.
    pub tag: Option<String>,
}

/// The refusal of a push the artifact store's limit cannot hold.
fn full(limit: i64, used: Option<u64>, size: usize) -> WireError {
    let holds = used.map_or("is at".to_string(), |used| format!("holds {used} of"));
    WireError::new(
        ErrorCode::Unavailable,
        format!(
            "the lattice's artifact store is full: it {holds} its limit of {limit} bytes and \
             this artifact needs {size} more; start the control plane with a larger \
             `--artifacts-max-bytes` (or give the hub more JetStream storage)"
        ),
    )
}

/// The refusal of a reference the control plane cannot fetch itself.
fn not_resolved(what: &str) -> WireError {
    WireError::new(
        ErrorCode::InvalidInput,
        format!(
            "{what}; the control plane reads only the lattice's artifact store: deploy the \
             manifest with `lattice ctl deploy`, which stores it there first, or store it with \
             `lattice pull REF` / `lattice push FILE.wasm` and use the digest it prints"
        ),
    )
}

/// Whether a JetStream error says a limit refused the write.
fn is_limit(e: &impl std::fmt::Display) -> bool {
    let text = e.to_string();
    ["maximum bytes", "insufficient resources", "resource limits"]
        .iter()
        .any(|m| text.contains(m))
}

/// Whether a JetStream publish found no stream answering: the stream is electing a leader.
fn is_leaderless(e: &impl std::fmt::Display) -> bool {
    let text = e.to_string();
    ["no stream found", "no responders"]
        .iter()
        .any(|m| text.contains(m))
}

fn internal(what: &str, e: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens the registry of `lattice` as it is (`lattice push`), creating its buckets with the
    /// default [`Storage`] limits when missing.
    pub async fn open(js: &jetstream::Context, lattice: &LatticeName) -> anyhow::Result<Self> {
        let b = Buckets::new(lattice);
        if let (Ok(tags), Ok(objects)) = (
            js.get_key_value(b.tags()).await,
            js.get_object_store(b.artifacts()).await,
        ) {
            return Self::with_backing(js, &b.artifacts(), tags, objects).await;
        }
        Self::open_limited(js, lattice, &Storage::default()).await
    }

    /// Opens the registry of `lattice` within `storage`'s limits (the control plane): creates
    /// its buckets when missing, and updates their limits when they differ.
    pub async fn open_limited(
        js: &jetstream::Context,
        lattice: &LatticeName,
        storage: &Storage,
    ) -> anyhow::Result<Self> {
        let b = Buckets::new(lattice);
        let tags = Bucket {
            name: &b.tags(),
            history: 5,
            max_age: std::time::Duration::ZERO,
            description: "Lattice artifact tags (name:version -> digest)",
        };
        let tags = lattice_protocol::jetstream::open_kv(js, tags, storage).await?;
        let bucket = b.artifacts();
        let objects = match js.get_object_store(&bucket).await {
            Ok(objects) => {
                // The object store's backing stream, as async-nats names it.
                let config = stream::Config {
                    name: format!("OBJ_{bucket}"),
                    ..Default::default()
                };
                let config = storage.limit(config, storage.artifacts_max_bytes, Default::default());
                ensure_stream(js, config).await?;
                objects
            }
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket,
                    description: Some("Lattice artifacts by sha256".into()),
                    max_bytes: storage.artifacts_max_bytes,
                    num_replicas: storage.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    lattice_protocol::jetstream::refused(
                        &format!("creating the artifact store {}", b.artifacts()),
                        storage.artifacts_max_bytes,
                        e,
                    )
                })?,
        };
        Self::with_backing(js, &b.artifacts(), tags, objects).await
    }

    async fn with_backing(
        js: &jetstream::Context,
        bucket: &str,
        tags: kv::Store,
        objects: object_store::ObjectStore,
    ) -> anyhow::Result<Self> {
        let backing = js.get_stream(format!("OBJ_{bucket}")).await?;
        Ok(Self {
            tags,
            objects,
            backing,
            js: js.clone(),
            bucket: bucket.to_owned(),
        })
    }

    /// Refuses `size` more bytes when the artifact store's limit would not hold them, before
    /// anything is uploaded.
    async fn check_room(&self, size: usize) -> Result<(), WireError> {
        let mut backing = self.backing.clone();
        let info = backing
            .info()
            .await
            .map_err(|e| internal("reading the artifact store's size", e))?;
        let limit = info.config.max_bytes;
        let used = info.state.bytes;
        if limit > 0 && used.saturating_add(size as u64) > limit as u64 {
            return Err(full(limit, Some(used), size));
        }
        Ok(())
    }

    /// Stores `bytes` under their digest (unless already there) and points `tag` at it.
    pub async fn push(&self, bytes: &[u8], tag: Option<&str>) -> Result<Pushed, WireError> {
        // Check the tag before uploading anything.
        let tag_key = tag.map(|tag| {
            tag_key(tag).ok_or_else(|| {
                WireError::new(
                    ErrorCode::InvalidInput,
                    format!("tag `{tag}` must look like `name:version` (letters, digits, `-`, `_`; dots only in the version)"),
                )
            })
        });
        let tag_key = tag_key.transpose()?;
        let digest = Digest::of(bytes);
        let stored = match self.objects.info(digest.hex()).await {
            Ok(info) if !info.deleted && info.size == bytes.len() => false,
            _ => {
                self.check_room(bytes.len()).await?;
                self.put_object(digest.hex(), bytes).await?;
                true
            }
        };
        if let Some(key) = tag_key {
            self.tags
                .put(key, digest.to_string().into_bytes().into())
                .await
                .map_err(|e| internal("writing the tag", e))?;
        }
        let tag = tag.map(str::to_string);
        Ok(Pushed {
            digest,
            stored,
            tag,
        })
    }

    /// Stores precompiled code (`lattice_protocol::code`) as object `name`, replacing what was
    /// there: the same component and engine always compile to code of the same use.
    pub async fn put_code(&self, name: &str, bytes: &[u8]) -> Result<(), WireError> {
        self.check_room(bytes.len()).await?;
        self.put_object(name, bytes).await
    }

    /// Uploads `bytes` as object `name`. A clustered hub's artifact stream answers nobody for
    /// a moment while it elects a leader (just created, or its leader's node just died): such a
    /// put is tried again for a few seconds rather than failing the push.
    async fn put_object(&self, name: &str, bytes: &[u8]) -> Result<(), WireError> {
        let mut pause = std::time::Duration::from_millis(100);
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut reader = bytes;
            let Err(e) = self.objects.put(name, &mut reader).await else {
                return Ok(());
            };
            if is_limit(&e) {
                let limit = self.backing.cached_info().config.max_bytes;
                return Err(full(limit, None, bytes.len()));
            }
            if !is_leaderless(&e) || tokio::time::Instant::now() + pause > give_up {
                return Err(internal("storing the artifact", e));
            }
            tracing::debug!(error = %e, "the artifact store has no leader yet; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
        }
    }

    /// Resolves an image reference (`sha256:...` or a `name:version` tag) to a stored digest; OCI
    /// and `file://` references are refused (`lattice ctl deploy` stores them first).
    pub async fn resolve(&self, image: &str) -> Result<Digest, WireError> {
        let not_found = |what: String| {
            WireError::new(
                ErrorCode::NotFound,
                format!("{what}; push it first with `lattice push FILE.wasm`"),
            )
        };
        let digest = match ImageRef::parse(image)
            .map_err(|e: ImageRefError| WireError::new(ErrorCode::InvalidInput, e.to_string()))?
        {
            ImageRef::Digest(digest) => digest,
            ImageRef::Tag { tag, key } => {
                let value = self
                    .tags
                    .get(key)
                    .await
                    .map_err(|e| internal("reading tags", e))?
                    .ok_or_else(|| not_found(format!("no artifact is tagged `{tag}`")))?;
                // Tags hold a digest's text (`push` writes them), so stored tags still read.
                Digest::parse(&String::from_utf8_lossy(&value))
                    .map_err(|e| internal("a stored tag is corrupt", e))?
            }
            // Hosts fetch only from the lattice: the deploying CLI pulls or pushes these first.
            ImageRef::Oci { reference } => {
                return Err(not_resolved(&format!(
                    "image `{image}` is an OCI registry reference ({reference})"
                )));
            }
            ImageRef::File { path } => {
                return Err(not_resolved(&format!(
                    "image `{image}` is a file on the deploying machine ({path})"
                )));
            }
        };
        // Asked of the leader: on a clustered hub a replica may not have a fresh push yet.
        let stored = object_stored(&self.backing, digest.hex())
            .await
            .map_err(|e| internal("reading the artifact store", format!("{e:#}")))?;
        if stored {
            Ok(digest)
        } else {
            Err(not_found(format!(
                "artifact {digest} is not in the lattice"
            )))
        }
    }

    /// The bytes of an artifact, checked against its digest.
    pub async fn get(&self, digest: &Digest) -> Result<Vec<u8>, WireError> {
        let mut object = get_object(&self.js, &self.objects, &self.bucket, digest.hex())
            .await
            .map_err(|e| internal("reading the artifact store", format!("{e:#}")))?
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotFound,
                    format!("artifact {digest} is not in the lattice"),
                )
            })?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| internal("reading the artifact", e))?;
        if Digest::of(&bytes) != *digest {
            return Err(internal(
                "artifact",
                format!("{digest} does not match its content"),
            ));
        }
        Ok(bytes)
    }

    /// The imports and exports of a stored component.
    pub async fn interfaces(&self, digest: &Digest) -> Result<Interfaces, WireError> {
        let bytes = self.get(digest).await?;
        component_interfaces(&bytes)
            .map_err(|e| WireError::new(ErrorCode::InvalidInput, format!("artifact {digest}: {e}")))
    }
}
