//! Compiling components, once per digest and engine.
//!
//! Compiling a small component takes ~135 ms of CPU; loading its compiled form
//! from disk ~0.3 ms. [`CodeCache`] keeps the compiled form of every component
//! the host has run in its private state directory, named
//! `<sha256 hex>-<engine fingerprint>.cwasm`, so a restart (or a second
//! workload using the same component) skips the compiler. A new build of the
//! host with different code generation has a different fingerprint and simply
//! compiles again.
//!
//! Every component is checked the same way whether or not it is cached (size,
//! then header), so what the host accepts never depends on the cache.
//!
//! ```no_run
//! use lattice_host::compile::{CacheOutcome, CodeCache};
//! use lattice_host::engine::{EngineConfig, Runtime};
//!
//! # fn example(bytes: Vec<u8>, digest: String) -> anyhow::Result<()> {
//! let runtime = Runtime::new(&EngineConfig::default())?;
//! let cache = CodeCache::new("/var/lib/lattice/code".into())?;
//! // CPU heavy: call from `tokio::task::spawn_blocking`.
//! let (component, outcome) = cache.load(&runtime, &digest, &bytes)?;
//! assert!(matches!(outcome, CacheOutcome::Hit | CacheOutcome::Compiled));
//! # drop(component);
//! # Ok(())
//! # }
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use wasmtime::component::Component;

use crate::engine::Runtime;

/// The preamble of every WebAssembly binary.
const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// Version and layer of a core module.
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
/// Version and layer of a component (component model binary format).
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// Suffix of compiled components in the cache directory.
const CACHE_EXTENSION: &str = "cwasm";
/// Marks files being written; left-overs from a crash are removed on start.
const TEMP_MARKER: &str = ".tmp-";

/// Which way [`CodeCache::load`] obtained the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the compiled form on disk.
    Hit,
    /// Compiled now (nothing usable was cached); the compiled form was saved.
    Compiled,
}

/// Why a component cannot be loaded. Every variant but [`LoadError::Cache`]
/// is a property of the component itself: retrying will not help.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {0:?}: expected \"sha256:\" and 64 lowercase hex digits")]
    InvalidDigest(String),
    /// The component is larger than `max_component_bytes`.
    #[error("component is {size} bytes, more than the {max} bytes this host accepts")]
    TooLarge {
        /// Size of the component.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The bytes are a core WebAssembly module, not a component.
    #[error(
        "not a WebAssembly component (it is a core module; wrap it with \
         `wasm-tools component new`, or build it for the wasm32-wasip2 target)"
    )]
    CoreModule,
    /// The bytes are not WebAssembly at all.
    #[error("not WebAssembly (the file does not start with the `\\0asm` header)")]
    NotWasm,
    /// WebAssembly of a version or layer this host does not know.
    #[error("unsupported WebAssembly binary version {0:02x?}")]
    UnsupportedVersion([u8; 4]),
    /// The component is malformed or uses features the host does not enable.
    #[error("invalid component: {0:#}")]
    Invalid(anyhow::Error),
    /// The cache directory could not be read.
    #[error("code cache at {path}: {source}")]
    Cache {
        /// The file or directory involved.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Compiled components on disk, keyed by digest and engine fingerprint.
#[derive(Debug)]
pub struct CodeCache {
    dir: PathBuf,
    /// Makes temporary file names unique within this process.
    next_temp: AtomicU64,
}

impl CodeCache {
    /// Opens (creating if needed) the cache in `dir`, a directory private
    /// to this host, and removes files left half-written by a crash.
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the code cache directory {}", dir.display()))?;
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("reading the code cache directory {}", dir.display()))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains(TEMP_MARKER) {
                // Best effort: a left-over file only wastes space.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir,
            next_temp: AtomicU64::new(0),
        })
    }

    /// The directory holding the compiled components.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component with `digest` (`sha256:<hex>`) whose bytes are `bytes`,
    /// from the cache or compiled now. The caller has checked that `bytes`
    /// hash to `digest`: the cache trusts the pair.
    ///
    /// This blocks for as long as compiling takes (~1–2 MB/s per core of
    /// WebAssembly): async callers run it in `tokio::task::spawn_blocking`.
    pub fn load(
        &self,
        runtime: &Runtime,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), LoadError> {
        let hex = digest_hex(digest)?;
        check_component(bytes, runtime.config().max_component_bytes)?;
        let path = self
            .dir
            .join(format!("{hex}-{}.{CACHE_EXTENSION}", runtime.fingerprint()));

        match path.try_exists() {
            Ok(true) => match deserialize(runtime, &path) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                // Written by an older host, or damaged on disk: compile again
                // and replace it.
                Err(err) => tracing::warn!(
                    path = %path.display(),
                    error = %format!("{err:#}"),
                    "ignoring an unusable compiled component"
                ),
            },
            Ok(false) => {}
            Err(source) => return Err(LoadError::Cache { path, source }),
        }

        let started = std::time::Instant::now();
        let component = Component::new(runtime.engine(), bytes)
            .map_err(|err| LoadError::Invalid(err.into()))?;
        tracing::info!(
            digest,
            bytes = bytes.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "compiled component"
        );
        // Failing to save only costs a compile next time: the component
        // itself is good, so log and carry on.
        if let Err(err) = self.store(&component, &path) {
            tracing::warn!(path = %path.display(), error = %format!("{err:#}"),
                "could not save a compiled component");
        }
        Ok((component, CacheOutcome::Compiled))
    }

    /// Writes the compiled form of `component` to `path` atomically: readers
    /// see the old file, no file, or the whole new one.
    fn store(&self, component: &Component, path: &Path) -> anyhow::Result<()> {
        let code = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("serializing the compiled component")?;
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!("{TEMP_MARKER}{}-{n}", std::process::id()));
        let temp = PathBuf::from(temp);

        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&code)?;
            // Durable before the rename, so a crash cannot leave a complete
            // name over incomplete contents.
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.with_context(|| format!("writing {}", path.display()))
    }
}

