//! Queued delivery on the wire: the JetStream names queued calls and messages travel through,
//! the headers they carry, and the envelope of one queued item. The host's outbox forwarder and
//! target consumers, and the control plane's queue commands (`ctl get queues`,
//! `ctl get deadletters`, `ctl requeue`), use these and nothing else.
//!
//! ```text
//!   sender host outbox ──> stream LATTICE_<l>_queue
//!                            calls:    lattice.<l>.q.<app>.<target>
//!                            messages: lattice.<l>.q.@msg.<subject>
//!                               │ durable consumers: `queue-<app>-<target>` per call target,
//!                               │ `queue-<app>-<component>-msg-<hash>` per subscription
//!                               v
//!                         target component ──(max attempts failed)──> LATTICE_<l>_deadletter,
//!                               │                                     lattice.<l>.dlq.<app>.<component>
//!                               v
//!                         KV LATTICE_<l>_lanes: per consumer and lane, the last sequence run
//!                         KV LATTICE_<l>_processed: ids of requeued items already run
//!                         KV LATTICE_<l>_queue_leases: which host consumes for a target
//! ```
//!
//! **Lanes.** Items travel in lanes: one sender's outbox, one link, one stream subject. The
//! sender numbers each lane's items 1, 2, 3, ... ([`LANE_SEQ_HEADER`]) and says with each one
//! its floor ([`LANE_FLOOR_HEADER`]): every item of the lane numbered below it was stored in the
//! stream before this one was published, or will never come (dropped or expired at the sender).
//! The receiver keeps one [`LaneState`] per lane instead of one record per item: an item at or
//! below the last one run is a copy; the next number runs; a higher one runs once the floors
//! seen prove the items between it and the last one run will not come, and waits for them
//! otherwise (a publish lost in transit and published again lands after later ones). A
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
//! Messages share the call stream under [`MESSAGE_TOKEN`], which no app can be named (app names
//! hold only letters, digits, `-` and `_`), so a message subject never reads as an app's calls.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::names::LatticeName;
use crate::rpc::RpcCall;

/// Header: JetStream's deduplication id of a stream message (unique per publish attempt chain).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// Header: the call's (or message's) own id, kept across requeues (the processed-ids key), on
/// dead letters and requeued items. A forwarded item goes without: its `Nats-Msg-Id` is its id.
pub const CALL_ID_HEADER: &str = "Lattice-Call-Id";
/// Header: the sending link, `app/source -> target` (`target` is `messaging-nats` for
/// messages).
pub const LINK_HEADER: &str = "Lattice-Link";
/// Header (dead letters): the queue-stream subject the item was queued on, so that a requeue
/// can put it back there.
pub const QUEUE_SUBJECT_HEADER: &str = "Lattice-Queue-Subject";
/// Header (dead letters): the attempts made.
pub const ATTEMPTS_HEADER: &str = "Lattice-Attempts";
/// Header (dead letters): the last error.
pub const ERROR_HEADER: &str = "Lattice-Error";

/// Header: the item's lane, `<sender outbox id>.<hash of the lane>` ([`lane_id`]). Absent on
/// requeued items and on items from senders that predate lanes: those are deduplicated by id.
pub const LANE_HEADER: &str = "Lattice-Lane";
/// Header: the item's sequence in its lane (from 1).
pub const LANE_SEQ_HEADER: &str = "Lattice-Lane-Seq";
/// Header: the lane's floor when the item was published (see the module docs).
pub const LANE_FLOOR_HEADER: &str = "Lattice-Lane-Floor";
/// Header: present (`1`) on a marker, a message that carries no item, only its lane's floor.
pub const LANE_MARKER_HEADER: &str = "Lattice-Lane-Marker";

/// Header: on a bundle, how many items it carries (see "Bundles" in the module docs); absent
/// on a message of one item.
pub const LANE_COUNT_HEADER: &str = "Lattice-Lane-Count";

