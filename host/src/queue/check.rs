//! What a target checks of a stream message before anything of it reaches a lane ("Signatures"
//! in [`lattice_protocol::queue`]): its size, its signature, its signer and the shape of its
//! lane headers. [`check`] says where it goes: into its sender's lane, or (a requeued item,
//! signed by a trusted operator) outside any lane; or why it is refused ([`Refusal`]), and then
//! the consumer dead-letters it with that reason and acknowledges it. A refused message moves no
//! lane: its sender's lane is only ever read and written under a key of the verified signer.
//!
//! Cost: one signature check per message (a bundle's 64 items share it), and per consumer one
//! read of the members bucket for each signer first seen (remembered; a refusal for 10 s). The
//! members bucket rather than the signer's assignment: a host may read only its own assignment
//! (`lattice_protocol::membership`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderName;
use async_nats::jetstream::{self, kv};
use lattice_protocol::envelope;
use lattice_protocol::keys::{KeyRole, PublicKey};
use lattice_protocol::membership::SignedMembership;
use lattice_protocol::names::{HostId, LatticeName};
use lattice_protocol::queue::{
    CALL_ID_HEADER, LANE_COUNT_HEADER, LANE_FLOOR_HEADER, LANE_HEADER, LANE_MARKER_HEADER,
    LANE_SEQ_HEADER, LINK_HEADER, LaneId, MAX_BUNDLE, MAX_QUEUED_MESSAGE_BYTES, MSG_ID_HEADER,
    Refusal, SIGNATURE_HEADER, SIGNER_HEADER, Signed,
};
use lattice_protocol::subject::Buckets;

/// How long a signer found to be no host of the lattice is taken for one without asking again.
const UNKNOWN_FOR: Duration = Duration::from_secs(10);

/// A message's place in its lane, from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) lane: LaneId,
    /// Its (first) item's lane sequence.
    pub(super) seq: u64,
    /// How many items it carries (more than one: a bundle).
    pub(super) count: u64,
    pub(super) floor: u64,
    pub(super) marker: bool,
}

/// Where a checked message goes.
#[derive(Debug)]
pub(super) enum Checked {
    /// Into the lane `place` names, of the host `sender`.
    Lane { sender: PublicKey, place: Place },
    /// Outside any lane (a requeued item), deduplicated by its id.
    Alone,
}

/// The hosts of the lattice, as far as one consumer has asked: a host is a key holding a
/// membership signed by a trusted operator (the control plane writes one for every host it
/// assigns work to; it may have run no workload since, its outbox still draining).
pub(super) struct Senders {
    members: Option<kv::Store>,
    trusted: Vec<PublicKey>,
    lattice: LatticeName,
    known: HashMap<PublicKey, Option<Instant>>,
}

impl Senders {
    /// The lattice's hosts, checked against the operators `trusted`.
    pub(super) async fn new(
        js: &jetstream::Context,
        lattice: &LatticeName,
        trusted: &[PublicKey],
    ) -> Self {
        // Without the bucket (no control plane ever ran) no signer is a host.
        let members = js.get_key_value(Buckets::new(lattice).members()).await.ok();
        Self {
            members,
            trusted: trusted.to_vec(),
            lattice: lattice.clone(),
            known: HashMap::new(),
        }
    }

    /// Whether `signer` is a host of the lattice.
    async fn is_host(&mut self, signer: &PublicKey) -> anyhow::Result<bool> {
        match self.known.get(signer) {
            Some(None) => return Ok(true),
            Some(Some(at)) if at.elapsed() < UNKNOWN_FOR => return Ok(false),
            _ => {}
        }
        let host = HostId::new(signer.to_string())?;
        let entry = match &self.members {
            Some(kv) => kv
                .get(host.as_str())
                .await
                .map_err(|e| anyhow::anyhow!("reading the membership of {host}: {e}"))?,
            None => None,
        };
        let is_host = entry.is_some_and(|bytes| {
            envelope::decode::<SignedMembership>(&bytes)
                .is_ok_and(|m| m.verify(&self.trusted, &self.lattice, &host).is_ok())
        });
        self.known
            .insert(signer.clone(), (!is_host).then(Instant::now));
        Ok(is_host)
    }

    /// Whether `signer` is a trusted operator (who signs requeued items).
    fn is_operator(&self, signer: &PublicKey) -> bool {
        self.trusted.contains(signer)
    }
}

