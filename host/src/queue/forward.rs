//! The forwarder: moves outbox entries, oldest first, to the hub's queue stream and removes them
//! once the stream acknowledged them. It knows nothing of calls or messages: each entry's lane
//! ([`Lane`](lattice_protocol::queue::Lane)) names its stream subject (`bundle.rs`).
//!
//! Each entry carries its lane, its lane sequence and the lane's floor (see "Lanes" in
//! [`lattice_protocol::queue`]): the oldest entry of the lane still awaiting the stream's
//! acknowledgement in this pass, or the entry itself. Lanes whose entries were published without
//! an acknowledgement ("uncertain") get a marker once a pass has found them with nothing left to
//! publish (their entries expired or were dropped meanwhile), so the target does not wait for
//! them; after a restart every lane the outbox knows gets one, since what was uncertain before
//! is not known.
//!
//! Every message it publishes (an entry, a bundle, a marker) is signed with the host's key over
//! its subject, ids, link, lane headers and body ("Signatures" in [`lattice_protocol::queue`]):
//! one signature per message, so a bundle of 64 entries costs one.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use lattice_protocol::envelope;
use lattice_protocol::keys::KeyPair;
use lattice_protocol::messages::{Event, EventKind};
use lattice_protocol::queue::{
    LANE_COUNT_HEADER, LANE_FLOOR_HEADER, LANE_HEADER, LANE_MARKER_HEADER, LANE_SEQ_HEADER,
    LINK_HEADER, LaneId, MSG_ID_HEADER, SIGNATURE_HEADER, SIGNER_HEADER, Signed, bundle_msg_id,
    encode_bundle,
};
use lattice_protocol::subject::Subject;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::bundle::{Group, bundle, lane_subject};
use super::outbox::{Outbox, OutboxError, Sequence};
use super::stream::queue_stream_ready;
use super::waiting::Waiting;
use super::{BATCH, MAX_BACKOFF};
use crate::backoff::Backoff;
use crate::caps::LatticeLink;

