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
//! The host maps cached code as native code, so it loads only files it wrote:
//! each is sealed with an HMAC under a key derived from the host's own key
//! ([`seal`]), read into memory whole, checked, and deserialized from those
//! very bytes. A file that fails the check is compiled again and replaced.
//! Files reach the disk (file, then directory, fsync'd) before they count.
//!
//! Where the compiler runs is the engine's [`Compiler`] setting. In a
//! long-running host it runs in a short-lived child process
//! ([`Compiler::Subprocess`], which runs [`compiler_main`]): compiling
//! in-process leaves ~6 MiB of compiler threads, heap and state behind, and
//! ~5 MiB of compiler code mapped, for the rest of the host's life. The child
//! sends the code back on its standard output; the host seals and keeps it.
//! The child is contained ([`CompileLimits`]: wall-clock, CPU and memory
//! limits, and the first to go under memory pressure): a component that is
//! costly to compile fails with [`LoadError::Limit`], naming the limit.
//!
//! ```no_run
//! use lattice_host::compile::{CacheOutcome, CodeCache};
//! use lattice_host::engine::{EngineConfig, Runtime};
//!
//! # fn example(bytes: Vec<u8>, digest: lattice_protocol::digest::Digest) -> anyhow::Result<()> {
//! let runtime = Runtime::new(&EngineConfig::default())?;
//! let cache = CodeCache::new("/var/lib/lattice/code".into())?; // or `with_key`
//! // CPU heavy: call from `tokio::task::spawn_blocking`.
//! let (component, outcome) = cache.load(&runtime, &digest, &bytes)?;
//! assert!(matches!(outcome, CacheOutcome::Hit | CacheOutcome::Compiled));
//! # drop(component);
//! # Ok(())
//! # }
//! ```

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use lattice_protocol::digest::Digest;
use wasmtime::component::Component;

use crate::engine::{self, Runtime};

mod child;
pub mod seal;
pub mod target;

pub use child::{
    CompileLimits, DEFAULT_COMPILE_CPU, DEFAULT_COMPILE_MEMORY, DEFAULT_COMPILE_TIMEOUT, LimitHit,
};
pub use seal::CodeKey;

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

/// Exit status of a compiler process refusing the component itself
/// (`EX_DATAERR`), as opposed to failing for any other reason.
const EXIT_INVALID_COMPONENT: u8 = 65;

/// Where components are compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Compiler {
    /// In the calling process: nothing to set up, for libraries and tests.
    #[default]
    InProcess,
    /// In a child process started for each compile: `program` with `args`,
    /// followed by the arguments [`compiler_main`] reads. `program` must be
    /// this same build of the host, since the code it writes must fit this
    /// engine (the child checks the engine fingerprint and refuses otherwise).
    Subprocess {
        /// The executable, e.g. the host's own binary.
        program: PathBuf,
        /// Arguments that select its compiler entry point, e.g. a hidden
        /// subcommand.
        args: Vec<OsString>,
        /// What one compile may cost before the child is killed.
        limits: CompileLimits,
    },
}

/// Which way [`CodeCache::load`] obtained the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the compiled form on disk.
    Hit,
    /// Compiled now (nothing usable was cached); the compiled form was saved.
    Compiled,
    /// Loaded from code precompiled for this host's target and signed by a trusted issuer
    /// ([`CodeCache::install`]); the code was saved.
    Precompiled,
}

