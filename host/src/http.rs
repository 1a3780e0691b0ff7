//! The built-in HTTP server for `wasi:http` components.
//!
//! One [`HttpServer`] serves any number of addresses, each with one
//! [`HttpWorkload`] (a pre-instantiated component and its environment).
//! A WASI 0.2 component (`wasi:http/incoming-handler@0.2.x`) gets a fresh
//! [`Store`](wasmtime::Store) and instance per request from the workload's
//! [`ProxyPre`](wasmtime_wasi_http::p2::bindings::ProxyPre):
//! instances share nothing, so a guest that traps, loops or runs out of memory fails its own
//! request (500) and nothing else. A WASI 0.3 component (`wasi:http/handler@0.3.x`), built to
//! serve requests concurrently, has its instances reused across requests and several requests
//! at once in each ([`Reuse`], `reuse.rs`).
//!
//! Each workload runs at most its `concurrency` requests at once (a [`Gate`]): beyond it a
//! request is answered `503` with `Retry-After` at once, without an instance, so a flood of one
//! workload takes neither the instances nor the threads its neighbours use. Each listener
//! serves at most [`HttpOptions::max_connections`] connections; more wait in the kernel's
//! accept queue.
//!
//! Binding an address that is already served swaps its workload in place, so
//! a new version of a component takes over without the port ever closing;
//! [`HttpServer::unbind`] closes the port before it returns. An address may also be shared by
//! workloads bound on routes (a path, or a host: [`HttpRoute`]), each request going to the most
//! specific route that matches it (404 when none does); the port closes when its last route
//! goes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lattice_host::caps::WorkloadCtx;
//! use lattice_host::engine::{EngineConfig, Runtime};
//! use lattice_host::http::{HttpServer, HttpWorkload, prepare_http};
//! use lattice_host::wasi::new_linker;
//!
//! # async fn example(component: wasmtime::component::Component) -> anyhow::Result<()> {
//! let runtime = Runtime::new(&EngineConfig::default())?;
//! let linker = new_linker(&runtime)?;
//! let workload = Arc::new(HttpWorkload::new(
//!     &runtime,
//!     "shop/frontend",
//!     prepare_http(&runtime, &linker, &component)?,
//!     WorkloadCtx::detached(&[("GREETING".to_owned(), "Hello".to_owned())]),
//! ));
//! let server = HttpServer::new(runtime);
//! let addr = server.bind("127.0.0.1:8080".parse()?, None, workload).await?;
//! // ...
//! server.unbind(addr, None).await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use lattice_telemetry::sampling::NewRoot;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::engine::Runtime;
use crate::metrics::{Limit, Outcome};
use crate::wasi::{HostState, new_store};

mod body;
mod failure;
mod reuse;
mod routes;
mod workers;
mod workload;

pub use reuse::{
    DEFAULT_INSTANCE_CONCURRENCY, DEFAULT_INSTANCE_IDLE, DEFAULT_INSTANCE_REQUESTS, Reuse,
};

use body::{LimitedBody, content_length};
use failure::{Failure, busy_response, error_response};
use lattice_protocol::assignment::HttpRoute;
use routes::Routes;
use workers::Workers;
use workload::Serve;
pub use workload::{FailureCount, HttpHandler, HttpWorkload, Serving, prepare_http};

/// The interface a WASI 0.2 component exports to be served, at any 0.2.x version.
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";
const INCOMING_HANDLER_VERSION: &str = "@0.2.";
/// The interface a WASI 0.3 component exports to be served, at any 0.3.x version.
const HANDLER: &str = "wasi:http/handler";
const HANDLER_VERSION: &str = "@0.3.";

/// Why a host without WASI 0.3 refuses a WASI 0.3 component, and what to do.
pub const WASI_P3_OFF: &str = "the component is a WASI 0.3 component (it exports \
    wasi:http/handler@0.3 or uses the component model's async ABI), and this host does not run \
    WASI 0.3: start it with --wasi-p3 (LATTICE_WASI_P3=1), or place the component on hosts that \
    have it (a label such as wasi-p3=yes and a spread requirement)";

