//! Fetching, verifying and compiling workloads' components off the loop that applies
//! assignments.
//!
//! Compiling is the one step of starting a workload that can take long: seconds for a large
//! component, up to the compile limits for a hostile one. [`Loads`] runs each in a task of its
//! own and hands the component back when it is ready, so that while one compiles, the applier
//! goes on stopping and starting the others; the rest of starting (linking, a trial
//! instantiation, binding) takes milliseconds and stays on the loop, which owns the running
//! workloads.
//!
//! A load belongs to one version of one workload: when the assignment changes that workload (or
//! drops it) the load is forgotten, and what it finishes is not used. (Its compiler process is
//! not killed early: it ends by itself, at the latest at its wall-clock limit.)
//!
//! A component that went past a compile limit would go past it again (same bytes, same engine,
//! same limits): that version of the workload is not loaded again, by the periodic retry or a
//! later assignment, until it changes or this host restarts (with other limits, perhaps). Every
//! other failure is retried.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use futures::FutureExt as _;
use lattice_protocol::assignment::Workload;
use lattice_protocol::claims::{Trust, verify_component};
use lattice_protocol::code::Precompiled;
use lattice_protocol::digest::Digest;
use lattice_protocol::keys::PublicKey;
use lattice_protocol::messages::FailureReason;
use lattice_protocol::unix_now;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument as _, info, warn};
use wasmtime::component::Component;

use super::components::{Components, Lookup, Verified};
use super::{Because as _, StartError};
use crate::artifacts::ArtifactCache;
use crate::compile::{CacheOutcome, CodeCache, LoadError};
use crate::engine::Runtime;

/// What loading a component needs, shared by the load tasks.
pub(crate) struct Loader {
    pub(crate) artifacts: ArtifactCache,
    pub(crate) trusted_issuers: Vec<PublicKey>,
    pub(crate) runtime: Runtime,
    pub(crate) code: Arc<CodeCache>,
    /// One loaded component per digest, shared by the workloads that run it.
    pub(crate) components: Components,
}

impl Loader {
    /// A workload's component: the one loaded for its digest (its claims still valid now), or
    /// loaded now (loads of one digest at the same time share one load).
    #[tracing::instrument(name = "lattice.load", level = "debug", skip_all, fields(workload = %w.key()))]
    async fn load(self: &Arc<Self>, w: &Workload) -> Result<Component, StartError> {
        let (loader, workload) = (self.clone(), w.clone());
        let lookup = self.components.lookup(&w.image, move || {
            async move {
                let outcome = loader.fetch_and_compile(&workload).await;
                loader.components.finish(&workload.image, &outcome);
                outcome
            }
            .boxed()
        });
        match lookup {
            Lookup::Ready((component, claims)) => {
                // Verified when it was loaded; whether it is still valid is a question of now.
                claims
                    .check_window(unix_now())
                    .map_err(|e| anyhow::anyhow!("refused: {e}"))
                    .because(FailureReason::RefusedSignature)?;
                Ok(component)
            }
            Lookup::Wait(load) => load
                .await
                .map(|(component, _)| component)
                .map_err(StartError::from),
        }
    }

