//! Who may ask the control plane what: signed `lattice ctl` requests, signed replies, and the
//! role table that authorizes them.
//!
//! Being able to publish on `lattice.<lattice>.ctl.*` is not enough. Every request travels as a
//! [`SignedRequest`]: the verb, the body, the lattice, the time and a random nonce, signed by a
//! user key (`U...`, a person or a script). The control plane checks, in this order:
//!
//! 1. the signature over all of it ([`SignedRequest::verify`]): unsigned or tampered requests,
//!    and requests signed for another lattice or verb, are refused;
//! 2. freshness ([`Freshness`]): a request signed too long ago (or too far ahead, a clock off by
//!    more than [`CLOCK_SKEW`]) is stale; a nonce seen before from the same key is a replay;
//! 3. the role table ([`Roles::authorize`]): the key must be known, and its role must allow the
//!    verb on the app it names.
//!
//! Every refusal is a [`Refusal`] that says which check failed and what to do. Replies are
//! [`SignedReply`]s bound to the request's nonce, signed by the control plane's key, so a reply
//! cannot be forged by another subscriber nor moved onto another request.
//!
//! ```
//! use lattice_protocol::auth::{Access, Freshness, Grant, Role, Roles, SignedRequest};
//! use lattice_protocol::keys::{KeyPair, KeyRole};
//! use lattice_protocol::names::{AppName, LatticeName};
//! let lattice = LatticeName::new("default")?;
//! let alice = KeyPair::generate(KeyRole::User);
//! let request = SignedRequest::sign(&lattice, "deploy", b"body".to_vec(), &alice, 1_000_000);
//!
//! let mut roles = Roles::default();
//! roles.insert(alice.public_key(), Grant::new("alice", Role::Deployer, ["shop-*"])?);
//! let mut fresh = Freshness::default();
//! request.verify(&lattice, "deploy")?;
//! fresh.check(&request, 1_000_500)?;
//! let app = AppName::new("shop-web")?;
//! roles.authorize(&request.signer, Access::App(&app))?;
//! assert!(fresh.check(&request, 1_000_600).is_err()); // the same request again: a replay
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, WireError};
use crate::keys::{KeyPair, KeyRole, PublicKey};
use crate::names::{AppName, LatticeName};

/// How far a request's time may be from the control plane's clock, either way: gateways'
/// and workstations' clocks really are this far off at times.
pub const CLOCK_SKEW: Duration = Duration::from_secs(90);

/// Nonces remembered at most (older ones are forgotten first; a request older than
/// [`CLOCK_SKEW`] is stale anyway). At this many fresh requests in the window, new ones are
/// refused as too many rather than let a replay through.
pub const MAX_REMEMBERED: usize = 200_000;

/// What a signature covers, before the fields: a request's bytes can never be taken for a
/// reply's, or for any other signed document's.
const REQUEST_DOMAIN: &[u8] = b"lattice-ctl-request/1\0";
const REPLY_DOMAIN: &[u8] = b"lattice-ctl-reply/1\0";

/// A `lattice ctl` request as it travels: what is asked, by whom, when, signed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    /// The lattice it is meant for.
    pub lattice: LatticeName,
    /// The verb (the last token of its subject).
    pub verb: String,
    /// The request itself (an envelope of the verb's request type).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// When it was signed, in milliseconds since the Unix epoch (the signer's clock).
    pub at_ms: u64,
    /// Random, so that two identical requests differ and a replay can be told apart.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// Who signed it: a user key (`U...`).
    pub signer: PublicKey,
    /// ed25519 over the domain, lattice, verb, time, nonce and body.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body may hold a manifest: never in logs.
        f.debug_struct("SignedRequest")
            .field("lattice", &self.lattice)
            .field("verb", &self.verb)
            .field("at_ms", &self.at_ms)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

fn request_bytes(
    lattice: &LatticeName,
    verb: &str,
    at_ms: u64,
    nonce: &[u8],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_DOMAIN.len() + 64 + body.len());
    out.extend_from_slice(REQUEST_DOMAIN);
    for part in [lattice.as_str().as_bytes(), verb.as_bytes(), nonce] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(body);
    out
}

impl SignedRequest {
    /// Signs `body` as a `verb` request to `lattice` at `at_ms`, with a fresh random nonce.
    pub fn sign(
        lattice: &LatticeName,
        verb: &str,
        body: Vec<u8>,
        key: &KeyPair,
        at_ms: u64,
    ) -> Self {
        let nonce = random_nonce();
        let signature = key.sign(&request_bytes(lattice, verb, at_ms, &nonce, &body));
        Self {
            lattice: lattice.clone(),
            verb: verb.to_string(),
            body,
            at_ms,
            nonce,
            signer: key.public_key(),
            signature,
        }
    }

