//! Outgoing `wasi:http`: a guest's requests go only to the hosts its links to the `http-client`
//! capability allow (`allowed_hosts` at either end: `host`, `host:port`, `[ipv6]:port` or `*`,
//! comma-separated); every other request is refused with `HTTP-request-denied`, a WIT error the
//! guest can handle, and the reason logged at debug.
//!
//! The allow-list applies to the resolved address as well as the name ([`address`]): the name is
//! resolved once, every address it resolves to must be public or listed on the link as an
//! address (an address entry admits any allowed name resolving to it: the destination is the
//! same), and the request then goes to a checked address ([`send`]), not to a second lookup.
//!
//! The interface itself is wasmtime-wasi-http's (added by [`crate::wasi::new_linker`]); this
//! unit owns the policy: [`OutgoingGrant`], the allow-list worked out once when the workload
//! starts, and [`OutgoingPolicy`], the hooks each store sends through.

mod address;
mod send;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use address::ExplicitAddress;

use lattice_protocol::assignment::WorkloadLink;
use lattice_protocol::provider::catalog::ALLOWED_HOSTS_KEY;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// The built-in capability serving outgoing `wasi:http` in links.
pub const HTTP_CLIENT: &str = lattice_protocol::provider::catalog::HTTP_CLIENT.name;

/// The hosts a workload may send requests to (lower case), shared by its stores.
#[derive(Debug, Clone, Default)]
pub struct OutgoingGrant {
    allowed: Arc<[String]>,
    /// The entries that are addresses: the only non-public addresses requests may reach.
    explicit: Arc<[ExplicitAddress]>,
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
        let explicit: Vec<ExplicitAddress> = allowed
            .iter()
            .filter_map(|a| ExplicitAddress::parse(a))
            .collect();
        Self {
            allowed: allowed.into(),
            explicit: explicit.into(),
        }
    }

    /// Whether `host` (lower case, an IPv6 literal without brackets) on `port` is allowed.
    pub(super) fn allows(&self, host: &str, port: Option<u16>) -> bool {
        authority_allowed(&self.allowed, host, port)
    }
}

/// Whether `host` (lower case, an IPv6 literal without brackets) on `port` is allowed by
/// `allowed`: `*`, the host, or `host:port` (`[v6]:port`), or the bracketed IPv6 literal.
fn authority_allowed(allowed: &[String], host: &str, port: Option<u16>) -> bool {
    let bracketed = host.contains(':').then(|| format!("[{host}]"));
    let shown = bracketed.as_deref().unwrap_or(host);
    allowed.iter().any(|a| {
        a == "*" || a == host || a == shown || port.is_some_and(|p| *a == format!("{shown}:{p}"))
    })
}

/// How long the name may take to resolve when the guest names no connect timeout.
const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(600);

/// Resolves `host` once and checks every address it resolves to against `explicit`: the
/// addresses to connect to, or why the request is refused (`HttpRequestDenied`, the reason
/// logged at debug).
async fn checked_addresses(
    host: &str,
    port: u16,
    explicit: &[ExplicitAddress],
    timeout: Duration,
) -> wasmtime_wasi_http::Result<Vec<SocketAddr>> {
    use wasmtime_wasi_http::Error;
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Error::DnsTimeout)?
            .map_err(|e| Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .collect();
    if addrs.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    // Every address must pass: a name answering with one public and one private address is
    // refused, rather than depending on which one the connection picks.
    for addr in &addrs {
        if let Err(denied) = address::check(host, *addr, explicit) {
            tracing::debug!(%denied, "outgoing HTTP request denied");
            return Err(Error::HttpRequestDenied);
        }
    }
    Ok(addrs)
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
        let tls = uri.scheme_str() == Some("https");
        let raw = uri.host().unwrap_or_default().to_ascii_lowercase();
        // `Uri::host` keeps an IPv6 literal's brackets; names and lookups take it without.
        let host = raw
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map_or(raw.clone(), str::to_string);
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        // The span names the authority only: paths and queries may carry secrets.
        let span = tracing::debug_span!("lattice.http.outgoing", %host, port);
        if !self.grant.allows(&host, Some(port)) {
            // The guest gets a WIT error it can handle, not a trap.
            tracing::debug!(parent: &span, %host, port, "outgoing HTTP request denied: the host is not on the link's allowed_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let explicit = self.grant.explicit.clone();
        Box::new(tracing::Instrument::instrument(
            async move {
                let lookup = options
                    .and_then(|o| o.connect_timeout)
                    .unwrap_or(DEFAULT_LOOKUP_TIMEOUT);
                let addrs = checked_addresses(&host, port, &explicit, lookup).await?;
                let (response, io) = send::send_to(request, &addrs, &host, tls, options).await?;
                Ok((response, io))
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
        let six = vec!["[::1]:8080".to_string(), "fd00::5".to_string()];
        assert!(authority_allowed(&six, "::1", Some(8080)));
        assert!(!authority_allowed(&six, "::1", Some(80)));
        assert!(authority_allowed(&six, "fd00::5", Some(80)));
    }
}
