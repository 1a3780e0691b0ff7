//! The one tracing setup every Lattice binary uses. `RUST_LOG` is honoured.

use tracing_subscriber::EnvFilter;

/// Installs the subscriber: logs to stderr, `info` for Lattice by default.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
