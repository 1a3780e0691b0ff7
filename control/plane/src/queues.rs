//! Queued delivery for the operator: `ctl get queues`, `ctl get deadletters`, `ctl requeue`, and
//! the `dead-lettered` events.
//!
//! What hosts know (their outboxes: pending, oldest age, dropped and expired totals) arrives in
//! their heartbeats; what the hub knows is read here from JetStream: the target's durable
//! consumer for what is in flight, the dead-letter stream for what failed for good. The worker
//! hands these functions a snapshot of the heartbeats and runs them in a task of their own, so a
//! slow JetStream answer never holds up heartbeats or other requests.
//!
//! Requeue is at least once and once in effect: a dead letter is republished with a new
//! `Nats-Msg-Id` (JetStream's duplicate window would otherwise drop it) and its call id, then
//! deleted; a requeue interrupted between the two leaves the call in both places, and the
//! target runs it once because its processed-ids bucket is keyed by the call id.
//! A requeued item expires its link's `ttl` after the requeue (the default ttl when the link
//! is no longer deployed): one dead-lettered because it expired would otherwise expire again.
//! A requeued item leaves its lane, so its sender's signature no longer covers it: the control
//! plane signs it with its operator key, which targets trust for items outside lanes. A dead
//! letter the target refused before running it (forged, malformed, too large: it carries
//! `Lattice-Dead-Reason`) is not put back: it would not verify, and it was never a sender's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, consumer, context, stream};
use futures::StreamExt;
use lattice_protocol::envelope::{self, Reply};
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::jetstream::headers_without;
use lattice_protocol::keys::KeyPair;
use lattice_protocol::messages::{EventKind, Heartbeat};
use lattice_protocol::names::{AppName, ComponentName, HostId, LatticeName};
use lattice_protocol::queue::ops::{
    DeadLetter, HostOutbox, LinkOutboxStats, LinkQueue, LinkSelector, QueueLink, RequeueReply,
    RequeueRequest,
};
use lattice_protocol::queue::{
    ATTEMPTS_HEADER, CALL_ID_HEADER, ConsumerName, DEAD_REASON_HEADER, ERROR_HEADER, LANE_HEADERS,
    LINK_HEADER, MSG_ID_HEADER, QUEUE_SUBJECT_HEADER, Queued, QueuedItem, SIGNATURE_HEADER,
    SIGNER_HEADER, Signed, deadletter_stream, queue_stream,
};
use lattice_protocol::subject::Subject;
use tracing::{debug, info};

use crate::events::Events;

/// The most dead letters one request reads.
const MAX_DEAD_LETTERS: usize = 10_000;

/// One host's outbox report, as of its last heartbeat.
#[derive(Debug, Clone)]
pub(crate) struct OutboxReport {
    pub(crate) host: HostId,
    pub(crate) name: String,
    pub(crate) stats: Vec<LinkOutboxStats>,
    pub(crate) reported_secs_ago: u64,
}

fn hub_error(what: &str, e: impl std::fmt::Display) -> WireError {
    WireError::new(
        ErrorCode::Unavailable,
        format!(
            "reading {what} from the hub's JetStream failed ({e}); retry, and check the hub's nats-server has JetStream enabled"
        ),
    )
}

