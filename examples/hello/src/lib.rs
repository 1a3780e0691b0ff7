//! `hello`: a `wasi:http` component that answers every request with
//! `{GREETING} from Lattice (host {LATTICE_HOST_NAME})`, and `GET /health` with `ok`.
//!
//! The Lattice host passes a component's config and its own name to the guest as
//! `wasi:cli/environment` variables, which Rust's `std::env` reads:
//!
//! - `GREETING` comes from the component's config (default `Hello`);
//! - `LATTICE_HOST_NAME` is set by the host (default `unknown`).
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use std::io::Write;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let body = if matches!(request.method(), Method::Get) && path == "/health" {
            "ok".to_owned()
        } else {
            let greeting = env_or("GREETING", "Hello");
            let host = env_or("LATTICE_HOST_NAME", "unknown");
            format!("{greeting} from Lattice (host {host})\n")
        };
        respond(response_out, 200, body.as_bytes());
    }
}

/// The environment variable `name`, or `default` when it is unset or empty.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Sends a `text/plain` response with `status` and `body`.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[
        (
            "content-type".to_owned(),
            b"text/plain; charset=utf-8".to_vec(),
        ),
        (
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let outgoing = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));

    let mut stream = outgoing.write().expect("stream taken once");
    // If the client went away there is nobody left to tell: drop the error.
    let _ = stream
        .write_all(body)
        .and_then(|()| Write::flush(&mut stream));
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}
