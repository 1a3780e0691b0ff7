//! The target side: durable consumers of the queue stream deliver queued calls and messages to
//! one workload, one at a time, skip what it already processed, retry failures and dead-letter
//! what keeps failing.
//!
//! [`consume`] starts one consumer per [`Inbox`]: the workload's call subject when it is a
//! target of queued calls, each of its subscriptions when it consumes queued messages. Calls and
//! messages differ only in what runs ([`run`]: the called function, or the handler export);
//! decoding, the processed-ids check, settling, retries and dead letters ([`handle`]) are one
//! path for both.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use futures::StreamExt as _;
use lattice_protocol::assignment::{QueueInbox, Workload};
use lattice_protocol::envelope;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{
    ATTEMPTS_HEADER, CALL_ID_HEADER, ERROR_HEADER, MSG_ID_HEADER, Queued, QueuedItem,
    deadletter_stream, deadletter_stream_subjects, deadletter_subject, message_consumer,
    message_subject, processed_bucket, processed_key, queue_consumer, queue_stream, queue_subject,
};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use super::forward::queue_stream_ready;
use super::{DELIVERY_TIMEOUT, MAX_BACKOFF, PROCESSED_MAX_AGE, unix_ms};
use crate::caps::bindings::handler::HandlesPre;
use crate::caps::calls::{self, Loaded};
use crate::caps::{LatticeLink, messaging};
use crate::wasi::HostState;

/// What queued items run in: the workload, and its message handler when it exports one.
struct Target {
    loaded: Arc<Loaded>,
    handler: Option<HandlesPre<HostState>>,
}

/// One durable consumer of the queue stream.
#[derive(Debug, Clone)]
struct Inbox {
    /// Its durable name.
    durable: String,
    /// The stream subjects it takes (wildcards allowed).
    filter: String,
    /// What it delivers, for logs: `calls`, or `messages on <subscription>`.
    what: String,
}

/// Starts delivering the queued calls and messages `w` consumes to `loaded`'s component (none
/// when its assignment names it no queue target); delivery stops when the handles are dropped.
///
/// Fails when it consumes messages but does not export `wasmcloud:messaging/handler`.
pub fn consume(
    loaded: &Arc<Loaded>,
    lattice: &LatticeLink,
    w: &Workload,
) -> anyhow::Result<Vec<AbortOnDropHandle<()>>> {
    // Assignments from older control planes do not say: consume calls as those hosts did.
    let inbox = w.queue.unwrap_or(QueueInbox {
        calls: loaded.serves_calls(),
        messages: false,
    });
    let inboxes = inboxes(&lattice.lattice, w, inbox);
    if inboxes.is_empty() {
        return Ok(Vec::new());
    }
    let handler = if inbox.messages && !w.subscriptions.is_empty() {
        Some(messaging::handler(loaded)?)
    } else {
        // A message requeued onto the call subject still finds the handler, if there is one.
        messaging::handler(loaded).ok()
    };
    let target = Arc::new(Target {
        loaded: loaded.clone(),
        handler,
    });
    Ok(inboxes
        .into_iter()
        .map(|inbox| {
            let (target, lattice) = (target.clone(), lattice.clone());
            AbortOnDropHandle::new(tokio::spawn(async move {
                keep_consuming(&target, &lattice, &inbox).await
            }))
        })
        .collect())
}

/// The consumers `w` needs for what it consumes.
fn inboxes(l: &LatticeName, w: &Workload, inbox: QueueInbox) -> Vec<Inbox> {
    let (app, component) = (w.app.as_str(), w.component.as_str());
    let mut out = Vec::new();
    if inbox.calls {
        out.push(Inbox {
            durable: queue_consumer(app, component),
            filter: queue_subject(l, app, component),
            what: "calls".into(),
        });
    }
    if inbox.messages {
        out.extend(w.subscriptions.iter().map(|s| Inbox {
            durable: message_consumer(app, component, s),
            filter: message_subject(l, s),
            what: format!("messages on {s}"),
        }));
    }
    out
}

