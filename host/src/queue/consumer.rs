//! The consumer layer: [`consume`] starts, for each inbox a workload has (its call subject when
//! it is a target of queued calls, each of its subscriptions when it consumes queued messages),
//! one durable consumer of the queue stream, run by one host at a time: the host that holds the
//! inbox's lease pulls it with many items in flight, hands each message to its lane
//! ([`super::lanes`], which unpacks bundles and runs items in lane order through
//! [`super::run`]), remembers each lane's state once per chunk of messages, then acknowledges
//! the chunk with one acknowledgement (the consumer acknowledges all messages up to the one
//! acknowledged, `AckPolicy::All`), short of any item still waiting in its lane. Per message
//! (one item, or a bundle of a lane's items), the stream's delivery of it and no other
//! JetStream operation, where one-at-a-time delivery paid four round trips in turn.
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
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use lattice_protocol::assignment::{QueueInbox, Workload};
use lattice_protocol::keys::PublicKey;
use lattice_protocol::lease::Claim;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{ConsumerName, leases_bucket, queue_stream};
use lattice_protocol::subject::Subject;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info};

use super::MAX_BACKOFF;
use super::lanes::{Ctx, Lanes, take};
use super::run::{Delivery, Target};
use super::stream::{processed_store, purge_settled, queue_stream_ready};
use crate::backoff::Backoff;
use crate::caps::LatticeLink;
use crate::caps::calls::Loaded;

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

/// How often the hub tells an idle pull it is alive.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// How long a delivered item may stay unacknowledged before it is delivered again: its run, and
/// the rest of its chunk.
const DELIVERY_ACK_WAIT: Duration = Duration::from_secs(90);

/// One durable consumer of the queue stream.
#[derive(Debug, Clone)]
struct Inbox {
    /// Its durable name.
    durable: ConsumerName,
    /// The stream subjects it takes (wildcards allowed).
    filter: Subject,
    /// What it delivers, for logs: `calls`, or `messages on <subscription>`.
    what: String,
}

/// Starts delivering the queued calls and messages `w` consumes to `loaded`'s component (none
/// when its assignment names it no queue target); delivery stops when the handles are dropped.
///
/// Items run only when a host of the lattice signed them (one holding an assignment signed by
/// an operator of `trusted`), or, requeued, an operator of `trusted` (see `check.rs`).
///
/// Fails when it consumes messages but does not export `wasmcloud:messaging/handler`.
pub fn consume(
    loaded: &Arc<Loaded>,
    lattice: &LatticeLink,
    w: &Workload,
    trusted: &[PublicKey],
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
    let target = Arc::new(Target::new(
        loaded,
        inbox.messages && !w.subscriptions.is_empty(),
        trusted,
    )?);
    Ok(inboxes
        .into_iter()
        .map(|inbox| {
            let (target, lattice) = (target.clone(), lattice.clone());
            let stop = CancellationToken::new();
            let worker = tokio::spawn({
                let stop = stop.clone();
                async move { keep_consuming(&target, &lattice, &inbox, &stop).await }
            });
            // Dropping the handle asks the worker to stop between two items, so that what ran
            // is remembered and acknowledged, rather than aborting it in the middle of a chunk
            // (whose items the next host would run again).
            AbortOnDropHandle::new(tokio::spawn(async move {
                let _stop = stop.drop_guard();
                let _ = worker.await;
            }))
        })
        .collect())
}

/// The consumers `w` needs for what it consumes.
fn inboxes(l: &LatticeName, w: &Workload, inbox: QueueInbox) -> Vec<Inbox> {
    let (app, component) = (&w.app, &w.component);
    let mut out = Vec::new();
    if inbox.calls {
        out.push(Inbox {
            durable: ConsumerName::calls(app, component),
            filter: Subject::queued_calls(l, app, component),
            what: "calls".into(),
        });
    }
    if inbox.messages {
        out.extend(w.subscriptions.iter().map(|s| Inbox {
            durable: ConsumerName::messages(app, component, s),
            filter: Subject::queued_messages(l, s),
            what: format!("messages on {s}"),
        }));
    }
    out
}

/// Runs one consumer, reconnecting with backoff, until `stop`.
async fn keep_consuming(
    target: &Target,
    lattice: &LatticeLink,
    inbox: &Inbox,
    stop: &CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), MAX_BACKOFF);
    // Per task, not per host: two versions of a workload on one host must not share it. Kept
    // across tries: a lease this task lost while no one else took it is its own again at once.
    let holder = format!("{} {}", lattice.host, uuid::Uuid::new_v4());
    while !stop.is_cancelled() {
        let started = Instant::now();
        if let Err(e) = consume_leased(target, lattice, inbox, &holder, stop).await {
            debug!(workload = %target.loaded.ctx.name(), what = %inbox.what, error = %format!("{e:#}"), "consuming queued items failed; retrying");
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        backoff.wait(stop).await;
    }
}