    /// Checks the signature, and that the request was signed for this lattice and verb by a
    /// user key. Freshness and roles are checked apart ([`Freshness`], [`Roles`]).
    pub fn verify(&self, lattice: &LatticeName, verb: &str) -> Result<(), Refusal> {
        if self.signer.role() != KeyRole::User {
            return Err(Refusal::NotAUserKey {
                signer: self.signer.clone(),
            });
        }
        let bytes = request_bytes(
            &self.lattice,
            &self.verb,
            self.at_ms,
            &self.nonce,
            &self.body,
        );
        if self.nonce.len() != NONCE_LEN || !self.signer.verify(&bytes, &self.signature) {
            return Err(Refusal::BadSignature);
        }
        if &self.lattice != lattice || self.verb != verb {
            return Err(Refusal::Misdirected {
                signed_for: format!("{} {}", self.lattice, self.verb),
                arrived_as: format!("{lattice} {verb}"),
            });
        }
        Ok(())
    }
}

/// A control-plane reply as it travels: bound to the request's nonce, signed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReply {
    /// The reply itself (an envelope of `Result<reply type, WireError>`).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The nonce of the request it answers.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The control plane's key (`O...`).
    pub signer: PublicKey,
    /// ed25519 over the domain, nonce and body.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl fmt::Debug for SignedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedReply")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

fn reply_bytes(nonce: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLY_DOMAIN.len() + 20 + body.len());
    out.extend_from_slice(REPLY_DOMAIN);
    out.extend_from_slice(&(nonce.len() as u32).to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(body);
    out
}

impl SignedReply {
    /// Signs `body` as the answer to `request` (whose nonce it carries).
    pub fn sign(request_nonce: &[u8], body: Vec<u8>, key: &KeyPair) -> Self {
        let signature = key.sign(&reply_bytes(request_nonce, &body));
        Self {
            body,
            nonce: request_nonce.to_vec(),
            signer: key.public_key(),
            signature,
        }
    }

    /// Checks that this answers the request with `nonce` and was signed by one of `trusted`
    /// (the control planes' keys the caller knows).
    pub fn verify(&self, nonce: &[u8], trusted: &[PublicKey]) -> Result<(), ReplyRefusal> {
        if !trusted.contains(&self.signer) {
            return Err(ReplyRefusal::UnknownSigner {
                signer: self.signer.clone(),
            });
        }
        if self.nonce != nonce
            || !self
                .signer
                .verify(&reply_bytes(&self.nonce, &self.body), &self.signature)
        {
            return Err(ReplyRefusal::BadSignature);
        }
        Ok(())
    }
}

/// Why the caller did not believe a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyRefusal {
    /// Signed by a key the caller does not trust as a control plane.
    #[error(
        "the reply was signed by {signer}, which is not a control-plane key this command trusts; if the control plane's key changed, pass its public key with --control-key (or LATTICE_CONTROL_KEY)"
    )]
    UnknownSigner {
        /// The key that signed it.
        signer: PublicKey,
    },
    /// The signature does not hold, or the reply answers another request.
    #[error(
        "the reply's signature does not hold (or it answers another request): something on NATS answered in the control plane's place; check who may subscribe to lattice.<lattice>.ctl.*"
    )]
    BadSignature,
}

const NONCE_LEN: usize = 16;

fn random_nonce() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

/// Remembers the requests seen within the clock window, to refuse stale ones and replays.
#[derive(Debug, Default)]
pub struct Freshness {
    seen: HashMap<(PublicKey, Vec<u8>), u64>,
    /// (when it expires, key): the order in which to forget.
    order: VecDeque<(u64, (PublicKey, Vec<u8>))>,
}

