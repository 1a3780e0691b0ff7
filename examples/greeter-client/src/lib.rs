//! `greeter-client`: a `wasi:http` front end for `greeter`, calling `example:greeter/greet`
//! through a Lattice link (see `examples/manifests/greeter.yaml`).
//!
//! Each route makes one call, so a test can drive component-to-component calls over HTTP:
//!
//! - `GET /greet?name=X`: `greet(X)` (default `world`);
//! - `GET /where`: `where()`, the id of the host that served the call;
//! - `GET /fail/<how>`: `fail(how)`: 200 with the ok text, 500 with `err: <text>`; `how` =
//!   `trap` traps the callee, which traps this component too, so the request fails;
//! - `GET /echo`: sends a fixed `everything` with every field set and answers `same` when
//!   it comes back equal (floats compared bit for bit), else 500 with both values;
//! - `/notify?msg=X` (or the request body as the message): `notifier.notify(msg)`, answers `ok`.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use std::io::{Read, Write};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use example::greeter::greet::{self, Color, Everything, Inner, Permissions, Shape};

// Only the greeter import is generated here; the HTTP export and its types come from `wasip2`.
wit_bindgen::generate!({
    inline: "
        package example:greeter-client;

        world greeter-client {
            import example:greeter/greet@0.1.0;
            import example:greeter/notifier@0.1.0;
        }
    ",
    path: ["../greeter/wit/greeter.wit"],
    // The package is not in this crate (nor in a crate to map it to): generate it here.
    generate_all,
    // For `GET /echo`; floats are compared by their bits on top of this.
    additional_derives: [PartialEq],
});

wasip2::http::proxy::export!(GreeterClient);

struct GreeterClient;

impl Guest for GreeterClient {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = route(request);
        respond(response_out, status, body.as_bytes());
    }
}

fn route(request: IncomingRequest) -> (u16, String) {
    let method = request.method();
    let path_with_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((&path_with_query, ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = matches!(method, Method::Get);

    match segments.as_slice() {
        ["greet"] if get => {
            let name = query_param(query, "name").unwrap_or_else(|| "world".to_owned());
            (200, greet::greet(&name))
        }
        ["where"] if get => (200, greet::where_()),
        ["fail", how] if get => match greet::fail(&percent_decode(how)) {
            Ok(text) => (200, text),
            Err(text) => (500, format!("err: {text}")),
        },
        ["echo"] if get => echo(),
        ["notify"] => {
            let msg = match query_param(query, "msg") {
                Some(msg) => msg,
                None => String::from_utf8_lossy(&read_body(request)).into_owned(),
            };
            match example::greeter::notifier::notify(&msg) {
                Ok(()) => (200, "ok".to_owned()),
                Err(text) => (500, format!("err: {text}")),
            }
        }
        _ => (404, "no such route\n".to_owned()),
    }
}

/// Sends [`everything`] through `echo` and compares what comes back.
fn echo() -> (u16, String) {
    let sent = everything();
    let received = greet::echo(&sent);
    if same(&sent, &received) {
        (200, "same".to_owned())
    } else {
        (500, format!("sent {sent:?}\nreceived {received:?}\n"))
    }
}

/// A value with every field set to something a lossy or misaligned conversion would change:
/// extremes of each integer width, a negative zero, non-ASCII text, nested options.
fn everything() -> Everything {
    Everything {
        boolean: true,
        unsigned8: u8::MAX - 1,
        unsigned16: 0xBEEF,
        unsigned32: 0xDEAD_BEEF,
        unsigned64: u64::MAX - 41,
        signed8: i8::MIN,
        signed16: -12_345,
        signed32: i32::MIN + 7,
        signed64: i64::MIN + 3,
        single: -0.0,
        double: std::f64::consts::PI * 1e-300,
        character: '🦀',
        text: "grüezi, 世界".to_owned(),
        bytes: vec![0, 1, 127, 128, 254, 255],
        strings: vec!["one".to_owned(), String::new(), "drei".to_owned()],
        maybe_text: Some("maybe".to_owned()),
        maybe_maybe: Some(None),
        outcome: Err("not a number".to_owned()),
        bare_outcome: Ok(()),
        shapes: vec![
            Shape::Circle(-2.5e10),
            Shape::Nothing,
            Shape::Label("square".to_owned()),
        ],
        color: Color::Green,
        permissions: Permissions::READ | Permissions::EXECUTE,
        pair: (42, "forty-two".to_owned()),
        inner: Inner {
            name: "inner".to_owned(),
            values: vec![-1, 0, i32::MAX],
            tint: Some(Color::Blue),
        },
    }
}

/// Equal, with floats equal bit for bit (`==` takes `-0.0` for `0.0`).
fn same(a: &Everything, b: &Everything) -> bool {
    let shape_bits = |shapes: &[Shape]| -> Vec<Option<u64>> {
        shapes
            .iter()
            .map(|shape| match shape {
                Shape::Circle(r) => Some(r.to_bits()),
                _ => None,
            })
            .collect()
    };
    a == b
        && a.single.to_bits() == b.single.to_bits()
        && a.double.to_bits() == b.double.to_bits()
        && shape_bits(&a.shapes) == shape_bits(&b.shapes)
}

/// The percent-decoded value of `name` in a query string (`+` is a space).
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == name).then(|| percent_decode(&v.replace('+', " "))))
}

/// Decodes `%XX` escapes; a malformed escape is kept as it is.
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

/// The whole request body; empty if there is none or it cannot be read.
fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut body = Vec::new();
    let Ok(incoming) = request.consume() else {
        return body;
    };
    if let Ok(mut stream) = incoming.stream() {
        let _ = stream.read_to_end(&mut body);
    }
    body
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