/// Delivers `inbox`'s items while `holder` holds its lease (waiting for it first).
/// Returns `Ok` when `stop` came.
async fn consume_leased(
    target: &Target,
    lattice: &LatticeLink,
    inbox: &Inbox,
    holder: &str,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let (js, l) = (&lattice.jetstream, &lattice.lattice);
    queue_stream_ready(lattice).await?;
    let bucket = lattice_protocol::jetstream::Bucket {
        name: &leases_bucket(l),
        history: 1,
        max_age: Duration::ZERO,
        description: "the host delivering each queue consumer's items",
    };
    let leases = lattice_protocol::jetstream::open_kv(js, bucket, &lattice.storage).await?;
    let mut claim = Claim::new(&leases, inbox.durable.as_str(), holder, LEASE_TTL);
    let lease = loop {
        if let Some(lease) = claim.try_acquire().await? {
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
    // While this host delivers, what it settled leaves the stream (room for new items).
    let _purger = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(purge_settled(
        lattice.clone(),
        inbox.filter.to_string(),
        stop.clone(),
    )));
    let lanes = Lanes::open(js, l, &lattice.storage, &inbox.durable, &target.trusted).await?;
    info!(workload = %target.loaded.ctx.name(), what = %inbox.what, "delivering queued items");
    // A lost lease halts delivery as a stop does: what ran is remembered before this returns,
    // so that the next holder (this task at once, when no one else took the lease) reads the
    // lanes as they are, not while a committer left behind still writes them.
    let halt = stop.child_token();
    let receiving = receive(target, lattice, consumer, lanes, &halt);
    tokio::pin!(receiving);
    tokio::select! {
        result = &mut receiving => return result,
        _ = leased.wait_for(|held| !held) => halt.cancel(),
    }
    receiving.await?;
    anyhow::bail!(
        "lost the lease on {}: another host may deliver its items now",
        inbox.durable
    )
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
    let durable = inbox.durable.as_str();
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
            durable_name: Some(durable.to_string()),
            filter_subject: inbox.filter.to_string(),
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
    let processed = processed_store(lattice).await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        // Two missed (a pull whose hub node died, on nats-server 2.9 left waiting for good)
        // end this consumer, and the next reads it again from its acknowledgement floor.
        .heartbeat(PULL_HEARTBEAT)
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
    let (commits, committer) = committer(lanes.store());
    // The first message with an item left unsettled when `stop` came.
    let mut unfinished = None;
    // The consumer is new (see `take_over`): its deliveries are numbered from 1.
    let mut next_delivery = 1;
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
        let mut failed = None;
        for message in chunk {
            if stop.is_cancelled() {
                break;
            }
            let taken = match message.map_err(|e| anyhow::anyhow!("{e}")) {
                Ok(message) => match Delivery::of(message)
                    .and_then(|d| in_order(&mut next_delivery, d.consumer_seq).map(|()| d))
                {
                    Ok(delivery) => {
                        take(&ctx, &mut lanes, &mut unfinished, delivery, &mut done).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = taken {
                failed = Some(e);
                break;
            }
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
        if let Some(e) = failed {
            // What ran is remembered before the consumer starts again (the stream's leader
            // died, say): started again from the acknowledgement floor with the lanes' older
            // states, it would run those items a second time.
            drop(commits);
            committer.await??;
            return Err(e);
        }
    }
}

/// Whether delivery number `seq` may be taken: no delivery before it is missing (`next` is the
/// number expected). Deliveries lost in transit
/// (with the connection to a hub node that died, while a pull's batch was on its way) leave a
/// gap in the consumer's numbers, and the consumer goes on with later ones: acknowledging one
/// of those would acknowledge the lost ones too (`AckPolicy::All`), and their items would never
/// run. So the consumer is read again from its acknowledgement floor instead (its lanes know
/// the items that ran). A number seen again (a new consumer leader delivering anew) is a copy.
fn in_order(next: &mut u64, seq: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        seq <= *next,
        "deliveries {next} to {} of the consumer were lost in transit; reading it again from its \
         acknowledgement floor",
        seq - 1
    );
    *next = (*next).max(seq + 1);
    Ok(())
}

/// How long the committer keeps trying to write lane states that the hub does not take (a
/// clustered bucket electing a new leader after its node died): the items ran, and giving up
/// would have the next consumer run them again.
const REMEMBER_FOR: Duration = Duration::from_secs(60);

/// Writes each lane's latest state, all at once; the writes that fail are tried again (the same
/// latest states) for up to [`REMEMBER_FOR`].
async fn remember(kv: &kv::Store, changes: HashMap<String, bytes::Bytes>) -> anyhow::Result<()> {
    let give_up = tokio::time::Instant::now() + REMEMBER_FOR;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut left: Vec<(String, bytes::Bytes)> = changes.into_iter().collect();
    loop {
        let writes = left.iter().map(|(key, value)| kv.put(key, value.clone()));
        let outcomes = futures::future::join_all(writes).await;
        let mut failed = None;
        left = left
            .into_iter()
            .zip(outcomes)
            .filter_map(|(change, outcome)| {
                let e = outcome.err()?;
                failed = Some(format!("remembering lane {}: {e}", change.0));
                Some(change)
            })
            .collect();
        let Some(error) = failed else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= give_up {
            anyhow::bail!("{error} (tried for {}s)", REMEMBER_FOR.as_secs());
        }
        tracing::warn!(%error, left = left.len(), "lane states not written yet; trying again");
        backoff.sleep().await;
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
            remember(&kv, changes).await?;
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

#[cfg(test)]
mod tests {
    use super::in_order;

    #[test]
    fn a_missing_delivery_stops_the_consumer_and_a_repeated_one_is_taken() {
        let mut next = 1;
        for seq in [1, 2, 3, 2, 3, 4] {
            in_order(&mut next, seq).expect("in order or a repeat");
        }
        assert_eq!(next, 5);
        let gap = in_order(&mut next, 9).expect_err("deliveries 5 to 8 are missing");
        assert!(gap.to_string().contains("deliveries 5 to 8"), "{gap}");
        assert_eq!(next, 5, "a refused delivery moves nothing");
    }
}
