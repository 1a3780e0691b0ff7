//! `wasmcloud-hello`: the HTTP hello world of wasmCloud 1.x's Rust template, built with the
//! `wasmcloud-component` crate from crates.io and nothing of Lattice. Like every component that
//! crate builds, it imports the WASI CLI, I/O, clocks and random interfaces besides HTTP (and
//! `wasmcloud:bus`), which is what makes it larger and costlier to instantiate than `hello`:
//! BENCHMARKS.md §1 serves both.
//!
//! Every request is answered `200 Hello from Rust!`. Build with
//! `cargo build --release --target wasm32-wasip2` in `examples/`.

use wasmcloud_component::http;

struct Component;

http::export!(Component);

impl http::Server for Component {
    fn handle(
        _request: http::IncomingRequest,
    ) -> http::Result<http::Response<impl http::OutgoingBody>> {
        Ok(http::Response::new("Hello from Rust!\n"))
    }
}