/// The forwarder: outbox → hub stream, until aborted.
pub(super) async fn forward(
    outbox: Outbox,
    waiting: Waiting,
    lattice: LatticeLink,
    wake: Arc<Notify>,
    key: Arc<KeyPair>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), MAX_BACKOFF);
    // Whether the stream is known to exist: checked again only after a failure, so that a hub
    // slow to answer API requests does not hold up publishing.
    let mut ready = false;
    let mut uncertain = Uncertain::default();
    // Whether the stream last refused entries for being full (said once, not per retry).
    let mut full = false;
    loop {
        if !uncertain.loaded {
            match outbox.lanes().await {
                Ok(lanes) => uncertain.after_restart(lanes),
                Err(e) => warn!(error = %e, "reading the outbox's lanes"),
            }
        }
        match drain(
            &outbox,
            &waiting,
            &lattice,
            &key,
            &mut ready,
            &mut uncertain,
        )
        .await
        {
            Ok(()) => {
                backoff.reset();
                if std::mem::take(&mut full) {
                    info!("the hub's queue stream takes queued entries again");
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            Err(e) => {
                ready = false;
                let error = format!("{e:#}");
                if is_stream_full(&error) {
                    if !std::mem::replace(&mut full, true) {
                        stream_full(&lattice, &error).await;
                    }
                } else {
                    debug!(%error, "forwarding queued entries failed; retrying");
                }
                backoff.sleep().await;
            }
        }
    }
}

/// Whether a forwarding error is the queue stream refusing entries at its limit (`discard: new`).
fn is_stream_full(error: &str) -> bool {
    [
        "maximum bytes",
        "maximum messages",
        "insufficient resources",
        "resource limits",
    ]
    .iter()
    .any(|m| error.contains(m))
}

/// Says that the hub's queue stream is full: a warning, and a `queue-stream-full` event for
/// `lattice ctl watch`. The entries stay in the outbox and go once the stream has room.
async fn stream_full(lattice: &LatticeLink, error: &str) {
    let message = format!(
        "the hub's queue stream refused queued entries from host {}: it is full ({error}); they \
         wait in the host's outbox and go when targets consume the stream: check `lattice ctl \
         get queues`, or raise `--queue-max-bytes` on the control plane and hosts",
        lattice.host
    );
    warn!(%error, "the hub's queue stream is full: queued entries wait in the outbox");
    let event = Event {
        at_ms: lattice.clock.local_now_ms(),
        kind: EventKind::QueueStreamFull,
        app: None,
        host: Some(lattice.host.clone()),
        message,
    };
    let subject = Subject::events(&lattice.lattice).to_string();
    if let Err(e) = lattice
        .client
        .publish(subject, envelope::encode(&event).into())
        .await
    {
        debug!(error = %e, "event not published");
    }
}

/// Entries published and not yet acknowledged by the stream (nats.go's default for async
/// publish is 4,000): enough to keep the link busy across a round trip.
const WINDOW: usize = 4096;
/// Acknowledged entries removed from the outbox per operation.
const REMOVE_CHUNK: usize = 1024;
/// Removals in progress at once; the outbox's writer commits them together.
const REMOVALS: usize = 8;

/// A message published (one entry or a bundle), its acknowledgement awaited.
struct InFlight {
    /// Its entries' outbox sequences and stream keys.
    entries: Vec<(Sequence, String)>,
    /// Its lane, highest lane sequence and entry count.
    lane: (String, u64, usize),
    ack: PublishAckFuture,
}

/// Lanes with entries published without an acknowledgement, by the highest such lane sequence;
/// each gets a marker once a pass finds nothing of it left to publish (see the module docs).
#[derive(Default)]
struct Uncertain {
    lanes: HashMap<String, u64>,
    /// Whether the outbox's lanes were read since the forwarder started.
    loaded: bool,
}

impl Uncertain {
    /// After a restart, every lane is uncertain: what was is not known.
    fn after_restart(&mut self, lanes: Vec<(String, u64)>) {
        for (lane, next) in lanes {
            self.add(lane, next.saturating_sub(1));
        }
        self.loaded = true;
    }

    fn add(&mut self, lane: String, seq: u64) {
        let highest = self.lanes.entry(lane).or_default();
        *highest = (*highest).max(seq);
    }

    /// The window's entries were published but not acknowledged.
    fn add_window(&mut self, window: &mut VecDeque<InFlight>) {
        for InFlight {
            lane: (lane, highest, _),
            ..
        } in window.drain(..)
        {
            self.add(lane, highest);
        }
    }
}

/// Each lane's id ([`LaneId`]) and in-flight lane sequences, oldest first: the front is the
/// lane's floor.
type LaneFloors = HashMap<String, (String, VecDeque<u64>)>;

/// Forwards everything the outbox holds, in sequence order, until nothing is left that was not
/// published and acknowledged.
///
/// Pipelined: entries are published while the acknowledgements of up to [`WINDOW`] earlier ones
/// are awaited, and acknowledged entries are removed in chunks by tasks of their own, so neither
/// the round trip to the hub nor the outbox's fsync stalls the stream of publishes. An entry is
/// removed only once the stream has it. After a failure, everything not yet acknowledged is
/// published again from the oldest (the stream drops copies by `Nats-Msg-Id` within its
/// duplicate window; the target's processed ids catch the rest), so order per link holds.
async fn drain(
    outbox: &Outbox,
    waiting: &Waiting,
    lattice: &LatticeLink,
    key: &KeyPair,
    ready: &mut bool,
    uncertain: &mut Uncertain,
) -> anyhow::Result<()> {
    let mut removals: VecDeque<JoinHandle<Result<(), OutboxError>>> = VecDeque::new();
    let mut acked: Vec<(Sequence, String)> = Vec::new();
    let mut window: VecDeque<InFlight> = VecDeque::with_capacity(WINDOW);
    let mut pass = Pass {
        outbox,
        waiting,
        lattice,
        key,
        acked: &mut acked,
        removals: &mut removals,
        window: &mut window,
        floors: LaneFloors::new(),
        uncertain,
    };
    let mut result = pass.publish_all(ready).await;
    if result.is_ok() {
        result = pass.mark_uncertain().await;
    }
    // Whatever was in flight when the pass stopped may or may not be in the stream.
    pass.uncertain.add_window(pass.window);
    drop(pass);
    // What the stream acknowledged is removed even after a failure, and every removal is done
    // before the next drain peeks from the oldest entry again.
    if !acked.is_empty() {
        removals.push_back(remove(outbox, waiting, std::mem::take(&mut acked)));
    }
    let mut removal_failed = None;
    for removal in removals {
        if let Err(e) = removal
            .await
            .map_err(|e| OutboxError::Storage(e.to_string()))
            .and_then(|r| r)
        {
            removal_failed = Some(e);
        }
    }
    result?;
    match removal_failed {
        Some(e) => Err(anyhow::anyhow!(
            "removing forwarded entries from the outbox: {e}"
        )),
        None => Ok(()),
    }
}

/// One pass over the outbox: what it published and what the stream acknowledged.
struct Pass<'a> {
    outbox: &'a Outbox,
    waiting: &'a Waiting,
    lattice: &'a LatticeLink,
    /// The host's key, which signs every message.
    key: &'a KeyPair,
    acked: &'a mut Vec<(Sequence, String)>,
    removals: &'a mut VecDeque<JoinHandle<Result<(), OutboxError>>>,
    window: &'a mut VecDeque<InFlight>,
    floors: LaneFloors,
    uncertain: &'a mut Uncertain,
}

