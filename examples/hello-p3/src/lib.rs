//! `hello-p3`: a WASI 0.3 `wasi:http/handler` component. It answers as `hello` does
//! (`{GREETING} from Lattice (host {LATTICE_HOST_NAME})`, `GET /health` with `ok`), and
//! says what a host that reuses instances does with it:
//!
//! - `GET /instance` answers `instance=<id> served=<n>`: a random id drawn once per instance,
//!   and the requests that instance has served, this one included;
//! - `GET /wait?ms=<n>` waits `n` ms without blocking the instance, then answers
//!   `instance=<id> together=<k>`: the most requests this instance ran at once so far;
//! - `GET /trap` traps, which ends the instance;
//! - `GET /count/<key>` increments `<key>` in the `wasi:keyvalue` bucket its link names and
//!   answers `<key>: <n>`: a capability called from an async guest.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use std::cell::Cell;

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::{wit_future, wit_stream};

use wasi::keyvalue::{atomics, store};

// Only the capability imports are generated here; HTTP and the rest come from `wasip3`.
wit_bindgen::generate!({
    inline: "
        package example:hello-p3;

        world hello-p3 {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
        }
    ",
    path: ["../../wit/deps/keyvalue.wit"],
    generate_all,
});

wasip3::http::service::export!(Hello);

struct Hello;

thread_local! {
    static INSTANCE: u64 = wasip3::random::random::get_random_u64();
    static SERVED: Cell<u64> = const { Cell::new(0) };
    static RUNNING: Cell<u64> = const { Cell::new(0) };
    static MOST_RUNNING: Cell<u64> = const { Cell::new(0) };
}

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let served = SERVED.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        let instance = INSTANCE.with(|i| *i);
        let path = request.get_path_with_query().unwrap_or_default();
        let (path, query) = path.split_once('?').unwrap_or((&path, ""));
        let get = matches!(request.get_method(), Method::Get);
        let body = match path {
            "/health" if get => "ok".to_owned(),
            "/instance" => format!("instance={instance:016x} served={served}\n"),
            "/wait" => {
                let ms: u64 = query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("ms="))
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(100);
                let together = Running::enter();
                wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                drop(together);
                let most = MOST_RUNNING.with(Cell::get);
                format!("instance={instance:016x} together={most}\n")
            }
            "/trap" => panic!("asked to trap"),
            _ if path.starts_with("/count/") => {
                let key = &path["/count/".len()..];
                match count(key) {
                    Ok(n) => format!("{key}: {n}\n"),
                    Err(e) => return Ok(respond(500, format!("{e:?}\n").into_bytes())),
                }
            }
            _ => {
                let greeting = env_or("GREETING", "Hello");
                let host = env_or("LATTICE_HOST_NAME", "unknown");
                format!("{greeting} from Lattice (host {host})\n")
            }
        };
        Ok(respond(200, body.into_bytes()))
    }
}

/// Increments `key` in the bucket `default` (the link decides which store that is).
fn count(key: &str) -> Result<u64, store::Error> {
    let bucket = store::open("default")?;
    atomics::increment(&bucket, key, 1)
}

/// One request running in this instance, for `/wait`'s count.
struct Running;

impl Running {
    fn enter() -> Self {
        let now = RUNNING.with(|r| {
            r.set(r.get() + 1);
            r.get()
        });
        MOST_RUNNING.with(|m| m.set(m.get().max(now)));
        Self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(r.get() - 1));
    }
}

/// The environment variable `name`, or `default` when it is unset or empty.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A `text/plain` response with `status` and `body`, written after the response is returned.
fn respond(status: u16, body: Vec<u8>) -> Response {
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
    let (mut contents, contents_rx) = wit_stream::new();
    let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(contents_rx), trailers_rx);
    response.set_status_code(status).expect("a valid status");
    drop(trailers);
    wasip3::spawn_local(async move {
        let rest = contents.write_all(body).await;
        debug_assert!(rest.is_empty());
    });
    response
}
