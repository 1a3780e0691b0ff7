//! What hosts say, signed by the host: heartbeats, events, and the join tokens that admit them.
//!
//! A host's id is its public key (`N...`), so a heartbeat signed by that key and arriving on
//! that host's subject cannot be forged by another client: [`HostSigned::open`] checks the
//! signature, that the signer is a host key, and that it is the host the subject names. Each
//! heartbeat is also tagged for the control-plane keys the host trusts ([`HeartbeatKeys`]), which check
//! the tag instead: a MAC costs them a microsecond where the signature costs fifty.
//!
//! A host takes part in the lattice only once admitted. Admission is by **join token**: an admin
//! signs a [`JoinToken`] for a lattice (optionally for one host, with labels the host must
//! carry, always with an expiry), gives it to the gateways being provisioned
//! (`lattice-host --join-token`), and each host presents it in its heartbeats until the control
//! plane has recorded it as admitted. One token provisions a fleet, with no per-host step for
//! the operator, and a stolen token is useless after its expiry.
//!
//! ```
//! use lattice_protocol::keys::{KeyPair, KeyRole};
//! use lattice_protocol::names::{HostId, LatticeName};
//! use lattice_protocol::signed::{HostSigned, Purpose};
//! let host = KeyPair::generate(KeyRole::Host);
//! let id = HostId::new(host.public_key().to_string())?;
//! let signed = HostSigned::sign(Purpose::Heartbeat, b"heartbeat".to_vec(), &host);
//! assert_eq!(signed.open(Purpose::Heartbeat, &id)?, b"heartbeat");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::keys::{KeyPair, KeyRole, PublicKey};
use crate::messages::Heartbeat;
use crate::names::{HostId, LatticeName};

mod mac;
pub use mac::{HeartbeatKeys, HostMac, MacKey};

/// What a host signs; part of what is signed, so one kind cannot pass for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A heartbeat.
    Heartbeat,
    /// An event a host reports.
    Event,
}

impl Purpose {
    fn domain(self) -> &'static [u8] {
        match self {
            Purpose::Heartbeat => b"lattice-heartbeat/1\0",
            Purpose::Event => b"lattice-host-event/1\0",
        }
    }
}

/// A message from a host, signed with the host's key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSigned {
    /// The message (an envelope).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The host's key, which is its id.
    pub signer: PublicKey,
    /// ed25519 over the purpose's domain and the payload.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// Tags for control-plane keys ([`MacKey`]), cheaper for them to check than the signature.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<HostMac>,
}

impl fmt::Debug for HostSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSigned")
            .field("signer", &self.signer)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

fn signed_bytes(purpose: Purpose, payload: &[u8]) -> Vec<u8> {
    let domain = purpose.domain();
    let mut out = Vec::with_capacity(domain.len() + payload.len());
    out.extend_from_slice(domain);
    out.extend_from_slice(payload);
    out
}

impl HostSigned {
    /// Signs `payload` for `purpose` with the host's key.
    pub fn sign(purpose: Purpose, payload: Vec<u8>, host: &KeyPair) -> Self {
        Self::sign_tagged(purpose, payload, host, &[])
    }

    /// Signs `payload` for `purpose` with the host's key and tags it for each of `macs`'s
    /// control-plane keys.
    pub fn sign_tagged(
        purpose: Purpose,
        payload: Vec<u8>,
        host: &KeyPair,
        macs: &[MacKey],
    ) -> Self {
        let signature = host.sign(&signed_bytes(purpose, &payload));
        let macs = macs.iter().map(|key| key.tag(purpose, &payload)).collect();
        Self {
            payload,
            signer: host.public_key(),
            signature,
            macs,
        }
    }

    /// The payload, if it was signed for `purpose` by the host `from` (the host its subject
    /// names).
    pub fn open(&self, purpose: Purpose, from: &HostId) -> Result<&[u8], Spoofed> {
        if self.signer.role() != KeyRole::Host {
            return Err(Spoofed::NotAHostKey);
        }
        if self.signer.as_str() != from.as_str() {
            return Err(Spoofed::OtherHost {
                signer: self.signer.to_string(),
                subject: from.to_string(),
            });
        }
        if !self
            .signer
            .verify(&signed_bytes(purpose, &self.payload), &self.signature)
        {
            return Err(Spoofed::BadSignature);
        }
        Ok(&self.payload)
    }
}