impl Freshness {
    /// Accepts `request` at `now_ms` (the control plane's clock) if it is neither stale nor a
    /// replay, and remembers it.
    pub fn check(&mut self, request: &SignedRequest, now_ms: u64) -> Result<(), Refusal> {
        let skew = CLOCK_SKEW.as_millis() as u64;
        if request.at_ms + skew < now_ms || request.at_ms > now_ms + skew {
            return Err(Refusal::Stale {
                signed_at_ms: request.at_ms,
                now_ms,
            });
        }
        self.forget_before(now_ms);
        let id = (request.signer.clone(), request.nonce.clone());
        if self.seen.contains_key(&id) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(Refusal::TooMany);
        }
        // Remembered until it would be stale anyway.
        let expires = request.at_ms + skew;
        self.seen.insert(id.clone(), expires);
        self.order.push_back((expires, id));
        Ok(())
    }

    fn forget_before(&mut self, now_ms: u64) {
        // Requests arrive roughly in time order; one signed far ahead stays at the back until
        // those in front of it go, which only keeps it longer.
        while let Some((expires, _)) = self.order.front() {
            if *expires >= now_ms {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
    }

    /// Requests remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

/// What a role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including the role table.
    Admin,
    /// Read everything; deploy, scale, roll back, undeploy and requeue apps whose names match
    /// the grant's patterns.
    Deployer,
    /// Read only.
    Viewer,
}

impl Role {
    /// The role's name, as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "deployer" => Ok(Role::Deployer),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "unknown role `{other}`; use admin, deployer or viewer"
            )),
        }
    }
}

/// A glob over app names: `*` matches any run of characters, nothing else is special.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppPattern(String);

impl AppPattern {
    /// A pattern of name characters (`[A-Za-z0-9_-]`) and `*`.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty()
            || !pattern
                .chars()
                .all(|c| c == '*' || c == '-' || c == '_' || c.is_ascii_alphanumeric())
        {
            return Err(format!(
                "`{pattern}` is not an app pattern: use app-name characters ([A-Za-z0-9_-]) and `*`, e.g. `shop-*`"
            ));
        }
        Ok(Self(pattern.to_string()))
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

impl TryFrom<String> for AppPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::new(&s)
    }
}

impl From<AppPattern> for String {
    fn from(p: AppPattern) -> String {
        p.0
    }
}

impl fmt::Display for AppPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One user's entry in the role table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Who this is, for people reading the table.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// For deployers: the apps they may change. Empty for the other roles.
    #[serde(default)]
    pub apps: Vec<AppPattern>,
}

