//! Who sent a queued stream message ("Signatures" in [`crate::queue`]): each one carries
//! [`SIGNER_HEADER`] (a public key) and [`SIGNATURE_HEADER`] (ed25519, hex) over
//! [`Signed::bytes`], everything its receiver acts on (subject, message id, link, lane headers
//! and a hash of the body). The forwarder signs with its host's key, `ctl requeue` with the
//! control plane's operator key; the receiver refuses what does not verify, and the reasons are
//! [`Refusal`]s, written into the dead letter.

use sha2::{Digest as _, Sha256};

use crate::keys::{KeyPair, PublicKey};

/// Header: the public key that signed a queued stream message (`N...` for a host, `O...` for a
/// requeue by the control plane).
pub const SIGNER_HEADER: &str = "Lattice-Signer";
/// Header: the signature (ed25519, hex) over [`Signed::bytes`].
pub const SIGNATURE_HEADER: &str = "Lattice-Signature";
/// Header (dead letters): why an item was refused before it could run ([`Refusal::reason`]);
/// `ctl requeue` does not put such an item back.
pub const DEAD_REASON_HEADER: &str = "Lattice-Dead-Reason";

/// The largest queued stream message a receiver takes (its body: one item's envelope or a
/// bundle), and the largest envelope a sender queues (a larger one is refused when it is
/// queued). A larger one is dead-lettered as [`Refusal::TooLarge`], without its body.
///
/// 960 KiB: 64 KiB under NATS's default `max_payload` (1 MiB), so that a message that fits
/// also fits with its signature and lane headers, and its dead letter with the headers that
/// adds (a dead letter that cannot be published would stop its consumer).
pub const MAX_QUEUED_MESSAGE_BYTES: usize = 960 * 1024;

/// The domain of a queued message's signature: no other signed thing reads as one.
const DOMAIN: &[u8] = b"lattice-queued/1\0";

/// What a queued stream message's signature covers, as its headers spell it (absent: empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct Signed<'a> {
    /// The stream subject it is published on.
    pub subject: &'a str,
    /// `Nats-Msg-Id`.
    pub msg_id: &'a str,
    /// `Lattice-Call-Id` (requeued items).
    pub call_id: &'a str,
    /// `Lattice-Link`.
    pub link: &'a str,
    /// `Lattice-Lane`.
    pub lane: &'a str,
    /// `Lattice-Lane-Seq`.
    pub seq: &'a str,
    /// `Lattice-Lane-Count`.
    pub count: &'a str,
    /// `Lattice-Lane-Floor`.
    pub floor: &'a str,
    /// `Lattice-Lane-Marker`.
    pub marker: &'a str,
    /// The body.
    pub body: &'a [u8],
}

impl Signed<'_> {
    /// The bytes signed: the domain, each header value with its length, the body's SHA-256
    /// (so that a bundle's body is hashed once, not by ed25519's two passes).
    pub fn bytes(&self) -> Vec<u8> {
        let fields = [
            self.subject,
            self.msg_id,
            self.call_id,
            self.link,
            self.lane,
            self.seq,
            self.count,
            self.floor,
            self.marker,
        ];
        let mut out = Vec::with_capacity(
            DOMAIN.len() + 32 + fields.iter().map(|f| f.len() + 4).sum::<usize>(),
        );
        out.extend_from_slice(DOMAIN);
        for field in fields {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(&Sha256::digest(self.body));
        out
    }

    /// The signer and signature headers' values, signed with `key`.
    pub fn sign(&self, key: &KeyPair) -> (String, String) {
        (
            key.public_key().to_string(),
            hex::encode(key.sign(&self.bytes())),
        )
    }

    /// The signer, if `signature` (hex) by `signer` holds over these fields.
    pub fn verify(
        &self,
        signer: Option<&str>,
        signature: Option<&str>,
    ) -> Result<PublicKey, Refusal> {
        let (Some(signer), Some(signature)) = (signer, signature) else {
            return Err(Refusal::Unsigned);
        };
        let signer = PublicKey::parse(signer).map_err(|_| Refusal::BadSignature)?;
        let signature = hex::decode(signature).map_err(|_| Refusal::BadSignature)?;
        if !signer.verify(&self.bytes(), &signature) {
            return Err(Refusal::BadSignature);
        }
        Ok(signer)
    }
}

