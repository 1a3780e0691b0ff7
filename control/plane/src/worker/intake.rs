//! Heartbeat intake: a heartbeat is believed only when it is signed by the host its subject
//! names and names that host itself ([`lattice_protocol::signed::open_heartbeat`]). Anything
//! else (a bare publish, one signed by another key, one naming another host) is dropped before
//! it reaches the decisions, counted, and reported once per subject as an event, so that a
//! client inventing hosts or speaking for a real one changes nothing and is seen.

use std::collections::BTreeSet;

use lattice_protocol::messages::{EventKind, Heartbeat};
use lattice_protocol::signed::open_heartbeat;
use lattice_protocol::subject::Subject;
use tracing::warn;

use crate::decide::Note;

/// At most this many subjects' refusals are reported (each once); past it refusals are only
/// counted, so that a flood of invented hosts cannot grow memory.
const REPORTED_MAX: usize = 10_000;

/// What the intake makes of a message on a heartbeat subject.
#[derive(Debug)]
pub(super) enum Taken {
    /// Signed by its host: for the decisions.
    Heartbeat(Heartbeat),
    /// Dropped; with the event to publish when this subject's refusal is new.
    Refused(Option<Note>),
}

/// Counts and remembers refused heartbeats.
#[derive(Debug, Default)]
pub(super) struct Intake {
    /// Heartbeats refused by this leadership.
    refused: u64,
    /// Subjects whose refusal was reported.
    reported: BTreeSet<String>,
}

impl Intake {
    /// Opens the heartbeat that arrived on `subject`.
    pub(super) fn take(&mut self, subject: &str, payload: &[u8]) -> Taken {
        let host = match Subject::parse(subject) {
            Ok(Subject::Heartbeat { host, .. }) => Some(host),
            _ => None,
        };
        let why = match &host {
            Some(host) => match open_heartbeat(payload, host) {
                Ok(hb) => return Taken::Heartbeat(hb),
                Err(e) => e.to_string(),
            },
            None => "not a host's heartbeat subject".to_string(),
        };
        self.refused += 1;
        if self.reported.len() >= REPORTED_MAX || !self.reported.insert(subject.to_string()) {
            return Taken::Refused(None);
        }
        warn!(subject, reason = %why, refused = self.refused, "heartbeat dropped: not signed by the host its subject names");
        let message = format!(
            "heartbeat on {subject} dropped ({why}): only a host's own key may speak for it; {} refused so far",
            self.refused
        );
        Taken::Refused(Some(Note {
            kind: EventKind::HeartbeatRefused,
            app: None,
            host,
            message,
        }))
    }
}

#[cfg(test)]
mod tests {
    use lattice_protocol::envelope;
    use lattice_protocol::keys::{KeyPair, KeyRole};
    use lattice_protocol::names::{HostId, LatticeName};
    use lattice_protocol::signed::seal_heartbeat;

    use super::*;

    fn heartbeat(host: &HostId) -> Heartbeat {
        Heartbeat {
            host: host.clone(),
            name: "h".into(),
            labels: Default::default(),
            started_at: 0,
            sent_at_ms: 0,
            version: String::new(),
            assignment_revision: 0,
            interval_secs: 5,
            workloads: Vec::new(),
            last_refusal: None,
            stopping: false,
            queues: Vec::new(),
            join_token: None,
            clock_offset_ms: 0,
        }
    }

    #[test]
    fn only_a_heartbeat_signed_by_its_subjects_host_is_taken_and_refusals_are_reported_once() {
        let lattice = LatticeName::new("default").expect("valid");
        let key = KeyPair::generate(KeyRole::Host);
        let id = HostId::new(key.public_key().to_string()).expect("valid");
        let subject = Subject::heartbeat(&lattice, &id).to_string();
        let mut intake = Intake::default();
        let sealed = seal_heartbeat(&heartbeat(&id), &key);
        assert!(matches!(intake.take(&subject, &sealed), Taken::Heartbeat(hb) if hb.host == id));
        let bare = envelope::encode(&heartbeat(&id));
        let first = intake.take(&subject, &bare);
        assert!(
            matches!(&first, Taken::Refused(Some(n)) if n.kind == EventKind::HeartbeatRefused && n.message.contains("unsigned")),
            "{first:?}"
        );
        assert!(matches!(intake.take(&subject, &bare), Taken::Refused(None)));
        assert_eq!(intake.refused, 2);
    }
}
