//! A host's heartbeats authenticated for the control plane by a MAC, besides the signature.
//!
//! The leading control plane checks every host's heartbeat, every second by default: an Ed25519
//! check (some 50 µs) per heartbeat would cost it a tenth of a core at 1,000 hosts. So a host
//! also tags each heartbeat with an HMAC-SHA256 for each control-plane key it trusts, under a
//! key only the two of them can make ([`secret::agree`]: the X25519 agreement of their nkeys,
//! as sealed secrets use them). The control plane makes that key once per host, at its first
//! tagged heartbeat, and checks a tag in about a microsecond afterwards. The signature stays on
//! every heartbeat: whoever else reads heartbeats (`lattice ctl watch`, an older control plane)
//! checks it, and so does the control plane when a heartbeat carries no tag for its key.

use std::collections::HashMap;

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{HostSigned, Purpose, Spoofed};
use crate::keys::{KeyPair, KeyRole, PublicKey};
use crate::messages::Heartbeat;
use crate::names::HostId;
use crate::secret::{self, SecretError};

/// What a MAC key is derived for; part of the derivation, so that the key is used for nothing
/// else.
const AGREEMENT_DOMAIN: &[u8] = b"lattice-host-mac/1\0";

/// At most this many hosts' keys are kept; past it the cache starts again (each key is made
/// again at its host's next heartbeat), so that hosts invented by the thousand cannot grow it.
const KEPT_MAX: usize = 100_000;

/// A tag over a host's message for one control-plane key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMac {
    /// The control-plane key whose shared key made the tag.
    pub to: PublicKey,
    /// HMAC-SHA256 over the purpose's domain and the payload.
    #[serde(with = "serde_bytes")]
    pub tag: Vec<u8>,
}

/// The key one host and one control-plane key share.
#[derive(Clone)]
pub struct MacKey {
    peer: PublicKey,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacKey")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl MacKey {
    /// The key `own` shares with `peer` (a host with a control-plane key, or the other way).
    pub fn agree(own: &KeyPair, peer: &PublicKey) -> Result<Self, SecretError> {
        Ok(Self {
            peer: peer.clone(),
            key: secret::agree(own, peer, AGREEMENT_DOMAIN)?,
        })
    }

    /// The other side's public key.
    pub fn peer(&self) -> &PublicKey {
        &self.peer
    }

    fn mac(&self, purpose: Purpose, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&*self.key).expect("HMAC takes a key of any length");
        mac.update(purpose.domain());
        mac.update(payload);
        mac
    }

    /// The tag of `payload` for the peer.
    pub(super) fn tag(&self, purpose: Purpose, payload: &[u8]) -> HostMac {
        HostMac {
            to: self.peer.clone(),
            tag: self.mac(purpose, payload).finalize().into_bytes().to_vec(),
        }
    }

    /// Whether `tag` is this key's over `payload` (compared in constant time).
    fn holds(&self, purpose: Purpose, payload: &[u8], tag: &[u8]) -> bool {
        self.mac(purpose, payload).verify_slice(tag).is_ok()
    }
}

/// What a control plane keeps to check heartbeats by their tags: its key, and the key it
/// shares with each host it has heard from.
pub struct HeartbeatKeys {
    own: KeyPair,
    own_public: PublicKey,
    shared: HashMap<HostId, MacKey>,
}

impl std::fmt::Debug for HeartbeatKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatKeys")
            .field("own", &self.own_public)
            .field("hosts", &self.shared.len())
            .finish_non_exhaustive()
    }
}

impl HeartbeatKeys {
    /// Checks heartbeats tagged for `own` (the control plane's key).
    pub fn new(own: &KeyPair) -> Self {
        let seed = Zeroizing::new(own.seed());
        let own = KeyPair::from_seed(&seed).expect("a key pair's own seed reads back");
        let own_public = own.public_key();
        Self {
            own,
            own_public,
            shared: HashMap::new(),
        }
    }

    /// The heartbeat in `bytes` received on host `from`'s heartbeat subject, if that host
    /// tagged it for this key or signed it, and it names that host.
    pub fn open(&mut self, bytes: &[u8], from: &HostId) -> Result<Heartbeat, Spoofed> {
        let signed: HostSigned = crate::envelope::decode(bytes).map_err(|_| Spoofed::Unsigned)?;
        let payload = match self.by_tag(&signed, from) {
            Some(payload) => payload,
            // No tag for this key, or not one that holds: the signature decides, and says why
            // when it does not hold.
            None => signed.open(Purpose::Heartbeat, from)?,
        };
        super::heartbeat_in(payload, from)
    }

