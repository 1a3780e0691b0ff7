//! `wasi:logging`: a component's log records go into the host's tracing, tagged with the
//! component and the context the guest gave.

use super::bindings::wasi::logging::logging::{Host, Level};
use crate::wasi::HostState;

impl Host for HostState {
    async fn log(
        &mut self,
        level: Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let component = self.ctx.name();
        // tracing levels are static, so each level is its own call.
        match level {
            Level::Trace => tracing::trace!(target: "guest", %component, %context, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", %component, %context, "{message}"),
            Level::Info => tracing::info!(target: "guest", %component, %context, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", %component, %context, "{message}"),
            Level::Error | Level::Critical => {
                tracing::error!(target: "guest", %component, %context, critical = matches!(level, Level::Critical), "{message}")
            }
        }
        Ok(())
    }
}
