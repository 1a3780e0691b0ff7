//! `kv-counter`: a `wasi:http` component that counts requests in a `wasi:keyvalue` bucket.
//!
//! It shows a component using capabilities that a Lattice link provides (see
//! `examples/manifests/kv-counter.yaml`), and the tests use it to check the host's keyvalue,
//! config and logging support. Every request opens the bucket `default`, which the link maps
//! to the real store.
//!
//! - any request: increments the key `hits`, or the first path segment (`/apples` counts
//!   `apples`), logs the new count and answers `<greeting> <key>: <n>`, where the greeting is
//!   `wasi:config/store` key `greeting` (default `Hello`);
//! - `GET|PUT|DELETE /_kv/<key>`: reads (404 when absent), sets to the request body, deletes;
//! - `GET /_keys`: every key, one a line;
//! - `GET /_batch?keys=a,b`: `get-many`, one line per key: `k=v`, or `k` alone when absent;
//! - `POST /_batch` with lines `k=v`: `set-many`;
//! - `GET /_open/<identifier>`: opens that bucket and tells whether it could;
//! - `GET /_via/<link>/<key>`: chooses the key-value link named `<link>` with
//!   `wasmcloud:bus/lattice@1.0.0`'s `set-link-name` (the older version, with no error of its
//!   own), then counts `<key>` as above.
//!
//! A keyvalue error answers 500 with the error's `Debug` text (for example
//! `Error::NoSuchStore` when nothing is linked), so a caller can see what the host said.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use std::io::{Read, Write};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use wasi::config::store as config;
use wasi::keyvalue::{atomics, batch, store};
use wasi::logging::logging::{Level, log};

// Only the imports are generated here; the HTTP export and its types come from `wasip2`.
wit_bindgen::generate!({
    inline: "
        package example:kv-counter;

        world kv-counter {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            import wasi:keyvalue/batch@0.2.0-draft;
            import wasi:config/store@0.2.0-draft;
            import wasi:logging/logging@0.1.0-draft;
            import wasmcloud:bus/lattice@1.0.0;
        }
    ",
    path: [
        "../../wit/deps/keyvalue.wit",
        "../../wit/deps/config.wit",
        "../../wit/deps/logging.wit",
        "../../wit/deps/bus-1.wit",
    ],
    // The packages are not in this crate (nor in a crate to map them to): generate them here.
    generate_all,
});

wasip2::http::proxy::export!(KvCounter);

/// The bucket every request uses; the link decides which store it is.
const BUCKET: &str = "default";
/// The key counted when the path names none.
const DEFAULT_KEY: &str = "hits";
/// The `context` of this component's log records.
const LOG_CONTEXT: &str = "kv-counter";

struct KvCounter;

impl Guest for KvCounter {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = match route(request) {
            Ok(answer) => answer,
            Err(err) => (500, format!("{err:?}\n").into_bytes()),
        };
        respond(response_out, status, &body);
    }
}

/// A status and a body.
type Answer = (u16, Vec<u8>);

fn route(request: IncomingRequest) -> Result<Answer, store::Error> {
    let method = request.method();
    let path_with_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((&path_with_query, ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();

    match segments.as_slice() {
        ["_kv", key] => {
            let bucket = store::open(BUCKET)?;
            match method {
                Method::Get => Ok(match bucket.get(key)? {
                    Some(value) => (200, value),
                    None => text(404, "not found\n"),
                }),
                Method::Put => {
                    let value = read_body(request);
                    bucket.set(key, &value)?;
                    Ok(text(200, "ok\n"))
                }
                Method::Delete => {
                    bucket.delete(key)?;
                    Ok(text(200, "ok\n"))
                }
                _ => Ok(text(405, "use GET, PUT or DELETE\n")),
            }
        }
        ["_keys"] => {
            if !matches!(method, Method::Get) {
                return Ok(text(405, "use GET\n"));
            }
            let bucket = store::open(BUCKET)?;
            let mut body = String::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor)?;
                for key in page.keys {
                    body.push_str(&key);
                    body.push('\n');
                }
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Ok((200, body.into_bytes()))
        }
        ["_batch"] => match method {
            Method::Get => {
                let keys: Vec<String> = query_param(query, "keys")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect();
                let bucket = store::open(BUCKET)?;
                let values = batch::get_many(&bucket, &keys)?;
                let mut body = Vec::new();
                for (requested, found) in keys.iter().zip(values) {
                    match found {
                        // The key as the store returned it, so a mix-up would show.
                        Some((key, value)) => {
                            body.extend_from_slice(key.as_bytes());
                            body.push(b'=');
                            body.extend_from_slice(&value);
                        }
                        None => body.extend_from_slice(requested.as_bytes()),
                    }
                    body.push(b'\n');
                }
                Ok((200, body))
            }
            Method::Post => {
                let body = read_body(request);
                let pairs: Vec<(String, Vec<u8>)> = String::from_utf8_lossy(&body)
                    .lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
                    .collect();
                let bucket = store::open(BUCKET)?;
                batch::set_many(&bucket, &pairs)?;
                Ok(text(200, "ok\n"))
            }
            _ => Ok(text(405, "use GET or POST\n")),
        },
        ["_open", identifier] => {
            if !matches!(method, Method::Get) {
                return Ok(text(405, "use GET\n"));
            }
            store::open(identifier)?;
            Ok(text(200, &format!("opened {identifier}\n")))
        }
        ["_via", link, key] => {
            use wasmcloud::bus::lattice::{CallTargetInterface, set_link_name};
            let interfaces =
                ["store", "atomics"].map(|i| CallTargetInterface::new("wasi", "keyvalue", i));
            set_link_name(link, interfaces.into());
            count(key)
        }
        // A malformed route is not a key to count.
        ["_kv" | "_keys" | "_batch" | "_open" | "_via", ..] => Ok(text(404, "no such route\n")),
        _ => count(segments.first().copied().unwrap_or(DEFAULT_KEY)),
    }
}

/// Increments `key` and answers `<greeting> <key>: <n>`.
fn count(key: &str) -> Result<Answer, store::Error> {
    let bucket = store::open(BUCKET)?;
    let n = atomics::increment(&bucket, key, 1)?;
    log(Level::Info, LOG_CONTEXT, &format!("{key} is now {n}"));
    let greeting = greeting();
    Ok(text(200, &format!("{greeting} {key}: {n}\n")))
}

/// The configured `greeting`, or `Hello`.
fn greeting() -> String {
    match config::get("greeting") {
        Ok(Some(greeting)) => greeting,
        Ok(None) => "Hello".to_owned(),
        Err(err) => {
            // Still answer: the count is what the caller asked for.
            log(
                Level::Warn,
                LOG_CONTEXT,
                &format!("cannot read config: {err:?}"),
            );
            "Hello".to_owned()
        }
    }
}

fn text(status: u16, body: &str) -> Answer {
    (status, body.as_bytes().to_vec())
}

/// The value of `name` in a query string (no percent-decoding: keys here are plain words).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The whole request body; empty if there is none or it cannot be read.
fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut body = Vec::new();
    let Ok(incoming) = request.consume() else {
        return body;
    };
    if let Ok(mut stream) = incoming.stream() {
        // A body cut short is stored as far as it came; the caller sees it on reading back.
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