/// Why a host's message was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Spoofed {
    /// Signed by a key that is not a host key.
    #[error("signed by a key that is not a host key")]
    NotAHostKey,
    /// Signed by another host than the one its subject names.
    #[error("signed by host {signer} but sent as host {subject}")]
    OtherHost {
        /// The signer.
        signer: String,
        /// The subject's host.
        subject: String,
    },
    /// The signature does not hold.
    #[error("the signature does not hold")]
    BadSignature,
    /// Not a signed message at all (an older host, or a bare publish).
    #[error("unsigned")]
    Unsigned,
    /// Signed by its host, but the heartbeat inside names another host.
    #[error("signed by host {subject} but naming host {named}")]
    NamesOtherHost {
        /// The host the heartbeat names.
        named: String,
        /// The subject's (and signer's) host.
        subject: String,
    },
    /// Signed by its host, but what is inside does not decode.
    #[error("signed, but the heartbeat inside does not decode")]
    Undecodable,
}

/// A heartbeat as a host publishes it: enveloped, signed with the host's key, and tagged for
/// the control-plane keys of `macs` ([`MacKey::agree`] with each key the host trusts).
pub fn seal_heartbeat(heartbeat: &Heartbeat, host: &KeyPair, macs: &[MacKey]) -> Vec<u8> {
    let payload = crate::envelope::encode(heartbeat);
    let signed = HostSigned::sign_tagged(Purpose::Heartbeat, payload, host, macs);
    crate::envelope::encode(&signed)
}

/// The heartbeat in `bytes` received on `subject` (a host's heartbeat subject), if the host
/// it names signed it ([`open_heartbeat`]).
pub fn open_heartbeat_on(subject: &str, bytes: &[u8]) -> Result<Heartbeat, Spoofed> {
    match crate::subject::Subject::parse(subject) {
        Ok(crate::subject::Subject::Heartbeat { host, .. }) => open_heartbeat(bytes, &host),
        _ => Err(Spoofed::Unsigned),
    }
}

/// The heartbeat in `bytes` received on host `from`'s heartbeat subject, if that host signed it
/// and it names that host.
pub fn open_heartbeat(bytes: &[u8], from: &HostId) -> Result<Heartbeat, Spoofed> {
    let signed: HostSigned = crate::envelope::decode(bytes).map_err(|_| Spoofed::Unsigned)?;
    heartbeat_in(signed.open(Purpose::Heartbeat, from)?, from)
}

/// The heartbeat in an authenticated `payload` from host `from`, if it names that host.
fn heartbeat_in(payload: &[u8], from: &HostId) -> Result<Heartbeat, Spoofed> {
    let heartbeat: Heartbeat =
        crate::envelope::decode(payload).map_err(|_| Spoofed::Undecodable)?;
    if &heartbeat.host != from {
        return Err(Spoofed::NamesOtherHost {
            named: heartbeat.host.to_string(),
            subject: from.to_string(),
        });
    }
    Ok(heartbeat)
}

/// What an admin signs to admit hosts: the lattice, an expiry, and optionally the one host and
/// the labels a host must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGrant {
    /// The lattice the token admits to.
    pub lattice: LatticeName,
    /// When the token stops admitting, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The one host it admits; any host when absent.
    #[serde(default)]
    pub host: Option<HostId>,
    /// Labels a host must carry (key → value) to be admitted with it.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// A name for people (who it was made for).
    #[serde(default)]
    pub note: String,
}

/// A [`JoinGrant`] signed by an admin's user key, as text a host is given
/// (`lattice-host --join-token`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The grant (an envelope).
    #[serde(with = "serde_bytes")]
    pub grant: Vec<u8>,
    /// The admin's key.
    pub signer: PublicKey,
    /// ed25519 over the domain and the grant.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

const JOIN_DOMAIN: &[u8] = b"lattice-join/1\0";
/// The text form's prefix, so that a token is recognisable in a file or a flag.
const JOIN_PREFIX: &str = "LJT1.";

