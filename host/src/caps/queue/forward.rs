//! The forwarder: moves outbox entries, oldest first, to the hub's queue stream and removes them
//! once the stream acknowledged them. It knows nothing of calls or messages: each entry's
//! envelope ([`Queued`]) names its stream subject.
//!
//! Each entry carries its lane, its lane sequence and the lane's floor (see "Lanes" in
//! [`lattice_protocol::queue`]): the oldest entry of the lane still awaiting the stream's
//! acknowledgement in this pass, or the entry itself. Lanes whose entries were published without
//! an acknowledgement ("uncertain") get a marker once a pass has found them with nothing left to
//! publish (their entries expired or were dropped meanwhile), so the target does not wait for
//! them; after a restart every lane the outbox knows gets one, since what was uncertain before
//! is not known.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, stream};
use lattice_protocol::envelope;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{
    LANE_FLOOR_HEADER, LANE_HEADER, LANE_MARKER_HEADER, LANE_SEQ_HEADER, LINK_HEADER,
    MSG_ID_HEADER, Queued, lane_id, lane_subject, queue_stream, queue_stream_subjects,
    queue_subject,
};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{BATCH, Counts, MAX_BACKOFF, forget};
use crate::caps::LatticeLink;
use crate::outbox::{Outbox, OutboxEntry, OutboxError, Sequence};

/// Creates the queue stream when missing.
pub(super) async fn queue_stream_ready(
    js: &jetstream::Context,
    lattice: &LatticeName,
) -> anyhow::Result<()> {
    ensure_stream(js, queue_stream(lattice), queue_stream_subjects(lattice)).await
}

/// Creates the stream `name` over `subjects` when missing, as the queue and dead-letter streams
/// are: Limits retention, file storage.
pub(super) async fn ensure_stream(
    js: &jetstream::Context,
    name: String,
    subjects: String,
) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subjects],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the stream {name}: {e}"))?;
    Ok(())
}