/// Why a component cannot be loaded. Every variant but [`LoadError::Cache`]
/// and [`LoadError::Compiler`] is a property of the component itself:
/// retrying will not help.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
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
    /// The compiler process could not be run, failed for another reason than
    /// the component (crashed, killed, could not write), or wrote code this
    /// engine cannot load.
    #[error("compiling in a separate process failed: {0}")]
    Compiler(String),
    /// The compiler process went past one of its [`CompileLimits`] and was stopped: the
    /// component costs more to compile than this host allows.
    #[error("{0}")]
    Limit(LimitHit),
    /// The cache directory could not be read.
    #[error("code cache at {path}: {source}")]
    Cache {
        /// The file or directory involved.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Compiled components on disk, keyed by digest and engine fingerprint, each
/// file sealed with the cache's [`CodeKey`].
#[derive(Debug)]
pub struct CodeCache {
    dir: PathBuf,
    key: CodeKey,
    /// Makes temporary file names unique within this process.
    next_temp: AtomicU64,
}

impl CodeCache {
    /// Opens (creating if needed) the cache in `dir` with a random key of
    /// this process (shared by its caches): what it finds from an earlier
    /// process is compiled again. A host uses [`CodeCache::with_key`] with a
    /// key derived from its own.
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        static PROCESS_KEY: std::sync::OnceLock<CodeKey> = std::sync::OnceLock::new();
        let key = match PROCESS_KEY.get() {
            Some(key) => key.clone(),
            None => {
                let key = CodeKey::random().context("reading a random code cache key")?;
                PROCESS_KEY.get_or_init(|| key).clone()
            }
        };
        Self::with_key(dir, key)
    }

    /// Opens (creating if needed) the cache in `dir`, a directory private
    /// to this host, whose files are sealed with `key`, and removes files
    /// left half-written by a crash.
    pub fn with_key(dir: PathBuf, key: CodeKey) -> anyhow::Result<Self> {
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
            key,
            next_temp: AtomicU64::new(0),
        })
    }

    /// The directory holding the compiled components.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component with `digest` whose bytes are `bytes`,
    /// from the cache or compiled now. The caller has checked that `bytes`
    /// hash to `digest`: the cache trusts the pair.
    ///
    /// This blocks for as long as compiling takes (~1–2 MB/s per core of
    /// WebAssembly): async callers run it in `tokio::task::spawn_blocking`.
    pub fn load(
        &self,
        runtime: &Runtime,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), LoadError> {
        check_component(bytes, runtime.config().max_component_bytes)?;
        let path = self.path(runtime, digest);

        match std::fs::read(&path) {
            Ok(file) => match self.open(runtime, digest, &file) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                // Planted, from another host or an older one, or damaged: compile
                // again and replace it.
                Err(why) => tracing::warn!(
                    path = %path.display(),
                    why = %why,
                    "not loading a cached compiled component; compiling it again"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LoadError::Cache { path, source }),
        }

        let started = std::time::Instant::now();
        let (component, code) = match &runtime.config().compiler {
            Compiler::InProcess => {
                let component = Component::new(runtime.engine(), bytes)
                    .map_err(|err| LoadError::Invalid(err.into()))?;
                let code = component.serialize().map_err(|err| {
                    LoadError::Compiler(format!("serializing the compiled component: {err:#}"))
                })?;
                (component, code)
            }
            Compiler::Subprocess {
                program,
                args,
                limits,
            } => {
                let code = child::compile_in_child((program, args), limits, runtime, bytes)?;
                let component = deserialize(runtime, &code).map_err(|err| {
                    LoadError::Compiler(format!(
                        "the compiler process wrote code this host cannot load: {err:#}"
                    ))
                })?;
                (component, code)
            }
        };
        // Failing to save (a full disk) only costs a compile next time: the
        // component itself is good, so log and carry on.
        if let Err(err) = self.store(runtime, digest, &code, &path) {
            tracing::warn!(path = %path.display(), error = %format!("{err:#}"),
                "could not save a compiled component; it runs, and is compiled again next time");
        }
        tracing::info!(
            %digest,
            bytes = bytes.len(),
            elapsed_ms = started.elapsed().as_millis(),
            in_child_process = matches!(runtime.config().compiler, Compiler::Subprocess { .. }),
            "compiled component"
        );
        Ok((component, CacheOutcome::Compiled))
    }

    /// Whether compiled code for `digest` is cached for this engine (then [`CodeCache::load`]
    /// will most likely not compile).
    pub fn has(&self, runtime: &Runtime, digest: &Digest) -> bool {
        self.path(runtime, digest).exists()
    }

    /// The component with `digest` (whose bytes are `bytes`) from `code`, precompiled elsewhere
    /// for this host's target. The caller has checked that a trusted issuer signed `code` as
    /// compiled from `digest` for this engine (`lattice_protocol::code::Precompiled::open`),
    /// and saves it with [`CodeCache::keep`] (off the path to serving: a write and two fsyncs).
    /// `Err` says why it cannot be used: the caller then compiles.
    pub fn install(
        &self,
        runtime: &Runtime,
        bytes: &[u8],
        code: &[u8],
    ) -> Result<(Component, CacheOutcome), LoadError> {
        check_component(bytes, runtime.config().max_component_bytes)?;
        let component = deserialize(runtime, code).map_err(|err| {
            LoadError::Compiler(format!("precompiled code this host cannot load: {err:#}"))
        })?;
        Ok((component, CacheOutcome::Precompiled))
    }

    /// Saves `code`, which this engine loaded for `digest`, as if compiled here. Failing (a full
    /// disk) only costs fetching it again next time: logged.
    pub fn keep(&self, runtime: &Runtime, digest: &Digest, code: &[u8]) {
        let path = self.path(runtime, digest);
        if let Err(err) = self.store(runtime, digest, code, &path) {
            tracing::warn!(path = %path.display(), error = %format!("{err:#}"),
                "could not save precompiled code; it runs, and is fetched again next time");
        }
    }

    /// Where the code of `digest` for this engine is cached.
    fn path(&self, runtime: &Runtime, digest: &Digest) -> PathBuf {
        // A `Digest` is 64 lowercase hex digits: its file name cannot leave the cache directory.
        self.dir.join(format!(
            "{}-{}.{CACHE_EXTENSION}",
            digest.hex(),
            runtime.fingerprint()
        ))
    }

    /// The component in the cached `file`, if this host sealed it for
    /// `digest` and this engine; or why not.
    fn open(&self, runtime: &Runtime, digest: &Digest, file: &[u8]) -> Result<Component, String> {
        let code = seal::unseal(&self.key, digest, &runtime.fingerprint(), file)?;
        deserialize(runtime, code).map_err(|err| format!("{err:#}"))
    }

    /// Writes `code` compiled from `digest`, sealed, to `path` atomically.
    fn store(
        &self,
        runtime: &Runtime,
        digest: &Digest,
        code: &[u8],
        path: &Path,
    ) -> anyhow::Result<()> {
        let file = seal::seal(&self.key, digest, &runtime.fingerprint(), code);
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        write_atomically(path, &file, n)
    }
}

