//! `GET /api/events`: the lattice's events as Server-Sent Events, read from the events stream
//! (`LATTICE_<lattice>_events`) as `lattice ctl watch` reads it: an ordered pull consumer, which
//! needs no acknowledgements and no replies from the reader. Each page gets the last
//! [`BACKLOG`] kept events first, then new ones as they are stored.

use std::convert::Infallible;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use lattice_protocol::messages::Event;
use lattice_protocol::names::LatticeName;
use lattice_protocol::subject::{Buckets, Subject};
use tokio::sync::mpsc;

use super::server::{Body, Response};

/// Kept events a page is shown when it opens.
const BACKLOG: u64 = 50;

/// A comment line this often, so that a closed page is noticed (its write fails) and proxies
/// keep the connection.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// An event as the page receives it: its stream sequence, then its fields.
#[derive(Debug, serde::Serialize)]
struct Numbered {
    seq: u64,
    #[serde(flatten)]
    event: Event,
}

/// The SSE response; a task feeds it until the page goes.
pub(super) fn stream(client: async_nats::Client, lattice: LatticeName) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if let Err(e) = feed(&client, &lattice, &tx).await {
            let problem = serde_json::json!({ "error": format!("{e:#}") });
            let _ = tx
                .send(Bytes::from(format!("event: problem\ndata: {problem}\n\n")))
                .await;
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let body: Body = BodyExt::boxed(StreamBody::new(frames));
    hyper::Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| super::server::text(500, "building the event stream failed"))
}

/// Sends events to `tx` until the page closes (a send fails) or the stream ends.
async fn feed(
    client: &async_nats::Client,
    lattice: &LatticeName,
    tx: &mpsc::Sender<Bytes>,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    let name = Buckets::new(lattice).events();
    let mut stream = js.get_stream(&name).await.map_err(|e| {
        anyhow::anyhow!(
            "opening the events stream {name}: {e}; is a control plane running (`lattice control`), and may this user read the stream (`lattice nats authz`)?"
        )
    })?;
    let last = stream.info().await?.state.last_sequence;
    let start_sequence = last.saturating_sub(BACKLOG - 1).max(1);
    let mut events = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: Subject::events(lattice).to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence },
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    if tx
        .send(Bytes::from_static(b": connected\n\n"))
        .await
        .is_err()
    {
        return Ok(());
    }
    loop {
        let chunk = tokio::select! {
            msg = events.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let msg = msg?;
                let seq = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
                // An event of a newer release is skipped, as `ctl watch` skips it.
                let Ok(event) = lattice_protocol::envelope::decode::<Event>(&msg.payload) else { continue };
                let data = serde_json::to_string(&Numbered { seq, event })?;
                format!("id: {seq}\ndata: {data}\n\n")
            }
            () = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".to_string(),
        };
        if tx.send(Bytes::from(chunk)).await.is_err() {
            return Ok(());
        }
    }
}
