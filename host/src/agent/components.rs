//! One loaded [`Component`] per digest, however many workloads run it.
//!
//! Loading a component gives it its own copy of the compiled code, its own data-segment image
//! and its own affinity in the instance pool (each warm slot is kept for the module that last
//! used it). Workloads of the same digest share one: measured with the `workload_density`
//! benchmark (BENCHMARKS.md, section 13), this is what most of a hello workload cost.
//!
//! Loads of a digest already being loaded wait for that load rather than start their own, so
//! an assignment of a thousand workloads of one component fetches, verifies and compiles it
//! once. A digest stays here while the assignment wants it ([`Components::retain`]); a failed
//! load is forgotten, so the next attempt starts afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use lattice_protocol::claims::Claims;
use lattice_protocol::digest::Digest;
use lattice_protocol::messages::FailureReason;
use wasmtime::component::Component;

use super::StartError;

/// A component with the claims it was verified with.
pub(crate) type Verified = (Component, Arc<Claims>);

/// A load's outcome, as every workload waiting on it gets it.
type Outcome = Result<Verified, Failure>;

/// A failed load, shared by the workloads that waited on it.
#[derive(Clone)]
pub(crate) struct Failure {
    reason: FailureReason,
    error: Arc<anyhow::Error>,
}

impl From<StartError> for Failure {
    fn from(e: StartError) -> Self {
        Self {
            reason: e.reason,
            error: Arc::new(e.error),
        }
    }
}

impl From<Failure> for StartError {
    fn from(f: Failure) -> Self {
        Self {
            reason: f.reason,
            // The same text, chain included: what the report and the log show.
            error: anyhow::anyhow!("{:#}", f.error),
        }
    }
}

enum Entry {
    /// Being fetched, verified and compiled; later loads of the digest wait on it.
    Loading(Shared<BoxFuture<'static, Outcome>>),
    /// Loaded, its signature verified.
    Ready(Verified),
}

/// What a load of a digest should do.
pub(crate) enum Lookup {
    /// The digest is loaded and its signature verified: only the claims' validity at this
    /// workload's start remains to check.
    Ready(Verified),
    /// Wait for the load under way (perhaps begun by this very lookup).
    Wait(Shared<BoxFuture<'static, Outcome>>),
}

/// The components of this host's workloads, by digest.
#[derive(Default)]
pub(crate) struct Components {
    entries: Mutex<HashMap<Digest, Entry>>,
}

impl Components {
    fn entries(&self) -> MutexGuard<'_, HashMap<Digest, Entry>> {
        // Every change is one insert or remove: a panic elsewhere leaves the map consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loaded component of `digest`, or the load to wait for, begun with `load` if none
    /// is under way. `load` must end with [`Components::finish`].
    pub(crate) fn lookup(
        &self,
        digest: &Digest,
        load: impl FnOnce() -> BoxFuture<'static, Result<Verified, StartError>>,
    ) -> Lookup {
        let mut entries = self.entries();
        match entries.get(digest) {
            Some(Entry::Ready(verified)) => Lookup::Ready(verified.clone()),
            Some(Entry::Loading(shared)) => Lookup::Wait(shared.clone()),
            None => {
                let shared = load().map(|r| r.map_err(Failure::from)).boxed().shared();
                entries.insert(digest.clone(), Entry::Loading(shared.clone()));
                Lookup::Wait(shared)
            }
        }
    }

    /// Records how the load of `digest` ended: kept when it succeeded, forgotten otherwise.
    pub(crate) fn finish(&self, digest: &Digest, outcome: &Result<Verified, StartError>) {
        let mut entries = self.entries();
        // Only a load still recorded as under way: one forgotten meanwhile stays forgotten.
        if matches!(entries.get(digest), Some(Entry::Loading(_))) {
            match outcome {
                Ok(verified) => {
                    entries.insert(digest.clone(), Entry::Ready(verified.clone()));
                }
                Err(_) => {
                    entries.remove(digest);
                }
            }
        }
    }

    /// Forgets the digests `wanted` says no (the workloads still running them keep their own
    /// handle on the component).
    pub(crate) fn retain(&self, wanted: impl Fn(&Digest) -> bool) {
        self.entries().retain(|digest, _| wanted(digest));
    }

    /// How many digests are loaded or being loaded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use lattice_protocol::claims::{ClaimsOptions, read_claims, sign_component};
    use lattice_protocol::keys::{KeyPair, KeyRole};