/// Checks `message` (see the module docs): `Err` only when the lattice could not be asked.
pub(super) async fn check(
    senders: &mut Senders,
    message: &jetstream::Message,
) -> anyhow::Result<Result<Checked, Refusal>> {
    let size = message.payload.len();
    if size > MAX_QUEUED_MESSAGE_BYTES {
        return Ok(Err(Refusal::TooLarge(size)));
    }
    let header = |name: &'static str| -> Option<&str> {
        message
            .headers
            .as_ref()?
            .get(HeaderName::from_static(name))
            .map(|v| v.as_str())
    };
    let text = |name| header(name).unwrap_or_default();
    let signed = Signed {
        subject: message.subject.as_str(),
        msg_id: text(MSG_ID_HEADER),
        call_id: text(CALL_ID_HEADER),
        link: text(LINK_HEADER),
        lane: text(LANE_HEADER),
        seq: text(LANE_SEQ_HEADER),
        count: text(LANE_COUNT_HEADER),
        floor: text(LANE_FLOOR_HEADER),
        marker: text(LANE_MARKER_HEADER),
        body: &message.payload,
    };
    let signer = match signed.verify(header(SIGNER_HEADER), header(SIGNATURE_HEADER)) {
        Ok(signer) => signer,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let place = match place(&signed) {
        Ok(place) => place,
        Err(refusal) => return Ok(Err(refusal)),
    };
    Ok(match place {
        Some(place) if signer.role() == KeyRole::Host && senders.is_host(&signer).await? => {
            Ok(Checked::Lane {
                sender: signer,
                place,
            })
        }
        None if senders.is_operator(&signer) => Ok(Checked::Alone),
        _ => Err(Refusal::UnknownSigner(signer.to_string())),
    })
}

/// A message's place in its lane from its (signed) headers; `None` for one outside any lane.
/// Any lane header that does not read, or reads as no place a sender makes, is a malformed lane.
fn place(signed: &Signed<'_>) -> Result<Option<Place>, Refusal> {
    let lane_headers = [
        signed.lane,
        signed.seq,
        signed.count,
        signed.floor,
        signed.marker,
    ];
    if lane_headers.iter().all(|h| h.is_empty()) {
        return Ok(None);
    }
    let bad = |what: String| Refusal::MalformedLane(what);
    let number = |name: &str, value: &str| -> Result<Option<u64>, Refusal> {
        if value.is_empty() {
            return Ok(None);
        }
        value
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(format!("{name} `{value}` is not a number")))
    };
    let lane: LaneId = signed
        .lane
        .parse()
        .map_err(|_| bad(format!("{LANE_HEADER} `{}` is not a lane id", signed.lane)))?;
    let marker = match signed.marker {
        "" => false,
        "1" => true,
        other => return Err(bad(format!("{LANE_MARKER_HEADER} `{other}` is not `1`"))),
    };
    let seq = number(LANE_SEQ_HEADER, signed.seq)?;
    let count = number(LANE_COUNT_HEADER, signed.count)?;
    let floor = number(LANE_FLOOR_HEADER, signed.floor)?.unwrap_or(0);
    if marker {
        if seq.is_some() || count.is_some() {
            return Err(bad("a marker carries no sequence or count".into()));
        }
        return Ok(Some(Place {
            lane,
            seq: 0,
            count: 1,
            floor,
            marker,
        }));
    }
    let seq = seq
        .filter(|&s| s > 0)
        .ok_or_else(|| bad(format!("no {LANE_SEQ_HEADER} of at least 1")))?;
    let count = count.unwrap_or(1);
    if !(1..=MAX_BUNDLE as u64).contains(&count) || (count == 1 && !signed.count.is_empty()) {
        return Err(bad(format!(
            "{LANE_COUNT_HEADER} {count} is not between 2 and {MAX_BUNDLE}"
        )));
    }
    if seq.checked_add(count).is_none() {
        return Err(bad(format!(
            "{LANE_SEQ_HEADER} {seq} leaves no room for its items"
        )));
    }
    Ok(Some(Place {
        lane,
        seq,
        count,
        floor,
        marker,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(seq: &'a str, count: &'a str, floor: &'a str) -> Signed<'a> {
        Signed {
            lane: "0123abcd.0011223344556677",
            seq,
            count,
            floor,
            ..Signed::default()
        }
    }

    #[test]
    fn places_are_read_from_what_senders_write_and_nothing_else() {
        let lane: LaneId = "0123abcd.0011223344556677".parse().expect("a lane id");
        assert_eq!(place(&Signed::default()), Ok(None));
        assert_eq!(
            place(&item("3", "", "2")),
            Ok(Some(Place {
                lane: lane.clone(),
                seq: 3,
                count: 1,
                floor: 2,
                marker: false
            }))
        );
        assert_eq!(
            place(&item("3", "64", "3")).map(|p| p.map(|p| p.count)),
            Ok(Some(64))
        );
        let marker = Signed {
            marker: "1",
            ..item("", "", "9")
        };
        assert_eq!(place(&marker).map(|p| p.map(|p| p.marker)), Ok(Some(true)));
        let bad_lane = Signed {
            lane: "not a key.*>",
            ..item("1", "", "1")
        };
        let no_lane = Signed {
            lane: "",
            ..item("1", "", "1")
        };
        let big = u64::MAX.to_string();
        for bad in [
            bad_lane,
            no_lane,
            item("", "", "1"),
            item("0", "", "1"),
            item("x", "", "1"),
            item("1", "65", "1"),
            item("1", "1", "1"),
            item("1", "0", "1"),
            item("1", "", "-1"),
            item(&big, "2", "1"),
            Signed {
                marker: "1",
                ..item("4", "", "9")
            },
        ] {
            assert!(
                matches!(place(&bad), Err(Refusal::MalformedLane(_))),
                "{bad:?}"
            );
        }
    }
}