impl Pass<'_> {
    /// Lane `lane`'s id on the wire.
    fn lane_id(&self, lane: &str) -> String {
        // From the lane's text as stored: its hash is over those bytes.
        LaneId::of_text(&self.outbox.id().simple().to_string(), lane).to_string()
    }

    async fn publish_all(&mut self, ready: &mut bool) -> anyhow::Result<()> {
        let l = &self.lattice.lattice;
        let mut cursor: Option<Sequence> = None;
        loop {
            let batch = match cursor {
                None => self.outbox.peek(BATCH).await?,
                Some(after) => self.outbox.peek_after(after, BATCH).await?,
            };
            if batch.is_empty() {
                if self.window.is_empty() {
                    return Ok(());
                }
                // Nothing more to publish for now: settle what is in flight, then look again.
                while !self.window.is_empty() {
                    self.settle_oldest().await?;
                }
                continue;
            }
            if !*ready {
                queue_stream_ready(self.lattice).await?;
                *ready = true;
            }
            cursor = batch.last().map(|(seq, _)| *seq);
            let (groups, unroutable) = bundle(l, batch);
            self.acked.extend(unroutable);
            for group in groups {
                self.publish(group).await?;
                if self.acked.len() >= REMOVE_CHUNK {
                    if self.removals.len() >= REMOVALS
                        && let Some(oldest) = self.removals.pop_front()
                    {
                        oldest
                            .await
                            .map_err(|e| OutboxError::Storage(e.to_string()))??;
                    }
                    self.removals.push_back(remove(
                        self.outbox,
                        self.waiting,
                        std::mem::take(self.acked),
                    ));
                }
            }
        }
    }

    /// Publishes one message: an entry, or a bundle of consecutive entries of one lane.
    async fn publish(&mut self, group: Group) -> anyhow::Result<()> {
        let Group {
            subject, entries, ..
        } = group;
        let (first, count) = (&entries[0].1, entries.len());
        let mut headers = HeaderMap::new();
        let ids: Vec<String> = entries.iter().map(|(_, e)| e.id.to_string()).collect();
        let msg_id = if count == 1 {
            ids[0].clone()
        } else {
            bundle_msg_id(&ids[0], count)
        };
        headers.insert(MSG_ID_HEADER, msg_id.as_str());
        headers.insert(LINK_HEADER, first.stream_key.as_str());
        if !self.floors.contains_key(&first.lane) {
            let id = self.lane_id(&first.lane);
            self.floors
                .insert(first.lane.clone(), (id, VecDeque::new()));
        }
        let (id, in_flight) = self.floors.get_mut(&first.lane).expect("inserted");
        let floor = in_flight.front().copied().unwrap_or(first.lane_seq);
        in_flight.extend(entries.iter().map(|(_, e)| e.lane_seq));
        // Published again, with a floor that speaks for what went before.
        self.uncertain.lanes.remove(&first.lane);
        let (seq, floor) = (first.lane_seq.to_string(), floor.to_string());
        let count_text = if count > 1 {
            count.to_string()
        } else {
            String::new()
        };
        headers.insert(LANE_HEADER, id.as_str());
        headers.insert(LANE_SEQ_HEADER, seq.as_str());
        headers.insert(LANE_FLOOR_HEADER, floor.as_str());
        if count > 1 {
            headers.insert(LANE_COUNT_HEADER, count_text.as_str());
        }
        let lane_id = id.clone();
        let highest = first.lane_seq + count as u64 - 1;
        let lane = (first.lane.clone(), highest, count);
        let payload = if count == 1 {
            first.payload.clone()
        } else {
            let items = ids
                .iter()
                .zip(&entries)
                .map(|(id, (_, e))| (id.as_str(), &e.payload[..]));
            bytes::Bytes::from(encode_bundle(items))
        };
        let signed = Signed {
            subject: &subject,
            msg_id: &msg_id,
            link: first.stream_key.as_str(),
            lane: &lane_id,
            seq: &seq,
            count: &count_text,
            floor: &floor,
            body: &payload,
            ..Signed::default()
        };
        sign(&mut headers, self.key, &signed);
        if self.window.len() >= WINDOW {
            self.settle_oldest().await?;
        }
        let published = self
            .lattice
            .jetstream
            .publish_with_headers(subject, headers, payload)
            .await;
        if published.is_err() {
            // Maybe sent before the failure was seen.
            self.uncertain.add(lane.0.clone(), lane.1);
        }
        let ack = published.context("publishing queued entries")?;
        self.window.push_back(InFlight {
            entries: entries
                .into_iter()
                .map(|(seq, e)| (seq, e.stream_key))
                .collect(),
            lane,
            ack,
        });
        Ok(())
    }

    /// Awaits the oldest acknowledgement in flight.
    async fn settle_oldest(&mut self) -> anyhow::Result<()> {
        let Some(oldest) = self.window.pop_front() else {
            return Ok(());
        };
        let InFlight { entries, lane, ack } = oldest;
        let failed = match tokio::time::timeout(Duration::from_secs(10), ack).await {
            Ok(Ok(_)) => {
                let (lane, _, count) = &lane;
                if let Some((_, in_flight)) = self.floors.get_mut(lane) {
                    in_flight.drain(..(*count).min(in_flight.len()));
                }
                self.acked.extend(entries);
                return Ok(());
            }
            Ok(Err(e)) => anyhow::anyhow!("the stream refused a queued entry: {e}"),
            Err(_) => anyhow::anyhow!("no acknowledgement from the stream"),
        };
        let (lane, highest, _) = lane;
        self.uncertain.add(lane, highest);
        Err(failed)
    }

    /// Publishes a marker for every uncertain lane (the pass found nothing of them left): every
    /// entry up to the highest published without an acknowledgement was stored or is gone.
    async fn mark_uncertain(&mut self) -> anyhow::Result<()> {
        if self.uncertain.lanes.is_empty() {
            return Ok(());
        }
        let js = &self.lattice.jetstream;
        let l = &self.lattice.lattice;
        // A lane named otherwise than `Queue` names them (or of another lattice) has no subject
        // to mark on.
        self.uncertain
            .lanes
            .retain(|lane, _| lane_subject(l, lane).is_some());
        let mut marked = Vec::new();
        for (lane, highest) in &self.uncertain.lanes {
            let mut headers = HeaderMap::new();
            let (msg_id, lane_id) = (uuid::Uuid::new_v4().to_string(), self.lane_id(lane));
            let floor = (highest + 1).to_string();
            headers.insert(MSG_ID_HEADER, msg_id.as_str());
            headers.insert(LANE_HEADER, lane_id.as_str());
            headers.insert(LANE_FLOOR_HEADER, floor.as_str());
            headers.insert(LANE_MARKER_HEADER, "1");
            let Some(subject) = lane_subject(l, lane) else {
                continue;
            };
            let subject = subject.to_string();
            let signed = Signed {
                subject: &subject,
                msg_id: &msg_id,
                lane: &lane_id,
                floor: &floor,
                marker: "1",
                ..Signed::default()
            };
            sign(&mut headers, self.key, &signed);
            let ack = js
                .publish_with_headers(subject, headers, bytes::Bytes::new())
                .await
                .context("publishing a lane marker")?;
            marked.push((lane.clone(), ack));
        }
        for (lane, ack) in marked {
            match tokio::time::timeout(Duration::from_secs(10), ack).await {
                Ok(Ok(_)) => {
                    debug!(%lane, "marked a lane whose unacknowledged entries are gone");
                    self.uncertain.lanes.remove(&lane);
                }
                Ok(Err(e)) => anyhow::bail!("the stream refused a lane marker: {e}"),
                Err(_) => anyhow::bail!("no acknowledgement from the stream for a lane marker"),
            }
        }
        Ok(())
    }
}

/// Adds the signer and the signature of `signed` (what `headers` and the body say) by `key`.
fn sign(headers: &mut HeaderMap, key: &KeyPair, signed: &Signed<'_>) {
    let (signer, signature) = signed.sign(key);
    headers.insert(SIGNER_HEADER, signer.as_str());
    headers.insert(SIGNATURE_HEADER, signature.as_str());
}

/// Removes forwarded entries from the outbox in a task of its own.
fn remove(
    outbox: &Outbox,
    waiting: &Waiting,
    done: Vec<(Sequence, String)>,
) -> JoinHandle<Result<(), OutboxError>> {
    let (outbox, waiting) = (outbox.clone(), waiting.clone());
    tokio::spawn(async move {
        let (seqs, keys): (Vec<Sequence>, Vec<String>) = done.into_iter().unzip();
        outbox.remove(&seqs).await?;
        waiting.forwarded(keys);
        Ok(())
    })
}