/// `ctl get queues`: every queued link deployed, reported by a host, or with dead letters.
pub(crate) async fn queues(
    js: &jetstream::Context,
    lattice: &LatticeName,
    deployed: BTreeSet<QueueLink>,
    reports: Vec<OutboxReport>,
) -> Reply<Vec<LinkQueue>> {
    let mut links: BTreeMap<QueueLink, LinkQueue> = BTreeMap::new();
    let entry = |links: &mut BTreeMap<QueueLink, LinkQueue>, link: &QueueLink| {
        links.entry(link.clone()).or_insert_with(|| LinkQueue {
            link: link.clone(),
            in_flight: None,
            dead_lettered: 0,
            hosts: Vec::new(),
            note: String::new(),
        });
    };
    for link in &deployed {
        entry(&mut links, link);
    }
    for report in reports {
        for stats in report.stats {
            entry(&mut links, &stats.link);
            if let Some(l) = links.get_mut(&stats.link) {
                l.hosts.push(HostOutbox {
                    host: report.host.clone(),
                    name: report.name.clone(),
                    stats,
                    reported_secs_ago: report.reported_secs_ago,
                });
            }
        }
    }
    let mut note = String::new();
    match read_dead_letters(js, lattice, None).await {
        Ok((dead, truncated)) => {
            for (d, _) in dead {
                let Some(link) = d.link else { continue };
                entry(&mut links, &link);
                if let Some(l) = links.get_mut(&link) {
                    l.dead_lettered += 1;
                }
            }
            if truncated {
                note = format!("dead letters counted among the first {MAX_DEAD_LETTERS} only");
            }
        }
        Err(e) => note = e.message,
    }
    // In flight is the target's consumer's: read once per target.
    let targets: BTreeSet<(AppName, ComponentName)> = links
        .keys()
        .map(|l| (l.app.clone(), l.target.clone()))
        .collect();
    let queue = js.get_stream_no_info(queue_stream(lattice)).await;
    let mut in_flight: BTreeMap<(AppName, ComponentName), Option<u64>> = BTreeMap::new();
    for (app, target) in targets {
        let n = match &queue {
            Ok(stream) => match stream
                .consumer_info(ConsumerName::calls(&app, &target).to_string())
                .await
            {
                Ok(info) => Some(info.num_pending + info.num_ack_pending as u64),
                Err(e)
                    if matches!(
                        e.kind(),
                        context::ConsumerInfoErrorKind::NotFound
                            | context::ConsumerInfoErrorKind::StreamNotFound
                    ) =>
                {
                    None
                }
                Err(e) => {
                    note = hub_error("the queue consumers", e).message;
                    None
                }
            },
            Err(_) => None,
        };
        in_flight.insert((app, target), n);
    }
    Ok(links
        .into_values()
        .map(|mut l| {
            l.in_flight = in_flight
                .get(&(l.link.app.clone(), l.link.target.clone()))
                .copied()
                .flatten();
            l.hosts.sort_by(|a, b| a.name.cmp(&b.name));
            l.note.clone_from(&note);
            l
        })
        .collect())
}

/// `ctl get deadletters LINK`.
pub(crate) async fn dead_letters(
    js: &jetstream::Context,
    lattice: &LatticeName,
    link: &LinkSelector,
) -> Reply<Vec<DeadLetter>> {
    let (dead, _) = read_dead_letters(js, lattice, Some(link)).await?;
    Ok(dead.into_iter().map(|(d, _)| d).collect())
}

/// The ttl a requeued item gets when its link is no longer deployed (its own is not known):
/// the manifest's default for a link without `ttl`.
pub(crate) const REQUEUE_DEFAULT_TTL: Duration = lattice_manifest::model::DEFAULT_QUEUE_TTL;

