//! `blob-store`: a `wasi:http` front for `wasi:blobstore`, so objects can be stored and read
//! with any HTTP client. Lattice links it to the built-in `blobstore-fs` (see the tests in
//! `tests/tests/blobstore.rs`), which keeps each container as a directory on the host.
//!
//! - `PUT /<container>/<object>`: stores the request body (the container is created if need be);
//! - `GET /<container>/<object>`: the object (404 when it or its container is absent);
//! - `GET /<container>`: the container's object names, one a line (404 when it is absent);
//! - `DELETE /<container>/<object>`: deletes the object; `DELETE /<container>`: the container.
//!
//! Path segments are percent-decoded and passed to the blob store as they are: it is the store
//! that refuses names such as `..`. A blob-store error answers 500 with the error's text.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use std::io::{Read, Write};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use wasi::blobstore::blobstore;
use wasi::blobstore::container::Container;
use wasi::blobstore::types::{IncomingValue, OutgoingValue};

// Only the imports are generated here; the HTTP export, and the `wasi:io` streams values are
// read and written with, come from `wasip2`.
wit_bindgen::generate!({
    inline: "
        package example:blob-store;

        world blob-store {
            import wasi:blobstore/blobstore@0.2.0-draft;
        }
    ",
    path: ["../../wit/deps/io.wit", "../../wit/deps/blobstore.wit"],
    with: {
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
    },
    // The blobstore package is not in a crate to map it to: generate it here.
    generate_all,
});

wasip2::http::proxy::export!(BlobStore);

/// How many names one read of a listing asks for (small, so paging is exercised).
const PAGE: u64 = 2;

struct BlobStore;

impl Guest for BlobStore {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = match route(request) {
            Ok(answer) => answer,
            Err(err) => (500, format!("{err}\n").into_bytes()),
        };
        respond(response_out, status, &body);
    }
}

/// A status and a body.
type Answer = (u16, Vec<u8>);

fn route(request: IncomingRequest) -> Result<Answer, String> {
    let method = request.method();
    let path_with_query = request.path_with_query().unwrap_or_default();
    let path = path_with_query
        .split_once('?')
        .map_or(path_with_query.as_str(), |(p, _)| p);
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect::<Result<_, _>>()?;

    match (segments.as_slice(), method) {
        ([container, object], Method::Put) => {
            let body = read_body(request);
            let container = if blobstore::container_exists(container)? {
                blobstore::get_container(container)?
            } else {
                blobstore::create_container(container)?
            };
            write(&container, object, &body)?;
            Ok(text(200, &format!("stored {} bytes\n", body.len())))
        }
        ([container, object], Method::Get) => {
            let Some(container) = existing(container)? else {
                return Ok(text(404, "no such container\n"));
            };
            if !container.has_object(object)? {
                return Ok(text(404, "no such object\n"));
            }
            Ok((200, read(&container, object)?))
        }
        ([container, object], Method::Delete) => {
            let Some(container) = existing(container)? else {
                return Ok(text(404, "no such container\n"));
            };
            container.delete_object(object)?;
            Ok(text(200, "deleted\n"))
        }
        ([container], Method::Get) => {
            let Some(container) = existing(container)? else {
                return Ok(text(404, "no such container\n"));
            };
            let names = container.list_objects()?;
            let mut body = String::new();
            loop {
                let (page, end) = names.read_stream_object_names(PAGE)?;
                for name in page {
                    body.push_str(&name);
                    body.push('\n');
                }
                if end {
                    break;
                }
            }
            Ok((200, body.into_bytes()))
        }
        ([container], Method::Delete) => {
            blobstore::delete_container(container)?;
            Ok(text(200, "deleted\n"))
        }
        ([_] | [_, _], _) => Ok(text(405, "use GET, PUT or DELETE\n")),
        _ => Ok(text(404, "use /<container> or /<container>/<object>\n")),
    }
}

/// The container `name`, if it exists.
fn existing(name: &str) -> Result<Option<Container>, String> {
    if blobstore::container_exists(name)? {
        Ok(Some(blobstore::get_container(name)?))
    } else {
        Ok(None)
    }
}

/// Stores `data` as `object`: written through the value's stream, then finished.
fn write(container: &Container, object: &str, data: &[u8]) -> Result<(), String> {
    let value = OutgoingValue::new_outgoing_value();
    let mut stream = value
        .outgoing_value_write_body()
        .map_err(|()| "the value's stream was already taken".to_string())?;
    stream
        .write_all(data)
        .and_then(|()| Write::flush(&mut stream))
        .map_err(|e| format!("writing the value: {e}"))?;
    // The stream goes before the value is finished.
    drop(stream);
    container.write_data(object, &value)?;
    OutgoingValue::finish(value)
}

/// The whole of `object`, read through a stream.
fn read(container: &Container, object: &str) -> Result<Vec<u8>, String> {
    let value = container.get_data(object, 0, u64::MAX)?;
    let size = value.size();
    let mut stream = IncomingValue::incoming_value_consume_async(value)?;
    let mut data = Vec::new();
    stream
        .read_to_end(&mut data)
        .map_err(|e| format!("reading the value: {e}"))?;
    if data.len() as u64 != size {
        return Err(format!("read {} bytes of {size}", data.len()));
    }
    Ok(data)
}

/// `segment` with its `%XX` escapes decoded.
fn percent_decode(segment: &str) -> Result<String, String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{segment}` has a malformed `%` escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{segment}` is not UTF-8 once decoded"))
}

fn text(status: u16, body: &str) -> Answer {
    (status, body.as_bytes().to_vec())
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
            b"application/octet-stream".to_vec(),
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