/// Writes `code` to `path` atomically: readers see the old file, no file, or
/// the whole new one. `n` makes the temporary name unique within the process.
fn write_atomically(path: &Path, code: &[u8], n: u64) -> anyhow::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!("{TEMP_MARKER}{}-{n}", std::process::id()));
    let temp = PathBuf::from(temp);

    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(code)?;
        // Durable before the rename, so a crash cannot leave a complete
        // name over incomplete contents.
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        crate::artifacts::sync_dir(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(|e| {
        let advice = crate::artifacts::disk_full_advice(&e);
        anyhow::anyhow!("writing {}: {e}{advice}", path.display())
    })
}

/// What a compiler process is asked to do: compile one component for the
/// engine with `fingerprint` and write the code to `output`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CompileJob {
    fingerprint: String,
    /// The host runs WASI 0.3 (`--wasi-p3`): its engine, and so its code, differ.
    wasi_p3: bool,
    max_component_bytes: usize,
    /// The component's file, or `-` for standard input.
    input: PathBuf,
    /// The code's file (written atomically), or `-` for standard output.
    output: PathBuf,
}

impl CompileJob {
    /// Reads `--fingerprint HEX [--wasi-p3] --max-component-bytes N INPUT OUTPUT`, as
    /// [`compile_in_child`] writes them.
    fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut fingerprint = None;
        let mut wasi_p3 = false;
        let mut max = None;
        let mut paths = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some("--fingerprint") => {
                    fingerprint = args.next().and_then(|v| v.into_string().ok());
                }
                Some("--wasi-p3") => wasi_p3 = true,
                Some("--max-component-bytes") => {
                    max = args
                        .next()
                        .and_then(|v| v.into_string().ok())
                        .and_then(|v| v.parse::<usize>().ok());
                }
                _ => paths.push(PathBuf::from(arg)),
            }
        }
        let usage = "usage: --fingerprint HEX [--wasi-p3] --max-component-bytes N INPUT|- OUTPUT";
        match (fingerprint, max, <[PathBuf; 2]>::try_from(paths)) {
            (Some(fingerprint), Some(max_component_bytes), Ok([input, output])) => Ok(Self {
                fingerprint,
                wasi_p3,
                max_component_bytes,
                input,
                output,
            }),
            _ => Err(usage.to_owned()),
        }
    }

    fn run(&self) -> Result<(), LoadError> {
        let bytes = self.read_input()?;
        check_component(&bytes, self.max_component_bytes)?;
        let engine = engine::code_engine(self.wasi_p3)
            .map_err(|err| LoadError::Compiler(format!("creating the engine: {err:#}")))?;
        let fingerprint = engine::fingerprint(&engine);
        if fingerprint != self.fingerprint {
            return Err(LoadError::Compiler(format!(
                "this compiler makes code for engine {fingerprint}, not for the host's engine \
                 {}: the compiler must be the same build as the host",
                self.fingerprint
            )));
        }
        let code = engine
            .precompile_component(&bytes)
            .map_err(|err| LoadError::Invalid(err.into()))?;
        if self.output.as_os_str() == "-" {
            let mut out = std::io::stdout().lock();
            return out
                .write_all(&code)
                .and_then(|()| out.flush())
                .map_err(|err| LoadError::Compiler(format!("writing the code: {err}")));
        }
        write_atomically(&self.output, &code, 0)
            .map_err(|err| LoadError::Compiler(format!("{err:#}")))
    }

    /// The component, read to at most one byte over the limit (enough to
    /// refuse it without holding more).
    fn read_input(&self) -> Result<Vec<u8>, LoadError> {
        let limit = u64::try_from(self.max_component_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut bytes = Vec::new();
        let read = if self.input.as_os_str() == "-" {
            std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
        } else {
            std::fs::File::open(&self.input).and_then(|f| f.take(limit).read_to_end(&mut bytes))
        };
        read.map_err(|err| {
            LoadError::Compiler(format!("reading {}: {err}", self.input.display()))
        })?;
        Ok(bytes)
    }
}

