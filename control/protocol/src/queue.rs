//! Queued delivery on the wire: the JetStream names queued calls travel through, the headers
//! they carry, and the envelope of one queued call. The host's outbox forwarder and target
//! consumers, and the control plane's queue commands (`ctl get queues`, `ctl get deadletters`,
//! `ctl requeue`), use these and nothing else.
//!
//! ```text
//!   sender host outbox ──> stream LATTICE_<l>_queue, subject lattice.<l>.q.<app>.<target>
//!                               │ durable consumer `queue-<app>-<target>` per target
//!                               v
//!                         target component ──(max attempts failed)──> LATTICE_<l>_deadletter,
//!                               │                                     lattice.<l>.dlq.<app>.<target>
//!                               v
//!                         KV LATTICE_<l>_processed: ids already run (exactly once in effect)
//! ```

use serde::{Deserialize, Serialize};

use crate::names::LatticeName;
use crate::rpc::RpcCall;

/// Header: JetStream's deduplication id of a stream message (unique per publish attempt chain).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// Header: the call's own id, kept across requeues (the processed-ids key). Absent on messages
/// published before requeue existed: then the `Nats-Msg-Id` is the call's id.
pub const CALL_ID_HEADER: &str = "Lattice-Call-Id";
/// Header: the sending link, `app/source -> target`.
pub const LINK_HEADER: &str = "Lattice-Link";
/// Header: the delivery attempts the link allows.
pub const MAX_ATTEMPTS_HEADER: &str = "Lattice-Max-Attempts";
/// Header (dead letters): the attempts made.
pub const ATTEMPTS_HEADER: &str = "Lattice-Attempts";
/// Header (dead letters): the last error.
pub const ERROR_HEADER: &str = "Lattice-Error";

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

/// The KV bucket of the ids of calls that were run.
pub fn processed_bucket(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_processed")
}

/// What one queued call carries, in an outbox entry and in the streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedCall {
    /// Delivery attempts before dead-lettering.
    pub max_attempts: u32,
    /// Unix ms after which the call is not worth running.
    pub expires_at_ms: u64,
    /// The call.
    pub call: RpcCall,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_nest_under_their_streams() {
        let l = LatticeName::new("edge").expect("valid");
        assert_eq!(queue_stream(&l), "LATTICE_edge_queue");
        assert_eq!(queue_subject(&l, "app", "sink"), "lattice.edge.q.app.sink");
        assert!(
            queue_subject(&l, "a", "b")
                .starts_with(queue_stream_subjects(&l).trim_end_matches('>'))
        );
        assert!(
            deadletter_subject(&l, "a", "b")
                .starts_with(deadletter_stream_subjects(&l).trim_end_matches('>'))
        );
    }
}
