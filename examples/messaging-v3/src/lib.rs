//! `messaging-v3`: a guest for `wasmcloud:messaging@0.3.0`, the version newer wasmCloud
//! components use (messages as resources, with a content type and metadata).
//!
//! It handles each message by answering with its data upper-cased, its content type (or
//! `text/plain`) and its metadata plus `x-handled: messaging-v3`: with `reply` when the message
//! is a request, otherwise sent with `producer` to `<topic>.echo`.
//!
//! Data `request:<subject>` instead makes a request (`ping`, 2 s) on `<subject>` through
//! `request-reply` and sends the first reply's data to `<topic>.echo`, or `error: <why>`.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use exports::wasmcloud::messaging::incoming_handler::Guest;
use wasmcloud::messaging::producer;
use wasmcloud::messaging::request_reply::{self, RequestOptions};
use wasmcloud::messaging::types::{Client, Error, Message};

wit_bindgen::generate!({
    inline: "
        package example:messaging-v3;

        world messaging-v3 {
            import wasmcloud:messaging/producer@0.3.0;
            import wasmcloud:messaging/request-reply@0.3.0;
            export wasmcloud:messaging/incoming-handler@0.3.0;
        }
    ",
    path: ["../../wit/deps/messaging-0.3.wit"],
    generate_all,
});

export!(MessagingV3);

/// The suffix of the topics echoes go to.
const ECHO_SUFFIX: &str = ".echo";
/// How long a `request:` waits.
const REQUEST_TIMEOUT_MS: u32 = 2000;

struct MessagingV3;

impl Guest for MessagingV3 {
    fn handle(message: Message) -> Result<(), Error> {
        let topic = message.topic().unwrap_or_default();
        let client = Client::connect("default")?;
        let echo_topic = format!("{topic}{ECHO_SUFFIX}");
        let data = message.data();
        if let Some(target) = data.strip_prefix(b"request:") {
            let target = String::from_utf8_lossy(target).into_owned();
            let options = RequestOptions::new();
            options.set_timeout_ms(REQUEST_TIMEOUT_MS);
            let answer = match request_reply::request(
                &client,
                &target,
                &Message::new(b"ping"),
                Some(options),
            ) {
                Ok(replies) => replies.first().map(Message::data).unwrap_or_default(),
                Err(e) => format!("error: {e:?}").into_bytes(),
            };
            return producer::send(&client, &echo_topic, Message::new(&answer));
        }
        // A request is answered; anything else goes to the echo topic.
        if request_reply::reply(&message, echo(&message)).is_err() {
            producer::send(&client, &echo_topic, echo(&message))?;
        }
        Ok(())
    }
}

/// `message`'s echo: upper-cased, same content type and metadata, marked as handled.
fn echo(message: &Message) -> Message {
    let echo = Message::new(&message.data().to_ascii_uppercase());
    echo.set_content_type(
        &message
            .content_type()
            .unwrap_or_else(|| "text/plain".to_string()),
    );
    for (key, value) in message.metadata().unwrap_or_default() {
        echo.add_metadata(&key, &value);
    }
    echo.add_metadata("x-handled", "messaging-v3");
    echo
}
