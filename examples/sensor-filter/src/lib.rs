//! `sensor-filter`: the edge half of the sensor pipeline (see
//! `examples/manifests/sensor-pipeline.yaml`). It handles `wasmcloud:messaging` messages (from
//! the `mqtt` provider, or any other messaging capability) on topics
//! `sensors/<id>/temperature`, whose body is a reading in decimal (`21.5`), and records each good
//! reading with `example:sensors/aggregate.record(<id>, value)`, served by `sensor-aggregator`
//! wherever it runs.
//!
//! Dropped, with a log line and no error (a bad reading is not worth a retry): another topic, a
//! sensor id that is not letters, digits, `-` and `_` (it names keys in the aggregator's
//! bucket), a body that is not a number, and a value outside -50..=150 °C (a broken sensor). An
//! error from `record` is the handler's error.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use example::sensors::aggregate;
use exports::wasmcloud::messaging::handler::Guest;
use wasi::logging::logging::{Level, log};
use wasmcloud::messaging::types::BrokerMessage;

wit_bindgen::generate!({
    inline: "
        package example:sensor-filter;

        world sensor-filter {
            import example:sensors/aggregate@0.1.0;
            import wasi:logging/logging@0.1.0-draft;
            export wasmcloud:messaging/handler@0.2.0;
        }
    ",
    path: [
        "../../wit/deps/logging.wit",
        "../../wit/deps/messaging.wit",
        "../sensor-aggregator/wit/sensors.wit",
    ],
    // The packages are not in this crate (nor in a crate to map them to): generate them here.
    generate_all,
});

export!(SensorFilter);

/// The `context` of this component's log records.
const LOG_CONTEXT: &str = "sensor-filter";
/// The readings a working sensor can give, in °C; anything else is a broken sensor.
const PLAUSIBLE: std::ops::RangeInclusive<f64> = -50.0..=150.0;

struct SensorFilter;

impl Guest for SensorFilter {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        let reading = match reading(&msg) {
            Ok(reading) => reading,
            Err(why) => {
                log(
                    Level::Warn,
                    LOG_CONTEXT,
                    &format!("dropped a message on {}: {why}", msg.subject),
                );
                return Ok(());
            }
        };
        let (sensor, value) = reading;
        aggregate::record(sensor, value).map_err(|err| format!("recording {sensor}: {err}"))
    }
}

/// The sensor and value of a message on `sensors/<id>/temperature`, or why it is dropped.
fn reading(msg: &BrokerMessage) -> Result<(&str, f64), String> {
    let sensor = match msg.subject.split('/').collect::<Vec<_>>().as_slice() {
        ["sensors", id, "temperature"] => *id,
        _ => return Err("not a sensors/<id>/temperature topic".to_owned()),
    };
    if sensor.is_empty()
        || !sensor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "sensor id {sensor:?} is not letters, digits, - and _"
        ));
    }
    let text = String::from_utf8_lossy(&msg.body);
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("body {:?} is not a number", text.trim()))?;
    // Also false for NaN.
    if !PLAUSIBLE.contains(&value) {
        return Err(format!(
            "{value} is outside {}..={} (a broken sensor?)",
            PLAUSIBLE.start(),
            PLAUSIBLE.end()
        ));
    }
    Ok((sensor, value))
}
