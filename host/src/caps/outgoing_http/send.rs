//! Sends an outgoing request to addresses already checked: the connection goes to a
//! [`SocketAddr`] the policy approved, never to a fresh lookup of the name, so a DNS answer that
//! changes between the check and the connection (rebinding) reaches nothing new.
//!
//! Plain HTTP is hyper's HTTP/1 client handshake on the TCP stream; HTTPS wraps the stream in
//! TLS (rustls, the web PKI roots) with the request's host name as SNI and as the name the
//! certificate must carry. The guest's `RequestOptions` bound connecting, the first response byte
//! and the gaps between body frames, as wasmtime-wasi-http's own sender does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Reports errors on the connection while the response body is read; the caller drives it.
pub(super) type ConnectionFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// How long each stage may take when the guest names no timeout (wasmtime-wasi-http's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The guest's timeouts, with defaults.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    fn new(options: Option<RequestOptions>) -> Self {
        let pick = |f: fn(&RequestOptions) -> Option<Duration>| {
            options.as_ref().and_then(f).unwrap_or(DEFAULT_TIMEOUT)
        };
        Self {
            connect: pick(|o| o.connect_timeout),
            first_byte: pick(|o| o.first_byte_timeout),
            between_bytes: pick(|o| o.between_bytes_timeout),
        }
    }
}

/// A plain or TLS stream, for the one handshake.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The TLS client configuration, built once: the web PKI roots, ring as the crypto provider
/// (named here so another crate enabling a second provider cannot make the default ambiguous).
static TLS: LazyLock<Result<Arc<rustls::ClientConfig>, rustls::Error>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
});

/// Sends `request` over a connection to the first of `addrs` that accepts, with TLS for `host`
/// when `tls`: the response (its body bounded by the between-bytes timeout) and the future that
/// drives the connection while the body is read.
pub(super) async fn send_to(
    mut request: hyper::Request<WasiBody>,
    addrs: &[SocketAddr],
    host: &str,
    tls: bool,
    options: Option<RequestOptions>,
) -> Result<(hyper::Response<WasiBody>, ConnectionFuture), Error> {
    let timeouts = Timeouts::new(options);
    let tcp = tokio::time::timeout(timeouts.connect, connect(addrs))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let stream: Box<dyn Stream> = if tls {
        let config = TLS
            .as_ref()
            .map_err(|e| Error::InternalError(Some(format!("TLS configuration: {e}"))))?;
        let name = server_name(host)?;
        let tls = tokio::time::timeout(
            timeouts.connect,
            tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // Not a proxy: the request line carries the path only (the Host header names the host).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    *request.uri_mut() = path;

    let mut connection = Box::pin(connection);
    let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request));
    tokio::pin!(response);
    // The connection is polled beside the request, or nothing would be written.
    let first = tokio::select! {
        response = &mut response => Ok(response),
        ended = &mut connection => Err(ended),
    };
    let (response, ended) = match first {
        Ok(response) => (response, None),
        Err(ended) => (response.await, Some(ended)),
    };
    let done = ended.is_some();
    if let Some(Err(e)) = ended {
        return Err(connection_error(e));
    }
    let response = response.map_err(|_| Error::ConnectionReadTimeout)??;
    let driver: ConnectionFuture = if done {
        Box::new(std::future::ready(Ok(())))
    } else {
        Box::new(async move { connection.await.map_err(connection_error) })
    };
    let between = timeouts.between_bytes.max(Duration::from_nanos(1));
    let response = response.map(|incoming| {
        TimedBody {
            incoming,
            between,
            deadline: Box::pin(tokio::time::sleep(between)),
        }
        .boxed_unsync()
    });
    Ok((response, driver))
}

/// A TCP connection to the first of `addrs` that accepts.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(Error::DestinationNotFound, Error::Connect))
}

/// The name the server's certificate must carry: the host name, or the address literal.
fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => Ok(ServerName::try_from(host.to_string())?),
    }
}

fn connection_error(e: hyper::Error) -> Error {
    if e.is_timeout() {
        Error::HttpResponseTimeout
    } else {
        Error::from(e)
    }
}

/// A response body that fails with `ConnectionReadTimeout` when no frame arrives within
/// `between` of the previous one (or of the headers).
#[derive(Debug)]
struct TimedBody {
    incoming: Incoming,
    between: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.between;
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(connection_error(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// Bound on every await in these tests.
    const BOUND: Duration = Duration::from_secs(10);

    fn get(uri: &str) -> hyper::Request<WasiBody> {
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never: std::convert::Infallible| -> Error { match never {} })
            .boxed_unsync();
        hyper::Request::get(uri)
            .header(hyper::header::HOST, "test")
            .body(body)
            .expect("a valid request")
    }

    /// A loopback server that reads a request and writes `reply` (or, when `None`, holds the
    /// connection without answering).
    async fn server(reply: Option<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    match reply {
                        Some(reply) => {
                            let _ = stream.write_all(reply).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        addr
    }

    async fn send(
        uri: &str,
        addr: SocketAddr,
        tls: bool,
        options: Option<RequestOptions>,
    ) -> Result<(u16, String), Error> {
        let host = uri.split('/').nth(2).unwrap_or_default().to_string();
        let addrs = [addr];
        let sent = send_to(get(uri), &addrs, &host, tls, options);
        let (response, driver) = tokio::time::timeout(BOUND, sent).await.expect("bounded")?;
        tokio::spawn(Box::into_pin(driver));
        let status = response.status().as_u16();
        let body = tokio::time::timeout(BOUND, response.into_body().collect())
            .await
            .expect("bounded")?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    #[tokio::test]
    async fn the_request_goes_to_the_given_address_without_looking_the_name_up() {
        let addr = server(Some(
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong",
        ))
        .await;
        // `.invalid` never resolves (RFC 6761): the answer can only come from `addr`.
        let reply = send("http://name.invalid/ping", addr, false, None).await;
        assert_eq!(reply.expect("a response"), (200, "pong".to_string()));
    }

    #[tokio::test]
    async fn a_silent_server_fails_at_the_first_byte_timeout() {
        let addr = server(None).await;
        let options = RequestOptions {
            first_byte_timeout: Some(Duration::from_millis(200)),
            ..RequestOptions::default()
        };
        let err = send("http://name.invalid/", addr, false, Some(options))
            .await
            .expect_err("no answer");
        assert!(matches!(err, Error::ConnectionReadTimeout), "{err:?}");
    }

    #[tokio::test]
    async fn https_speaks_tls_and_fails_against_a_plain_server() {
        let addr = server(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n")).await;
        let err = send("https://name.invalid/", addr, true, None)
            .await
            .expect_err("no TLS there");
        assert!(matches!(err, Error::Tls(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connection_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        drop(listener);
        let err = send("http://name.invalid/", addr, false, None)
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, Error::Connect(_)), "{err:?}");
    }
}