/// Default largest request body passed to a guest.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 16 << 20;

/// Default largest request head (request line and headers): larger ones are answered 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 << 10;

/// Default time a client has to send a whole request head: a slower one (slowloris) is
/// answered 408 and its connection closed.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What a client too slow to send its request head gets before its connection closes.
const REQUEST_TIMEOUT_RESPONSE: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Default most connections one listener serves at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long the accept loop pauses after an error such as running out of
/// file descriptors, instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Settings of an [`HttpServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// Largest request body passed to a guest; larger requests are answered
    /// 413 (or cut off with an error to the guest when the size is not
    /// announced up front).
    pub max_request_body_bytes: u64,
    /// Largest request head (request line and headers) read; larger ones are answered 431 and
    /// their connection closed (hyper's read buffer, about 400 KiB, caps it).
    pub max_header_bytes: usize,
    /// Time a client has to send a whole request head; a slower one is answered 408 and its
    /// connection closed, and an idle keep-alive connection is closed.
    pub header_read_timeout: Duration,
    /// Threads serving connections, each with its own single-threaded
    /// runtime; 0 means one per core this process may use.
    pub worker_threads: usize,
    /// Most connections one listener serves at once; further clients wait to
    /// be accepted.
    pub max_connections: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            worker_threads: 0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Where a workload is served: an address, and its route there when the address is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The address (as bound: a port 0 asked for is the port given).
    pub addr: SocketAddr,
    /// Its route on a shared address; `None`: the whole address.
    pub route: Option<HttpRoute>,
}

/// The host's HTTP server: listeners by address, each serving one workload.
/// Cheap to clone; listeners close when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct HttpServer {
    inner: Arc<ServerInner>,
}

#[derive(Debug)]
struct ServerInner {
    runtime: Runtime,
    options: HttpOptions,
    listeners: Mutex<HashMap<SocketAddr, Listener>>,
    /// Started with the first listener, so a server that serves nothing
    /// costs no threads.
    workers: OnceLock<Arc<Workers>>,
    /// Serializes `bind` and `unbind`, which await while changing
    /// `listeners` (a std mutex cannot be held across those awaits).
    changing: tokio::sync::Mutex<()>,
}

