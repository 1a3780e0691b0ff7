//! The last layer: what happens to one queued item once its lane says it is its turn.
//! [`settle`] runs it ([`run`]: the called function, or the message handler export), retries it
//! in place with backoff, and dead-letters it ([`deadletter`]) when it keeps failing, expired
//! before it could run, or cannot be read; calls and messages differ only in what runs. Items
//! outside any lane (requeued ones) are checked against, and recorded in, the processed-ids
//! bucket. [`Delivery`] and [`Item`] are what the consumer hands down: a stream message, and one
//! queued item of it (the message itself, or one item of a bundle).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, AckKind, kv};
use lattice_protocol::envelope;
use lattice_protocol::jetstream::headers_without;
use lattice_protocol::keys::PublicKey;
use lattice_protocol::queue::{
    ATTEMPTS_HEADER, CALL_ID_HEADER, DEAD_REASON_HEADER, ERROR_HEADER, LANE_COUNT_HEADER,
    LANE_SEQ_HEADER, MSG_ID_HEADER, ProcessedKey, QUEUE_SUBJECT_HEADER, Queued, QueuedItem,
    Refusal, decode_bundle,
};
use lattice_protocol::subject::Subject;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, warn};

use super::stream::deadletter_stream_ready;
use super::{DELIVERY_TIMEOUT, ITEM_RETRY};
use crate::caps::calls::{self, Loaded};
use crate::caps::{LatticeLink, WorkloadCtx, messaging};

/// What queued items run in: the workload, and its message handler when it exports one.
pub(super) struct Target {
    pub(super) loaded: Arc<Loaded>,
    handler: Option<crate::caps::messaging::HandlerPre>,
    /// The operators whose assignments make a key a host of the lattice.
    pub(super) trusted: Vec<PublicKey>,
}

impl Target {
    /// `loaded`'s component; with `messages`, it must export the message handler.
    pub(super) fn new(
        loaded: &Arc<Loaded>,
        messages: bool,
        trusted: &[PublicKey],
    ) -> anyhow::Result<Self> {
        let handler = if messages {
            Some(messaging::handler(loaded)?)
        } else {
            // A message requeued onto the call subject still finds the handler, if there is one.
            messaging::handler(loaded).ok()
        };
        Ok(Self {
            loaded: loaded.clone(),
            handler,
            trusted: trusted.to_vec(),
        })
    }
}

/// A message the consumer delivered, with what its reply subject says of it, read once. Shared
/// by the items of a bundle: it is acknowledged once all of them are done with.
pub(super) struct Delivery {
    pub(super) message: jetstream::Message,
    /// Its sequence in the queue stream.
    pub(super) stream_seq: u64,
    /// The consumer's number for this delivery: one more than the last, redeliveries included.
    pub(super) consumer_seq: u64,
    /// Deliveries of it so far, this one included.
    delivered: i64,
}

impl Delivery {
    pub(super) fn of(message: jetstream::Message) -> anyhow::Result<Arc<Self>> {
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (stream_seq, consumer_seq, delivered) =
            (info.stream_sequence, info.consumer_sequence, info.delivered);
        Ok(Arc::new(Self {
            message,
            stream_seq,
            consumer_seq,
            delivered,
        }))
    }
}

/// One queued item of a delivered message: the message itself, or one item of a bundle.
pub(super) struct Item {
    pub(super) delivery: Arc<Delivery>,
    /// Its lane sequence (0 outside lanes).
    pub(super) seq: u64,
    /// The last lane sequence it accounts for: its own.
    pub(super) through: u64,
    /// In a bundle: its id.
    bundled: Option<String>,
    /// Its envelope ([`Queued`], encoded).
    payload: bytes::Bytes,
}

impl Item {
    /// The message as one item, at lane sequence `seq` (0 outside lanes).
    pub(super) fn whole(delivery: Arc<Delivery>, seq: u64) -> Self {
        let payload = delivery.message.payload.clone();
        Self {
            delivery,
            seq,
            through: seq,
            bundled: None,
            payload,
        }
    }