    /// Fetch, verify and compile (or load the cached code of) a workload's component: refused
    /// before compilation when its signature does not verify, so an untrusted component costs
    /// no CPU.
    async fn fetch_and_compile(&self, w: &Workload) -> Result<Verified, StartError> {
        let max = self.runtime.config().max_component_bytes;
        let bytes = self
            .artifacts
            .get(&w.image, max)
            .await
            .because(FailureReason::FetchFailed)?;
        let trust = Trust::new(self.trusted_issuers.clone());
        let claims = verify_component(&bytes, &trust, unix_now())
            .map_err(|e| anyhow::anyhow!("refused before compilation: {e}"))
            .because(FailureReason::RefusedSignature)?;
        let bytes = Arc::new(bytes);
        if !self.code.has(&self.runtime, &w.image)
            && let Some(loaded) = self.load_precompiled(&w.image, &bytes, &trust).await
        {
            info!(workload = %w.key(), component = %claims.name, outcome = ?loaded.1,
                "component loaded");
            return Ok((loaded.0, Arc::new(claims)));
        }
        let (runtime, code, digest) = (self.runtime.clone(), self.code.clone(), w.image.clone());
        let wasi_p3 = self.runtime.config().wasi_p3;
        let (component, outcome) =
            tokio::task::spawn_blocking(move || code.load(&runtime, &digest, &bytes))
                .await
                .context("the compiler task failed")
                .because(FailureReason::CompileError)?
                .map_err(|e| StartError {
                    reason: match e {
                        LoadError::Limit(_) => FailureReason::CompileLimit,
                        _ => FailureReason::CompileError,
                    },
                    error: wasi_p3_hint(e.into(), wasi_p3),
                })?;
        info!(workload = %w.key(), component = %claims.name, ?outcome, "component loaded");
        Ok((component, Arc::new(claims)))
    }

    /// The component from code precompiled for this host's target (`lattice compile`), if the
    /// lattice has code for it that a trusted issuer signed and this engine loads. Anything
    /// else (none stored, unsigned, changed, for another engine) is logged and `None`: the
    /// host then compiles, as it would have without it.
    async fn load_precompiled(
        &self,
        digest: &Digest,
        bytes: &Arc<Vec<u8>>,
        trust: &Trust,
    ) -> Option<(Component, CacheOutcome)> {
        let fingerprint = self.runtime.baseline_fingerprint()?;
        let max = self
            .runtime
            .config()
            .max_component_bytes
            .saturating_mul(CODE_TO_COMPONENT_BYTES);
        let object = match self.artifacts.precompiled(digest, &fingerprint, max).await {
            Ok(Some(object)) => object,
            Ok(None) => return None,
            Err(err) => {
                warn!(%digest, error = %format!("{err:#}"), "precompiled code not fetched; compiling");
                return None;
            }
        };
        let opened = Precompiled::decode(&object)
            .and_then(|p| p.open(digest, &fingerprint, trust).map(<[u8]>::to_vec));
        let code = match opened {
            Ok(code) => code,
            Err(err) => {
                warn!(%digest, error = %err, "precompiled code refused; compiling");
                return None;
            }
        };
        let (runtime, cache, digest, bytes) = (
            self.runtime.clone(),
            self.code.clone(),
            digest.clone(),
            bytes.clone(),
        );
        let installed = tokio::task::spawn_blocking(move || {
            let loaded = cache.install(&runtime, &bytes, &code)?;
            // Serving need not wait for the disk.
            tokio::task::spawn_blocking(move || cache.keep(&runtime, &digest, &code));
            Ok::<_, LoadError>(loaded)
        })
        .await;
        match installed {
            Ok(Ok(loaded)) => Some(loaded),
            Ok(Err(err)) => {
                warn!(error = %err, "precompiled code not used; compiling");
                None
            }
            Err(err) => {
                warn!(error = %err, "loading precompiled code failed; compiling");
                None
            }
        }
    }
}

/// How much larger than its component precompiled code may be (a component's code is a few
/// times its size; this bounds what a host downloads).
const CODE_TO_COMPONENT_BYTES: usize = 16;

/// A load that finished, successfully or not.
pub(crate) struct LoadDone {
    key: String,
    id: u64,
    result: Result<Component, StartError>,
    /// The `lattice.apply` that began the load: starting the workload is traced in it too.
    applied_in: tracing::Span,
}

impl LoadDone {
    /// The span of the `lattice.apply` that began the load.
    pub(crate) fn applied_in(&self) -> &tracing::Span {
        &self.applied_in
    }
}

/// A load under way.
struct Pending {
    workload: Workload,
    id: u64,
    /// Aborted when the load is forgotten (its blocking compile runs to its end regardless).
    _task: AbortOnDropHandle<()>,
}