/// `ctl requeue LINK [--id ...]`. `ttls` are the deployed queued links' `ttl`s: a requeued item
/// expires that long after the requeue (else [`REQUEUE_DEFAULT_TTL`]), not at its first
/// expiry, which may have passed (then it would be dead-lettered again at once). Each is signed
/// with `key`, the operator's. Refused, before anything is put back, when a chosen dead letter
/// was refused by its target as forged or malformed.
pub(crate) async fn requeue(
    js: &jetstream::Context,
    lattice: &LatticeName,
    req: &RequeueRequest,
    ttls: &BTreeMap<QueueLink, Duration>,
    key: &KeyPair,
) -> Reply<RequeueReply> {
    let (dead, _) = read_dead_letters(js, lattice, Some(&req.link)).await?;
    let wanted: BTreeSet<&str> = req.ids.iter().map(String::as_str).collect();
    let chosen: Vec<_> = dead
        .into_iter()
        .filter(|(d, _)| wanted.is_empty() || wanted.contains(d.call_id.as_str()))
        .collect();
    let found: BTreeSet<String> = chosen.iter().map(|(d, _)| d.call_id.clone()).collect();
    let not_found = wanted
        .iter()
        .filter(|id| !found.contains(**id))
        .map(|id| id.to_string())
        .collect();
    if let Some((dead, message)) = chosen
        .iter()
        .find(|(_, m)| m.headers.get(DEAD_REASON_HEADER).is_some())
    {
        let reason = message
            .headers
            .get(DEAD_REASON_HEADER)
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(WireError::new(
            ErrorCode::InvalidInput,
            format!(
                "dead letter {} was refused by its target before it ran ({reason}: {}); it was not sent by a host of this lattice as it is and would be refused again, so nothing was requeued; requeue the others by id (`--id`)",
                dead.call_id, dead.error
            ),
        ));
    }
    let dlq = js
        .get_stream_no_info(deadletter_stream(lattice))
        .await
        .map_err(|e| hub_error("the dead-letter stream", e))?;
    let mut requeued = Vec::new();
    for (dead, message) in chosen {
        let subject = requeue_subject(&message)?;
        // Out of its lane: its lane's receiver already counts it as handled, so it is
        // deduplicated by its id instead.
        let dropped: Vec<&str> = [
            MSG_ID_HEADER,
            ATTEMPTS_HEADER,
            ERROR_HEADER,
            SIGNER_HEADER,
            SIGNATURE_HEADER,
        ]
        .into_iter()
        .chain(LANE_HEADERS)
        .collect();
        let mut headers = headers_without(Some(&message.headers), &dropped);
        headers.insert(CALL_ID_HEADER, dead.call_id.as_str());
        let msg_id = uuid::Uuid::new_v4().to_string();
        headers.insert(MSG_ID_HEADER, msg_id.as_str());
        let ttl = dead
            .link
            .as_ref()
            .and_then(|l| ttls.get(l))
            .copied()
            .unwrap_or(REQUEUE_DEFAULT_TTL);
        let body = fresh_expiry(&message.payload, ttl);
        let link = headers
            .get(LINK_HEADER)
            .map(ToString::to_string)
            .unwrap_or_default();
        let (signer, signature) = Signed {
            subject: &subject,
            msg_id: &msg_id,
            call_id: &dead.call_id,
            link: &link,
            body: &body,
            ..Signed::default()
        }
        .sign(key);
        headers.insert(SIGNER_HEADER, signer.as_str());
        headers.insert(SIGNATURE_HEADER, signature.as_str());
        js.publish_with_headers(subject, headers, body)
            .await
            .map_err(|e| hub_error("the queue stream (publishing)", e))?
            .await
            .map_err(|e| hub_error("the queue stream (publishing)", e))?;
        // Published first, deleted second: a failure in between leaves a copy here, never none.
        dlq.delete_message(dead.sequence)
            .await
            .map_err(|e| hub_error("the dead-letter stream (deleting)", e))?;
        info!(call = %dead.call_id, link = %req.link, "dead letter requeued");
        requeued.push(dead.call_id);
    }
    Ok(RequeueReply {
        requeued,
        not_found,
    })
}

/// `payload` (a [`Queued`] envelope) expiring `ttl` from now; as it is when it cannot be decoded
/// (the target dead-letters it again as undecodable).
fn fresh_expiry(payload: &bytes::Bytes, ttl: Duration) -> bytes::Bytes {
    match envelope::decode::<Queued>(payload) {
        Ok(mut queued) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            queued.expires_at_ms = u64::try_from((now + ttl).as_millis()).unwrap_or(u64::MAX);
            envelope::encode(&queued).into()
        }
        Err(_) => payload.clone(),
    }
}

/// Where a dead letter goes back to: the queue subject it came from (its header, which every
/// dead letter carries, else its envelope's).
fn requeue_subject(message: &StreamMessage) -> Result<String, WireError> {
    if let Some(subject) = message.headers.get(QUEUE_SUBJECT_HEADER) {
        return Ok(subject.to_string());
    }
    match envelope::decode::<Queued>(&message.payload) {
        Ok(q) => Ok(q.subject),
        Err(_) => Err(WireError::new(
            ErrorCode::BadMessage,
            format!(
                "dead letter {} names no queue subject (no {QUEUE_SUBJECT_HEADER} header, undecodable envelope), so it cannot be put back; inspect it with `lattice ctl get deadletters`",
                message.sequence
            ),
        )),
    }
}