/// Why a join token does not admit a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    /// Not a token (bad text).
    #[error("not a join token (they start with `LJT1.`); make one with `lattice ctl hosts token`")]
    Malformed,
    /// The signature does not hold.
    #[error(
        "the join token's signature does not hold; make a new one with `lattice ctl hosts token`"
    )]
    BadSignature,
    /// Signed by a key that is not an admin of this lattice.
    #[error(
        "the join token was signed by {0}, which is not an admin of this lattice; have an admin make one with `lattice ctl hosts token`"
    )]
    NotAnAdmin(String),
    /// For another lattice.
    #[error("the join token is for lattice `{0}`, not this one")]
    OtherLattice(String),
    /// Expired.
    #[error("the join token expired; make a new one with `lattice ctl hosts token --valid 24h`")]
    Expired,
    /// For another host.
    #[error("the join token is for host {0} only")]
    OtherHost(String),
    /// The host lacks a label the token requires.
    #[error("the join token requires label {key}={value}, which this host does not carry")]
    MissingLabel {
        /// The label.
        key: String,
        /// Its required value.
        value: String,
    },
}

impl JoinToken {
    /// Signs `grant` with an admin's key.
    pub fn sign(grant: &JoinGrant, admin: &KeyPair) -> Self {
        let grant = crate::envelope::encode(grant);
        let signature = admin.sign(&join_bytes(&grant));
        Self {
            grant,
            signer: admin.public_key(),
            signature,
        }
    }

    /// The token as text: a prefix and the hex of its encoding.
    pub fn to_text(&self) -> String {
        format!(
            "{JOIN_PREFIX}{}",
            hex::encode(crate::envelope::encode(self))
        )
    }

    /// Reads the text form.
    pub fn parse(text: &str) -> Result<Self, JoinRefusal> {
        let hex_part = text
            .trim()
            .strip_prefix(JOIN_PREFIX)
            .ok_or(JoinRefusal::Malformed)?;
        let bytes = hex::decode(hex_part).map_err(|_| JoinRefusal::Malformed)?;
        crate::envelope::decode(&bytes).map_err(|_| JoinRefusal::Malformed)
    }

    /// The grant, if this token admits `host` carrying `labels` to `lattice` at `now` (seconds),
    /// signed by one of `admins`.
    pub fn admits<'a>(
        &self,
        lattice: &LatticeName,
        host: &HostId,
        labels: &std::collections::BTreeMap<String, String>,
        now: u64,
        mut admins: impl Iterator<Item = &'a PublicKey>,
    ) -> Result<JoinGrant, JoinRefusal> {
        if !self
            .signer
            .verify(&join_bytes(&self.grant), &self.signature)
        {
            return Err(JoinRefusal::BadSignature);
        }
        if !admins.any(|a| a == &self.signer) {
            return Err(JoinRefusal::NotAnAdmin(self.signer.to_string()));
        }
        let grant: JoinGrant =
            crate::envelope::decode(&self.grant).map_err(|_| JoinRefusal::Malformed)?;
        if &grant.lattice != lattice {
            return Err(JoinRefusal::OtherLattice(grant.lattice.to_string()));
        }
        // Signed by the admin's clock, read by the control plane's: the skew two clocks may
        // have is allowed past the expiry.
        if now
            >= grant
                .expires_at
                .saturating_add(crate::clock::MAX_SKEW.as_secs())
        {
            return Err(JoinRefusal::Expired);
        }
        if let Some(only) = &grant.host
            && only != host
        {
            return Err(JoinRefusal::OtherHost(only.to_string()));
        }
        if let Some((key, value)) = grant
            .labels
            .iter()
            .find(|(k, v)| labels.get(*k) != Some(*v))
        {
            return Err(JoinRefusal::MissingLabel {
                key: key.clone(),
                value: value.clone(),
            });
        }
        Ok(grant)
    }
}

