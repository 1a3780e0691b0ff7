//! What one workload may take from its host: memory per store and for all guests together,
//! time per call (see [`crate::wasi::Limits`]) and instances at once.
//!
//! - [`StoreLimiter`] is every store's wasmtime resource limiter: a linear memory may grow to
//!   the workload's memory limit, a table to [`TABLE_ELEMENTS`], a store may hold only a few
//!   instances, tables and memories, and every byte of linear memory is first reserved from the
//!   host's [`MemoryBudget`], whether or not the pooling allocator is on. A store that would
//!   take the host over its budget sees its growth (or instantiation) fail, so only its own
//!   request fails; the reservation is returned when the store is dropped.
//! - [`Gate`] bounds the instances of one workload that run at once on this host (its
//!   `concurrency`). HTTP requests and component calls beyond it are refused at once (`503` with
//!   `Retry-After`, a `busy` call error) rather than queued, so a flood of one workload never
//!   holds the instances, threads and memory its neighbours need.
//!
//! ```
//! use std::sync::Arc;
//! use lattice_host::limits::{Gate, MemoryBudget};
//!
//! let budget = Arc::new(MemoryBudget::new(64 << 20));
//! assert!(budget.reserve(48 << 20));
//! assert!(!budget.reserve(32 << 20), "over the host's total");
//! budget.release(48 << 20);
//!
//! let gate = Gate::new(1);
//! let permit = gate.try_enter().expect("a free slot");
//! assert!(gate.try_enter().is_none(), "the one slot is taken");
//! drop(permit);
//! assert!(gate.try_enter().is_some());
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::ResourceLimiter;

/// Table elements one table may hold; matches the pooling allocator's default, which is ample
/// for compiled languages (debug-mode C# needs ~10k).
pub const TABLE_ELEMENTS: usize = 20_000;

/// Core instances one store may create. A component made by wit-component instantiates its
/// main module and a few shims (Rust's `hello`: 3).
pub const INSTANCES_PER_STORE: usize = 32;
/// Tables one store may create (Rust's `hello`: 2).
pub const TABLES_PER_STORE: usize = 32;
/// Linear memories one store may create (normally 1).
pub const MEMORIES_PER_STORE: usize = 8;

/// The linear memory all guests of a host may hold together.
#[derive(Debug)]
pub struct MemoryBudget {
    total: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        Self {
            total,
            used: AtomicUsize::new(0),
        }
    }

    /// The budget in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, or nothing if that would exceed it.
    pub fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|after| *after <= self.total)
            })
            .is_ok()
    }

    /// Gives back `bytes` taken with [`MemoryBudget::reserve`].
    pub fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The resource limiter of one store.
#[derive(Debug)]
pub struct StoreLimiter {
    memory_bytes: usize,
    table_elements: usize,
    budget: Option<Arc<MemoryBudget>>,
    /// Bytes taken from `budget`, given back on drop.
    reserved: usize,
    /// The reservation of the last approved growth, given back if the growth then fails.
    last_growth: usize,
    /// Counts each growth refused (the workload's `limit_hits{limit="memory"}`).
    refusals: Option<prometheus_client::metrics::counter::Counter>,
}

impl StoreLimiter {
    /// Linear memories up to `memory_bytes`, tables up to `table_elements`, outside any budget
    /// until [`StoreLimiter::with_budget`].
    pub fn new(memory_bytes: usize, table_elements: usize) -> Self {
        Self {
            memory_bytes,
            table_elements,
            budget: None,
            reserved: 0,
            last_growth: 0,
            refusals: None,
        }
    }

    /// Counts every refused growth into `refusals`.
    pub fn count_refusals(&mut self, refusals: prometheus_client::metrics::counter::Counter) {
        self.refusals = Some(refusals);
    }

    fn refuse(&self) -> wasmtime::Result<bool> {
        if let Some(refusals) = &self.refusals {
            refusals.inc();
        }
        Ok(false)
    }

