//! The headers a queued item's stream message carries (see the module docs of
//! [`crate::queue`] for what lanes and bundles are).

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

/// Header: the item's lane, `<sender outbox id>.<hash of the lane>` ([`LaneId`](super::LaneId)). Absent on
/// requeued items: those are deduplicated by id.
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

/// The headers that place a stream message in its lane: a dead letter put back by `requeue`
/// drops them (it is a new delivery, deduplicated by its id).
pub const LANE_HEADERS: [&str; 5] = [
    LANE_HEADER,
    LANE_SEQ_HEADER,
    LANE_FLOOR_HEADER,
    LANE_MARKER_HEADER,
    LANE_COUNT_HEADER,
];