    fn by_tag<'a>(&mut self, signed: &'a HostSigned, from: &HostId) -> Option<&'a [u8]> {
        let mac = signed.macs.iter().find(|m| m.to == self.own_public)?;
        if signed.signer.as_str() != from.as_str() || signed.signer.role() != KeyRole::Host {
            return None;
        }
        let made;
        let key = match self.shared.get(from) {
            Some(key) => key,
            None => {
                made = MacKey::agree(&self.own, &signed.signer).ok()?;
                &made
            }
        };
        if !key.holds(Purpose::Heartbeat, &signed.payload, &mac.tag) {
            return None;
        }
        // Kept only once a tag held, so that forged tags add nothing.
        if !self.shared.contains_key(from) {
            let key = key.clone();
            if self.shared.len() >= KEPT_MAX {
                self.shared.clear();
            }
            self.shared.insert(from.clone(), key);
        }
        Some(&signed.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::tests::{heartbeat, host};
    use crate::signed::{open_heartbeat, seal_heartbeat};

    /// Re-encodes `bytes` after `change` to the signed message in it.
    fn altered(bytes: &[u8], change: impl FnOnce(&mut HostSigned)) -> Vec<u8> {
        let mut signed: HostSigned = crate::envelope::decode(bytes).expect("decodes");
        change(&mut signed);
        crate::envelope::encode(&signed)
    }

    #[test]
    fn a_tagged_heartbeat_opens_by_its_tag_and_still_by_its_signature() {
        let control = KeyPair::generate(KeyRole::Operator);
        let (key, id) = host();
        let mac = MacKey::agree(&key, &control.public_key()).expect("agree");
        let sealed = seal_heartbeat(&heartbeat(&id), &key, &[mac]);
        let mut keys = HeartbeatKeys::new(&control);
        assert_eq!(keys.open(&sealed, &id), Ok(heartbeat(&id)));
        assert_eq!(
            keys.shared.len(),
            1,
            "the host's key is kept once its tag held"
        );
        assert_eq!(keys.open(&sealed, &id), Ok(heartbeat(&id)));
        // Whoever reads heartbeats without the key checks the signature.
        assert_eq!(open_heartbeat(&sealed, &id), Ok(heartbeat(&id)));
    }

    #[test]
    fn a_tag_that_does_not_hold_leaves_the_signature_to_decide() {
        let control = KeyPair::generate(KeyRole::Operator);
        let (key, id) = host();
        let mac = MacKey::agree(&key, &control.public_key()).expect("agree");
        let sealed = seal_heartbeat(&heartbeat(&id), &key, &[mac]);
        let mut keys = HeartbeatKeys::new(&control);

        // The payload changed under both tag and signature: refused.
        let changed = altered(&sealed, |s| s.payload.push(0));
        assert_eq!(keys.open(&changed, &id), Err(Spoofed::BadSignature));
        // The tag changed, the signature holds: believed by the signature, nothing kept.
        let bad_tag = altered(&sealed, |s| s.macs[0].tag[0] ^= 1);
        assert_eq!(keys.open(&bad_tag, &id), Ok(heartbeat(&id)));
        assert!(
            keys.shared.is_empty(),
            "a tag that did not hold kept no key"
        );
        // Both changed: refused.
        let both = altered(&bad_tag, |s| s.signature[0] ^= 1);
        assert_eq!(keys.open(&both, &id), Err(Spoofed::BadSignature));
    }

    #[test]
    fn another_hosts_key_cannot_tag_for_a_host() {
        let control = KeyPair::generate(KeyRole::Operator);
        let (_, id) = host();
        let (forger, forger_id) = host();
        let mac = MacKey::agree(&forger, &control.public_key()).expect("agree");
        let mut keys = HeartbeatKeys::new(&control);
        // The forger's own valid tag and signature, sent as the real host.
        let forged = seal_heartbeat(&heartbeat(&id), &forger, std::slice::from_ref(&mac));
        assert!(matches!(
            keys.open(&forged, &id),
            Err(Spoofed::OtherHost { .. })
        ));
        // Claiming to be the real host as signer, with the forger's tag: no key the forger can
        // make holds for the real host.
        let as_host = altered(&forged, |s| {
            s.signer = PublicKey::parse(id.as_str()).expect("a host id is a key")
        });
        assert_eq!(keys.open(&as_host, &id), Err(Spoofed::BadSignature));
        // The forger speaking for itself is believed (admission decides whether it counts).
        let own = seal_heartbeat(&heartbeat(&forger_id), &forger, &[mac]);
        assert_eq!(keys.open(&own, &forger_id), Ok(heartbeat(&forger_id)));
    }

    #[test]
    fn a_tag_for_another_control_plane_is_not_this_ones() {
        let control = KeyPair::generate(KeyRole::Operator);
        let other = KeyPair::generate(KeyRole::Operator);
        let (key, id) = host();
        let mac = MacKey::agree(&key, &other.public_key()).expect("agree");
        let sealed = seal_heartbeat(&heartbeat(&id), &key, &[mac]);
        let mut keys = HeartbeatKeys::new(&control);
        assert_eq!(
            keys.open(&sealed, &id),
            Ok(heartbeat(&id)),
            "by its signature"
        );
        assert!(keys.shared.is_empty());
    }
}
