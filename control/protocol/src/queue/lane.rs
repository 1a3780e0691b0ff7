//! Lanes and what a receiver remembers of them ("Lanes" in [`crate::queue`]): the lane itself
//! ([`Lane`], as the sender's outbox stores it), its id on the wire ([`LaneId`], the
//! `Lattice-Lane` header), the key of its state in the lanes bucket ([`LaneKey`]) and the state
//! ([`LaneState`]). Each text form is written by `Display` and read by `FromStr`, side by side,
//! byte for byte as before they were types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::keys::{ConsumerName, KeyError};
use super::ops::QueueLink;
use crate::keys::PublicKey;
use crate::subject::Subject;

/// The lane an item travels in: one link's items on one queue-stream subject, from one outbox.
/// Stored in the outbox as `<subject> <link>` (`lattice.edge.q.app.sink app/src -> sink`):
/// subjects hold no spaces, so the first one ends the subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lane {
    /// The queue-stream subject ([`Subject::QueuedCalls`] or [`Subject::QueuedMessages`]).
    pub subject: Subject,
    /// The sending link (`app/source -> target`; `messaging-nats` for messages).
    pub link: QueueLink,
}

impl Lane {
    /// The lane of `link`'s items on `subject`.
    pub fn new(subject: Subject, link: QueueLink) -> Self {
        Self { subject, link }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.subject, self.link.header_value())
    }
}

impl FromStr for Lane {
    type Err = KeyError;

    /// Reads a lane as [`Lane`]'s `Display` writes it, and only so (a lane's id is a hash of
    /// this text, so two spellings of one lane would be two lanes).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KeyError::new("lane", s);
        let (subject, link) = s.split_once(' ').ok_or_else(err)?;
        let subject = Subject::parse(subject).map_err(|_| err())?;
        if !matches!(
            subject,
            Subject::QueuedCalls { .. } | Subject::QueuedMessages { .. }
        ) {
            return Err(err());
        }
        let lane = Lane::new(subject, link.parse().map_err(|_| err())?);
        (lane.to_string() == s).then_some(lane).ok_or_else(err)
    }
}

/// A lane's id on the wire (`Lattice-Lane`) and in lane keys: `<outbox id>.<hash>`, the
/// sender's outbox id in hex and the first 8 bytes of the SHA-256 of the lane's text, both made
/// only of characters KV keys and headers allow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LaneId {
    outbox: String,
    hash: [u8; 8],
}

impl LaneId {
    /// The id of `lane` in the outbox whose id is `outbox` (hex, e.g. a UUID's simple form).
    pub fn new(outbox: &str, lane: &Lane) -> Self {
        Self::of_text(outbox, &lane.to_string())
    }

    /// The id of the lane whose text (as the outbox stores it) is `lane`.
    pub fn of_text(outbox: &str, lane: &str) -> Self {
        let digest = Sha256::digest(lane.as_bytes());
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&digest[..8]);
        Self {
            outbox: outbox.to_string(),
            hash,
        }
    }
}

impl fmt::Display for LaneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.outbox, hex::encode(self.hash))
    }
}

impl FromStr for LaneId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KeyError::new("lane id", s);
        let (outbox, hash) = s.split_once('.').ok_or_else(err)?;
        // An outbox id is a UUID's simple form (32); bounded so that a key made of it stays
        // well inside what KV takes.
        if outbox.is_empty()
            || outbox.len() > MAX_OUTBOX_ID
            || !outbox.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(err());
        }
        let bytes = hex::decode(hash).map_err(|_| err())?;
        let hash: [u8; 8] = bytes.try_into().map_err(|_| err())?;
        let id = Self {
            outbox: outbox.to_string(),
            hash,
        };
        // Upper-case hex would name another key.
        (id.to_string() == s).then_some(id).ok_or_else(err)
    }
}

/// The longest outbox id a [`LaneId`] takes (an outbox's is a UUID's simple form, 32).
const MAX_OUTBOX_ID: usize = 64;

/// The key of a lane's [`LaneState`] at one consumer in the lanes bucket:
/// `<consumer>.<sender>.<lane id>` (consumer names hold no `.`, nor do public keys). The sender
/// is the host key that signed the lane's messages: a lane is one sender's, so a message signed
/// by another key never reads or moves its state, whatever lane id it names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LaneKey {
    /// The durable consumer that remembers it.
    pub consumer: ConsumerName,
    /// The host whose key signed the lane's messages.
    pub sender: PublicKey,
    /// The lane.
    pub lane: LaneId,
}

