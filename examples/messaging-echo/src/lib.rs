//! `messaging-echo`: a test guest for `wasmcloud:messaging`. It handles each message by
//! publishing its body upper-cased: to the message's `reply-to` when it has one, otherwise to
//! `<subject>.echo`.
//!
//! A body `request:<subject>` instead makes a request (`ping`, 2 s timeout) on `<subject>` and
//! publishes the answer's body, or `error: <why>`, to `<original subject>.echo`, so the request
//! path of `wasmcloud:messaging/consumer` can be tested too.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use exports::wasmcloud::messaging::handler::Guest;
use wasi::logging::logging::{Level, log};
use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

wit_bindgen::generate!({
    inline: "
        package example:messaging-echo;

        world messaging-echo {
            import wasmcloud:messaging/consumer@0.2.0;
            import wasi:logging/logging@0.1.0-draft;
            export wasmcloud:messaging/handler@0.2.0;
        }
    ",
    path: ["../../wit/deps/logging.wit", "../../wit/deps/messaging.wit"],
    // The packages are not in this crate (nor in a crate to map them to): generate them here.
    generate_all,
});

export!(MessagingEcho);

/// The `context` of this component's log records.
const LOG_CONTEXT: &str = "messaging-echo";
/// The suffix of the subjects echoes go to.
const ECHO_SUFFIX: &str = ".echo";
/// How long a `request:` waits for its answer.
const REQUEST_TIMEOUT_MS: u32 = 2000;

struct MessagingEcho;

impl Guest for MessagingEcho {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        log(
            Level::Info,
            LOG_CONTEXT,
            &format!("message on {} ({} bytes)", msg.subject, msg.body.len()),
        );
        // With a wildcard subscription our own echoes come back: answering them would loop.
        if msg.subject.ends_with(ECHO_SUFFIX) {
            return Ok(());
        }
        let echo_subject = format!("{}{ECHO_SUFFIX}", msg.subject);

        if let Some(target) = msg.body.strip_prefix(b"request:") {
            let target = String::from_utf8_lossy(target).into_owned();
            return match consumer::request(&target, b"ping", REQUEST_TIMEOUT_MS) {
                Ok(answer) => publish(echo_subject, answer.body),
                Err(err) => {
                    // Published as well, so a test waiting on the echo sees why at once.
                    publish(echo_subject, format!("error: {err}").into_bytes())?;
                    Err(format!("request to {target} failed: {err}"))
                }
            };
        }

        let subject = msg.reply_to.unwrap_or(echo_subject);
        publish(subject, msg.body.to_ascii_uppercase())
    }
}

fn publish(subject: String, body: Vec<u8>) -> Result<(), String> {
    consumer::publish(&BrokerMessage {
        subject,
        body,
        reply_to: None,
    })
}