    use super::*;
    use crate::engine::{EngineConfig, PoolSizing, Runtime};

    /// The smallest component: its header alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    /// A component and the claims it was verified with.
    fn verified() -> Verified {
        let runtime = Runtime::new(&EngineConfig {
            pool: PoolSizing::OnDemand,
            ..EngineConfig::default()
        })
        .expect("an engine");
        let component = Component::new(runtime.engine(), EMPTY_COMPONENT)
            .expect("the empty component compiles");
        let issuer = KeyPair::generate(KeyRole::Issuer);
        let signed = sign_component(EMPTY_COMPONENT, &issuer, &ClaimsOptions::named("e", "1"), 1)
            .expect("signs");
        let (claims, _) = read_claims(&signed).expect("claims");
        (component, Arc::new(claims))
    }

    fn digest(text: &str) -> Digest {
        Digest::of(text.as_bytes())
    }

    /// A load that finishes when `finish` is sent, counted in `loads`.
    fn load_until(
        components: &Arc<Components>,
        digest: &Digest,
        loads: &Arc<AtomicUsize>,
        finish: oneshot::Receiver<Result<Verified, StartError>>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<Verified, StartError>> {
        let (components, digest, loads) = (components.clone(), digest.clone(), loads.clone());
        move || {
            loads.fetch_add(1, Ordering::SeqCst);
            async move {
                let outcome = finish.await.expect("the test finishes the load");
                components.finish(&digest, &outcome);
                outcome
            }
            .boxed()
        }
    }

    fn wait(lookup: Lookup) -> Shared<BoxFuture<'static, Outcome>> {
        match lookup {
            Lookup::Wait(load) => load,
            Lookup::Ready(_) => panic!("expected a load to wait for"),
        }
    }

    #[tokio::test]
    async fn loads_of_one_digest_at_once_share_one_load() {
        let components = Arc::new(Components::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let d = digest("hello");
        let (finish, finished) = oneshot::channel();
        let first = wait(components.lookup(&d, load_until(&components, &d, &loads, finished)));
        let (_unused, never) = oneshot::channel();
        let second = wait(components.lookup(&d, load_until(&components, &d, &loads, never)));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for both");

        let _ = finish.send(Ok(verified()));
        let (a, b) = tokio::join!(first, second);
        assert!(a.is_ok() && b.is_ok(), "both get the component");
        // Loaded: later workloads take it without a load.
        let (_unused, never) = oneshot::channel();
        assert!(matches!(
            components.lookup(&d, load_until(&components, &d, &loads, never)),
            Lookup::Ready(_)
        ));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_load_is_shared_then_forgotten() {
        let components = Arc::new(Components::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let d = digest("bad");
        let (finish, finished) = oneshot::channel();
        let first = wait(components.lookup(&d, load_until(&components, &d, &loads, finished)));
        let (_unused, never) = oneshot::channel();
        let second = wait(components.lookup(&d, load_until(&components, &d, &loads, never)));
        let _ = finish.send(Err(StartError {
            reason: FailureReason::CompileError,
            error: anyhow::anyhow!("invalid component").context("compiling"),
        }));
        for outcome in [first.await, second.await] {
            let Err(failure) = outcome else {
                panic!("the load failed")
            };
            let error = StartError::from(failure);
            assert_eq!(error.reason, FailureReason::CompileError);
            assert_eq!(format!("{:#}", error.error), "compiling: invalid component");
        }
        assert_eq!(components.len(), 0, "a failure is not kept");
        // The next attempt loads again.
        let (_unused, never) = oneshot::channel();
        let _again = wait(components.lookup(&d, load_until(&components, &d, &loads, never)));
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn digests_no_longer_wanted_are_forgotten() {
        let components = Arc::new(Components::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let (kept, dropped) = (digest("kept"), digest("dropped"));
        for d in [&kept, &dropped] {
            let (finish, finished) = oneshot::channel();
            let load = wait(components.lookup(d, load_until(&components, d, &loads, finished)));
            let _ = finish.send(Ok(verified()));
            assert!(load.await.is_ok());
        }
        components.retain(|d| *d == kept);
        assert_eq!(components.len(), 1);
        let (_unused, never) = oneshot::channel();
        assert!(matches!(
            components.lookup(&kept, load_until(&components, &kept, &loads, never)),
            Lookup::Ready(_)
        ));
    }
}
