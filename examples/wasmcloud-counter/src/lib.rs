//! `wasmcloud-counter`: an HTTP counter written the way wasmCloud 1.x users write components,
//! with the `wasmcloud-component` crate from crates.io and nothing of Lattice, so that the
//! tests show such a component running unchanged. It imports what that crate's components
//! import: `wasmcloud:bus/lattice@2.0.0`, `wasi:keyvalue`, `wasi:config`, `wasi:logging`,
//! and `wasmcloud:secrets` through bindings of its own (as wasmCloud's password checker does).
//!
//! - `GET /count/<key>`: increments `<key>` in the bucket `default` opens and answers
//!   `<greeting> <key>: <n>`, the greeting being config key `greeting` (default `Hello`).
//!   With `?link=<name>` it first chooses the key-value link called `<name>` with
//!   `set-link-name`; a name no link has answers 400 with the host's reason.
//! - `GET /secret/<key>?expect=<value>`: 200 `matches` when secret `<key>` is `<value>`, 403
//!   `differs` when not, 404 when there is no such secret. The value itself is never sent.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use wasmcloud_component::http::{self, ErrorCode, Response};
use wasmcloud_component::wasi::{config, keyvalue};
use wasmcloud_component::wasmcloud::bus::lattice::{self, CallTargetInterface};
use wasmcloud_component::{error, info};

wit_bindgen::generate!({
    inline: "
        package example:wasmcloud-counter;

        world secrets {
            import wasmcloud:secrets/store@0.1.0-draft;
            import wasmcloud:secrets/reveal@0.1.0-draft;
        }
    ",
    path: ["../../wit/deps/secrets.wit"],
    generate_all,
});

use wasmcloud::secrets::{reveal, store as secrets};

struct Counter;

impl http::Server for Counter {
    fn handle(request: http::IncomingRequest) -> http::Result<Response<impl http::OutgoingBody>> {
        let uri = request.uri();
        let path = uri.path().trim_start_matches('/').to_string();
        let query = uri.query().unwrap_or_default().to_string();
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        let (status, body) = match path.split_once('/') {
            Some(("count", key)) => count(key, param("link")),
            Some(("secret", key)) => secret(key, param("expect").unwrap_or_default()),
            _ => (404, "try /count/<key> or /secret/<key>\n".to_string()),
        };
        Response::builder()
            .status(status)
            .body(body)
            .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))
    }
}

/// Increments `key`, through the link called `link` when one is named.
fn count(key: &str, link: Option<String>) -> (u16, String) {
    if let Some(name) = link {
        let interfaces = vec![
            CallTargetInterface::new("wasi", "keyvalue", "store"),
            CallTargetInterface::new("wasi", "keyvalue", "atomics"),
        ];
        if let Err(e) = lattice::set_link_name(&name, interfaces) {
            error!("choosing link {name}: {e}");
            return (400, format!("{e}\n"));
        }
    }
    let greeting = config::store::get("greeting")
        .ok()
        .flatten()
        .unwrap_or_else(|| "Hello".to_string());
    let bucket = match keyvalue::store::open("default") {
        Ok(bucket) => bucket,
        Err(e) => return (500, format!("{e:?}\n")),
    };
    match keyvalue::atomics::increment(&bucket, key, 1) {
        Ok(n) => {
            info!("{key} is now {n}");
            (200, format!("{greeting} {key}: {n}\n"))
        }
        Err(e) => (500, format!("{e:?}\n")),
    }
}

/// Whether secret `key` is `expected`.
fn secret(key: &str, expected: String) -> (u16, String) {
    match secrets::get(key) {
        Ok(secret) => {
            let same = match reveal::reveal(&secret) {
                secrets::SecretValue::String(s) => s == expected,
                secrets::SecretValue::Bytes(b) => b == expected.as_bytes(),
            };
            if same {
                (200, "matches\n".to_string())
            } else {
                (403, "differs\n".to_string())
            }
        }
        Err(secrets::SecretsError::NotFound) => (404, format!("no secret {key}\n")),
        Err(e) => (500, format!("{e:?}\n")),
    }
}

http::export!(Counter);
