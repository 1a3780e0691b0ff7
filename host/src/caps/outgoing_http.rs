//! Outgoing `wasi:http`: a guest's requests go only to the hosts its links to the `http-client`
//! capability allow (`allowed_hosts` at either end: `host`, `host:port` or `*`,
//! comma-separated); every other request is refused with `HTTP-request-denied`, a WIT error the
//! guest can handle.
//!
//! The interface itself is wasmtime-wasi-http's (added by [`crate::wasi::new_linker`]); this
//! unit owns the policy: [`OutgoingGrant`], the allow-list worked out once when the workload
//! starts, and [`OutgoingPolicy`], the hooks each store sends through.

use std::sync::Arc;

use lattice_protocol::assignment::WorkloadLink;
use lattice_protocol::provider::catalog::ALLOWED_HOSTS_KEY;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// The built-in capability serving outgoing `wasi:http` in links.
pub const HTTP_CLIENT: &str = lattice_protocol::provider::catalog::HTTP_CLIENT.name;

/// The hosts a workload may send requests to (lower case), shared by its stores.
#[derive(Debug, Clone, Default)]
pub struct OutgoingGrant {
    allowed: Arc<[String]>,
}

impl OutgoingGrant {
    /// The hosts `links` to `http-client` allow, from both ends' `allowed_hosts`.
    pub fn new(links: &[WorkloadLink]) -> Self {
        let allowed: Vec<String> =
            super::builtin_links(links, HTTP_CLIENT, "wasi", "http", "outgoing-handler")
                .flat_map(|l| {
                    [
                        l.source_config.get(ALLOWED_HOSTS_KEY),
                        l.target_config.get(ALLOWED_HOSTS_KEY),
                    ]
                })
                .flatten()
                .flat_map(|list| list.split(','))
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect();
        Self {
            allowed: allowed.into(),
        }
    }

    /// Whether `host` (lower case) on `port` is allowed.
    pub(super) fn allows(&self, host: &str, port: Option<u16>) -> bool {
        authority_allowed(&self.allowed, host, port)
    }
}

/// Whether `authority` (`host` or `host:port`, lower case) is allowed by `allowed`.
fn authority_allowed(allowed: &[String], host: &str, port: Option<u16>) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || *a == host || port.is_some_and(|p| *a == format!("{host}:{p}")))
}

/// `wasi:http` hooks that send only to allowed hosts; everything else is
/// refused with `HTTP-request-denied`.
#[derive(Debug)]
pub struct OutgoingPolicy {
    grant: OutgoingGrant,
}

impl OutgoingPolicy {
    /// Hooks sending within `grant`.
    pub fn new(grant: OutgoingGrant) -> Self {
        Self { grant }
    }
}

/// What [`WasiHttpHooks::send_request`] returns: the response and a future
/// reporting errors while its body is read.
type SendRequestFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                hyper::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutgoingPolicy {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendRequestFuture {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            _ => Some(80),
        });
        // The span names the authority only: paths and queries may carry secrets.
        let span = tracing::debug_span!("lattice_host.http.outgoing", %host, ?port);
        if !self.grant.allows(&host, port) {
            // The guest gets a WIT error it can handle, not a trap.
            tracing::debug!(parent: &span, %host, ?port, "outgoing HTTP request denied");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(tracing::Instrument::instrument(
            async move {
                use http_body_util::BodyExt;
                let (response, io) =
                    wasmtime_wasi_http::default_send_request(request, options).await?;
                Ok((
                    response.map(BodyExt::boxed_unsync),
                    Box::new(io) as Box<dyn Future<Output = _> + Send>,
                ))
            },
            span,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_host_or_host_and_port() {
        let allowed = vec!["example.com".to_string(), "127.0.0.1:8080".to_string()];
        assert!(authority_allowed(&allowed, "example.com", Some(443)));
        assert!(authority_allowed(&allowed, "127.0.0.1", Some(8080)));
        assert!(!authority_allowed(&allowed, "127.0.0.1", Some(8081)));
        assert!(!authority_allowed(&allowed, "evil.example.com", Some(80)));
        assert!(!authority_allowed(&[], "example.com", Some(80)));
        assert!(authority_allowed(&["*".to_string()], "anything", None));
    }
}