    /// A bundle's items, by lane sequence from `first` ("Bundles" in
    /// [`lattice_protocol::queue`]). A body that cannot be read, or holds another count, is
    /// refused as a malformed bundle: it is dead-lettered whole and moves its lane nowhere (the
    /// sender's next floor passes over its numbers, if they were its).
    pub(super) fn unbundle(
        delivery: &Arc<Delivery>,
        first: u64,
        count: u64,
    ) -> Result<Vec<Self>, Refusal> {
        let items = decode_bundle(&delivery.message.payload)
            .map_err(|e| Refusal::MalformedBundle(format!("its body does not decode: {e}")))?;
        if items.len() as u64 != count {
            return Err(Refusal::MalformedBundle(format!(
                "{LANE_COUNT_HEADER} says {count} items, its body holds {}",
                items.len()
            )));
        }
        Ok((first..)
            .zip(items)
            .map(|(seq, (id, envelope))| Self {
                delivery: delivery.clone(),
                seq,
                through: seq,
                bundled: Some(id),
                payload: envelope.into_vec().into(),
            })
            .collect())
    }
}

/// An item, decoded.
pub(super) struct Prepared {
    item: Item,
    /// The item's id (`Lattice-Call-Id`, kept across requeues).
    id: String,
    /// The item, or why it could not be decoded.
    queued: Result<Queued, String>,
}

pub(super) fn prepare(item: Item) -> Prepared {
    let header = |name| {
        let value = item
            .delivery
            .message
            .headers
            .as_ref()?
            .get(name)?
            .to_string();
        Some(value)
    };
    // The item's id survives requeues (each requeue publishes with a new `Nats-Msg-Id`).
    let id = match &item.bundled {
        Some(id) => id.clone(),
        None => header(CALL_ID_HEADER)
            .or_else(|| header(MSG_ID_HEADER))
            .unwrap_or_else(|| format!("seq-{}", item.delivery.stream_seq)),
    };
    let queued: Result<Queued, String> =
        envelope::decode(&item.payload).map_err(|e| format!("undecodable: {e}"));
    Prepared { item, id, queued }
}