/// The most items one bundle carries.
pub const MAX_BUNDLE: usize = 64;
/// The most bytes of item envelopes one bundle carries (an item larger than this goes alone),
/// well under NATS's default 1 MiB message limit.
pub const MAX_BUNDLE_BYTES: usize = 128 * 1024;

/// The headers that place a stream message in its lane: a dead letter put back by `requeue`
/// drops them (it is a new delivery, deduplicated by its id).
pub const LANE_HEADERS: [&str; 5] = [
    LANE_HEADER,
    LANE_SEQ_HEADER,
    LANE_FLOOR_HEADER,
    LANE_MARKER_HEADER,
    LANE_COUNT_HEADER,
];

/// The `Nats-Msg-Id` of a bundle of `count` items whose first item's id is `first`: the same
/// bundle published again is a copy within the stream's duplicate window; one made up otherwise
/// (after a restart) is not, and its receiver's lane skips what already ran.
pub fn bundle_msg_id(first: &str, count: usize) -> String {
    format!("{first}+{count}")
}

/// A bundle's body: each item's id and its envelope ([`Queued`], encoded), in lane order.
pub fn encode_bundle<'a>(items: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let items: Vec<(&str, &serde_bytes::Bytes)> = items
        .into_iter()
        .map(|(id, envelope)| (id, serde_bytes::Bytes::new(envelope)))
        .collect();
    crate::envelope::encode(&items)
}

/// The items of a bundle's body ([`encode_bundle`]): each one's id and envelope, in lane order.
pub fn decode_bundle(
    body: &[u8],
) -> Result<Vec<(String, serde_bytes::ByteBuf)>, crate::envelope::DecodeError> {
    crate::envelope::decode(body)
}

/// The lane an item queued on stream subject `subject` through link `link` travels in, as the
/// sender's outbox names it: the subject, a space, the link (subjects hold no spaces).
pub fn lane_name(subject: &str, link: &str) -> String {
    format!("{subject} {link}")
}

/// The stream subject of lane `lane` ([`lane_name`]); `None` when the lane is not named so (its
/// first word is no subject of [`queue_stream`]).
pub fn lane_subject<'a>(lattice: &LatticeName, lane: &'a str) -> Option<&'a str> {
    let subject = lane.split_once(' ').map_or(lane, |(subject, _)| subject);
    let inside = queue_stream_subjects(lattice);
    subject
        .starts_with(inside.trim_end_matches('>'))
        .then_some(subject)
}

/// A lane's id on the wire and in KV keys: the sender's outbox id (hex) and a hash of the
/// lane's name, both made only of characters KV keys and headers allow.
pub fn lane_id(outbox: &str, lane: &str) -> String {
    let hash = Sha256::digest(lane.as_bytes());
    format!("{outbox}.{}", hex::encode(&hash[..8]))
}

/// The KV bucket of [`LaneState`]s.
pub fn lanes_bucket(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_lanes")
}

/// The key, in [`lanes_bucket`], of lane `lane_id`'s state at consumer `durable`.
pub fn lane_key(durable: &str, lane_id: &str) -> String {
    format!("{durable}.{lane_id}")
}

/// The KV bucket of the leases naming the one host that consumes for each queue consumer (the
/// key is the consumer's name).
pub fn leases_bucket(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_queue_leases")
}

/// What a consumer remembers of one lane (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneState {
    /// The highest sequence run (or dead-lettered, or known gone); 0 before the first.
    pub last: u64,
    /// The highest floor seen.
    pub floor: u64,
}

/// The token after `q.` under which queued messages travel: not a valid app name, so it never
/// collides with [`queue_subject`].
pub const MESSAGE_TOKEN: &str = "@msg";

/// The stream queued calls travel in.
pub fn queue_stream(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_queue")
}

/// The subjects of [`queue_stream`].
pub fn queue_stream_subjects(lattice: &LatticeName) -> String {
    format!("lattice.{lattice}.q.>")
}

/// The subject queued calls to `app`'s `component` travel on.
pub fn queue_subject(lattice: &LatticeName, app: &str, component: &str) -> String {
    format!("lattice.{lattice}.q.{app}.{component}")
}

