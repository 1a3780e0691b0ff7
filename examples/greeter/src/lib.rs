//! `greeter`: serves the app's own interface `example:greeter/greet` (`wit/greeter.wit`) to
//! other components, here `greeter-client`, through a Lattice link.
//!
//! It is the callee of the component-to-component tests: `greet` is the plain call, `where`
//! tells which host served it (the `LATTICE_HOST_ID` the host sets), `fail` returns an error or
//! traps on request, `echo` returns every WIT value type unchanged, and `notify` logs through
//! `wasi:logging` without an answer worth waiting for.
//!
//! `notify` fails for messages starting with `fail` (to exercise retries and dead letters),
//! unless its `wasi:config` key `notify-fails` is `never`: redeploying with that config is how
//! the tests "fix" the target before requeueing its dead letters.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use exports::example::greeter::greet::{Everything, Guest};
use wasi::config::store as config;
use wasi::logging::logging::{Level, log};

wit_bindgen::generate!({
    inline: "
        package example:greeter-component;

        world greeter {
            import wasi:logging/logging@0.1.0-draft;
            import wasi:config/store@0.2.0-draft;
            export example:greeter/greet@0.1.0;
            export example:greeter/notifier@0.1.0;
        }
    ",
    path: [
        "../../wit/deps/logging.wit",
        "../../wit/deps/config.wit",
        "wit/greeter.wit",
    ],
    // The packages are not in this crate (nor in a crate to map them to): generate them here.
    generate_all,
});

export!(Greeter);

/// The `context` of this component's log records.
const LOG_CONTEXT: &str = "greeter";

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("Hello, {name}!")
    }

    fn where_() -> String {
        std::env::var("LATTICE_HOST_ID").unwrap_or_else(|_| "unknown".to_owned())
    }

    fn fail(how: String) -> Result<String, String> {
        match how.as_str() {
            "err" => Err("asked to fail".to_owned()),
            // A trap in the callee must reach the caller as a failed call.
            "trap" => panic!("asked to trap"),
            _ => Ok(format!("not failing ({how})")),
        }
    }

    fn echo(v: Everything) -> Everything {
        v
    }
}

impl exports::example::greeter::notifier::Guest for Greeter {
    fn notify(msg: String) -> Result<(), String> {
        if msg.starts_with("fail") && notify_may_fail() {
            return Err(format!("asked to fail: {msg}"));
        }
        log(Level::Info, LOG_CONTEXT, &msg);
        Ok(())
    }
}

/// Whether `notify` honours `fail...` messages: yes unless config `notify-fails` is `never`.
fn notify_may_fail() -> bool {
    !matches!(config::get("notify-fails"), Ok(Some(v)) if v == "never")
}