/// The loads under way, at most one per workload key.
pub(crate) struct Loads {
    loader: Arc<Loader>,
    pending: BTreeMap<String, Pending>,
    /// Workloads, as they were, whose compile went past a limit.
    over_limit: BTreeMap<String, Workload>,
    done_tx: mpsc::UnboundedSender<LoadDone>,
    done_rx: mpsc::UnboundedReceiver<LoadDone>,
    next_id: u64,
}

impl Loads {
    pub(crate) fn new(loader: Loader) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            loader: Arc::new(loader),
            pending: BTreeMap::new(),
            over_limit: BTreeMap::new(),
            done_tx,
            done_rx,
            next_id: 0,
        }
    }

    /// Whether `w`, as it is, is being loaded, or is not to be loaded again (its compile went
    /// past a limit): either way, nothing to begin.
    pub(crate) fn is_loading_or_over_limit(&self, w: &Workload) -> bool {
        let key = w.key();
        self.pending.get(&key).is_some_and(|p| p.workload == *w)
            || self.over_limit.get(&key).is_some_and(|o| o == w)
    }

    /// Starts loading `w`, forgetting any load of another version of it.
    pub(crate) fn begin(&mut self, w: &Workload) {
        self.next_id += 1;
        let (id, key) = (self.next_id, w.key());
        self.over_limit.remove(&key);
        let (loader, workload, done) = (self.loader.clone(), w.clone(), self.done_tx.clone());
        let task_key = key.clone();
        // Within the `lattice.apply` that began it.
        let span = tracing::Span::current();
        let applied_in = span.clone();
        let task = tokio::spawn(
            async move {
                let result = loader.load(&workload).await;
                // The receiver lives as long as the agent: a send fails only while it shuts
                // down.
                let _ = done.send(LoadDone {
                    key: task_key,
                    id,
                    result,
                    applied_in,
                });
            }
            .instrument(span),
        );
        self.pending.insert(
            key,
            Pending {
                workload: w.clone(),
                id,
                _task: AbortOnDropHandle::new(task),
            },
        );
    }

    /// Forgets the load of workload `key`, if any.
    pub(crate) fn forget(&mut self, key: &str) {
        self.pending.remove(key);
    }

    /// Forgets the loads of the workloads `wanted` says no.
    pub(crate) fn retain(&mut self, wanted: impl Fn(&str) -> bool) {
        self.pending.retain(|key, _| wanted(key));
        self.over_limit.retain(|key, _| wanted(key));
    }

    /// Forgets the loaded components whose digest `wanted` says no.
    pub(crate) fn retain_components(&self, wanted: impl Fn(&Digest) -> bool) {
        self.loader.components.retain(wanted);
    }

    /// The next load to finish, forgotten ones included (see [`Loads::take`]). Cancel-safe.
    pub(crate) async fn next(&mut self) -> LoadDone {
        match self.done_rx.recv().await {
            Some(done) => done,
            // Never: `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// The workload `done` was for and its outcome, unless the load was forgotten since.
    pub(crate) fn take(
        &mut self,
        done: LoadDone,
    ) -> Option<(Workload, Result<Component, StartError>)> {
        if self.pending.get(&done.key).is_none_or(|p| p.id != done.id) {
            return None;
        }
        let pending = self.pending.remove(&done.key)?;
        if let Err(e) = &done.result
            && e.reason == FailureReason::CompileLimit
        {
            self.over_limit
                .insert(done.key.clone(), pending.workload.clone());
        }
        Some((pending.workload, done.result))
    }
}

/// `error` of a compile, with what to do when it failed for want of WASI 0.3 (the component
/// model's async ABI, which a host has only with `--wasi-p3`).
fn wasi_p3_hint(error: anyhow::Error, wasi_p3: bool) -> anyhow::Error {
    if !wasi_p3 && format!("{error:#}").contains("component model async feature") {
        error.context(crate::http::WASI_P3_OFF)
    } else {
        error
    }
}
