//! `wasi:logging`: a component's log records go into the host's tracing, tagged with the
//! component, the context the guest gave and the id of the trace it was written in (field
//! `trace_id`, when traces are on).
//!
//! A unit on its own: [`LoggingState`] (who logs) is made once when the workload starts;
//! [`add_to_linker`] takes a function giving a [`LoggingView`] of a store's data.

use wasmtime::component::{HasData, Linker};

use super::bindings::wasi::logging::logging::{self, Host, Level};

/// Who a workload's log records are from.
#[derive(Debug, Clone)]
pub struct LoggingState {
    /// `app/component`, worked out once rather than on every record.
    component: String,
}

impl LoggingState {
    /// Records tagged with `component` (`app/component`).
    pub fn new(component: String) -> Self {
        Self { component }
    }
}

/// One store's view of its workload's logging.
#[derive(Debug, Clone, Copy)]
pub struct LoggingView<'a>(pub &'a LoggingState);

struct Logging;

impl HasData for Logging {
    type Data<'a> = LoggingView<'a>;
}

/// Adds `wasi:logging/logging` to `linker`, logging through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> LoggingView<'_>,
) -> wasmtime::Result<()> {
    logging::add_to_linker::<T, Logging>(linker, view)
}

// No span here: the record itself is the event, and a span per record would double it.
impl Host for LoggingView<'_> {
    async fn log(
        &mut self,
        level: Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let component = &self.0.component;
        // The trace the record was written in (a request, a call), so that logs and traces
        // meet; absent when traces are off.
        let trace_id = lattice_telemetry::propagation::current_trace_id();
        let trace_id = trace_id.as_deref().map(tracing::field::display);
        // tracing levels are static, so each level is its own call.
        match level {
            Level::Trace => {
                tracing::trace!(target: "guest", %component, %context, trace_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "guest", %component, %context, trace_id, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "guest", %component, %context, trace_id, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "guest", %component, %context, trace_id, "{message}")
            }
            Level::Error | Level::Critical => {
                tracing::error!(target: "guest", %component, %context, trace_id, critical = matches!(level, Level::Critical), "{message}")
            }
        }
        Ok(())
    }
}
