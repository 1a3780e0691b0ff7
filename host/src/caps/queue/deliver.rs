//! The target side: a durable consumer per target component delivers queued calls one at a
//! time, skips ids already processed, retries failures and dead-letters what keeps failing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use futures::StreamExt as _;
use lattice_protocol::envelope;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{
    ATTEMPTS_HEADER, CALL_ID_HEADER, ERROR_HEADER, MSG_ID_HEADER, QueuedCall, deadletter_stream,
    deadletter_stream_subjects, deadletter_subject, processed_bucket, queue_consumer, queue_stream,
    queue_subject,
};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use super::forward::queue_stream_ready;
use super::{DELIVERY_TIMEOUT, MAX_BACKOFF, PROCESSED_MAX_AGE, unix_ms};
use crate::caps::LatticeLink;
use crate::caps::calls::{Loaded, deliver};

/// Delivers the queued calls to `loaded`'s component, until the handle is dropped.
pub fn consume(loaded: Arc<Loaded>, lattice: LatticeLink) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = Instant::now();
            if let Err(e) = consume_once(&loaded, &lattice).await {
                debug!(workload = %loaded.ctx.name(), error = %format!("{e:#}"), "consuming queued calls failed; retrying");
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(200);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }))
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
        "ids of queued calls that were run",
    )
    .await
    .map_err(|e| anyhow::anyhow!("opening bucket {bucket}: {e:#}"))
}

async fn consume_once(loaded: &Arc<Loaded>, lattice: &LatticeLink) -> anyhow::Result<()> {
    let js = &lattice.jetstream;
    let l = &lattice.lattice;
    queue_stream_ready(js, l).await?;
    let processed = processed_store(js, l).await?;
    let stream = js
        .get_stream(queue_stream(l))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (app, component) = (&loaded.ctx.app, &loaded.ctx.component);
    let durable = queue_consumer(app.as_str(), component.as_str());
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: queue_subject(l, app.as_str(), component.as_str()),
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
    info!(workload = %loaded.ctx.name(), "delivering queued calls");
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        handle(loaded, lattice, &processed, message).await?;
    }
    Ok(())
}

/// Runs one queued call, at most once in effect, and settles the message.
async fn handle(
    loaded: &Loaded,
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
    // The call's id survives requeues (each requeue publishes with a new `Nats-Msg-Id`).
    let id = header(CALL_ID_HEADER)
        .or_else(|| header(MSG_ID_HEADER))
        .unwrap_or_else(|| format!("seq-{stream_seq}"));
    let queued: QueuedCall = match envelope::decode(&message.payload) {
        Ok(q) => q,
        Err(e) => {
            deadletter(
                loaded,
                lattice,
                &message,
                &id,
                delivered,
                &format!("undecodable: {e}"),
            )
            .await?;
            return ack(AckKind::Term).await;
        }
    };
    if unix_ms(SystemTime::now()) > queued.expires_at_ms {
        warn!(workload = %loaded.ctx.name(), %id, "a queued call expired before delivery; dropped");
        return ack(AckKind::Term).await;
    }
    if processed
        .get(&id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .is_some()
    {
        debug!(%id, "queued call already processed; skipping");
        return ack(AckKind::Ack).await;
    }
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    match deliver(loaded, &queued.call, deadline).await {
        Ok(()) => {
            if let Err(e) = processed.create(&id, bytes::Bytes::new()).await
                && !matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
            {
                warn!(%id, error = %e, "could not record a processed call");
            }
            message
                .double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
        Err(e) if delivered >= i64::from(queued.max_attempts) => {
            warn!(workload = %loaded.ctx.name(), %id, attempts = delivered, error = %e, "queued call failed for good; dead-lettered");
            deadletter(loaded, lattice, &message, &id, delivered, &e.to_string()).await?;
            ack(AckKind::Term).await
        }
        Err(e) => {
            let delay = Duration::from_millis(250 << delivered.clamp(0, 7)).min(MAX_BACKOFF);
            debug!(%id, attempt = delivered, error = %e, ?delay, "queued call failed; will retry");
            ack(AckKind::Nak(Some(delay))).await
        }
    }
}

async fn deadletter(
    loaded: &Loaded,
    lattice: &LatticeLink,
    message: &jetstream::Message,
    id: &str,
    attempts: i64,
    error: &str,
) -> anyhow::Result<()> {
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
    // The queue message's own headers (its link, its attempts allowed), then what happened.
    // Its `Nats-Msg-Id` is new for every requeue, so a call dead-lettered again is kept again.
    let mut headers = message.headers.clone().unwrap_or_default();
    headers.insert(CALL_ID_HEADER, id);
    headers.insert(ATTEMPTS_HEADER, attempts.to_string().as_str());
    headers.insert(ERROR_HEADER, error.replace(['\r', '\n'], " ").as_str());
    let subject = deadletter_subject(l, loaded.ctx.app.as_str(), loaded.ctx.component.as_str());
    js.publish_with_headers(subject, headers, message.payload.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .await
        .map_err(|e| anyhow::anyhow!("dead-lettering: {e}"))?;
    Ok(())
}