/// The durable consumer delivering to `app`'s `component`.
pub fn queue_consumer(app: &str, component: &str) -> String {
    format!("queue-{app}-{component}")
}

/// The stream calls that failed `max_attempts` times go to.
pub fn deadletter_stream(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_deadletter")
}

/// The subjects of [`deadletter_stream`].
pub fn deadletter_stream_subjects(lattice: &LatticeName) -> String {
    format!("lattice.{lattice}.dlq.>")
}

/// The subject dead letters of calls to `app`'s `component` are kept on.
pub fn deadletter_subject(lattice: &LatticeName, app: &str, component: &str) -> String {
    format!("lattice.{lattice}.dlq.{app}.{component}")
}

/// The KV bucket of the ids of calls and messages that were run.
pub fn processed_bucket(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_processed")
}

/// The key, in [`processed_bucket`], recording that `app`'s `component` ran `item` with id
/// `id`: for a message `<app>.<component>.<id>`, since each component subscribed to it runs it
/// once; for a call (which has one target) the id itself, as before queued messages existed,
/// so that records written then still count.
pub fn processed_key(item: &QueuedItem, app: &str, component: &str, id: &str) -> String {
    match item {
        QueuedItem::Call(_) => id.to_string(),
        QueuedItem::Message(_) => format!("{app}.{component}.{id}"),
    }
}

/// The subject a message queued for NATS subject `subject` travels on; with a subscription
/// (wildcards `*` and `>` allowed), the filter of its consumer.
pub fn message_subject(lattice: &LatticeName, subject: &str) -> String {
    format!("lattice.{lattice}.q.{MESSAGE_TOKEN}.{subject}")
}

/// The durable consumer delivering the queued messages on `subscription` to `app`'s
/// `component`. Subscriptions hold `.`, `*` and `>`, which consumer names cannot: a hash of it
/// names it (the consumer's filter subject shows the subscription itself).
pub fn message_consumer(app: &str, component: &str, subscription: &str) -> String {
    let hash = Sha256::digest(subscription.as_bytes());
    format!("queue-{app}-{component}-msg-{}", hex::encode(&hash[..8]))
}

/// What one queued call or message carries, in an outbox entry and in the stream.
///
/// Encoded with its item flattened (`{max_attempts, expires_at_ms, subject, call: ..}` or
/// `{.., message: ..}`), so entries written as the call-only envelope of earlier versions
/// still decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Delivery attempts before dead-lettering.
    pub max_attempts: u32,
    /// Unix ms after which the item is not worth delivering.
    pub expires_at_ms: u64,
    /// The queue-stream subject it is forwarded to ([`queue_subject`] or [`message_subject`]).
    /// Empty in entries written before queued messages existed: those are calls, whose subject
    /// follows from their link.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// The call or the message.
    #[serde(flatten)]
    pub item: QueuedItem,
}

/// The payload of a [`Queued`] entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueuedItem {
    /// A one-way call to a component's export.
    Call(RpcCall),
    /// A message published on a queued `wasmcloud:messaging` link, for the components
    /// subscribed to its subject.
    Message(QueuedMessage),
}