fn join_bytes(grant: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(JOIN_DOMAIN.len() + grant.len());
    out.extend_from_slice(JOIN_DOMAIN);
    out.extend_from_slice(grant);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    pub(super) fn host() -> (KeyPair, HostId) {
        let key = KeyPair::generate(KeyRole::Host);
        let id = HostId::new(key.public_key().to_string()).expect("valid");
        (key, id)
    }

    #[test]
    fn a_host_message_opens_only_for_its_host_and_purpose() {
        let (key, id) = host();
        let (_, other) = host();
        let signed = HostSigned::sign(Purpose::Heartbeat, b"hb".to_vec(), &key);
        assert_eq!(signed.open(Purpose::Heartbeat, &id), Ok(&b"hb"[..]));
        assert!(matches!(
            signed.open(Purpose::Heartbeat, &other),
            Err(Spoofed::OtherHost { .. })
        ));
        assert_eq!(signed.open(Purpose::Event, &id), Err(Spoofed::BadSignature));
        let mut changed = signed.clone();
        changed.payload = b"forged".to_vec();
        assert_eq!(
            changed.open(Purpose::Heartbeat, &id),
            Err(Spoofed::BadSignature)
        );
        let user = KeyPair::generate(KeyRole::User);
        let by_user = HostSigned::sign(Purpose::Heartbeat, b"hb".to_vec(), &user);
        assert_eq!(
            by_user.open(Purpose::Heartbeat, &id),
            Err(Spoofed::NotAHostKey)
        );
    }

    pub(super) fn heartbeat(host: &HostId) -> Heartbeat {
        Heartbeat {
            host: host.clone(),
            name: "gateway".into(),
            labels: BTreeMap::new(),
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
    fn a_heartbeat_opens_only_on_its_own_hosts_subject() {
        let (key, id) = host();
        let (other_key, other) = host();
        let sealed = seal_heartbeat(&heartbeat(&id), &key, &[]);
        assert_eq!(open_heartbeat(&sealed, &id), Ok(heartbeat(&id)));
        assert!(matches!(
            open_heartbeat(&sealed, &other),
            Err(Spoofed::OtherHost { .. })
        ));
        // A bare heartbeat, as any client can publish.
        let bare = crate::envelope::encode(&heartbeat(&id));
        assert_eq!(open_heartbeat(&bare, &id), Err(Spoofed::Unsigned));
        // Signed by a host, naming another one.
        let naming_other = seal_heartbeat(&heartbeat(&id), &other_key, &[]);
        assert!(matches!(
            open_heartbeat(&naming_other, &other),
            Err(Spoofed::NamesOtherHost { .. })
        ));
    }

    #[test]
    fn a_join_token_admits_what_it_says_until_it_expires() {
        let admin = KeyPair::generate(KeyRole::User);
        let stranger = KeyPair::generate(KeyRole::User);
        let lattice = LatticeName::new("default").expect("valid");
        let (_, id) = host();
        let (_, other) = host();
        let grant = JoinGrant {
            lattice: lattice.clone(),
            expires_at: 1_000,
            host: None,
            labels: BTreeMap::from([("site".to_string(), "north".to_string())]),
            note: "north gateways".into(),
        };
        let token = JoinToken::parse(&JoinToken::sign(&grant, &admin).to_text()).expect("parses");
        let admins = [admin.public_key()];
        let north = BTreeMap::from([("site".to_string(), "north".to_string())]);
        assert_eq!(
            token.admits(&lattice, &id, &north, 999, admins.iter()),
            Ok(grant.clone())
        );
        let skew = crate::clock::MAX_SKEW.as_secs();
        assert_eq!(
            token.admits(&lattice, &id, &north, 1_000 + skew - 1, admins.iter()),
            Ok(grant.clone()),
            "a reader whose clock is ahead by less than the skew allowed still admits"
        );
        assert_eq!(
            token.admits(&lattice, &id, &north, 1_000 + skew, admins.iter()),
            Err(JoinRefusal::Expired)
        );
        assert!(matches!(
            token.admits(&lattice, &id, &BTreeMap::new(), 1, admins.iter()),
            Err(JoinRefusal::MissingLabel { .. })
        ));
        let elsewhere = LatticeName::new("other").expect("valid");
        assert!(matches!(
            token.admits(&elsewhere, &id, &north, 1, admins.iter()),
            Err(JoinRefusal::OtherLattice(_))
        ));
        assert!(matches!(
            token.admits(&lattice, &id, &north, 1, [stranger.public_key()].iter()),
            Err(JoinRefusal::NotAnAdmin(_))
        ));
        let only = JoinToken::sign(
            &JoinGrant {
                host: Some(id.clone()),
                ..grant.clone()
            },
            &admin,
        );
        assert!(only.admits(&lattice, &id, &north, 1, admins.iter()).is_ok());
        assert!(matches!(
            only.admits(&lattice, &other, &north, 1, admins.iter()),
            Err(JoinRefusal::OtherHost(_))
        ));
        let mut forged = JoinToken::sign(&grant, &admin);
        forged.grant = crate::envelope::encode(&JoinGrant {
            expires_at: u64::MAX,
            ..grant
        });
        assert_eq!(
            forged.admits(&lattice, &id, &north, 1, admins.iter()),
            Err(JoinRefusal::BadSignature)
        );
        assert_eq!(JoinToken::parse("nonsense"), Err(JoinRefusal::Malformed));
    }
}