/// Runs one consumer, reconnecting with backoff, until aborted.
async fn keep_consuming(target: &Target, lattice: &LatticeLink, inbox: &Inbox) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = Instant::now();
        if let Err(e) = consume_once(target, lattice, inbox).await {
            debug!(workload = %target.loaded.ctx.name(), what = %inbox.what, error = %format!("{e:#}"), "consuming queued items failed; retrying");
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(200);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn processed_store(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<kv::Store> {
    let bucket = processed_bucket(lattice);
    lattice_protocol::jetstream::ensure_kv_expiring(
        js,
        &bucket,
        1,
        PROCESSED_MAX_AGE,
        "ids of queued calls and messages that were run",
    )
    .await
    .map_err(|e| anyhow::anyhow!("opening bucket {bucket}: {e:#}"))
}

async fn consume_once(target: &Target, lattice: &LatticeLink, inbox: &Inbox) -> anyhow::Result<()> {
    let js = &lattice.jetstream;
    let l = &lattice.lattice;
    queue_stream_ready(js, l).await?;
    let processed = processed_store(js, l).await?;
    let stream = js
        .get_stream(queue_stream(l))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let durable = &inbox.durable;
    let consumer = stream
        .get_or_create_consumer(
            durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: inbox.filter.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: DELIVERY_TIMEOUT + Duration::from_secs(30),
                max_ack_pending: 1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating consumer {durable}: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    info!(workload = %target.loaded.ctx.name(), what = %inbox.what, "delivering queued items");
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        handle(target, lattice, &processed, message).await?;
    }
    Ok(())
}

/// Runs one queued item, at most once in effect for this component, and settles its message.
async fn handle(
    target: &Target,
    lattice: &LatticeLink,
    processed: &kv::Store,
    message: jetstream::Message,
) -> anyhow::Result<()> {
    let msg = &message;
    let ack = |kind| async move { msg.ack_with(kind).await.map_err(|e| anyhow::anyhow!("{e}")) };
    let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (delivered, stream_seq) = (info.delivered, info.stream_sequence);
    let header = |name| {
        let value = message.headers.as_ref()?.get(name)?.to_string();
        Some(value)
    };
    let ctx = &target.loaded.ctx;
    // The item's id survives requeues (each requeue publishes with a new `Nats-Msg-Id`).
    let id = header(CALL_ID_HEADER)
        .or_else(|| header(MSG_ID_HEADER))
        .unwrap_or_else(|| format!("seq-{stream_seq}"));
    let queued: Queued = match envelope::decode(&message.payload) {
        Ok(q) => q,
        Err(e) => {
            let error = format!("undecodable: {e}");
            let dead = Dead {
                item: None,
                id: &id,
                attempts: delivered,
                error: &error,
            };
            deadletter(target, lattice, &message, dead).await?;
            return ack(AckKind::Term).await;
        }
    };
    let kind = match queued.item {
        QueuedItem::Call(_) => "call",
        QueuedItem::Message(_) => "message",
    };
    if unix_ms(SystemTime::now()) > queued.expires_at_ms {
        warn!(workload = %ctx.name(), %id, kind, "a queued item expired before delivery; dropped");
        return ack(AckKind::Term).await;
    }
    // Per component: a message is run once by each component subscribed to it.
    let key = processed_key(&queued.item, ctx.app.as_str(), ctx.component.as_str(), &id);
    if processed
        .get(&key)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .is_some()
    {
        debug!(%id, kind, "queued item already processed; skipping");
        return ack(AckKind::Ack).await;
    }
    match run(target, &queued.item).await {
        Ok(()) => {
            if let Err(e) = processed.create(&key, bytes::Bytes::new()).await
                && !matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
            {
                warn!(%id, kind, error = %e, "could not record a processed item");
            }
            message
                .double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
        Err(e) if delivered >= i64::from(queued.max_attempts) => {
            warn!(workload = %ctx.name(), %id, kind, attempts = delivered, error = %e, "queued item failed for good; dead-lettered");
            let dead = Dead {
                item: Some(&queued.item),
                id: &id,
                attempts: delivered,
                error: &e,
            };
            deadletter(target, lattice, &message, dead).await?;
            ack(AckKind::Term).await
        }
        Err(e) => {
            let delay = Duration::from_millis(250 << delivered.clamp(0, 7)).min(MAX_BACKOFF);
            debug!(%id, kind, attempt = delivered, error = %e, ?delay, "queued item failed; will retry");
            ack(AckKind::Nak(Some(delay))).await
        }
    }
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
    message: &jetstream::Message,
    dead: Dead<'_>,
) -> anyhow::Result<()> {
    let Dead {
        item,
        id,
        attempts,
        error,
    } = dead;
    let (js, l) = (&lattice.jetstream, &lattice.lattice);
    js.get_or_create_stream(stream::Config {
        name: deadletter_stream(l),
        subjects: vec![deadletter_stream_subjects(l)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the dead-letter stream: {e}"))?;
    // The queue message's own headers (its link, its attempts allowed, its queue subject), then
    // what happened. Its `Nats-Msg-Id` is new for every requeue, so an item dead-lettered again
    // is kept again; for a message, made per component like its processed key, so that a
    // message two subscribers failed is kept for each.
    let ctx = &target.loaded.ctx;
    let mut headers = message.headers.clone().unwrap_or_default();
    if let (Some(item), Some(msg_id)) = (item, headers.get(MSG_ID_HEADER).map(ToString::to_string))
    {
        let dedup = processed_key(item, ctx.app.as_str(), ctx.component.as_str(), &msg_id);
        headers.insert(MSG_ID_HEADER, dedup.as_str());
    }
    headers.insert(CALL_ID_HEADER, id);
    headers.insert(ATTEMPTS_HEADER, attempts.to_string().as_str());
    headers.insert(ERROR_HEADER, error.replace(['\r', '\n'], " ").as_str());
    let subject = deadletter_subject(l, ctx.app.as_str(), ctx.component.as_str());
    js.publish_with_headers(subject, headers, message.payload.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .await
        .map_err(|e| anyhow::anyhow!("dead-lettering: {e}"))?;
    Ok(())
}