impl LaneKey {
    /// Lane `lane`'s key at `consumer`, as sent by `sender`.
    pub fn new(consumer: &ConsumerName, sender: &PublicKey, lane: &LaneId) -> Self {
        Self {
            consumer: consumer.clone(),
            sender: sender.clone(),
            lane: lane.clone(),
        }
    }

    /// The key the release before signatures kept the lane's state under,
    /// `<consumer>.<lane id>`: read (never written) when the key with the sender holds nothing
    /// yet, so that an upgrade does not forget which items ran.
    pub fn unsigned(&self) -> String {
        format!("{}.{}", self.consumer, self.lane)
    }
}

impl fmt::Display for LaneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.consumer, self.sender, self.lane)
    }
}

impl FromStr for LaneKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KeyError::new("lane key", s);
        let (consumer, rest) = s.split_once('.').ok_or_else(err)?;
        let (sender, lane) = rest.split_once('.').ok_or_else(err)?;
        Ok(Self {
            consumer: consumer.parse()?,
            sender: PublicKey::parse(sender).map_err(|_| err())?,
            lane: lane.parse()?,
        })
    }
}

/// What a consumer remembers of one lane (see the module docs of [`crate::queue`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneState {
    /// The highest sequence run (or dead-lettered, or known gone); 0 before the first.
    pub last: u64,
    /// The highest floor seen.
    pub floor: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{AppName, ComponentName, LatticeName};

    fn lane(target: &str) -> Lane {
        let l = LatticeName::new("edge").expect("valid");
        let app = AppName::new("app").expect("valid");
        let target = ComponentName::new(target).expect("valid");
        Lane::new(
            Subject::queued_calls(&l, &app, &target),
            format!("app/src -> {target}").parse().expect("link"),
        )
    }

    /// The stored form, byte for byte as the outbox has always held it.
    #[test]
    fn lanes_are_stored_as_subject_space_link_and_read_back() {
        let text = "lattice.edge.q.app.sink app/src -> sink";
        assert_eq!(lane("sink").to_string(), text);
        assert_eq!(text.parse::<Lane>().expect("parses"), lane("sink"));
        let messages = "lattice.edge.q.@msg.orders.new app/src -> messaging-nats";
        assert_eq!(
            messages.parse::<Lane>().expect("parses").to_string(),
            messages
        );
        for bad in [
            "app/src -> sink",
            "lattice.edge.q.app.sink",
            "lattice.edge.rpc.app.sink app/src -> sink",
            "lattice.edge.q.app.sink app/src->sink",
        ] {
            assert!(bad.parse::<Lane>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lane_ids_are_key_safe_and_round_trip() {
        let id = LaneId::new("0123abcd", &lane("sink"));
        let text = id.to_string();
        assert!(text.starts_with("0123abcd."), "{text}");
        assert!(
            text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
            "{text}"
        );
        assert_eq!(text.parse::<LaneId>().expect("parses"), id);
        assert_eq!(id, LaneId::of_text("0123abcd", &lane("sink").to_string()));
        assert_ne!(id, LaneId::new("0123abcd", &lane("other")));
        // The hash as it was computed before lanes were types.
        let digest = Sha256::digest(b"lattice.edge.q.app.sink app/src -> sink");
        assert_eq!(text, format!("0123abcd.{}", hex::encode(&digest[..8])));
        let long = format!("{}.0011223344556677", "a".repeat(65));
        for bad in [
            "0123abcd",
            "0123abcd.zz",
            "xyz.0011223344556677",
            "ab.0011",
            long.as_str(),
        ] {
            assert!(bad.parse::<LaneId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lane_keys_are_the_consumer_then_the_lane() {
        let consumer = ConsumerName::calls(
            &AppName::new("app").expect("valid"),
            &ComponentName::new("sink").expect("valid"),
        );
        let id = LaneId::new("0123abcd", &lane("sink"));
        let host = crate::keys::KeyPair::generate(crate::keys::KeyRole::Host).public_key();
        let key = LaneKey::new(&consumer, &host, &id);
        assert_eq!(key.to_string(), format!("queue-app-sink.{host}.{id}"));
        assert_eq!(key.to_string().parse::<LaneKey>().expect("parses"), key);
        assert_eq!(key.unsigned(), format!("queue-app-sink.{id}"));
        assert!("queue-app-sink".parse::<LaneKey>().is_err());
        assert!(key.unsigned().parse::<LaneKey>().is_err());
    }
}