impl Grant {
    /// A grant of `role` named `name`; `apps` are patterns, needed by (and only by) deployers.
    pub fn new<I, S>(name: &str, role: Role, apps: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let apps = apps
            .into_iter()
            .map(|p| AppPattern::new(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        match (role, apps.is_empty()) {
            (Role::Deployer, true) => Err(
                "a deployer needs the apps it may change: give one or more patterns, e.g. --apps 'shop-*'"
                    .into(),
            ),
            (Role::Admin | Role::Viewer, false) => Err(format!(
                "only deployers are limited to apps; an {} may act on every app (drop --apps)",
                role.name()
            )),
            _ => Ok(Self {
                name: name.to_string(),
                role,
                apps,
            }),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Reading anything.
    Read,
    /// Changing one app (deploy, scale, rollback, undeploy, requeue of its links).
    App(&'a AppName),
    /// Changing the lattice itself (hosts, labels, the role table).
    Lattice,
    /// Changing the app a manifest names (a deploy). The control plane reads the name from the
    /// manifest and authorizes [`Access::App`] of it; [`Roles::authorize`], which cannot read
    /// manifests, allows this only to admins.
    Manifest(&'a str),
}

/// The lattice's role table: user key → grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// Who may do what.
    pub users: BTreeMap<PublicKey, Grant>,
}

impl Roles {
    /// Adds or replaces `key`'s grant.
    pub fn insert(&mut self, key: PublicKey, grant: Grant) {
        self.users.insert(key, grant);
    }

    /// Whether `signer` may do what `access` needs.
    pub fn authorize(&self, signer: &PublicKey, access: Access<'_>) -> Result<(), Refusal> {
        let Some(grant) = self.users.get(signer) else {
            return Err(Refusal::UnknownUser {
                signer: signer.clone(),
            });
        };
        let allowed = match (grant.role, access) {
            (Role::Admin, _) | (_, Access::Read) => true,
            (Role::Deployer, Access::App(app)) => {
                grant.apps.iter().any(|p| p.matches(app.as_str()))
            }
            (Role::Deployer, Access::Lattice | Access::Manifest(_)) | (Role::Viewer, _) => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::OutOfRole {
                who: grant.name.clone(),
                role: grant.role,
                wanted: match access {
                    Access::Read => "read".into(),
                    Access::App(app) => format!("change app `{app}`"),
                    Access::Lattice => "change the lattice (hosts, labels, roles)".into(),
                    Access::Manifest(_) => "deploy an app not named in the request".into(),
                },
                apps: grant.apps.iter().map(AppPattern::to_string).collect(),
            })
        }
    }

    /// The table with `key` granted `grant` (added, or its grant replaced). Refused for a key
    /// that is not a user key, and when it would leave the lattice without an admin.
    pub fn granted(&self, key: &PublicKey, grant: Grant) -> Result<Roles, WireError> {
        if key.role() != KeyRole::User {
            return Err(WireError::new(
                ErrorCode::InvalidInput,
                format!(
                    "{key} is not a user key (`U...`); make one with `lattice keys gen user` and add its public key"
                ),
            ));
        }
        let mut next = self.clone();
        next.insert(key.clone(), grant);
        next.keeps_an_admin(key)?;
        Ok(next)
    }

    /// The table without `key`. Refused for a key not in it, and for the last admin.
    pub fn revoked(&self, key: &PublicKey) -> Result<Roles, WireError> {
        let mut next = self.clone();
        if next.users.remove(key).is_none() {
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("{key} is not in the role table; `lattice ctl users list` shows who is"),
            ));
        }
        next.keeps_an_admin(key)?;
        Ok(next)
    }

    fn keeps_an_admin(&self, changed: &PublicKey) -> Result<(), WireError> {
        if self.admins().next().is_none() {
            return Err(WireError::new(
                ErrorCode::Conflict,
                format!(
                    "{changed} is the last admin: the lattice would have nobody who may grant roles; add another admin first"
                ),
            ));
        }
        Ok(())
    }

    /// The admins' keys.
    pub fn admins(&self) -> impl Iterator<Item = &PublicKey> {
        self.users
            .iter()
            .filter(|(_, g)| g.role == Role::Admin)
            .map(|(k, _)| k)
    }
}

/// Why a request was refused; each says which check failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a signed request at all (an older `lattice`, or a bare NATS publish).
    #[error(
        "unsigned request: every `lattice ctl` request must be signed by a user key; pass --key (or LATTICE_KEY) with a key made by `lattice keys gen user`, or upgrade the `lattice` CLI"
    )]
    Unsigned,
    /// Signed by a key that is not a user key.
    #[error(
        "the request is signed by {signer}, which is not a user key (`U...`); make one with `lattice keys gen user` and have an admin add it with `lattice ctl users add`"
    )]
    NotAUserKey {
        /// The key.
        signer: PublicKey,
    },
    /// The signature does not hold: tampered with, or not signed by the key it names.
    #[error("the request's signature does not hold: it was changed after signing; send it again")]
    BadSignature,
    /// Signed for another lattice or verb than the subject it arrived on.
    #[error(
        "the request was signed for `{signed_for}` but arrived as `{arrived_as}`; send it again to the right lattice"
    )]
    Misdirected {
        /// Lattice and verb signed.
        signed_for: String,
        /// Lattice and verb of the subject.
        arrived_as: String,
    },
    /// Signed too long ago or too far ahead.
    #[error(
        "stale request: signed at {signed_at_ms} ms, the control plane's clock says {now_ms} ms (more than 90 s apart); check this machine's clock (NTP), then send it again"
    )]
    Stale {
        /// The request's time.
        signed_at_ms: u64,
        /// The control plane's time.
        now_ms: u64,
    },
    /// The same request was seen before.
    #[error(
        "replayed request: this exact signed request was already received; a new request is signed afresh each time (`lattice ctl` does this)"
    )]
    Replayed,
    /// Too many requests within the clock window to remember them all.
    #[error("too many requests in the last 90 s; wait, then send it again")]
    TooMany,
    /// The key is not in the role table.
    #[error(
        "unknown user key {signer}: ask an admin to add it with `lattice ctl users add {signer} --role viewer|deployer|admin`"
    )]
    UnknownUser {
        /// The key.
        signer: PublicKey,
    },
    /// The role does not allow it.
    #[error("{who} is a {} and may not {wanted}{}; ask an admin for a role that allows it", role.name(), if apps.is_empty() { String::new() } else { format!(" (allowed apps: {})", apps.join(", ")) })]
    OutOfRole {
        /// The grant's name.
        who: String,
        /// Its role.
        role: Role,
        /// What the request wanted.
        wanted: String,
        /// A deployer's patterns.
        apps: Vec<String>,
    },
}

impl From<Refusal> for WireError {
    fn from(r: Refusal) -> Self {
        WireError::new(ErrorCode::NotAllowed, r.to_string())
    }
}

