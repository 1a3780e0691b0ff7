//! `sensor-aggregator`: the cloud half of the sensor pipeline (see
//! `examples/manifests/sensor-pipeline.yaml`). It serves the app's own interface
//! `example:sensors/aggregate` (`wit/sensors.wit`) to `sensor-filter`, keeps a summary per
//! sensor in a `wasi:keyvalue` bucket, and shows it over `wasi:http`:
//!
//! - `record(sensor, value)`: counts the reading and updates the sensor's min, max and last;
//! - `summary()`: every sensor's summary, sorted by sensor;
//! - `GET /`: the same, one line per sensor: `t1 count=3 min=20.5 max=22 last=21`.
//!
//! In the bucket (`default`, which the link maps to the real one), sensor `<id>` has two keys:
//! `count.<id>`, a decimal counted with `wasi:keyvalue/atomics` `increment`, and `stats.<id>`,
//! the text `min,max,last`.
//!
//! Build with `cargo build --release --target wasm32-wasip2` in `examples/`.

use std::io::Write;

use wasip2::exports::http::incoming_handler::Guest as HttpGuest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use exports::example::sensors::aggregate::{Guest as AggregateGuest, ReadingSummary};
use wasi::keyvalue::{atomics, store};
use wasi::logging::logging::{Level, log};

// The aggregate export and the imports are generated here; the HTTP export and its types come
// from `wasip2`.
wit_bindgen::generate!({
    inline: "
        package example:sensor-aggregator;

        world sensor-aggregator {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            import wasi:logging/logging@0.1.0-draft;
            export example:sensors/aggregate@0.1.0;
        }
    ",
    path: [
        "../../wit/deps/keyvalue.wit",
        "../../wit/deps/logging.wit",
        "wit/sensors.wit",
    ],
    // The packages are not in this crate (nor in a crate to map them to): generate them here.
    generate_all,
});

export!(Aggregator);
wasip2::http::proxy::export!(Aggregator);

/// The bucket this component opens; the link decides which store it is.
const BUCKET: &str = "default";
/// The prefix of the keys holding a sensor's reading count (`count.<id>`).
const COUNT_PREFIX: &str = "count.";
/// The prefix of the keys holding a sensor's `min,max,last` (`stats.<id>`).
const STATS_PREFIX: &str = "stats.";
/// The `context` of this component's log records.
const LOG_CONTEXT: &str = "sensor-aggregator";

struct Aggregator;

impl AggregateGuest for Aggregator {
    fn record(sensor: String, value: f64) -> Result<(), String> {
        record(&sensor, value).map_err(|err| {
            let text = format!("recording {sensor}={value}: {err:?}");
            log(Level::Error, LOG_CONTEXT, &text);
            text
        })
    }

    fn summary() -> Vec<ReadingSummary> {
        // `summary` has no error to return: log the failure and answer what there is.
        summaries().unwrap_or_else(|err| {
            log(
                Level::Error,
                LOG_CONTEXT,
                &format!("reading the summaries: {err:?}"),
            );
            Vec::new()
        })
    }
}

impl HttpGuest for Aggregator {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = match (request.method(), path.as_str()) {
            (Method::Get, "/") => match summaries() {
                Ok(all) => (200, all.iter().map(|s| format!("{}\n", line(s))).collect()),
                Err(err) => (500, format!("{err:?}\n")),
            },
            (_, "/") => (405, "use GET\n".to_owned()),
            _ => (404, "no such route\n".to_owned()),
        };
        respond(response_out, status, body.as_bytes());
    }
}

/// Stores one reading of `sensor`.
///
/// The min, max and last are a read-modify-write of `stats.<id>`, which is fine for an example
/// but not for real concurrency: two readings of the same sensor recorded at the same moment (on
/// two instances) could lose one's min or max. The count does not have that problem: it is one
/// atomic `increment`, done last so that a reader never sees a count ahead of the stats.
fn record(sensor: &str, value: f64) -> Result<(), store::Error> {
    let bucket = store::open(BUCKET)?;
    let stats_key = format!("{STATS_PREFIX}{sensor}");
    let stats = match bucket.get(&stats_key)?.as_deref().and_then(parse_stats) {
        Some(Stats { min, max, .. }) => Stats {
            min: min.min(value),
            max: max.max(value),
            last: value,
        },
        None => Stats {
            min: value,
            max: value,
            last: value,
        },
    };
    bucket.set(&stats_key, stats.to_text().as_bytes())?;
    let count = atomics::increment(&bucket, &format!("{COUNT_PREFIX}{sensor}"), 1)?;
    log(
        Level::Info,
        LOG_CONTEXT,
        &format!("{sensor}: {value} (reading {count})"),
    );
    Ok(())
}

/// Every sensor's summary, sorted by sensor: the sensors are the keys `count.<id>`.
fn summaries() -> Result<Vec<ReadingSummary>, store::Error> {
    let bucket = store::open(BUCKET)?;
    let mut sensors = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor)?;
        sensors.extend(
            page.keys
                .iter()
                .filter_map(|key| key.strip_prefix(COUNT_PREFIX))
                .map(str::to_owned),
        );
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    sensors.sort();

    let mut all = Vec::with_capacity(sensors.len());
    for sensor in sensors {
        let count = bucket
            .get(&format!("{COUNT_PREFIX}{sensor}"))?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let stats = bucket
            .get(&format!("{STATS_PREFIX}{sensor}"))?
            .as_deref()
            .and_then(parse_stats);
        // A key deleted or damaged meanwhile: leave the sensor out rather than show zeros.
        let (Some(count), Some(stats)) = (count, stats) else {
            continue;
        };
        all.push(ReadingSummary {
            sensor,
            count,
            min: stats.min,
            max: stats.max,
            last: stats.last,
        });
    }
    Ok(all)
}

/// `t1 count=3 min=20.5 max=22 last=21` (floats as Rust prints them: shortest exact form).
fn line(s: &ReadingSummary) -> String {
    format!(
        "{} count={} min={} max={} last={}",
        s.sensor, s.count, s.min, s.max, s.last
    )
}

/// What `stats.<id>` holds.
struct Stats {
    min: f64,
    max: f64,
    last: f64,
}

impl Stats {
    /// `min,max,last`; Rust's float text reads back to the same value.
    fn to_text(&self) -> String {
        format!("{},{},{}", self.min, self.max, self.last)
    }
}

/// Reads `min,max,last`; `None` if the value is not that.
fn parse_stats(raw: &[u8]) -> Option<Stats> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut fields = text.trim().split(',').map(|f| f.parse::<f64>().ok());
    let (Some(min), Some(max), Some(last), None) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next(),
    ) else {
        return None;
    };
    Some(Stats { min, max, last })
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