/// Runs one queued item, retrying it in place (so that the items behind it wait: order per
/// sender and target), dead-lettering it when it keeps failing, expired or cannot be read.
/// With `processed` (an item outside any lane), it is skipped when its id is recorded there,
/// and its id is recorded once it ran. Returns its delivery once it is done with (to be
/// acknowledged); `None` when `stop` came while it waited for a retry: it is left
/// unacknowledged, for the next host.
pub(super) async fn settle(
    target: &Target,
    lattice: &LatticeLink,
    processed: Option<&kv::Store>,
    prepared: Prepared,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Arc<Delivery>>> {
    let Prepared { item, id, queued } = prepared;
    let (message, delivered) = (&item.delivery.message, item.delivery.delivered);
    let ctx = &target.loaded.ctx;
    let queued = match queued {
        Ok(q) => q,
        Err(error) => {
            let dead = Dead {
                item: None,
                id: &id,
                attempts: delivered,
                error: &error,
            };
            deadletter(target, lattice, &item, dead).await?;
            return Ok(Some(item.delivery));
        }
    };
    let kind = queued.item.kind();
    // Expired on its way (e.g. its target was not running): dead-lettered, not dropped, so that
    // the operator sees it (`ctl get deadletters`, the `dead-lettered` event) and may requeue it.
    // Both stamped and judged in the hub's time (`crate::clock`): a skewed clock on either host
    // neither expires it early nor keeps it late.
    if lattice.clock.hub_now_ms() > queued.expires_at_ms {
        let error = expired(queued.expires_at_ms);
        warn!(workload = %ctx.name(), %id, kind, "a queued item expired before delivery; dead-lettered");
        let dead = Dead {
            item: Some(&queued.item),
            id: &id,
            // Runs made: this delivery was not one.
            attempts: (delivered - 1).max(0),
            error: &error,
        };
        deadletter(target, lattice, &item, dead).await?;
        return Ok(Some(item.delivery));
    }
    // Only items outside any lane are looked up and recorded by id; per component, since a
    // message is run once by each component subscribed to it.
    let record = processed.map(|processed| {
        let key = ProcessedKey::new(&queued.item, &ctx.app, &ctx.component, &id).to_string();
        (processed, key)
    });
    if already_processed(record.as_ref()).await? {
        debug!(%id, kind, "queued item already processed; skipping");
        return Ok(Some(item.delivery));
    }
    // Attempts made before this delivery (by this host or another, before a restart).
    let mut attempt = delivered.max(1);
    loop {
        match run(target, &queued.item)
            .instrument(delivery_span(ctx, &queued, attempt))
            .await
        {
            Ok(()) => break,
            Err(e) if attempt >= i64::from(queued.max_attempts) => {
                warn!(workload = %ctx.name(), %id, kind, attempts = attempt, error = %e, "queued item failed for good; dead-lettered");
                let dead = Dead {
                    item: Some(&queued.item),
                    id: &id,
                    attempts: attempt,
                    error: &e,
                };
                deadletter(target, lattice, &item, dead).await?;
                return Ok(Some(item.delivery));
            }
            Err(e) => {
                let delay = ITEM_RETRY.nth(u32::try_from(attempt).unwrap_or(0));
                debug!(%id, kind, attempt, error = %e, ?delay, "queued item failed; will retry");
                // Still being worked on: not redelivered while it waits.
                message
                    .ack_with(AckKind::Progress)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                tokio::select! {
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
                attempt += 1;
            }
        }
    }
    // Recorded before it is acknowledged.
    if let Some((processed, key)) = &record
        && let Err(e) = processed.create(key, bytes::Bytes::new()).await
        && !matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
    {
        warn!(%key, error = %e, "could not record a processed item");
    }
    target.loaded.metrics.delivered();
    Ok(Some(item.delivery))
}

/// Whether the item recorded under `record`'s key (an item outside any lane) already ran.
async fn already_processed(record: Option<&(&kv::Store, String)>) -> anyhow::Result<bool> {
    let Some((processed, key)) = record else {
        return Ok(false);
    };
    let entry = processed
        .get(key)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(entry.is_some())
}

/// The error an item that expired (at `expires_at_ms`) before it could run is dead-lettered with.
fn expired(expires_at_ms: u64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(expires_at_ms);
    format!(
        "expired before delivery: its ttl passed at {}; requeue it to try again with a fresh ttl, or raise the link's ttl",
        humantime::format_rfc3339_millis(at)
    )
}

/// The span of one delivery attempt (`lattice.queue.deliver`): a child of the span that queued
/// the item, whose context travelled with it ([`Queued::trace`]), so one trace spans the outage.
fn delivery_span(ctx: &WorkloadCtx, queued: &Queued, attempt: i64) -> tracing::Span {
    let span = tracing::debug_span!(
        "lattice.queue.deliver",
        component = %ctx.name(),
        kind = queued.item.kind(),
        attempt,
    );
    if let Some(trace) = &queued.trace {
        lattice_telemetry::propagation::continue_pairs(&span, &trace.to_pairs());
    }
    span
}

/// Runs `item` in a fresh instance: `Ok` only when it returned without a trap and without its
/// own error.
async fn run(target: &Target, item: &QueuedItem) -> Result<(), String> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let loaded = &target.loaded;
    match item {
        QueuedItem::Call(call) => calls::deliver(loaded, call, deadline)
            .await
            .map_err(|e| e.to_string()),
        QueuedItem::Message(m) => match &target.handler {
            Some(pre) => messaging::deliver(loaded, pre, m, deadline)
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "`{}` does not export wasmcloud:messaging/handler, so it cannot take the message on `{}`",
                loaded.ctx.name(),
                m.subject
            )),
        },
    }
}

