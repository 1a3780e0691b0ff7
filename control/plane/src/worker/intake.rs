//! Heartbeat intake: a heartbeat is believed only when it is signed by the host its subject
//! names, or tagged by it for this control plane's key ([`HeartbeatKeys`]: a MAC under a key the
//! two agree, far cheaper to check than the signature), and names that host itself. Anything
//! else (a bare publish, one signed by another key, one naming another host) is dropped before
//! it reaches the decisions, counted, and reported once per subject as an event, so that a
//! client inventing hosts or speaking for a real one changes nothing and is seen.

use std::collections::BTreeSet;

use lattice_protocol::keys::KeyPair;
use lattice_protocol::messages::{EventKind, Heartbeat};
use lattice_protocol::signed::HeartbeatKeys;
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

/// Opens heartbeats; counts and remembers the refused ones.
#[derive(Debug)]
pub(super) struct Intake {
    /// This control plane's key and the key it shares with each host.
    keys: HeartbeatKeys,
    /// Heartbeats refused by this leadership.
    refused: u64,
    /// Subjects whose refusal was reported.
    reported: BTreeSet<String>,
}

impl Intake {
    /// Opens heartbeats tagged for `key` (the control plane's) by their tag, others by their
    /// signature.
    pub(super) fn new(key: &KeyPair) -> Self {
        Self {
            keys: HeartbeatKeys::new(key),
            refused: 0,
            reported: BTreeSet::new(),
        }
    }

    /// Opens the heartbeat that arrived on `subject`.
    pub(super) fn take(&mut self, subject: &str, payload: &[u8]) -> Taken {
        let host = match Subject::parse(subject) {
            Ok(Subject::Heartbeat { host, .. }) => Some(host),
            _ => None,
        };
        let why = match &host {
            Some(host) => match self.keys.open(payload, host) {
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
    use lattice_protocol::signed::{MacKey, seal_heartbeat};

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
    fn only_a_heartbeat_signed_or_tagged_by_its_subjects_host_is_taken_and_refusals_are_reported_once()
     {
        let lattice = LatticeName::new("default").expect("valid");
        let key = KeyPair::generate(KeyRole::Host);
        let id = HostId::new(key.public_key().to_string()).expect("valid");
        let subject = Subject::heartbeat(&lattice, &id).to_string();
        let control = KeyPair::generate(KeyRole::Operator);
        let mac = MacKey::agree(&key, &control.public_key()).expect("agree");
        let mut intake = Intake::new(&control);
        let signed = seal_heartbeat(&heartbeat(&id), &key, &[]);
        assert!(matches!(intake.take(&subject, &signed), Taken::Heartbeat(hb) if hb.host == id));
        let tagged = seal_heartbeat(&heartbeat(&id), &key, &[mac]);
        assert!(matches!(intake.take(&subject, &tagged), Taken::Heartbeat(hb) if hb.host == id));
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