#[expect(
    unsafe_code,
    reason = "wasmtime maps compiled code from the file and must trust its contents"
)]
fn deserialize(runtime: &Runtime, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: `deserialize_file` requires a file produced by
    // `Component::serialize` for a compatible engine and not modified while
    // mapped. Only this host writes to its private cache directory, always
    // through a temporary file renamed into place (never rewritten in
    // place), and the name carries the engine fingerprint; wasmtime also
    // checks the header and engine compatibility itself.
    let component = unsafe { Component::deserialize_file(runtime.engine(), path) }?;
    Ok(component)
}

/// The hex part of a `sha256:<hex>` digest, refusing anything that could
/// not have come from sha256 (and so could not escape the cache directory).
fn digest_hex(digest: &str) -> Result<&str, LoadError> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| LoadError::InvalidDigest(digest.to_owned()))
}

/// Refuses what is too large or is not a component, before any compiling.
pub fn check_component(bytes: &[u8], max_bytes: usize) -> Result<(), LoadError> {
    if bytes.len() > max_bytes {
        return Err(LoadError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let (Some(magic), Some(version)) = (bytes.get(0..4), bytes.get(4..8)) else {
        return Err(LoadError::NotWasm);
    };
    if magic != WASM_MAGIC {
        return Err(LoadError::NotWasm);
    }
    match <[u8; 4]>::try_from(version) {
        Ok(COMPONENT_VERSION) => Ok(()),
        Ok(CORE_MODULE_VERSION) => Err(LoadError::CoreModule),
        Ok(other) => Err(LoadError::UnsupportedVersion(other)),
        Err(_) => Err(LoadError::NotWasm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        let component = [b"\0asm".as_slice(), &COMPONENT_VERSION].concat();
        let module = [b"\0asm".as_slice(), &CORE_MODULE_VERSION].concat();
        assert!(check_component(&component, 100).is_ok());
        assert!(matches!(
            check_component(&module, 100),
            Err(LoadError::CoreModule)
        ));
        assert!(matches!(
            check_component(b"\0asm", 100),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_component(b"#!/bin/sh\necho", 100),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_component(b"\0asm\x02\0\0\0", 100),
            Err(LoadError::UnsupportedVersion(_))
        ));
        assert!(matches!(
            check_component(&component, 7),
            Err(LoadError::TooLarge { size: 8, max: 7 })
        ));
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        let hex = "ab".repeat(32);
        assert_eq!(
            digest_hex(&format!("sha256:{hex}")).ok(),
            Some(hex.as_str())
        );
        for bad in [
            hex.clone(),
            format!("sha512:{hex}"),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", &hex[..62]),
            "sha256:../../etc/passwd".to_owned(),
        ] {
            assert!(
                matches!(digest_hex(&bad), Err(LoadError::InvalidDigest(_))),
                "{bad}"
            );
        }
    }
}
