//! Queued delivery on the wire: the JetStream names queued calls and messages travel through,
//! the headers they carry, the envelope of one queued item, lanes and the keys a consumer
//! remembers them under. The host's outbox forwarder and target consumers, and the control
//! plane's queue commands (`ctl get queues`, `ctl get deadletters`, `ctl requeue`), use these and
//! nothing else; the subjects themselves are variants of [`Subject`](crate::subject::Subject).
//!
//! ```text
//!   sender host outbox ──> stream LATTICE_<l>_queue                       (keys.rs: names)
//!                            calls:    lattice.<l>.q.<app>.<target>       Subject::QueuedCalls
//!                            messages: lattice.<l>.q.@msg.<subject>       Subject::QueuedMessages
//!                            in lanes (lane.rs), alone or in bundles (bundle.rs),
//!                            with headers (headers.rs), each item a Queued (item.rs)
//!                               │ durable consumers: ConsumerName, one per call target and
//!                               │ one per subscription (keys.rs)
//!                               v
//!                         target component ──(max attempts failed)──> LATTICE_<l>_deadletter,
//!                               │                                     Subject::DeadLetters
//!                               v
//!                         KV LATTICE_<l>_lanes: LaneKey -> LaneState (lane.rs)
//!                         KV LATTICE_<l>_processed: ProcessedKey of requeued items run (keys.rs)
//!                         KV LATTICE_<l>_queue_leases: which host consumes for a target
//!   operators: ops.rs (outbox stats in heartbeats, `ctl get queues`, dead letters, requeue)
//! ```
//!
//! The files go one way: `item` (the envelope), `headers`, `bundle` and `ops` depend on nothing
//! here; `keys` on `item`; `lane` on `keys` and `ops` (a lane names its link); `sign` on
//! nothing here (it signs header values and a body, whatever they say).
//!
//! **Lanes.** Items travel in lanes ([`Lane`]): one sender's outbox, one link, one stream
//! subject. The sender numbers each lane's items 1, 2, 3, ... ([`LANE_SEQ_HEADER`]) and says with
//! each one its floor ([`LANE_FLOOR_HEADER`]): every item of the lane numbered below it was
//! stored in the stream before this one was published, or will never come (dropped or expired
//! at the sender). The receiver keeps one [`LaneState`] per lane instead of one record per item:
//! an item at or below the last one run is a copy; the next number runs; a higher one runs once
//! the floors seen prove the items between it and the last one run will not come, and waits for
//! them otherwise (a publish lost in transit and published again lands after later ones). A
//! [`LANE_MARKER_HEADER`] message carries only a floor: the sender publishes one when items it
//! had published without an acknowledgement are gone for good, so nothing waits for them.
//!
//! **Bundles.** The sender packs up to [`MAX_BUNDLE`] consecutive items of one lane into one
//! stream message, a bundle: [`LANE_SEQ_HEADER`] is the first item's sequence,
//! [`LANE_COUNT_HEADER`] how many follow it in order, the floor is the bundle's, and the body is
//! [`encode_bundle`]'s (each item's id and envelope). The stream, its acknowledgements and its
//! consumer then do their per-message work once per bundle instead of once per item; the
//! receiver unpacks it and takes each item in its turn as if it had come alone. A message of
//! one item is sent as before: no count, its envelope the body, its id the `Nats-Msg-Id`.
//!
//! **Signatures.** Anyone who may publish on `lattice.<l>.q.>` could otherwise forge lane
//! headers (a jumped sequence would make the receiver take every later item of the lane for a
//! copy). So every stream message carries a signature (sign.rs, [`Signed`]) over its subject,
//! ids, link, lane headers and body: by the sending host's key for what the forwarder publishes
//! (items, bundles, markers), by a trusted operator's key for what `ctl requeue` puts back. The
//! receiver takes a lane message only from a host key that holds an assignment signed by a
//! trusted operator, and keeps each lane's state under its sender ([`LaneKey`]), so a message
//! signed by one host never moves another's lane. What it refuses ([`Refusal`]: unsigned, bad
//! signature, unknown signer, malformed lane or bundle, above [`MAX_QUEUED_MESSAGE_BYTES`]) is
//! dead-lettered with its reason ([`DEAD_REASON_HEADER`]) and acknowledged, and moves no lane.

mod bundle;
mod headers;
mod item;
mod keys;
mod lane;
pub mod ops;
mod sign;

pub use crate::subject::MESSAGE_TOKEN;
pub use bundle::{MAX_BUNDLE, MAX_BUNDLE_BYTES, bundle_msg_id, decode_bundle, encode_bundle};
pub use headers::*;
pub use item::{Queued, QueuedItem, QueuedMessage, TraceContext};
pub use keys::{
    ConsumerName, KeyError, ProcessedKey, deadletter_stream, lanes_bucket, leases_bucket,
    processed_bucket, queue_stream,
};
pub use lane::{Lane, LaneId, LaneKey, LaneState};
pub use sign::{
    DEAD_REASON_HEADER, MAX_QUEUED_MESSAGE_BYTES, Refusal, SIGNATURE_HEADER, SIGNER_HEADER, Signed,
};
