//! `http-fetch`: a `wasi:http` component that fetches another URL with outgoing `wasi:http`.
//! `GET /?url=http://host:port/path` answers `200` with the fetched status and body
//! (`<status> <body>`), or `502` with the error, e.g. `HttpRequestDenied` when the host's
//! allow-list (an `http-client` link's `allowed_hosts`) does not include the host.
//!
//! It shows (and the tests check) that outgoing requests go only where a link allows.

use std::io::{Read as _, Write as _};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasip2::http::proxy::export!(Fetch);

struct Fetch;

impl Guest for Fetch {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let url = query
            .split_once("url=")
            .map(|(_, u)| u.to_owned())
            .unwrap_or_default();
        match fetch(&url) {
            Ok((status, body)) => respond(response_out, 200, format!("{status} {body}")),
            Err(e) => respond(response_out, 502, e),
        }
    }
}

/// GETs `http://authority/path`: the status and body, or the error.
fn fetch(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs: `{url}`"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "authority")?;
    request
        .set_path_with_query(Some(&format!("/{path}")))
        .map_err(|()| "path")?;
    let body = request.body().map_err(|()| "body")?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    let future =
        outgoing_handler::handle(request, None).map_err(|e: ErrorCode| format!("{e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| "body taken twice")?;
    let mut text = String::new();
    {
        let mut stream = incoming.stream().map_err(|()| "stream taken twice")?;
        let _ = stream.read_to_string(&mut text);
    }
    Ok((status, text))
}

/// Sends a `text/plain` response with `status` and `body`.
fn respond(out: ResponseOutparam, status: u16, body: String) {
    let headers = Fields::from_list(&[(
        "content-length".to_owned(),
        body.len().to_string().into_bytes(),
    )])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let outgoing = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = outgoing.write().expect("stream taken once");
    let _ = stream
        .write_all(body.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut stream));
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}