/// A queued message: what `wasmcloud:messaging/consumer.publish` was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The NATS subject it was published on.
    pub subject: String,
    /// Its body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Where answers go, if the publisher gave a place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope;
    use crate::names::validate_name;

    #[test]
    fn lanes_name_their_subject_and_make_key_safe_ids() {
        let l = LatticeName::new("edge").expect("valid");
        let lane = lane_name("lattice.edge.q.app.sink", "app/src -> sink");
        assert_eq!(lane_subject(&l, &lane), Some("lattice.edge.q.app.sink"));
        assert_eq!(lane_subject(&l, "app/src -> sink"), None);
        let id = lane_id("0123abcd", &lane);
        assert!(id.starts_with("0123abcd."), "{id}");
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
            "{id}"
        );
        assert_ne!(id, lane_id("0123abcd", &lane_name("s", "other")));
        assert_eq!(
            lane_key("queue-app-sink", &id),
            format!("queue-app-sink.{id}")
        );
    }

    #[test]
    fn bundles_round_trip_their_items_in_order() {
        let items = [
            ("a", &b"\x00one"[..]),
            ("b", &b""[..]),
            ("c", &b"three"[..]),
        ];
        let back = decode_bundle(&encode_bundle(items)).expect("decodes");
        let back: Vec<(&str, &[u8])> = back.iter().map(|(id, b)| (id.as_str(), &b[..])).collect();
        assert_eq!(back, items);
        assert_eq!(bundle_msg_id("a", 3), "a+3");
        // A single item's envelope is no bundle.
        let single = envelope::encode(&Queued {
            max_attempts: 1,
            expires_at_ms: 1,
            subject: String::new(),
            item: QueuedItem::Call(call()),
        });
        assert!(decode_bundle(&single).is_err());
    }

    #[test]
    fn names_nest_under_their_streams() {
        let l = LatticeName::new("edge").expect("valid");
        assert_eq!(queue_stream(&l), "LATTICE_edge_queue");
        assert_eq!(queue_subject(&l, "app", "sink"), "lattice.edge.q.app.sink");
        let inside = |s: String| s.starts_with(queue_stream_subjects(&l).trim_end_matches('>'));
        assert!(inside(queue_subject(&l, "a", "b")));
        assert!(inside(message_subject(&l, "orders.new")));
        assert!(
            deadletter_subject(&l, "a", "b")
                .starts_with(deadletter_stream_subjects(&l).trim_end_matches('>'))
        );
    }

    /// Invariant: no app name can make its call subject a message subject.
    #[test]
    fn the_message_token_is_no_app_name() {
        assert!(validate_name("app", MESSAGE_TOKEN).is_err());
        let l = LatticeName::new("edge").expect("valid");
        assert_eq!(
            message_subject(&l, "orders.>"),
            "lattice.edge.q.@msg.orders.>"
        );
    }

    #[test]
    fn message_consumers_are_valid_names_per_subscription() {
        let a = message_consumer("app", "sink", "orders.>");
        let b = message_consumer("app", "sink", "orders.*");
        assert_ne!(a, b);
        assert!(a.starts_with("queue-app-sink-msg-"), "{a}");
        assert!(!a.contains(['.', '*', '>', ' ']), "{a}");
    }

    fn call() -> RpcCall {
        RpcCall {
            interface: "example:greeter/notifier".into(),
            function: "notify".into(),
            args: vec![0x91, 0xa1, b'x'],
            deadline_ms: 0,
            caller: "app/client".into(),
        }
    }

    #[test]
    fn both_items_round_trip() {
        for item in [
            QueuedItem::Call(call()),
            QueuedItem::Message(QueuedMessage {
                subject: "orders.new".into(),
                body: b"\x00body".to_vec(),
                reply_to: Some("orders.reply".into()),
            }),
        ] {
            let queued = Queued {
                max_attempts: 3,
                expires_at_ms: 42,
                subject: "lattice.edge.q.x.y".into(),
                item,
            };
            let back: Queued = envelope::decode(&envelope::encode(&queued)).expect("decodes");
            assert_eq!(back, queued);
        }
    }

    /// Regression: outbox entries and stream messages written by the call-only envelope
    /// (before queued messages) must still decode, as calls without a subject.
    #[test]
    fn the_call_only_envelope_still_decodes() {
        #[derive(Serialize)]
        struct QueuedCall {
            max_attempts: u32,
            expires_at_ms: u64,
            call: RpcCall,
        }
        let old = envelope::encode(&QueuedCall {
            max_attempts: 5,
            expires_at_ms: 7,
            call: call(),
        });
        let back: Queued = envelope::decode(&old).expect("decodes");
        assert_eq!(
            back,
            Queued {
                max_attempts: 5,
                expires_at_ms: 7,
                subject: String::new(),
                item: QueuedItem::Call(call()),
            }
        );
    }
}
