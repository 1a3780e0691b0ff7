//! The lattice's events, kept: the JetStream stream `LATTICE_<lattice>_events` over
//! [`Subject::events`], made (or its limits updated) by the leader when it starts, and the
//! [`Events`] handle the worker and its tasks publish through.
//!
//! Publishing never holds the worker up: [`Events::emit`] hands the event to a task of its own
//! through a bounded channel and returns. That task publishes each event in order and waits for
//! the stream's acknowledgements beside it, a bounded number at a time; an event the channel
//! cannot take, or the stream refuses, is counted and logged (the first, then
//! every hundredth), never retried: events are for people, and the loop that decides must not
//! wait on them.
//!
//! The stream keeps events by age (`lattice control --events-max-age`, 7 days) and bytes
//! (`--events-max-bytes`, 64 MiB) and, unlike every other stream of the lattice, drops the oldest
//! at its byte limit (`discard: old`): the newest events are the ones an operator looks for, and
//! nothing waits on an old one being kept.

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lattice_protocol::envelope;
use lattice_protocol::jetstream::{Storage, ensure_stream};
use lattice_protocol::messages::{Event, EventKind};
use lattice_protocol::names::{AppName, HostId, LatticeName};
use lattice_protocol::subject::{Buckets, Subject};
use tokio::sync::mpsc;
use tracing::warn;

/// Events waiting for the publishing task; past this, new ones are counted as lost.
const QUEUED: usize = 4096;

/// Acknowledgements awaited at once; the task publishes no more until one arrives.
const IN_FLIGHT: usize = 256;

/// The configuration of the events stream of `lattice` within `storage`'s limits.
pub fn stream_config(lattice: &LatticeName, storage: &Storage) -> stream::Config {
    let config = stream::Config {
        name: Buckets::new(lattice).events(),
        description: Some("Lattice events (`lattice ctl watch --since`)".into()),
        subjects: vec![Subject::events(lattice).to_string()],
        ..Default::default()
    };
    stream::Config {
        discard: stream::DiscardPolicy::Old,
        ..storage.limit(config, storage.events_max_bytes, storage.events_max_age)
    }
}

/// Creates the events stream of `lattice`, or updates its limits (its events are kept).
pub async fn ensure(
    js: &jetstream::Context,
    lattice: &LatticeName,
    storage: &Storage,
) -> anyhow::Result<()> {
    ensure_stream(js, stream_config(lattice, storage))
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("opening the events stream: {e:#}"))
}

/// Where the control plane's events go: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    tx: mpsc::Sender<Event>,
    lost: Arc<AtomicU64>,
}

impl Events {
    /// Starts the publishing task of `lattice`'s events; it ends once every handle is dropped
    /// and what they sent is published.
    pub(crate) fn start(js: jetstream::Context, lattice: &LatticeName) -> Self {
        let (tx, rx) = mpsc::channel(QUEUED);
        let lost = Arc::new(AtomicU64::new(0));
        let subject = Subject::events(lattice).to_string();
        tokio::spawn(publish(js, subject, rx, lost.clone()));
        Self { tx, lost }
    }

    /// Publishes an event, stamped now, without waiting.
    pub(crate) fn emit(
        &self,
        kind: EventKind,
        app: Option<&AppName>,
        host: Option<&HostId>,
        message: String,
    ) {
        let event = Event {
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            kind,
            app: app.cloned(),
            host: host.cloned(),
            message,
        };
        if self.tx.try_send(event).is_err() {
            note_lost(&self.lost, "the publishing queue is full");
        }
    }
}

/// Counts a lost event and logs the first and every hundredth.
fn note_lost(lost: &AtomicU64, why: &str) {
    let n = lost.fetch_add(1, Ordering::Relaxed) + 1;
    if n == 1 || n.is_multiple_of(100) {
        warn!(
            lost = n,
            why, "an event was not stored; `lattice ctl watch --since` will not show it"
        );
    }
}

/// The publishing task: each event in order, acknowledgements awaited beside.
async fn publish(
    js: jetstream::Context,
    subject: String,
    mut rx: mpsc::Receiver<Event>,
    lost: Arc<AtomicU64>,
) {
    let mut acks = FuturesUnordered::new();
    loop {
        tokio::select! {
            event = rx.recv(), if acks.len() < IN_FLIGHT => {
                let Some(event) = event else { break };
                match js.publish(subject.clone(), envelope::encode(&event).into()).await {
                    Ok(ack) => acks.push(ack.into_future()),
                    Err(e) => note_lost(&lost, &e.to_string()),
                }
            }
            Some(ack) = acks.next(), if !acks.is_empty() => {
                if let Err(e) = ack {
                    note_lost(&lost, &e.to_string());
                }
            }
        }
    }
    while let Some(ack) = acks.next().await {
        if let Err(e) = ack {
            note_lost(&lost, &e.to_string());
        }
    }
}
