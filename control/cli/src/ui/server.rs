//! The dashboard's HTTP side: accepts connections (HTTP/1.1, hyper), routes the page, its assets
//! and the API, and guards the API against other sites: a `Host` header that is not the
//! dashboard's own is refused (DNS rebinding), and a request that changes something must carry
//! the `x-lattice-ui` header, which a form or a plain cross-site request cannot send.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use lattice_protocol::error::WireError;
use serde::Serialize;

use super::{State, api, assets, events};

/// Every response's body: whole, or streamed (events).
pub(super) type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
/// A response.
pub(super) type Response = hyper::Response<Body>;

/// The largest request body read (a requeue of many ids fits many times over).
const MAX_BODY: usize = 64 * 1024;

/// The header a request that acts must carry (the page's script sends it).
const ACTION_HEADER: &str = "x-lattice-ui";

/// Serves connections from `listener` until it fails.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: the next accept may work.
            Err(e) => {
                tracing::warn!(error = %e, "accepting a dashboard connection failed");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "a dashboard connection ended");
            }
        });
    }
}

/// Answers one request.
async fn route(state: &State, req: Request<Incoming>) -> Response {
    if let Some(hosts) = &state.hosts {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|h| h == host) {
            return text(
                421,
                &format!(
                    "the dashboard answers only as {}; open it by that address",
                    hosts.join(" or ")
                ),
            );
        }
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let ctl = &state.ctl;
    match (&method, path.as_str()) {
        (&Method::GET, "/" | "/index.html") => asset(assets::INDEX_HTML, "text/html"),
        (&Method::GET, "/style.css") => asset(assets::STYLE_CSS, "text/css"),
        (&Method::GET, "/app.js") => asset(assets::APP_JS, "text/javascript"),
        (&Method::GET, "/api/whoami") => json(
            200,
            &api::WhoAmI {
                user: ctl.user().to_string(),
                lattice: state.lattice.to_string(),
            },
        ),
        (&Method::GET, "/api/hosts") => answer(api::hosts(ctl).await),
        (&Method::GET, "/api/apps") => answer(api::apps(ctl).await),
        (&Method::GET, "/api/queues") => answer(api::queues(ctl).await),
        (&Method::GET, p) if p.starts_with("/api/graph/") => {
            answer(api::graph(ctl, &p["/api/graph/".len()..]).await)
        }
        (&Method::GET, "/api/events") => {
            events::stream(state.client.clone(), state.lattice.clone())
        }
        (&Method::POST, "/api/requeue") => {
            if !req.headers().contains_key(ACTION_HEADER) {
                return text(
                    403,
                    &format!(
                        "actions need the `{ACTION_HEADER}` header the dashboard's page sends"
                    ),
                );
            }
            match read_json::<api::Requeue>(req).await {
                Ok(body) => answer(api::requeue(ctl, body).await),
                Err(refusal) => refusal,
            }
        }
        (_, p) if p.starts_with("/api/") => text(404, &format!("no API {method} {p}")),
        _ => text(404, "not found; the dashboard is at /"),
    }
}

/// Reads a JSON request body of at most [`MAX_BODY`] bytes.
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Err(error(400, &format!("reading the request body: {e}"))),
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            400,
            &format!("the request body is not the JSON expected: {e}"),
        )
    })
}

/// A ctl answer as JSON, or its error with the control plane's message.
fn answer<T: Serialize>(result: Result<T, WireError>) -> Response {
    match result {
        Ok(value) => json(200, &value),
        Err(e) => json(
            api::status_of(&e),
            &serde_json::json!({ "error": e.message, "code": e.code }),
        ),
    }
}

/// `{"error": message}` with `status`.
fn error(status: u16, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

fn json(status: u16, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => respond(status, "application/json", Bytes::from(bytes)),
        Err(e) => text(500, &format!("encoding the answer: {e}")),
    }
}

fn asset(body: &'static str, kind: &str) -> Response {
    respond(
        200,
        &format!("{kind}; charset=utf-8"),
        Bytes::from_static(body.as_bytes()),
    )
}

/// A plain-text response.
pub(super) fn text(status: u16, message: &str) -> Response {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{message}\n")),
    )
}

fn respond(status: u16, kind: &str, body: Bytes) -> Response {
    let mut response = hyper::Response::new(Full::new(body).boxed());
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(kind) = hyper::header::HeaderValue::from_str(kind) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, kind);
    }
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}
