//! A host's membership of a lattice, signed by the control plane: what one host may read of
//! another.
//!
//! A queued item's target runs it only if its signer is a host of the lattice
//! (`host/src/queue/check.rs`). That used to be read from the signer's assignment; but an
//! assignment says what a host runs and with which links and config, and the generated NATS
//! authorization (`crate::permissions`) lets a host read only its own. So the control plane
//! also writes, once per host it assigns work to, a [`SignedMembership`] under the host's id in
//! the members bucket ([`crate::subject::Buckets::members`]), which every host may read: a
//! lattice and a host id under the control plane's signature, nothing else. It is removed
//! with the host's assignment when the host is forgotten.
//!
//! ```
//! use lattice_protocol::keys::{KeyPair, KeyRole};
//! use lattice_protocol::membership::{Membership, SignedMembership};
//! use lattice_protocol::names::{HostId, LatticeName};
//!
//! let control = KeyPair::generate(KeyRole::Operator);
//! let lattice = LatticeName::new("default")?;
//! let host = HostId::new(KeyPair::generate(KeyRole::Host).public_key().to_string())?;
//! let signed = SignedMembership::sign(&Membership { lattice: lattice.clone(), host: host.clone() }, &control);
//! assert!(signed.verify(&[control.public_key()], &lattice, &host).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::keys::{KeyPair, PublicKey};
use crate::names::{HostId, LatticeName};

/// A host of a lattice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// The lattice.
    pub lattice: LatticeName,
    /// The host.
    pub host: HostId,
}

/// A [`Membership`] with the control plane's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMembership {
    /// The MessagePack-encoded [`Membership`]: the exact bytes signed.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Who signed.
    pub signer: PublicKey,
    /// ed25519 signature over `payload`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why a membership does not make its holder a host of the lattice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Signed by a key that is no trusted control plane.
    #[error("membership signed by {0}, which is not a trusted control-plane key")]
    UntrustedSigner(PublicKey),
    /// The signature does not verify.
    #[error("membership signature does not verify")]
    BadSignature,
    /// Not decodable.
    #[error("malformed membership: {0}")]
    Malformed(String),
    /// Of another host or lattice.
    #[error("membership of host {host} in lattice {lattice}, not the one asked about")]
    Elsewhere {
        /// The host named in it.
        host: HostId,
        /// The lattice named in it.
        lattice: LatticeName,
    },
}

impl SignedMembership {
    /// Signs `membership` with the control plane's key.
    pub fn sign(membership: &Membership, key: &KeyPair) -> Self {
        let payload = rmp_serde::to_vec_named(membership).unwrap_or_default();
        Self {
            signature: key.sign(&payload),
            signer: key.public_key(),
            payload,
        }
    }

    /// Checks that a key of `trusted` signed that `host` is a host of `lattice`.
    pub fn verify(
        &self,
        trusted: &[PublicKey],
        lattice: &LatticeName,
        host: &HostId,
    ) -> Result<(), MembershipError> {
        if !trusted.contains(&self.signer) {
            return Err(MembershipError::UntrustedSigner(self.signer.clone()));
        }
        if !self.signer.verify(&self.payload, &self.signature) {
            return Err(MembershipError::BadSignature);
        }
        let membership: Membership = rmp_serde::from_slice(&self.payload)
            .map_err(|e| MembershipError::Malformed(e.to_string()))?;
        if &membership.host != host || &membership.lattice != lattice {
            return Err(MembershipError::Elsewhere {
                host: membership.host,
                lattice: membership.lattice,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignment::SignedAssignment;
    use crate::keys::KeyRole;

    fn fixture() -> (KeyPair, LatticeName, HostId) {
        let host = KeyPair::generate(KeyRole::Host).public_key().to_string();
        (
            KeyPair::generate(KeyRole::Operator),
            LatticeName::new("t").expect("valid"),
            HostId::new(host).expect("valid"),
        )
    }

    #[test]
    fn only_the_trusted_signer_for_this_host_and_lattice_counts() {
        let (control, lattice, host) = fixture();
        let (other, _, other_host) = fixture();
        let trusted = [control.public_key()];
        let m = Membership {
            lattice: lattice.clone(),
            host: host.clone(),
        };
        let signed = SignedMembership::sign(&m, &control);
        assert_eq!(signed.verify(&trusted, &lattice, &host), Ok(()));
        assert!(matches!(
            signed.verify(&trusted, &lattice, &other_host),
            Err(MembershipError::Elsewhere { .. })
        ));
        let forged = SignedMembership::sign(&m, &other);
        assert!(matches!(
            forged.verify(&trusted, &lattice, &host),
            Err(MembershipError::UntrustedSigner(_))
        ));
        let mut altered = signed.clone();
        altered.payload = rmp_serde::to_vec_named(&Membership {
            lattice: lattice.clone(),
            host: other_host.clone(),
        })
        .expect("encodes");
        assert_eq!(
            altered.verify(&trusted, &lattice, &other_host),
            Err(MembershipError::BadSignature)
        );
    }

    /// A signed assignment's bytes are no membership, though both are signed by the same key.
    #[test]
    fn an_assignment_is_not_taken_for_a_membership() {
        let (control, lattice, host) = fixture();
        let assignment = crate::assignment::Assignment {
            lattice: lattice.clone(),
            host: host.clone(),
            revision: 1,
            epoch: 1,
            issued_at: 0,
            expires_at: 0,
            workloads: Vec::new(),
            stop: false,
            trace: None,
        };
        let signed = SignedAssignment::sign(&assignment, &control);
        let as_membership = SignedMembership {
            payload: signed.payload,
            signer: signed.signer,
            signature: signed.signature,
        };
        assert!(matches!(
            as_membership.verify(&[control.public_key()], &lattice, &host),
            Err(MembershipError::Malformed(_))
        ));
    }
}
