//! One inbox's consumer, run by one host at a time: the host that holds the inbox's lease
//! pulls its durable consumer with many items in flight, runs them in lane order
//! ([`super::lanes`]), remembers each lane's state once per chunk of items, then acknowledges
//! the chunk with one acknowledgement (the consumer acknowledges all items up to the one
//! acknowledged, `AckPolicy::All`), short of any item still waiting in its lane. Per message
//! (one item, or a bundle of a lane's items, unpacked here), the stream's delivery of it and no
//! other JetStream operation, where one-at-a-time delivery paid four round trips in turn.
//!
//! **Why a lease.** The target may run on several hosts; if they all pulled, neighbouring items
//! of a lane would run on two hosts at once and the order per sender and target would be lost.
//! The lease (key: the consumer's name, in [`leases_bucket`]) names the one host that pulls;
//! the others stand by and take over when it lets go (its workload stops) or stops renewing.
//!
//! **Taking over.** The new holder recreates the durable consumer from the old one's
//! acknowledgement floor, so it reads every item not known to be done, in stream order, before
//! anything newer: items the previous holder ran but did not acknowledge are copies by their
//! lane's remembered state; the others run in order.
//!
//! **Commits overlap the next chunks.** A chunk's lane states are written, then the chunk is
//! acknowledged, by a committer task while the next chunks run (up to [`COMMITS`] queued, and
//! committed together): the writes' round trips to a busy hub no longer stop delivery. One
//! task, in order, so that a lane's remembered state only moves forward.
//!
//! **What remains.** A host that dies after running items and before their lanes were
//! remembered (the chunks being committed, and the one running) runs them again on takeover.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderName;
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use lattice_protocol::envelope;
use lattice_protocol::lease::Lease;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{
    LANE_COUNT_HEADER, LANE_FLOOR_HEADER, LANE_HEADER, LANE_MARKER_HEADER, LANE_SEQ_HEADER,
    LaneState, lane_key, lanes_bucket, leases_bucket, queue_stream,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::deliver::{
    DELIVERY_ACK_WAIT, Delivery, Inbox, Item, Target, prepare, processed_store, remembering_bucket,
    settle,
};
use super::forward::queue_stream_ready;
use super::lanes::{Lane, Offer, Release};
use crate::caps::LatticeLink;

/// How long an inbox's lease lasts without renewal (renewed every third of it).
const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often a standby host asks for the lease.
const LEASE_POLL: Duration = Duration::from_millis(500);
/// Messages delivered and not yet acknowledged, per consumer: room for messages waiting in their
/// lane behind one published again (a sender keeps up to 4,096 publishes in flight).
const MAX_ACK_PENDING: i64 = 20_000;
/// Messages asked for per pull request.
const PULL_BATCH: usize = 1024;
/// The most messages taken before their lanes are remembered and they are acknowledged.
const CHUNK: usize = 256;
/// Chunks waiting for the committer while the next ones run: the writes' round trips to a busy
/// hub (a millisecond or more) then do not hold up delivery.
const COMMITS: usize = 64;

/// Delivers `inbox`'s items while this host holds its lease (waiting for it first).
/// Returns `Ok` when `stop` came.
pub(super) async fn consume_leased(
    target: &Target,
    lattice: &LatticeLink,
    inbox: &Inbox,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let (js, l) = (&lattice.jetstream, &lattice.lattice);
    queue_stream_ready(js, l).await?;
    let leases = lattice_protocol::jetstream::ensure_kv(
        js,
        &leases_bucket(l),
        1,
        "the host delivering each queue consumer's items",
    )
    .await?;
    // Per task, not per host: two versions of a workload on one host must not share it.
    let holder = format!("{} {}", lattice.host, uuid::Uuid::new_v4());
    let lease = loop {
        if let Some(lease) = Lease::try_acquire(&leases, &inbox.durable, &holder, LEASE_TTL).await?
        {
            break lease;
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(LEASE_POLL) => {}
        }
    };
    let give_back = CancellationToken::new();
    // However this ends (an error, the workload stopping), the lease is given back at once.
    let _give_back = give_back.clone().drop_guard();
    let (mut leased, _keeper) = lease.keep(give_back);
    let consumer = take_over(js, l, inbox).await?;
    let lanes = Lanes::open(js, l, &inbox.durable).await?;
    info!(workload = %target.loaded.ctx.name(), what = %inbox.what, "delivering queued items");
    tokio::select! {
        result = receive(target, lattice, consumer, lanes, stop) => result,
        _ = leased.wait_for(|held| !held) => {
            anyhow::bail!("lost the lease on {}: another host delivers its items now", inbox.durable)
        }
    }
}

/// Recreates `inbox`'s durable consumer from its acknowledgement floor (see the module docs),
/// or creates it.
async fn take_over(
    js: &jetstream::Context,
    l: &LatticeName,
    inbox: &Inbox,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js
        .get_stream(queue_stream(l))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let durable = &inbox.durable;
    let deliver_policy = match stream.consumer_info(durable).await {
        Ok(info) => {
            stream
                .delete_consumer(durable)
                .await
                .map_err(|e| anyhow::anyhow!("taking over consumer {durable}: {e}"))?;
            DeliverPolicy::ByStartSequence {
                start_sequence: info.ack_floor.stream_sequence + 1,
            }
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => DeliverPolicy::All,
        Err(e) => anyhow::bail!("reading consumer {durable}: {e}"),
    };
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: inbox.filter.clone(),
            // One acknowledgement per chunk (see `receive`).
            ack_policy: consumer::AckPolicy::All,
            ack_wait: DELIVERY_ACK_WAIT,
            max_ack_pending: MAX_ACK_PENDING,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating consumer {durable}: {e}"))
}

/// Pulls and delivers until the consumer fails or `stop` (then what ran is remembered and
/// acknowledged, and the rest left to the next host).
async fn receive(
    target: &Target,
    lattice: &LatticeLink,
    consumer: consumer::PullConsumer,
    mut lanes: Lanes,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let processed = processed_store(&lattice.jetstream, &lattice.lattice).await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(Duration::from_secs(15))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chunks = messages.ready_chunks(CHUNK);
    let ctx = Ctx {
        target,
        lattice,
        processed: &processed,
        stop,
    };
    // Earlier chunks' commits, made in order by a task of their own while this chunk runs.
    let (commits, committer) = committer(lanes.kv.clone());
    // The first message with an item left unsettled when `stop` came.
    let mut unfinished = None;
    loop {
        let chunk = tokio::select! {
            biased;
            () = stop.cancelled() => None,
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else {
            // Stopped (or the consumer ended): what ran is remembered and acknowledged first.
            drop(commits);
            return committer.await?;
        };
        let mut done = Vec::with_capacity(chunk.len());
        for message in chunk {
            if stop.is_cancelled() {
                break;
            }
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            take(&ctx, &mut lanes, &mut unfinished, message, &mut done).await?;
        }
        let waiting = match (lanes.first_waiting(), unfinished) {
            (Some(w), Some(u)) => Some(w.min(u)),
            (w, u) => w.or(u),
        };
        let commit = Commit {
            waiting,
            changes: lanes.changes(),
            done,
        };
        if commits.send(commit).await.is_err() {
            // The committer stopped on an error: it says what.
            committer.await??;
            anyhow::bail!("the lane committer stopped");
        }
    }
}

/// One chunk's lane states to remember and messages to acknowledge.
struct Commit {
    /// Each changed lane's state, by key.
    changes: Vec<(String, bytes::Bytes)>,
    /// The messages done with.
    done: Vec<Arc<Delivery>>,
    /// The first message with an item still waiting in its lane, or left unsettled.
    waiting: Option<u64>,
}

/// Starts the task that commits chunks, in order: it remembers their lanes, then acknowledges
/// them, so that after a crash a redelivered copy of an item that ran is known as one. Chunks
/// that queued up meanwhile are committed together (each lane's latest state written once).
/// One task, not one per chunk: two tasks' writes of one lane could land out of order and leave
/// an older state remembered, and a later holder would run again what ran after it.
///
/// Acknowledging a message acknowledges every message before it in the stream
/// (`AckPolicy::All`), so the last message done is acknowledged, short of `waiting`. Its writes
/// are awaited before the acknowledgement is sent.
fn committer(kv: kv::Store) -> (mpsc::Sender<Commit>, JoinHandle<anyhow::Result<()>>) {
    let (commits, mut queued) = mpsc::channel::<Commit>(COMMITS);
    let task = tokio::spawn(async move {
        while let Some(first) = queued.recv().await {
            let mut changes: HashMap<String, bytes::Bytes> = HashMap::new();
            let mut ack: Option<Arc<Delivery>> = None;
            let mut next = Some(first);
            while let Some(Commit {
                changes: these,
                done,
                waiting,
            }) = next
            {
                changes.extend(these);
                let last = done
                    .into_iter()
                    .filter(|d| waiting.is_none_or(|w| d.stream_seq < w))
                    .max_by_key(|d| d.stream_seq);
                if last.as_ref().map(|d| d.stream_seq) > ack.as_ref().map(|d| d.stream_seq) {
                    ack = last;
                }
                next = queued.try_recv().ok();
            }
            let writes = changes.into_iter().map(|(key, value)| {
                let kv = &kv;
                async move {
                    kv.put(&key, value)
                        .await
                        .map_err(|e| anyhow::anyhow!("remembering lane {key}: {e}"))
                }
            });
            futures::future::try_join_all(writes).await?;
            if let Some(last) = ack {
                last.message
                    .ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Ok(())
    });
    (commits, task)
}

/// What running an item needs.
struct Ctx<'a> {
    target: &'a Target,
    lattice: &'a LatticeLink,
    /// Ids of items without a lane (requeued, or from senders that predate lanes).
    processed: &'a kv::Store,
    stop: &'a CancellationToken,
}

/// A message's place in its lane, from its headers.
struct Place {
    lane: String,
    /// Its (first) item's lane sequence.
    seq: u64,
    /// How many items it carries (more than one: a bundle).
    count: u64,
    floor: u64,
    marker: bool,
}

impl Place {
    fn of(message: &jetstream::Message) -> Option<Self> {
        // Names made once: a `&str` name is checked and copied on every lookup, per item.
        const LANE: HeaderName = HeaderName::from_static(LANE_HEADER);
        const SEQ: HeaderName = HeaderName::from_static(LANE_SEQ_HEADER);
        const COUNT: HeaderName = HeaderName::from_static(LANE_COUNT_HEADER);
        const FLOOR: HeaderName = HeaderName::from_static(LANE_FLOOR_HEADER);
        const MARKER: HeaderName = HeaderName::from_static(LANE_MARKER_HEADER);
        let headers = message.headers.as_ref()?;
        let number = |name| {
            headers
                .get(name)
                .and_then(|v| v.as_str().parse::<u64>().ok())
        };
        let marker = headers.get(MARKER).is_some();
        let seq = number(SEQ);
        if seq.is_none() && !marker {
            return None;
        }
        Some(Self {
            lane: headers.get(LANE)?.to_string(),
            seq: seq.unwrap_or(0),
            count: number(COUNT).unwrap_or(1).max(1),
            floor: number(FLOOR).unwrap_or(0),
            marker,
        })
    }
}

/// Takes one message: runs its items (and whatever waited for them) or holds them. The message
/// goes to `acks`, to be acknowledged, once it is taken: one holding an item still waiting in
/// its lane ([`Lanes::first_waiting`]) or left unsettled by a stop (`unfinished`) stays
/// unacknowledged all the same, since acknowledgements stop short of it (see [`committer`]).
async fn take(
    ctx: &Ctx<'_>,
    lanes: &mut Lanes,
    unfinished: &mut Option<u64>,
    message: jetstream::Message,
    acks: &mut Vec<Arc<Delivery>>,
) -> anyhow::Result<()> {
    let delivery = Delivery::of(message)?;
    let Some(place) = Place::of(&delivery.message) else {
        let prepared = prepare(Item::whole(delivery, 0));
        let settled = settle(
            ctx.target,
            ctx.lattice,
            Some(ctx.processed),
            prepared,
            ctx.stop,
        );
        acks.extend(settled.await?);
        return Ok(());
    };
    let lane = lanes.get(&place.lane).await?;
    acks.push(delivery.clone());
    if place.marker {
        lane.floor(place.floor);
        release(ctx, lane, acks, unfinished).await?;
    } else {
        let items = if place.count == 1 {
            vec![Item::whole(delivery, place.seq)]
        } else {
            Item::unbundle(&delivery, place.seq, place.count)
        };
        for item in items {
            match lane.offer(item.seq, place.floor) {
                Offer::Copy => {}
                Offer::Wait => lane.hold(item.seq, item),
                Offer::Run => {
                    let through = item.through;
                    if !run(ctx, item, unfinished).await? {
                        return Ok(());
                    }
                    lane.done(through);
                }
            }
            release(ctx, lane, acks, unfinished).await?;
        }
    }
    Ok(())
}

/// Runs the items of `lane` whose turn came, and hands out held copies of handled ones.
async fn release(
    ctx: &Ctx<'_>,
    lane: &mut Lane<Item>,
    acks: &mut Vec<Arc<Delivery>>,
    unfinished: &mut Option<u64>,
) -> anyhow::Result<()> {
    while let Some(release) = lane.next() {
        match release {
            Release::Copies(copies) => acks.extend(copies.into_iter().map(|c| c.delivery)),
            Release::Run(seq, copies) => {
                let mut copies = copies.into_iter();
                let mut through = seq;
                if let Some(first) = copies.next() {
                    through = through.max(first.through);
                    acks.push(first.delivery.clone());
                    if !run(ctx, first, unfinished).await? {
                        return Ok(());
                    }
                }
                lane.done(through);
                acks.extend(copies.map(|c| c.delivery));
            }
        }
    }
    Ok(())
}

/// Runs an item in its lane's turn (its lane, not an id record, says whether it ran before);
/// `false` when stopped before it was settled: its message is then `unfinished`, not to be
/// acknowledged.
async fn run(ctx: &Ctx<'_>, item: Item, unfinished: &mut Option<u64>) -> anyhow::Result<bool> {
    let stream_seq = item.delivery.stream_seq;
    let settled = settle(ctx.target, ctx.lattice, None, prepare(item), ctx.stop).await?;
    if settled.is_none() {
        *unfinished = Some(unfinished.map_or(stream_seq, |u| u.min(stream_seq)));
    }
    Ok(settled.is_some())
}

/// The lanes one consumer has seen, and their states in [`lanes_bucket`].
struct Lanes {
    kv: kv::Store,
    durable: String,
    open: HashMap<String, Lane<Item>>,
}

impl Lanes {
    async fn open(js: &jetstream::Context, l: &LatticeName, durable: &str) -> anyhow::Result<Self> {
        let what = "per queue consumer and lane, the last item run";
        let kv = remembering_bucket(js, &lanes_bucket(l), what).await?;
        Ok(Self {
            kv,
            durable: durable.to_string(),
            open: HashMap::new(),
        })
    }

    /// Lane `id`, read from the bucket the first time it is seen.
    async fn get(&mut self, id: &str) -> anyhow::Result<&mut Lane<Item>> {
        if !self.open.contains_key(id) {
            let key = lane_key(&self.durable, id);
            let state: LaneState = match self
                .kv
                .get(&key)
                .await
                .map_err(|e| anyhow::anyhow!("reading lane {key}: {e}"))?
            {
                Some(bytes) => envelope::decode(&bytes)
                    .map_err(|e| anyhow::anyhow!("reading lane {key}: {e}"))?,
                None => LaneState::default(),
            };
            self.open.insert(id.to_string(), Lane::new(state));
        }
        Ok(self.open.get_mut(id).expect("inserted above"))
    }

    /// The stream sequence of the first message with an item waiting in its lane.
    fn first_waiting(&self) -> Option<u64> {
        self.open
            .values()
            .flat_map(Lane::held)
            .map(|item| item.delivery.stream_seq)
            .min()
    }

    /// The state of every lane changed since the last call, to write, by key.
    fn changes(&mut self) -> Vec<(String, bytes::Bytes)> {
        let mut out = Vec::new();
        for (id, lane) in &mut self.open {
            if lane.dirty() {
                let value = envelope::encode(&lane.state());
                out.push((lane_key(&self.durable, id), value.into()));
                lane.saved();
            }
        }
        out
    }
}