/// One bound address.
#[derive(Debug)]
struct Listener {
    site: Arc<Site>,
    /// `true` (or dropping it) stops the accept loop and winds down its
    /// connections.
    stop: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl HttpServer {
    /// A server with default [`HttpOptions`]; it serves nothing until
    /// [`HttpServer::bind`] is called.
    pub fn new(runtime: Runtime) -> Self {
        Self::with_options(runtime, HttpOptions::default())
    }

    /// A server with the given options.
    pub fn with_options(runtime: Runtime, options: HttpOptions) -> Self {
        Self {
            inner: Arc::new(ServerInner {
                runtime,
                options,
                listeners: Mutex::new(HashMap::new()),
                workers: OnceLock::new(),
                changing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Serves `workload` on `addr` and returns the bound address (useful
    /// with port 0).
    ///
    /// If this server already listens on `addr`, the workload is swapped:
    /// requests that start afterwards run the new one, requests in flight
    /// finish on the old one, and the port stays open throughout. Must be
    /// called within a tokio runtime, which runs the listener.
    pub async fn bind(
        &self,
        addr: SocketAddr,
        route: Option<HttpRoute>,
        workload: Arc<HttpWorkload>,
    ) -> anyhow::Result<SocketAddr> {
        let _changing = self.inner.changing.lock().await;
        if let Some(listener) = self.inner.listeners().get(&addr) {
            tracing::info!(%addr, component = %workload.name, route = ?route, "serving HTTP on a bound address");
            listener.site.set_workload(route, workload);
            return Ok(addr);
        }

        let workers = match self.inner.workers.get() {
            Some(workers) => workers.clone(),
            None => {
                let workers = Arc::new(Workers::start(self.inner.options.worker_threads)?);
                // Cannot be set already: `changing` is held.
                let _ = self.inner.workers.set(workers.clone());
                workers
            }
        };
        let socket = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
        let bound = socket
            .local_addr()
            .with_context(|| format!("reading the address bound for {addr}"))?;
        tracing::info!(addr = %bound, component = %workload.name, route = ?route, "serving HTTP");
        let mut routes = Routes::default();
        routes.set(route, workload);
        let site = Arc::new(Site {
            runtime: self.inner.runtime.clone(),
            connections: Arc::new(tokio::sync::Semaphore::new(
                self.inner.options.max_connections.max(1),
            )),
            max_request_body: self.inner.options.max_request_body_bytes,
            max_header_bytes: self.inner.options.max_header_bytes,
            header_read_timeout: self.inner.options.header_read_timeout,
            routes: RwLock::new(routes),
        });
        let (stop, stopped) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(socket, workers, site.clone(), stopped));
        self.inner.listeners().insert(
            bound,
            Listener {
                site,
                stop,
                accept_task,
            },
        );
        Ok(bound)
    }

    /// Stops serving `route` (`None`: the whole address) on `addr`; when nothing is left
    /// there, the port is closed when this returns. Requests in flight may finish; idle
    /// keep-alive connections are closed.
    pub async fn unbind(&self, addr: SocketAddr, route: Option<&HttpRoute>) {
        let _changing = self.inner.changing.lock().await;
        let listener = {
            let mut listeners = self.inner.listeners();
            let Some(listener) = listeners.get(&addr) else {
                return;
            };
            if !listener.site.remove(route) {
                tracing::info!(%addr, route = ?route, "stopped serving an HTTP route");
                return;
            }
            listeners.remove(&addr)
        };
        let Some(listener) = listener else {
            return;
        };
        // Ignored error: the loop has already ended if nobody receives.
        let _ = listener.stop.send(true);
        // The listening socket belongs to the accept loop: once it has
        // ended the socket is closed.
        if let Err(err) = listener.accept_task.await {
            tracing::error!(%addr, error = %err, "the HTTP accept loop failed");
        }
        tracing::info!(%addr, "stopped serving HTTP");
    }

    /// The addresses being served, sorted.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut addresses: Vec<SocketAddr> = self.inner.listeners().keys().copied().collect();
        addresses.sort();
        addresses
    }
}

impl ServerInner {
    fn listeners(&self) -> MutexGuard<'_, HashMap<SocketAddr, Listener>> {
        // Nothing panics while holding the lock; if something did, the map
        // itself is still consistent.
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts connections on `socket` for `workers` until `stop` is set or
/// dropped.
async fn accept_loop(
    socket: TcpListener,
    workers: Arc<Workers>,
    site: Arc<Site>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // A connection slot first: at the cap, clients wait in the accept queue.
        let connection = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            slot = site.connections.clone().acquire_owned() => slot,
        };
        let Ok(connection) = connection else { break };
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                workers.dispatch(stream, site.clone(), stop.clone(), connection);
            }
            Err(err) if is_connection_error(&err) => {}
            Err(err) => {
                tracing::warn!(error = %err, "accepting an HTTP connection failed");
                tokio::select! {
                    () = stopped(&mut stop) => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Resolves once `stop` is set or its sender dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // Either outcome means stop; the guard must not live across an await.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Errors that concern one connection, not the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    )
}

/// Serves HTTP/1.1 requests on one connection until the client closes it or
/// `stop` is set, when requests in flight finish and the connection closes.
///
/// A request head over the size limit is answered 431 (by hyper); one not complete within the
/// header-read timeout is answered 408 here. Either closes only this connection.
async fn serve_connection(stream: TcpStream, site: Arc<Site>, mut stop: watch::Receiver<bool>) {
    // Responses are written whole; waiting for more (Nagle) only adds delay.
    let _ = stream.set_nodelay(true);
    let max_header_bytes = site.max_header_bytes;
    let header_read_timeout = site.header_read_timeout;
    let service = service_fn(move |request| {
        let site = site.clone();
        async move { Ok::<_, Infallible>(site.handle(request).await) }
    });
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_header_size(max_header_bytes)
        .serve_connection(TokioIo::new(stream), service);
    let result = tokio::select! {
        result = &mut connection => result,
        () = stopped(&mut stop) => {
            Pin::new(&mut connection).graceful_shutdown();
            (&mut connection).await
        }
    };
    match result {
        Err(err) if err.is_timeout() => answer_slow_client(connection.into_parts()).await,
        Err(err) => {
            // Clients going away mid-request are routine.
            tracing::debug!(error = %err, "HTTP connection ended with an error");
        }
        Ok(()) => {}
    }
}

/// After the header-read timeout: a client that had sent part of a request head (a slowloris)
/// is answered 408; an idle keep-alive connection (nothing pending) just closes.
async fn answer_slow_client<S>(parts: hyper::server::conn::http1::Parts<TokioIo<TcpStream>, S>) {
    use tokio::io::AsyncWriteExt as _;
    if parts.read_buf.is_empty() {
        tracing::debug!("closing an idle HTTP connection");
        return;
    }
    tracing::debug!(
        received = parts.read_buf.len(),
        "a request head took longer than the header-read timeout: answering 408"
    );
    let mut stream = parts.io.into_inner();
    // Best effort, bounded: a client that does not read is not waited for.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(REQUEST_TIMEOUT_RESPONSE).await?;
        stream.shutdown().await
    })
    .await;
}

/// What every connection on one address shares.
#[derive(Debug)]
struct Site {
    runtime: Runtime,
    /// Slots for the connections served at once.
    connections: Arc<tokio::sync::Semaphore>,
    max_request_body: u64,
    max_header_bytes: usize,
    header_read_timeout: Duration,
    routes: RwLock<Routes>,
}

impl Site {
    /// The workload `request` goes to, if any.
    fn workload(&self, request: &Request<Incoming>) -> Option<Arc<HttpWorkload>> {
        let host = || {
            request
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
        };
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .find(request.uri().path(), host)
    }

    fn set_workload(&self, route: Option<HttpRoute>, workload: Arc<HttpWorkload>) {
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .set(route, workload);
    }

    /// Stops serving `route`; whether nothing is served any more.
    fn remove(&self, route: Option<&HttpRoute>) -> bool {
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(route)
    }

    /// Answers one request with a fresh instance of the workload it goes to.
    async fn handle(&self, request: Request<Incoming>) -> Response<HyperOutgoingBody> {
        let Some(workload) = self.workload(&request) else {
            return error_response(
                StatusCode::NOT_FOUND,
                "no component serves this path or host here\n",
            );
        };
        // Debug level: with an info-level `fmt` subscriber an info span per
        // request cost ~20% of the throughput here. Failures are logged at
        // warn naming the component, span or not. No path, query or headers:
        // they may carry secrets.
        // A request that arrives without trace context is drawn before its span is made, and
        // gets none when not drawn: the span would cost it several microseconds for nothing.
        let continued = request
            .headers()
            .contains_key(lattice_telemetry::propagation::HEADERS[0]);
        let root = lattice_telemetry::sampling::new_root();
        let span = if !continued && root == NewRoot::Skip {
            tracing::Span::none()
        } else {
            tracing::debug_span!(
                "lattice.http.request",
                component = %workload.name,
                method = %request.method(),
                status = tracing::field::Empty,
                lattice.sampled = tracing::field::Empty,
            )
        };
        if !continued && root == NewRoot::Drawn {
            // Recorded before the span starts, so the sampler sees it and does not draw again.
            span.record(lattice_telemetry::sampling::DRAWN, true);
        }
        lattice_telemetry::propagation::continue_http(&span, request.headers());
        let started = std::time::Instant::now();
        let (response, outcome) = self
            .run(workload.clone(), request)
            .instrument(span.clone())
            .await;
        workload.metrics.request(outcome, started.elapsed());
        span.record("status", response.status().as_u16());
        response
    }

    /// Runs one request; its response and how it ended (for the metrics).
    async fn run(
        &self,
        workload: Arc<HttpWorkload>,
        request: Request<Incoming>,
    ) -> (Response<HyperOutgoingBody>, Outcome) {
        // Refused before anything is allocated for it: the workload is at its concurrency.
        let Some(slot) = workload.gate.try_enter() else {
            tracing::debug!(component = %workload.name, limit = workload.gate.limit(),
                "refusing a request: the workload is at its concurrency");
            workload.metrics.limit_hit(Limit::Concurrency);
            let busy = busy_response("the component is at its concurrency limit; retry shortly\n");
            return (busy, Outcome::Busy);
        };
        if content_length(&request).is_some_and(|length| length > self.max_request_body) {
            let response =
                error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
            return (response, Outcome::Rejected);
        }
        let request = request.map(|body| LimitedBody::new(body, self.max_request_body));
        let pre = match &workload.serve {
            Serve::Fresh(pre) => pre.clone(),
            Serve::Reused(handlers) => {
                return match reuse::serve(&workload, handlers, request, slot).await {
                    Ok(response) => (response, Outcome::Ok),
                    Err(failure) => {
                        failure.log(&workload.name);
                        failure.count(&workload.metrics);
                        if !matches!(failure, Failure::PoolFull(_) | Failure::Answered(_)) {
                            workload.failures.add();
                        }
                        (failure.response(), failure.outcome())
                    }
                };
            }
        };

        let mut store = new_store(
            &self.runtime,
            HostState::for_workload(workload.ctx.clone(), &workload.limits),
        );
        store
            .data_mut()
            .count_memory_refusals(workload.metrics.memory_refusals());
        let request = match store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
        {
            Ok(request) => request,
            Err(err) => {
                // E.g. no Host header: the client's mistake.
                tracing::debug!(error = %err, "refusing a malformed request");
                let response = error_response(StatusCode::BAD_REQUEST, "bad request\n");
                return (response, Outcome::Rejected);
            }
        };
        let (send_response, response) = oneshot::channel();
        let out = match store.data_mut().http().new_response_outparam(send_response) {
            Ok(out) => out,
            Err(err) => {
                tracing::error!(error = %err, "creating the response slot failed");
                let response =
                    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
                return (response, Outcome::Error);
            }
        };

        // The guest runs in its own task: after it has set the response it
        // may still be writing the body, which hyper streams meanwhile.
        let timeout = workload.limits.execution_timeout;
        let component = workload.clone();
        let guest = tokio::spawn(
            async move {
                // Held until the guest is done, body included.
                let _slot = slot;
                let _in_use = workload.metrics.in_use();
                let call = async {
                    let proxy = pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(Failure::instantiate)?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, request, out)
                        .await
                        .map_err(Failure::guest)
                };
                let result = match tokio::time::timeout(timeout, call).await {
                    Ok(result) => result,
                    Err(_elapsed) => Err(Failure::Timeout),
                };
                if let Err(failure) = &result {
                    failure.log(&workload.name);
                    failure.count(&workload.metrics);
                    if !matches!(failure, Failure::PoolFull(_)) {
                        workload.failures.add();
                    }
                }
                result
            }
            .in_current_span(),
        );

        outcome(&component, response, guest).await
    }
}

/// The response of a request whose guest runs in `guest`, once it set one (`response`) or
/// ended without, and how the request ended.
async fn outcome(
    component: &HttpWorkload,
    response: oneshot::Receiver<
        Result<
            Response<HyperOutgoingBody>,
            wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
        >,
    >,
    guest: JoinHandle<Result<(), Failure>>,
) -> (Response<HyperOutgoingBody>, Outcome) {
    let error = |response| (response, Outcome::Error);
    match response.await {
        Ok(Ok(response)) => (response, Outcome::Ok),
        Ok(Err(code)) => {
            tracing::warn!(component = %component.name, error = ?code,
                "the component answered with an error");
            error(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "component error\n",
            ))
        }
        // The store is gone and no response was set: see why.
        Err(_) => match guest.await {
            Ok(Ok(())) => {
                tracing::warn!(component = %component.name,
                    "the component returned without setting a response");
                error(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no response\n",
                ))
            }
            Ok(Err(failure)) => (failure.response(), failure.outcome()),
            Err(err) => {
                tracing::error!(component = %component.name, error = %err,
                    "the request task failed");
                error(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error\n",
                ))
            }
        },
    }
}
