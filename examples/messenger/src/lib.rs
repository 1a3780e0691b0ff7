//! `messenger`: both ends of `wasmcloud:messaging`, driven over HTTP, for queued messages
//! (`delivery: queued` on its `consumer` link; see `tests/tests/queued_messages.rs`).
//!
//! - `GET /publish?subject=S&body=B`: `consumer.publish(S, B)`; answers `ok`, or 500 with
//!   `err: <why>` (a full queue, a reserved subject, ...);
//! - `GET /request?subject=S`: `consumer.request(S, "ping", 1 s)`; answers the reply's body, or
//!   500 with `err: <why>` (refused on a queued link);
//! - each message it handles is logged as `handled <subject>: <body>` through `wasi:logging`;
//!   a body starting with `fail` is refused (the handler returns an error), so retries and
//!   dead letters can be seen.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use std::io::Write;

use exports::wasmcloud::messaging::handler::Guest as Handler;
use wasi::logging::logging::{Level, log};
use wasip2::exports::http::incoming_handler::Guest as HttpGuest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

// Messaging and logging are generated here; the HTTP export and its types come from `wasip2`.
wit_bindgen::generate!({
    inline: "
        package example:messenger;

        world messenger {
            import wasmcloud:messaging/consumer@0.2.0;
            import wasi:logging/logging@0.1.0-draft;
            export wasmcloud:messaging/handler@0.2.0;
        }
    ",
    path: ["../../wit/deps/logging.wit", "../../wit/deps/messaging.wit"],
    // The packages are not in this crate (nor in a crate to map them to): generate them here.
    generate_all,
});

export!(Messenger);
wasip2::http::proxy::export!(Messenger);

/// The `context` of this component's log records.
const LOG_CONTEXT: &str = "messenger";
/// How long a `/request` waits for its answer.
const REQUEST_TIMEOUT_MS: u32 = 1000;

struct Messenger;

impl Handler for Messenger {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        let body = String::from_utf8_lossy(&msg.body);
        log(
            Level::Info,
            LOG_CONTEXT,
            &format!("handled {}: {body}", msg.subject),
        );
        if body.starts_with("fail") {
            return Err(format!("asked to fail: {body}"));
        }
        Ok(())
    }
}

impl HttpGuest for Messenger {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = route(&request);
        respond(response_out, status, body.as_bytes());
    }
}

fn route(request: &IncomingRequest) -> (u16, String) {
    let path_with_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((&path_with_query, ""));
    if !matches!(request.method(), Method::Get) {
        return (405, "only GET\n".to_owned());
    }
    let Some(subject) = query_param(query, "subject") else {
        return (400, "give a `subject`\n".to_owned());
    };
    match path {
        "/publish" => {
            let body = query_param(query, "body").unwrap_or_default();
            let msg = BrokerMessage {
                subject,
                body: body.into_bytes(),
                reply_to: None,
            };
            match consumer::publish(&msg) {
                Ok(()) => (200, "ok".to_owned()),
                Err(why) => (500, format!("err: {why}")),
            }
        }
        "/request" => match consumer::request(&subject, b"ping", REQUEST_TIMEOUT_MS) {
            Ok(reply) => (200, String::from_utf8_lossy(&reply.body).into_owned()),
            Err(why) => (500, format!("err: {why}")),
        },
        _ => (404, "no such route\n".to_owned()),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == name).then(|| percent_decode(&v.replace('+', " "))))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
