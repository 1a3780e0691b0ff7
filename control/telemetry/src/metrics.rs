//! Serving a process's metrics for Prometheus to scrape (`--metrics-addr HOST:PORT`): the one
//! scrape server of hosts and control planes, so both answer alike.
//!
//! What is measured belongs to each program (`lattice_host::metrics`,
//! `lattice_control::metrics`); this module only serves what their [`Render`] writes, at
//! `GET /metrics`, as OpenMetrics text (which Prometheus reads). The address may have port 0:
//! the bound one is logged (`serving metrics`, `addr=...`) and [`MetricsEndpoint::bound`]
//! gives it to whoever configured the endpoint (tests, in-process).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use lattice_telemetry::metrics::{MetricsEndpoint, serve};
//! let endpoint = MetricsEndpoint::new("127.0.0.1:0".parse()?);
//! let _server = serve(&endpoint, Arc::new(|| Box::pin(async { "# EOF\n".to_owned() }))).await?;
//! println!("scrape http://{}/metrics", endpoint.bound().await);
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// The content type of what [`Render`] writes: OpenMetrics text, as `prometheus-client`
/// encodes it.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The path metrics are served on.
pub const PATH: &str = "/metrics";

/// Scrapes served at once; more wait to be accepted. A scrape is one small response, and a
/// metrics port must not become a way to exhaust the process's file descriptors.
const MAX_CONNECTIONS: usize = 16;

/// Time a scraper has to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes the exposition of one scrape (gauges read at that moment included).
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Where a process serves its metrics, and, once it does, the address it bound (port 0 asks
/// the system for a free one). Clones share the bound address.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    bound: Arc<watch::Sender<Option<SocketAddr>>>,
}

impl MetricsEndpoint {
    /// Metrics to be served on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            bound: Arc::new(watch::Sender::new(None)),
        }
    }

    /// The address asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address being served, once it is; waits until then (bound it with a timeout).
    pub async fn bound(&self) -> SocketAddr {
        let mut rx = self.bound.subscribe();
        loop {
            if let Some(addr) = *rx.borrow_and_update() {
                return addr;
            }
            // The sender lives in `self`: this cannot fail while we wait.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A running scrape server; dropping it stops it and closes the port.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `endpoint` and serves `GET /metrics` with what `render` writes, until the returned
/// server is dropped. Fails (naming the address) when the address cannot be bound.
pub async fn serve(endpoint: &MetricsEndpoint, render: Render) -> anyhow::Result<MetricsServer> {
    let listener = TcpListener::bind(endpoint.addr).await.with_context(|| {
        format!(
            "cannot serve metrics on {}: give --metrics-addr a free address (port 0 picks one)",
            endpoint.addr
        )
    })?;
    let addr = listener
        .local_addr()
        .context("reading the metrics address")?;
    tracing::info!(%addr, path = PATH, "serving metrics");
    endpoint.bound.send_replace(Some(addr));
    let task = tokio::spawn(accept(listener, render));
    Ok(MetricsServer { addr, task })
}

async fn accept(listener: TcpListener, render: Render) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "accepting a metrics connection failed");
                // E.g. out of file descriptors: do not spin on it.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(answer(&request, &render).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a metrics connection ended with an error");
            }
            drop(slot);
        });
    }
}

async fn answer<B>(request: &Request<B>, render: &Render) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if request.method() != Method::GET && request.method() != Method::HEAD {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "only GET: scrape GET /metrics\n".to_owned(),
            )
        } else if request.uri().path() != PATH {
            (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                format!("no such page: metrics are at {PATH}\n"),
            )
        } else {
            (StatusCode::OK, CONTENT_TYPE_OPENMETRICS, render().await)
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("writes");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("reads");
        out
    }

    #[tokio::test]
    async fn serves_what_render_writes_on_the_bound_port() {
        let endpoint = MetricsEndpoint::new("127.0.0.1:0".parse().expect("an address"));
        let render: Render = Arc::new(|| Box::pin(async { "up 1\n# EOF\n".to_owned() }));
        let server = serve(&endpoint, render).await.expect("binds");
        let addr = tokio::time::timeout(Duration::from_secs(10), endpoint.bound())
            .await
            .expect("bound");
        assert_eq!(addr, server.addr());
        assert_ne!(addr.port(), 0, "port 0 is resolved to the bound port");

        let scrape = tokio::time::timeout(Duration::from_secs(10), get(addr, PATH))
            .await
            .expect("answered");
        assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
        assert!(scrape.contains("application/openmetrics-text"), "{scrape}");
        assert!(scrape.ends_with("up 1\n# EOF\n"), "{scrape}");

        let other = tokio::time::timeout(Duration::from_secs(10), get(addr, "/"))
            .await
            .expect("answered");
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        assert!(
            other.contains("/metrics"),
            "says where metrics are: {other}"
        );

        drop(server);
        // Dropped: the port closes (the abort takes effect at the task's next poll).
        wait_closed(addr).await;
    }

    async fn wait_closed(addr: SocketAddr) {
        let closed = async {
            while tokio::net::TcpStream::connect(addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the port closes once the server is dropped");
    }

    #[tokio::test]
    async fn an_address_in_use_is_refused_naming_the_flag() {
        let endpoint = MetricsEndpoint::new("127.0.0.1:0".parse().expect("an address"));
        let render: Render = Arc::new(|| Box::pin(async { String::new() }));
        let first = serve(&endpoint, render.clone()).await.expect("binds");
        let again = MetricsEndpoint::new(first.addr());
        let e = serve(&again, render).await.expect_err("in use");
        assert!(format!("{e:#}").contains("--metrics-addr"), "{e:#}");
    }
}