/// The dead letters of `link` (all when `None`), oldest first, with their raw messages; and
/// whether there were more than [`MAX_DEAD_LETTERS`].
async fn read_dead_letters(
    js: &jetstream::Context,
    lattice: &LatticeName,
    link: Option<&LinkSelector>,
) -> Result<(Vec<(DeadLetter, StreamMessage)>, bool), WireError> {
    let mut dlq = match js.get_stream(deadletter_stream(lattice)).await {
        Ok(s) => s,
        Err(e) if stream_missing(&e) => {
            // Nothing was ever dead-lettered.
            return Ok((Vec::new(), false));
        }
        Err(e) => return Err(hub_error("the dead-letter stream", e)),
    };
    let state = dlq
        .info()
        .await
        .map_err(|e| hub_error("the dead-letter stream", e))?
        .state
        .clone();
    // Matched by their `Lattice-Link` header rather than by subject: a dead message is kept on
    // its subscriber's subject, while its link names the publisher.
    let filter = Subject::all_dead_letters(lattice).to_string();
    let mut out = Vec::new();
    let mut seq = state.first_sequence.max(1);
    while seq <= state.last_sequence && state.messages > 0 {
        if out.len() >= MAX_DEAD_LETTERS {
            return Ok((out, true));
        }
        let message = match dlq.get_first_raw_message_by_subject(&filter, seq).await {
            Ok(m) => m,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(hub_error("the dead-letter stream", e)),
        };
        seq = message.sequence + 1;
        let dead = describe(&message);
        if link.is_none_or(|l| dead.link.as_ref().is_some_and(|d| l.matches(d))) {
            out.push((dead, message));
        }
    }
    Ok((out, false))
}