/// Dead-letters a message refused before any of it ran ([`super::check`]), with the reason
/// (`Lattice-Dead-Reason`, and the error `ctl get deadletters` shows); its body is kept, unless
/// too large. Its `Nats-Msg-Id` is made of this consumer's component and the stream sequence, so
/// a redelivery after a crash is one dead letter.
pub(super) async fn refuse(
    target: &Target,
    lattice: &LatticeLink,
    delivery: &Delivery,
    refusal: &Refusal,
) -> anyhow::Result<()> {
    let (js, l) = (&lattice.jetstream, &lattice.lattice);
    deadletter_stream_ready(lattice).await?;
    let ctx = &target.loaded.ctx;
    let message = &delivery.message;
    warn!(workload = %ctx.name(), subject = %message.subject, reason = refusal.reason(), error = %refusal, "refused a queued stream message; dead-lettered");
    let mut headers = headers_without(message.headers.as_ref(), &[]);
    let own_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(MSG_ID_HEADER))
        .map(|v| v.to_string())
        .unwrap_or_else(|| format!("seq-{}", delivery.stream_seq));
    if message
        .headers
        .as_ref()
        .and_then(|h| h.get(CALL_ID_HEADER))
        .is_none()
    {
        headers.insert(CALL_ID_HEADER, own_id.as_str());
    }
    let dedup = format!(
        "{}.{}.refused-{}",
        ctx.app, ctx.component, delivery.stream_seq
    );
    headers.insert(MSG_ID_HEADER, dedup.as_str());
    headers.insert(QUEUE_SUBJECT_HEADER, message.subject.as_str());
    headers.insert(ATTEMPTS_HEADER, "0");
    headers.insert(
        ERROR_HEADER,
        refusal.to_string().replace(['\r', '\n'], " ").as_str(),
    );
    headers.insert(DEAD_REASON_HEADER, refusal.reason());
    let body = match refusal {
        Refusal::TooLarge(_) => bytes::Bytes::new(),
        _ => message.payload.clone(),
    };
    let subject = Subject::dead_letters(l, &ctx.app, &ctx.component).to_string();
    js.publish_with_headers(subject, headers, body)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .await
        .map_err(|e| anyhow::anyhow!("dead-lettering a refused message: {e}"))?;
    target.loaded.metrics.dead_lettered();
    Ok(())
}

/// What is known of an item being dead-lettered.
struct Dead<'a> {
    /// The item, when it could be decoded.
    item: Option<&'a QueuedItem>,
    /// Its id (`Lattice-Call-Id`).
    id: &'a str,
    /// The attempts made.
    attempts: i64,
    /// The last error.
    error: &'a str,
}

async fn deadletter(
    target: &Target,
    lattice: &LatticeLink,
    of: &Item,
    dead: Dead<'_>,
) -> anyhow::Result<()> {
    let Dead {
        item,
        id,
        attempts,
        error,
    } = dead;
    let (js, l) = (&lattice.jetstream, &lattice.lattice);
    deadletter_stream_ready(lattice).await?;
    let message = &of.delivery.message;
    // The queue message's own headers (its link, its lane), the item's id and place, where it
    // was queued (for a requeue), then what happened. Its `Nats-Msg-Id` is new for every
    // requeue, so an item dead-lettered again is kept again; for a message, made per component
    // like its processed key, so that a message two subscribers failed is kept for each. An
    // item of a bundle goes alone: its own id and lane sequence, no count.
    let ctx = &target.loaded.ctx;
    let mut headers = headers_without(message.headers.as_ref(), &[LANE_COUNT_HEADER]);
    if let Some(msg_id) = &of.bundled {
        headers.insert(MSG_ID_HEADER, msg_id.as_str());
        headers.insert(LANE_SEQ_HEADER, of.seq.to_string().as_str());
    }
    if let (Some(item), Some(msg_id)) = (item, headers.get(MSG_ID_HEADER).map(ToString::to_string))
    {
        let dedup = ProcessedKey::new(item, &ctx.app, &ctx.component, &msg_id).to_string();
        headers.insert(MSG_ID_HEADER, dedup.as_str());
    }
    headers.insert(CALL_ID_HEADER, id);
    headers.insert(QUEUE_SUBJECT_HEADER, message.subject.as_str());
    headers.insert(ATTEMPTS_HEADER, attempts.to_string().as_str());
    headers.insert(ERROR_HEADER, error.replace(['\r', '\n'], " ").as_str());
    let subject = Subject::dead_letters(l, &ctx.app, &ctx.component).to_string();
    js.publish_with_headers(subject, headers, of.payload.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .await
        .map_err(|e| anyhow::anyhow!("dead-lettering: {e}"))?;
    target.loaded.metrics.dead_lettered();
    Ok(())
}