/// The entry point of a compiler process ([`Compiler::Subprocess`]): give it
/// the arguments that follow the ones selecting it. It compiles one
/// component and writes the code atomically, or prints why not on standard
/// error and exits non-zero (65 when the component itself is at fault).
pub fn compiler_main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let job = match CompileJob::parse(args) {
        Ok(job) => job,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    match job.run() {
        Ok(()) => ExitCode::SUCCESS,
        // The host adds its own context to both messages.
        Err(LoadError::Invalid(err)) => {
            eprintln!("{err:#}");
            ExitCode::from(EXIT_INVALID_COMPONENT)
        }
        Err(LoadError::Compiler(message)) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
        Err(err @ (LoadError::Cache { .. } | LoadError::Limit(_))) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
        // Size and header: the component's own fault.
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(EXIT_INVALID_COMPONENT)
        }
    }
}

#[expect(
    unsafe_code,
    reason = "wasmtime loads compiled code as native code and must trust it"
)]
fn deserialize(runtime: &Runtime, code: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: `deserialize` requires bytes produced by `Component::serialize`
    // (or `Engine::precompile_component`) for a compatible engine. `code` is
    // either what this host's engine or its compiler process (which checks
    // the engine fingerprint against its own) just produced, or a cached file
    // whose HMAC under this host's secret key matched over these very bytes,
    // read into memory first so nothing can change them after the check, or
    // precompiled code whose digest a trusted issuer signed, checked on these
    // very bytes in memory (the same trust as running the issuer's component).
    // wasmtime also checks the header and engine compatibility itself.
    let component = unsafe { Component::deserialize(runtime.engine(), code) }?;
    Ok(component)
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
    fn compile_jobs_are_read_back() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        let job = CompileJob::parse(args(&[
            "--fingerprint",
            "00ff",
            "--max-component-bytes",
            "123",
            "-",
            "out.cwasm",
        ]));
        assert_eq!(
            job,
            Ok(CompileJob {
                fingerprint: "00ff".to_owned(),
                wasi_p3: false,
                max_component_bytes: 123,
                input: "-".into(),
                output: "out.cwasm".into(),
            })
        );
        let job = CompileJob::parse(args(&[
            "--fingerprint",
            "00ff",
            "--wasi-p3",
            "--max-component-bytes",
            "123",
            "-",
            "-",
        ]));
        assert!(job.is_ok_and(|job| job.wasi_p3));
        for bad in [
            &["--fingerprint", "00ff", "-", "out"][..],
            &[
                "--fingerprint",
                "00ff",
                "--max-component-bytes",
                "x",
                "-",
                "out",
            ],
            &["--fingerprint", "00ff", "--max-component-bytes", "1", "-"],
            &[
                "--fingerprint",
                "00ff",
                "--max-component-bytes",
                "1",
                "a",
                "b",
                "c",
            ],
        ] {
            assert!(CompileJob::parse(args(bad)).is_err(), "{bad:?}");
        }
    }

    /// The cache names files after `Digest::hex`: only a sha256 in lowercase hex parses, so
    /// no digest can name a path outside the cache directory.
    #[test]
    fn digests_must_be_sha256_hex() {
        let hex = "ab".repeat(32);
        assert_eq!(
            Digest::parse(&format!("sha256:{hex}"))
                .ok()
                .as_ref()
                .map(Digest::hex),
            Some(hex.as_str())
        );
        for bad in [
            hex.clone(),
            format!("sha512:{hex}"),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", &hex[..62]),
            "sha256:../../etc/passwd".to_owned(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }
}