    /// Reserves every growth of linear memory from `budget` first.
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.last_growth = 0;
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false); // the module's own maximum, not a limit of ours
        }
        if desired > self.memory_bytes {
            return self.refuse();
        }
        let growth = desired.saturating_sub(current);
        if let Some(budget) = &self.budget {
            if !budget.reserve(growth) {
                tracing::debug!(
                    desired,
                    used = budget.used(),
                    total = budget.total(),
                    "refusing a memory growth over the host's guest memory budget"
                );
                return self.refuse();
            }
            self.reserved += growth;
            self.last_growth = growth;
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // The memory did not grow: its reservation is not needed.
        if let Some(budget) = &self.budget {
            budget.release(self.last_growth);
            self.reserved -= self.last_growth;
        }
        self.last_growth = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        INSTANCES_PER_STORE
    }

    fn tables(&self) -> usize {
        TABLES_PER_STORE
    }

    fn memories(&self) -> usize {
        MEMORIES_PER_STORE
    }
}

impl Drop for StoreLimiter {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.reserved);
        }
    }
}

/// The instances of one workload that may run at once on this host.
#[derive(Debug, Clone)]
pub struct Gate {
    slots: Arc<Semaphore>,
    limit: u32,
}

/// A running instance's slot in its workload's [`Gate`], freed on drop.
pub type Slot = OwnedSemaphorePermit;

impl Gate {
    /// A gate for `limit` instances at once (at least 1).
    pub fn new(limit: u32) -> Self {
        let limit = limit.max(1);
        Self {
            slots: Arc::new(Semaphore::new(limit as usize)),
            limit,
        }
    }

    /// How many may run at once.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// A slot if one is free now.
    pub fn try_enter(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// A slot as soon as one is free, or `None` once `deadline` passes: for deliveries that
    /// may wait (queued calls), not for requests someone is waiting on.
    pub async fn enter_by(&self, deadline: Instant) -> Option<Slot> {
        let acquire = self.slots.clone().acquire_owned();
        tokio::time::timeout_at(deadline.into(), acquire)
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn growth_is_reserved_from_the_budget_and_returned_on_drop() -> wasmtime::Result<()> {
        let budget = Arc::new(MemoryBudget::new(4 * MIB));
        let mut first = StoreLimiter::new(3 * MIB, 10).with_budget(budget.clone());
        assert!(first.memory_growing(0, 2 * MIB, None)?);
        assert!(
            !first.memory_growing(2 * MIB, 4 * MIB, None)?,
            "over the store's limit"
        );
        let mut second = StoreLimiter::new(3 * MIB, 10).with_budget(budget.clone());
        assert!(second.memory_growing(0, 2 * MIB, None)?);
        assert!(
            !second.memory_growing(2 * MIB, 3 * MIB, None)?,
            "over the host's total"
        );
        assert_eq!(budget.used(), 4 * MIB);
        drop(first);
        assert_eq!(budget.used(), 2 * MIB);
        assert!(second.memory_growing(2 * MIB, 3 * MIB, None)?);
        second.memory_grow_failed(wasmtime::Error::msg("no memory"))?;
        assert_eq!(budget.used(), 2 * MIB, "a failed growth keeps nothing");
        drop(second);
        assert_eq!(budget.used(), 0);
        Ok(())
    }

    #[test]
    fn tables_are_capped() -> wasmtime::Result<()> {
        let mut limiter = StoreLimiter::new(MIB, 100);
        assert!(limiter.table_growing(0, 100, None)?);
        assert!(!limiter.table_growing(100, 101, None)?);
        assert!(!limiter.table_growing(0, 50, Some(10))?);
        Ok(())
    }

    #[tokio::test]
    async fn a_full_gate_waits_until_its_deadline() {
        let gate = Gate::new(0);
        assert_eq!(gate.limit(), 1, "at least one");
        let held = gate.try_enter().expect("free");
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        assert!(gate.enter_by(soon).await.is_none());
        drop(held);
        assert!(gate.enter_by(soon).await.is_some());
    }
}
