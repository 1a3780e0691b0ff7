//! OTLP trace export: whether it is on, the tracer provider behind it, and flushing it on exit.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set
//! and `OTEL_SDK_DISABLED` is not `true`. Everything else is the OpenTelemetry SDK's own reading
//! of the standard variables: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default
//! `parentbased_always_on`; `parentbased_traceidratio` with a ratio samples a share of new
//! traces and follows the caller's decision otherwise), `OTEL_SERVICE_NAME` (default: the
//! binary's file name), `OTEL_EXPORTER_OTLP_HEADERS` and the rest.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The provider [`crate::shutdown`] flushes: set once by [`tracer`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// How long a flush on exit may wait for the collector before giving up on it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the environment asks for OTLP traces.
pub(crate) fn configured(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Builds the exporting tracer (OTLP over HTTP with protobuf bodies, batched on the SDK's own
/// thread) and installs the W3C trace-context propagator; `None` with a message on stderr when
/// the exporter cannot be built, so that a bad endpoint never stops a host from running.
pub(crate) fn tracer() -> Option<SdkTracer> {
    // The workspace builds reqwest without a crypto provider of its own (the CLI's OCI client
    // asks for that): use ring, as the workspace's rustls does, so https endpoints work too.
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!(
                "warning: OTLP traces are off: cannot build the exporter ({e}); check OTEL_EXPORTER_OTLP_ENDPOINT"
            );
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(default_service_name());
    }
    let provider = SdkTracerProvider::builder()
        .with_sampler(crate::sampling::install(|name| std::env::var(name).ok()))
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("lattice");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = PROVIDER.set(provider);
    Some(tracer)
}

/// Exports what is still buffered and stops the exporter (see [`crate::shutdown`]).
pub(crate) fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
    {
        eprintln!("warning: OTLP traces: the last spans may be lost: {e}");
    }
}

/// The binary's file name (`lattice-host`, `lattice`, ...), which names the service in traces
/// unless `OTEL_SERVICE_NAME` does.
fn default_service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "lattice".to_owned())
}

#[cfg(test)]
mod tests {
    use super::configured;

    use crate::test_env as env;

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        assert!(!configured(env(&[])));
        assert!(!configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(configured(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318"
        )])));
        assert!(configured(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces"
        )])));
        assert!(!configured(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
    }
}