/// Why a receiver refused a queued stream message before running anything of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No signature.
    #[error(
        "unsigned: the item carries no {SIGNER_HEADER}/{SIGNATURE_HEADER}, so no host of this lattice sent it"
    )]
    Unsigned,
    /// A signature that does not hold over what it came with.
    #[error(
        "bad signature: the item's signature does not hold over its headers and body (forged or altered on the way)"
    )]
    BadSignature,
    /// Signed, but not by a host this lattice assigned work to (or by a trusted operator, for a
    /// requeued item).
    #[error(
        "unknown signer: signed by {0}, which is neither a host of this lattice (no assignment signed by a trusted operator) nor a trusted operator"
    )]
    UnknownSigner(String),
    /// Lane headers that do not read.
    #[error("malformed lane: {0}")]
    MalformedLane(String),
    /// A bundle whose body does not hold the items its headers say.
    #[error("malformed bundle: {0}")]
    MalformedBundle(String),
    /// Larger than [`MAX_QUEUED_MESSAGE_BYTES`].
    #[error(
        "too large: {0} bytes, above the {MAX_QUEUED_MESSAGE_BYTES} a queued message may hold; its body is not kept"
    )]
    TooLarge(usize),
}

impl Refusal {
    /// The short reason, for [`DEAD_REASON_HEADER`].
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad signature",
            Refusal::UnknownSigner(_) => "unknown signer",
            Refusal::MalformedLane(_) => "malformed lane",
            Refusal::MalformedBundle(_) => "malformed bundle",
            Refusal::TooLarge(_) => "too large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRole;

    fn fields(body: &[u8]) -> Signed<'_> {
        Signed {
            subject: "lattice.edge.q.app.sink",
            msg_id: "id-1",
            link: "app/src -> sink",
            lane: "0123abcd.0011223344556677",
            seq: "7",
            floor: "7",
            body,
            ..Signed::default()
        }
    }

    #[test]
    fn a_signature_holds_only_over_what_was_signed() {
        let host = KeyPair::generate(KeyRole::Host);
        let (signer, signature) = fields(b"body").sign(&host);
        assert_eq!(signer, host.public_key().to_string());
        let ok = fields(b"body").verify(Some(&signer), Some(&signature));
        assert_eq!(ok, Ok(host.public_key()));
        // Any field changed: another sequence, floor, body, subject.
        let jumped = Signed {
            seq: "70",
            ..fields(b"body")
        };
        for changed in [
            jumped,
            Signed {
                floor: "9",
                ..fields(b"body")
            },
            fields(b"other"),
            Signed {
                subject: "lattice.edge.q.app.other",
                ..fields(b"body")
            },
        ] {
            assert_eq!(
                changed.verify(Some(&signer), Some(&signature)),
                Err(Refusal::BadSignature)
            );
        }
        // Fields do not run into each other: moving a byte from one to the next changes it.
        let a = Signed {
            seq: "12",
            floor: "3",
            ..fields(b"")
        };
        let b = Signed {
            seq: "1",
            floor: "23",
            ..fields(b"")
        };
        assert_ne!(a.bytes(), b.bytes());
        assert_eq!(
            fields(b"body").verify(None, Some(&signature)),
            Err(Refusal::Unsigned)
        );
        assert_eq!(
            fields(b"body").verify(Some(&signer), Some("zz")),
            Err(Refusal::BadSignature)
        );
        let other = KeyPair::generate(KeyRole::Host);
        assert_eq!(
            fields(b"body").verify(Some(&other.public_key().to_string()), Some(&signature)),
            Err(Refusal::BadSignature)
        );
    }
}