fn stream_missing(e: &context::GetStreamError) -> bool {
    matches!(e.kind(), context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// What a dead letter's headers and envelope say.
fn describe(message: &StreamMessage) -> DeadLetter {
    let header = |name: &str| message.headers.get(name).map(|v| v.to_string());
    let call_id = header(CALL_ID_HEADER)
        .or_else(|| header(MSG_ID_HEADER))
        .unwrap_or_else(|| format!("seq-{}", message.sequence));
    let function = match envelope::decode::<Queued>(&message.payload).map(|q| q.item) {
        Ok(QueuedItem::Call(call)) => format!("{}.{}", call.interface, call.function),
        Ok(QueuedItem::Message(m)) => format!("message on {}", m.subject),
        Err(_) => String::new(),
    };
    DeadLetter {
        sequence: message.sequence,
        call_id,
        link: header(LINK_HEADER).and_then(|l| l.parse().ok()),
        at_ms: u64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        attempts: header(ATTEMPTS_HEADER)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        function,
        error: header(ERROR_HEADER).unwrap_or_default(),
    }
}

/// Publishes a `dead-lettered` event for every dead letter that arrives from now on, until
/// aborted (the worker runs it while it leads). Follows the dead-letter stream with an ordered
/// consumer starting after its last message as of now; waits for the stream while there is none.
pub(crate) async fn watch_dead_letters(
    client: async_nats::Client,
    lattice: LatticeName,
    events: Events,
) {
    let js = jetstream::new(client.clone());
    // Dead letters stored before this leader started were announced by an earlier one (or
    // nobody listened); `get queues` counts them either way.
    let mut next: Option<u64> = None;
    loop {
        if let Err(e) = follow(&js, &client, &lattice, &mut next, &events).await {
            debug!(error = %e, "following the dead-letter stream; retrying");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn follow(
    js: &jetstream::Context,
    client: &async_nats::Client,
    lattice: &LatticeName,
    next: &mut Option<u64>,
    events: &Events,
) -> anyhow::Result<()> {
    let mut dlq = match js.get_stream(deadletter_stream(lattice)).await {
        Ok(s) => s,
        Err(e) if stream_missing(&e) => {
            // No stream yet: whatever it will hold is new.
            next.get_or_insert(1);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let last = dlq.info().await?.state.last_sequence;
    let start = *next.get_or_insert(last + 1);
    let consumer = dlq
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: Subject::all_dead_letters(lattice).to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        *next = Some(info.stream_sequence + 1);
        let raw = StreamMessage {
            subject: message.subject.clone(),
            sequence: info.stream_sequence,
            headers: message.headers.clone().unwrap_or_default(),
            payload: message.payload.clone(),
            time: info.published,
        };
        let dead = describe(&raw);
        let link = dead
            .link
            .as_ref()
            .map_or_else(|| "a queued link".to_string(), ToString::to_string);
        let text = format!(
            "call {} on {link} dead-lettered after {} attempt(s): {}; `lattice ctl get deadletters {link}` lists it, `lattice ctl requeue {link}` retries it",
            dead.call_id, dead.attempts, dead.error
        );
        let app = dead.link.as_ref().map(|l| &l.app);
        events.emit(EventKind::DeadLettered, app, None, text);
    }
    Ok(())
}

/// The `queue-dropped` and `queue-expired` events a heartbeat calls for: calls counted in its
/// per-link totals since `previous` (the same host's last heartbeat this leader heard). Totals
/// restart at 0 with the host, so a host that restarted (or started after `leading_since`, unix
/// seconds) counts from 0; one first heard of that started earlier gives no events (this leader
/// cannot tell what is new, and `get queues` shows the totals).
pub(crate) fn outbox_losses(
    previous: Option<&Heartbeat>,
    hb: &Heartbeat,
    leading_since: u64,
) -> Vec<(EventKind, QueueLink, String)> {
    let baseline: Option<&[LinkOutboxStats]> = match previous {
        Some(p) if p.started_at == hb.started_at => Some(&p.queues),
        Some(_) => Some(&[]),
        None if hb.started_at >= leading_since => Some(&[]),
        None => None,
    };
    let Some(baseline) = baseline else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for now in &hb.queues {
        let before = baseline.iter().find(|b| b.link == now.link);
        let dropped =
            now.dropped_total - before.map_or(0, |b| b.dropped_total).min(now.dropped_total);
        let expired =
            now.expired_total - before.map_or(0, |b| b.expired_total).min(now.expired_total);
        if dropped > 0 {
            out.push((
                EventKind::QueueDropped,
                now.link.clone(),
                format!(
                    "{dropped} queued call(s) on {} dropped on host {}: its outbox for the link was full (on_full: drop_oldest); raise the link's `capacity` or restore the link to the hub",
                    now.link, hb.name
                ),
            ));
        }
        if expired > 0 {
            out.push((
                EventKind::QueueExpired,
                now.link.clone(),
                format!(
                    "{expired} queued call(s) on {} expired on host {} before delivery (their ttl passed); raise the link's `ttl` if outages last longer",
                    now.link, hb.name
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(started_at: u64, totals: &[(u64, u64)]) -> Heartbeat {
        Heartbeat {
            host: HostId::new("h").expect("valid"),
            name: "edge-1".into(),
            labels: BTreeMap::new(),
            started_at,
            sent_at_ms: 0,
            clock_offset_ms: 0,
            version: String::new(),
            assignment_revision: 0,
            interval_secs: 1,
            workloads: Vec::new(),
            last_refusal: None,
            stopping: false,
            queues: totals
                .iter()
                .map(|(dropped, expired)| LinkOutboxStats {
                    link: "a/s->t".parse().expect("valid"),
                    pending: 0,
                    oldest_age_ms: None,
                    dropped_total: *dropped,
                    expired_total: *expired,
                })
                .collect(),
            join_token: None,
        }
    }

    fn kinds(events: &[(EventKind, QueueLink, String)]) -> Vec<(EventKind, String)> {
        events
            .iter()
            .map(|(k, _, m)| (*k, m.split(' ').next().unwrap_or_default().to_string()))
            .collect()
    }

    #[test]
    fn growth_of_the_totals_is_announced_once() {
        let before = hb(10, &[(1, 0)]);
        let after = hb(10, &[(3, 2)]);
        assert_eq!(
            kinds(&outbox_losses(Some(&before), &after, 0)),
            [
                (EventKind::QueueDropped, "2".into()),
                (EventKind::QueueExpired, "2".into())
            ]
        );
        assert!(outbox_losses(Some(&after), &after, 0).is_empty());
    }

    #[test]
    fn a_restarted_host_counts_from_zero() {
        let before = hb(10, &[(5, 5)]);
        let restarted = hb(20, &[(1, 0)]);
        assert_eq!(
            kinds(&outbox_losses(Some(&before), &restarted, 0)),
            [(EventKind::QueueDropped, "1".into())]
        );
    }

    #[test]
    fn a_host_first_heard_of_is_announced_only_when_it_started_after_the_leader() {
        let old = hb(10, &[(5, 0)]);
        assert!(outbox_losses(None, &old, 100).is_empty());
        assert_eq!(outbox_losses(None, &old, 5).len(), 1);
    }
}