impl From<ReplyRefusal> for WireError {
    fn from(r: ReplyRefusal) -> Self {
        WireError::new(ErrorCode::NotAllowed, r.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lattice() -> LatticeName {
        LatticeName::new("default").expect("valid")
    }

    fn signed(key: &KeyPair, at_ms: u64) -> SignedRequest {
        SignedRequest::sign(&lattice(), "deploy", b"manifest".to_vec(), key, at_ms)
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_is_refused() {
        let key = KeyPair::generate(KeyRole::User);
        let request = signed(&key, 5_000);
        assert_eq!(request.verify(&lattice(), "deploy"), Ok(()));

        let mut body = request.clone();
        body.body = b"other".to_vec();
        assert_eq!(
            body.verify(&lattice(), "deploy"),
            Err(Refusal::BadSignature)
        );
        let mut time = request.clone();
        time.at_ms += 1;
        assert_eq!(
            time.verify(&lattice(), "deploy"),
            Err(Refusal::BadSignature)
        );
        let mut verb = request.clone();
        verb.verb = "undeploy".into();
        assert_eq!(
            verb.verify(&lattice(), "undeploy"),
            Err(Refusal::BadSignature)
        );
        assert!(matches!(
            request.verify(&lattice(), "scale"),
            Err(Refusal::Misdirected { .. })
        ));
        let other = LatticeName::new("other").expect("valid");
        assert!(matches!(
            request.verify(&other, "deploy"),
            Err(Refusal::Misdirected { .. })
        ));
        let mut stranger = request.clone();
        stranger.signer = KeyPair::generate(KeyRole::User).public_key();
        assert_eq!(
            stranger.verify(&lattice(), "deploy"),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn only_user_keys_sign_requests() {
        let host = KeyPair::generate(KeyRole::Host);
        assert!(matches!(
            signed(&host, 1).verify(&lattice(), "deploy"),
            Err(Refusal::NotAUserKey { .. })
        ));
    }

    #[test]
    fn a_request_round_trips_the_wire() {
        let key = KeyPair::generate(KeyRole::User);
        let request = signed(&key, 7);
        let back: SignedRequest =
            crate::envelope::decode(&crate::envelope::encode(&request)).expect("decodes");
        assert_eq!(back, request);
        assert_eq!(back.verify(&lattice(), "deploy"), Ok(()));
    }

    #[test]
    fn stale_and_replayed_requests_are_refused() {
        let key = KeyPair::generate(KeyRole::User);
        let skew = CLOCK_SKEW.as_millis() as u64;
        let now = 10 * skew;
        let mut fresh = Freshness::default();
        let request = signed(&key, now);
        assert_eq!(fresh.check(&request, now), Ok(()));
        assert_eq!(fresh.check(&request, now + 1), Err(Refusal::Replayed));
        // Within the skew either way: accepted.
        assert_eq!(fresh.check(&signed(&key, now - skew), now), Ok(()));
        assert_eq!(fresh.check(&signed(&key, now + skew), now), Ok(()));
        // Beyond it: stale.
        assert!(matches!(
            fresh.check(&signed(&key, now - skew - 1), now),
            Err(Refusal::Stale { .. })
        ));
        assert!(matches!(
            fresh.check(&signed(&key, now + skew + 1), now),
            Err(Refusal::Stale { .. })
        ));
        // Forgotten once it would be stale: the memory does not grow without bound.
        assert!(matches!(
            fresh.check(&request, now + 2 * skew),
            Err(Refusal::Stale { .. })
        ));
        assert_eq!(
            fresh.check(&signed(&key, now + 4 * skew), now + 4 * skew),
            Ok(())
        );
        assert_eq!(fresh.remembered(), 1);
    }

    #[test]
    fn roles_allow_what_they_say_and_nothing_more() {
        let admin = KeyPair::generate(KeyRole::User).public_key();
        let deployer = KeyPair::generate(KeyRole::User).public_key();
        let viewer = KeyPair::generate(KeyRole::User).public_key();
        let stranger = KeyPair::generate(KeyRole::User).public_key();
        let mut roles = Roles::default();
        roles.insert(
            admin.clone(),
            Grant::new("root", Role::Admin, [""; 0]).expect("valid"),
        );
        roles.insert(
            deployer.clone(),
            Grant::new("ci", Role::Deployer, ["shop-*", "blog"]).expect("valid"),
        );
        roles.insert(
            viewer.clone(),
            Grant::new("ops", Role::Viewer, [""; 0]).expect("valid"),
        );
        let shop = AppName::new("shop-web").expect("valid");
        let blog = AppName::new("blog").expect("valid");
        let other = AppName::new("blogs").expect("valid");

        for who in [&admin, &deployer, &viewer] {
            assert_eq!(roles.authorize(who, Access::Read), Ok(()));
        }
        assert_eq!(roles.authorize(&admin, Access::Lattice), Ok(()));
        assert_eq!(roles.authorize(&admin, Access::App(&other)), Ok(()));
        assert_eq!(roles.authorize(&deployer, Access::App(&shop)), Ok(()));
        assert_eq!(roles.authorize(&deployer, Access::App(&blog)), Ok(()));
        assert!(matches!(
            roles.authorize(&deployer, Access::App(&other)),
            Err(Refusal::OutOfRole { .. })
        ));
        assert!(matches!(
            roles.authorize(&deployer, Access::Lattice),
            Err(Refusal::OutOfRole { .. })
        ));
        assert!(matches!(
            roles.authorize(&viewer, Access::App(&shop)),
            Err(Refusal::OutOfRole { .. })
        ));
        assert!(matches!(
            roles.authorize(&stranger, Access::Read),
            Err(Refusal::UnknownUser { .. })
        ));
    }

    #[test]
    fn the_last_admin_is_never_removed_nor_demoted() {
        let root = KeyPair::generate(KeyRole::User).public_key();
        let other = KeyPair::generate(KeyRole::User).public_key();
        let admin = || Grant::new("root", Role::Admin, [""; 0]).expect("valid");
        let viewer = || Grant::new("ops", Role::Viewer, [""; 0]).expect("valid");
        let mut roles = Roles::default();
        roles.insert(root.clone(), admin());
        let code = |r: Result<Roles, WireError>| r.map(|_| ()).map_err(|e| e.code);
        assert_eq!(code(roles.revoked(&root)), Err(ErrorCode::Conflict));
        assert_eq!(
            code(roles.granted(&root, viewer())),
            Err(ErrorCode::Conflict)
        );
        assert_eq!(code(roles.revoked(&other)), Err(ErrorCode::NotFound));
        let host = KeyPair::generate(KeyRole::Host).public_key();
        assert_eq!(
            code(roles.granted(&host, viewer())),
            Err(ErrorCode::InvalidInput)
        );
        // With a second admin, the first may go.
        let two = roles.granted(&other, admin()).expect("a second admin");
        let one = two.revoked(&root).expect("not the last admin");
        assert_eq!(one.admins().collect::<Vec<_>>(), vec![&other]);
    }

    #[test]
    fn grants_are_checked_when_made() {
        assert!(Grant::new("x", Role::Deployer, [""; 0]).is_err());
        assert!(Grant::new("x", Role::Viewer, ["a"]).is_err());
        assert!(Grant::new("x", Role::Deployer, ["a.b"]).is_err());
        assert!(Grant::new("x", Role::Deployer, ["a*b"]).is_ok());
    }

    #[test]
    fn patterns_match_like_globs() {
        let p = AppPattern::new("a*b*").expect("valid");
        assert!(p.matches("ab"));
        assert!(p.matches("axxbyy"));
        assert!(!p.matches("ba"));
        assert!(AppPattern::new("exact").expect("valid").matches("exact"));
        assert!(!AppPattern::new("exact").expect("valid").matches("exactly"));
    }

    #[test]
    fn a_reply_verifies_only_for_its_request_and_a_trusted_signer() {
        let control = KeyPair::generate(KeyRole::Operator);
        let forger = KeyPair::generate(KeyRole::Operator);
        let trusted = [control.public_key()];
        let nonce = random_nonce();
        let reply = SignedReply::sign(&nonce, b"ok".to_vec(), &control);
        assert_eq!(reply.verify(&nonce, &trusted), Ok(()));
        assert_eq!(
            reply.verify(&random_nonce(), &trusted),
            Err(ReplyRefusal::BadSignature)
        );
        let mut changed = reply.clone();
        changed.body = b"forged".to_vec();
        assert_eq!(
            changed.verify(&nonce, &trusted),
            Err(ReplyRefusal::BadSignature)
        );
        let forged = SignedReply::sign(&nonce, b"ok".to_vec(), &forger);
        assert!(matches!(
            forged.verify(&nonce, &trusted),
            Err(ReplyRefusal::UnknownSigner { .. })
        ));
    }
}
