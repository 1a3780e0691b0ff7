//! How every Lattice process reports: `lattice`, `lattice-host` and every
//! `lattice-provider-*` binary call [`init`] first thing, so their logs read alike and obey
//! the same switches.
//!
//! Layout: [`init`] sets up logging and, when asked for, OpenTelemetry traces (`otlp`);
//! [`run`] runs a binary's async main, reports how it ended and flushes the traces
//! ([`shutdown`]), the same way for every binary; [`propagation`] carries trace context across
//! NATS and HTTP hops; [`sampling`] lets a busy path draw a new trace before making its span. A process keeps one line of setup and the switches stay in one place.
//!
//! The switches:
//! - `RUST_LOG` chooses what is logged (an [`EnvFilter`] directive); without it, the level the
//!   binary asks for.
//! - Colours only when stderr is a terminal and `NO_COLOR` is unset or empty: a log redirected
//!   to a file, or a provider's stderr piped through its host, carries no escape codes.
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` turns on OTLP/HTTP trace export of Lattice's spans (names
//!   `lattice.*`, listed in docs/architecture.md, "Traces"), whatever `RUST_LOG` says;
//!   `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` choose the sampling and
//!   `OTEL_SERVICE_NAME` the service name (default: the binary's name).
//!
//! ```no_run
//! lattice_telemetry::init("info");
//! ```
#![deny(missing_docs)]

use std::io::IsTerminal as _;

/// Serving a Prometheus scrape endpoint (`--metrics-addr`), for hosts and control planes.
#[cfg(feature = "metrics")]
pub mod metrics;

use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

mod otlp;
pub mod propagation;
pub mod sampling;

/// Installs the process's subscriber: logs to stderr, `RUST_LOG` or else `default_filter`; and,
/// when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, Lattice's spans exported over OTLP.
/// A second call does nothing (the first subscriber stays).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_target(false)
        .with_filter(filter);
    // Traces have their own filter, whatever RUST_LOG keeps on stderr: Lattice's spans (debug
    // level and up, from every `lattice*` crate), and its warnings and errors as span events.
    // Debug and info log events stay out: recording each one in its span would cost the hot
    // path for little. The level hint matters as much: without one the process's maximum level
    // is TRACE, and every `log::trace!` of a dependency (wasmtime logs several per
    // instantiation) goes through the `log` bridge and the filters before it is dropped.
    let traces = otlp::configured(|name| std::env::var(name).ok())
        .then(otlp::tracer)
        .flatten()
        .map(|tracer| {
            // What the layer does by default on every span costs each HTTP request several
            // microseconds, sampled or not (BENCHMARKS §12): the OpenTelemetry context attached
            // and detached at every poll of the request's task (Lattice reads a span's context
            // through the span, never the attached one), busy and idle clocks read at every
            // poll, the thread's name copied into every span. Off; a span keeps its name, its
            // fields, its code location and its target.
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_context_activation(false)
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_filter(filter_fn(traced).with_max_level_hint(Level::DEBUG))
        });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
}

/// What the OTLP layer sees: Lattice's spans at debug and up, its events at warn and up.
fn traced(meta: &tracing::Metadata<'_>) -> bool {
    let level = if meta.is_span() {
        Level::DEBUG
    } else {
        Level::WARN
    };
    meta.target().starts_with("lattice") && *meta.level() <= level
}

/// Exports the spans still buffered and stops the exporter; [`run`] calls it when the binary's
/// main returns. Does nothing when traces are off.
pub fn shutdown() {
    otlp::shutdown();
}

/// Runs `main` on a new multi-threaded tokio runtime and turns its outcome into the process's
/// exit code, printing an error (with its causes) the way every Lattice binary does.
pub fn run<F>(main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(main);
    // On this thread, outside the runtime's context: the flush blocks until the collector
    // answered (or its timeout), which a runtime thread must not.
    shutdown();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether to colour: on a terminal, unless `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// An environment of `pairs`, for tests of what reads variables.
#[cfg(test)]
pub(crate) fn test_env<'a>(
    pairs: &'a [(&'a str, &'a str)],
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(
            !colour(false, None),
            "a file or a pipe gets no escape codes"
        );
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
