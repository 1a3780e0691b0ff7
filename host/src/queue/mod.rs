//! Queued delivery of one-way component calls and of messages (links with `delivery: queued`),
//! as one pipeline whose layers call only the layers after them:
//!
//! ```text
//!  capability (caps/calls.rs, caps/messaging.rs)
//!    │ Queue::enqueue / enqueue_message                        enqueue.rs   (+ waiting.rs)
//!    v
//!  outbox: durable local store, group commit, lanes            outbox/      (mod.rs, store.rs)
//!    │ peek / remove
//!    v
//!  forwarder: outbox ──> hub stream, bundles, lane floors      forward.rs   (+ bundle.rs, pure)
//!    │ publish
//!    v
//!  stream: LATTICE_<l>_queue, dead letters, KV buckets         stream.rs
//!    │ pull (the lease holder only)
//!    v
//!  consumer: per inbox, lease, take-over, commit and ack       consumer.rs  (consume, from agent.rs)
//!    │ take
//!    v
//!  check: size, signature, signer, lane headers; else refuse   check.rs
//!    │
//!    v
//!  lanes: copy / run / wait, lane states per sender            lanes/       (mod.rs, decide.rs pure)
//!    │ settle
//!    v
//!  run: the function or handler, retries, dead letter          run.rs
//! ```
//!
//! `stats.rs` reads the outbox for the heartbeat (`Queue::link_stats`). Subjects, headers, lanes,
//! keys and the envelope are in [`lattice_protocol::queue`]; nothing here formats a subject.
//!
//! **Sender.** A queued link's function encodes its call like a cross-host call (an
//! [`RpcCall`](lattice_protocol::rpc::RpcCall), arguments in MessagePack by type); a
//! `wasmcloud:messaging/consumer.publish` on a queued link to `messaging-nats` keeps its subject,
//! body and reply-to. Either is appended, as a [`Queued`](lattice_protocol::queue::Queued)
//! envelope naming the stream subject it goes to, to the host's durable [`outbox::Outbox`]
//! (`<state_dir>/outbox`); the guest gets `ok` once the append is committed (fsync'd), so an
//! acknowledged call or message survives a crash or a cut link. A full link (its `capacity`
//! waiting on this host) refuses with a `queue-full` error (`on_full: refuse`) or drops its
//! oldest waiting entry with a warning (`on_full: drop_oldest`).
//!
//! **Forwarder.** One task per host moves outbox entries, oldest first, to the JetStream stream
//! `LATTICE_<lattice>_queue` (subjects `lattice.<lattice>.q.>`, created when missing) on the
//! subject of each entry's lane (`lattice.<lattice>.q.<app>.<target>` for calls,
//! `lattice.<lattice>.q.@msg.<subject>` for messages), with `Nats-Msg-Id` = the entry's id,
//! and removes them once the stream acknowledged them. Entries that were waiting (a backlog) go
//! in bundles of up to 64 consecutive entries of one lane per stream message ("Bundles" in
//! [`lattice_protocol::queue`]). While the hub is unreachable it retries with backoff (at most
//! 30 s apart), however long that takes; the entries wait in the outbox until their `ttl`.
//!
//! **Target.** Only workloads the assignment names as queue targets consume
//! ([`lattice_protocol::assignment::QueueInbox`]): a target of queued calls through one durable
//! pull consumer on its call subject, a component subscribed through `messaging-nats` through
//! one per subscription (filtered on it, wildcards included). One host at a time pulls each
//! consumer: the holder of its lease in `LATTICE_<lattice>_queue_leases` (the target's other
//! hosts stand by). It takes up to 20,000 items in flight and runs them one at a time, in lane
//! order (one sender's link and subject: the order per sender and target), each in a fresh
//! instance (the called function, or the `wasmcloud:messaging/handler` export). Exactly once in
//! effect, per consumer: each lane's last item run is remembered in the KV bucket
//! `LATTICE_<lattice>_lanes` (kept 30 days), written once per chunk of up to 256 items before
//! they are acknowledged; a copy of an item already run is acknowledged without running, and an
//! item whose predecessors may still come waits for them (see "Lanes" in
//! [`lattice_protocol::queue`]). A failure (a trap, or the function's or handler's own error) is
//! retried in place with backoff, the items behind it waiting; after the link's `max_attempts`
//! it goes, with its last error, to the stream `LATTICE_<lattice>_deadletter` (subject
//! `lattice.<lattice>.dlq.<app>.<component>`). So does an item whose `ttl` passed before it
//! could run (e.g. its target was not running), with the error `expired before delivery: ...`;
//! `ctl requeue` gives it a fresh expiry. A requeued dead letter leaves its lane and keeps its
//! id (`Lattice-Call-Id`) under a new `Nats-Msg-Id`: it is checked against and recorded in the
//! KV bucket `LATTICE_<lattice>_processed` (a call under its id, a message under
//! `<app>.<component>.<id>`), so it is run at most once more in effect. The remaining window: a
//! host that dies after items ran and before their lanes were remembered (at most one chunk)
//! runs them again when the next holder takes over.
//!
//! **Authenticity.** The forwarder signs every stream message with the host's key (items,
//! bundles, markers: one signature per message); `ctl requeue` signs what it puts back with the
//! operator's. A target runs a lane's items only when a host of the lattice (a key holding an
//! assignment signed by a trusted operator) signed them, and keeps each lane's state under that
//! sender, so no other key can move, silence or wedge it; a requeued item only when a trusted
//! operator signed it. Anything else (unsigned, a bad signature, an unknown signer, a malformed
//! lane or bundle, more than `MAX_QUEUED_MESSAGE_BYTES`) is dead-lettered with its reason
//! (`Lattice-Dead-Reason`) and acknowledged (`check.rs`).
//!
//! Queued messages are not republished on their plain NATS subject: a component subscribed to
//! it would otherwise receive each twice (once from NATS, once from the stream). Other NATS
//! clients read them from the stream (`lattice.<lattice>.q.@msg.<subject>`).

use std::time::Duration;

mod bundle;
mod check;
mod consumer;
mod enqueue;
mod forward;
mod lanes;
pub mod outbox;
mod run;
mod stats;
mod stream;
mod waiting;

pub use consumer::consume;
pub use enqueue::{OutboxLimits, Queue};

/// How long processed ids and lane states are remembered: longer than any outage a queued call
/// may wait out.
const PROCESSED_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries forwarded per batch.
const BATCH: usize = 256;
/// The longest wait between two attempts to reach the hub.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The delay before a failed queued item is tried again, by its attempt number.
const ITEM_RETRY: crate::backoff::Backoff =
    crate::backoff::Backoff::new(Duration::from_millis(250), MAX_BACKOFF);
/// How long a delivered call may run.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