/// The forwarder: outbox → hub stream, until aborted.
pub(super) async fn forward(
    outbox: Outbox,
    counts: Counts,
    lattice: LatticeLink,
    wake: Arc<Notify>,
) {
    let mut backoff = Duration::from_millis(200);
    // Whether the stream is known to exist: checked again only after a failure, so that a hub
    // slow to answer API requests does not hold up publishing.
    let mut ready = false;
    let mut uncertain = Uncertain::default();
    loop {
        if !uncertain.loaded {
            match outbox.lanes().await {
                Ok(lanes) => uncertain.after_restart(lanes),
                Err(e) => warn!(error = %e, "reading the outbox's lanes"),
            }
        }
        match drain(&outbox, &counts, &lattice, &mut ready, &mut uncertain).await {
            Ok(()) => {
                backoff = Duration::from_millis(200);
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            Err(e) => {
                ready = false;
                debug!(error = %format!("{e:#}"), retry_in = ?backoff, "forwarding queued entries failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Entries published and not yet acknowledged by the stream (nats.go's default for async
/// publish is 4,000): enough to keep the link busy across a round trip.
const WINDOW: usize = 4096;
/// Acknowledged entries removed from the outbox per operation.
const REMOVE_CHUNK: usize = 1024;
/// Removals in progress at once; the outbox's writer commits them together.
const REMOVALS: usize = 8;

/// An entry published, its acknowledgement awaited.
struct InFlight {
    seq: Sequence,
    stream_key: String,
    /// Its lane and lane sequence (none for entries written before lanes).
    lane: Option<(String, u64)>,
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
        for InFlight { lane, .. } in window.drain(..) {
            if let Some((lane, seq)) = lane {
                self.add(lane, seq);
            }
        }
    }
}

/// Each lane's id ([`lane_id`]) and in-flight lane sequences, oldest first: the front is the
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
    counts: &Counts,
    lattice: &LatticeLink,
    ready: &mut bool,
    uncertain: &mut Uncertain,
) -> anyhow::Result<()> {
    let mut removals: VecDeque<JoinHandle<Result<(), OutboxError>>> = VecDeque::new();
    let mut acked: Vec<(Sequence, String)> = Vec::new();
    let mut window: VecDeque<InFlight> = VecDeque::with_capacity(WINDOW);
    let mut pass = Pass {
        outbox,
        counts,
        lattice,
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
        removals.push_back(remove(outbox, counts, std::mem::take(&mut acked)));
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
    counts: &'a Counts,
    lattice: &'a LatticeLink,
    acked: &'a mut Vec<(Sequence, String)>,
    removals: &'a mut VecDeque<JoinHandle<Result<(), OutboxError>>>,
    window: &'a mut VecDeque<InFlight>,
    floors: LaneFloors,
    uncertain: &'a mut Uncertain,
}

impl Pass<'_> {
    /// Lane `lane`'s id on the wire.
    fn lane_id(&self, lane: &str) -> String {
        lane_id(&self.outbox.id().simple().to_string(), lane)
    }

    async fn publish_all(&mut self, ready: &mut bool) -> anyhow::Result<()> {
        let js = &self.lattice.jetstream;
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
                queue_stream_ready(js, l).await?;
                *ready = true;
            }
            for (seq, entry) in batch {
                cursor = Some(seq);
                let Some(subject) = stream_subject(l, &entry) else {
                    warn!(stream = %entry.stream_key, "dropping a queued entry with no stream subject (undecodable, with a malformed stream key)");
                    self.acked.push((seq, entry.stream_key));
                    continue;
                };
                let mut headers = HeaderMap::new();
                let id = entry.id.to_string();
                headers.insert(MSG_ID_HEADER, id.as_str());
                headers.insert(LINK_HEADER, entry.stream_key.as_str());
                // Entries written before lanes (sequence 0) are deduplicated by id.
                let lane = (entry.lane_seq > 0).then(|| {
                    if !self.floors.contains_key(&entry.lane) {
                        let id = self.lane_id(&entry.lane);
                        self.floors
                            .insert(entry.lane.clone(), (id, VecDeque::new()));
                    }
                    let (id, in_flight) = self.floors.get_mut(&entry.lane).expect("inserted");
                    let floor = in_flight.front().copied().unwrap_or(entry.lane_seq);
                    in_flight.push_back(entry.lane_seq);
                    // Published again, with a floor that speaks for what went before.
                    self.uncertain.lanes.remove(&entry.lane);
                    headers.insert(LANE_HEADER, id.as_str());
                    headers.insert(LANE_SEQ_HEADER, entry.lane_seq.to_string().as_str());
                    headers.insert(LANE_FLOOR_HEADER, floor.to_string().as_str());
                    (entry.lane, entry.lane_seq)
                });
                if self.window.len() >= WINDOW {
                    self.settle_oldest().await?;
                }
                let published = js
                    .publish_with_headers(subject, headers, entry.payload)
                    .await;
                if published.is_err()
                    && let Some((lane, seq)) = &lane
                {
                    // Maybe sent before the failure was seen.
                    self.uncertain.add(lane.clone(), *seq);
                }
                let ack = published.context("publishing a queued entry")?;
                self.window.push_back(InFlight {
                    seq,
                    stream_key: entry.stream_key,
                    lane,
                    ack,
                });
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
                        self.counts,
                        std::mem::take(self.acked),
                    ));
                }
            }
        }
    }

    /// Awaits the oldest acknowledgement in flight.
    async fn settle_oldest(&mut self) -> anyhow::Result<()> {
        let Some(oldest) = self.window.pop_front() else {
            return Ok(());
        };
        let InFlight {
            seq,
            stream_key,
            lane,
            ack,
        } = oldest;
        let failed = match tokio::time::timeout(Duration::from_secs(10), ack).await {
            Ok(Ok(_)) => {
                if let Some((lane, _)) = &lane
                    && let Some((_, in_flight)) = self.floors.get_mut(lane)
                {
                    in_flight.pop_front();
                }
                self.acked.push((seq, stream_key));
                return Ok(());
            }
            Ok(Err(e)) => anyhow::anyhow!("the stream refused a queued entry: {e}"),
            Err(_) => anyhow::anyhow!("no acknowledgement from the stream"),
        };
        if let Some((lane, seq)) = lane {
            self.uncertain.add(lane, seq);
        }
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
        // A lane named otherwise than `Queue` names them has no subject to mark on.
        self.uncertain
            .lanes
            .retain(|lane, _| lane_subject(l, lane).is_some());
        let mut marked = Vec::new();
        for (lane, highest) in &self.uncertain.lanes {
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID_HEADER, uuid::Uuid::new_v4().to_string().as_str());
            headers.insert(LANE_HEADER, self.lane_id(lane).as_str());
            headers.insert(LANE_FLOOR_HEADER, (highest + 1).to_string().as_str());
            headers.insert(LANE_MARKER_HEADER, "1");
            let Some(subject) = lane_subject(l, lane) else {
                continue;
            };
            let subject = subject.to_string();
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

/// Removes forwarded entries from the outbox in a task of its own.
fn remove(
    outbox: &Outbox,
    counts: &Counts,
    done: Vec<(Sequence, String)>,
) -> JoinHandle<Result<(), OutboxError>> {
    let (outbox, counts) = (outbox.clone(), counts.clone());
    tokio::spawn(async move {
        let (seqs, keys): (Vec<Sequence>, Vec<String>) = done.into_iter().unzip();
        outbox.remove(&seqs).await?;
        forget(&counts, keys);
        Ok(())
    })
}

/// Where an entry goes: its lane's subject; for entries written before lanes, the subject its
/// envelope names; for entries written before envelopes named one (calls only), the call
/// subject of its stream key `app/source -> target`.
fn stream_subject(lattice: &LatticeName, entry: &OutboxEntry) -> Option<String> {
    if entry.lane_seq > 0
        && let Some(subject) = lane_subject(lattice, &entry.lane)
    {
        return Some(subject.to_string());
    }
    let queued: Option<Queued> = envelope::decode(&entry.payload).ok();
    if let Some(q) = queued.filter(|q| !q.subject.is_empty()) {
        return Some(q.subject);
    }
    let (from, target) = entry.stream_key.split_once(" -> ")?;
    Some(queue_subject(lattice, from.split_once('/')?.0, target))
}
