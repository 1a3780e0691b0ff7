//! Signed component claims: who vouches for a component, and for exactly which bytes.
//!
//! The claims travel inside the component as a custom section named [`CLAIMS_SECTION`], so a
//! signed component is still an ordinary component that any runtime loads. The section holds the
//! MessagePack-encoded [`Claims`] and an ed25519 signature over those exact bytes by the issuer.
//! The claims carry the sha256 of the component *without* that section, so changing any other
//! byte (tampering) or the claims themselves (forgery) is detected.
//!
//! ```
//! use lattice_protocol::claims::{sign_component, verify_component, ClaimsOptions, Trust};
//! use lattice_protocol::keys::{KeyPair, KeyRole};
//! # let component = b"\0asm\x0d\0\x01\0".to_vec();
//! let issuer = KeyPair::generate(KeyRole::Issuer);
//! let signed = sign_component(&component, &issuer, &ClaimsOptions::named("hello", "0.1.0"), 1_000)?;
//! let trust = Trust::new(vec![issuer.public_key()]);
//! let claims = verify_component(&signed, &trust, 1_000)?;
//! assert_eq!(claims.name, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Components signed by wasmCloud's `wash` carry a JWT instead; [`wash`] reads and verifies it,
//! and [`read_claims`] and [`verify_component`] accept either (Lattice's section first).

use serde::{Deserialize, Serialize};

pub mod wash;

use crate::digest::Digest;
use crate::keys::{KeyPair, KeyRole, PublicKey};

/// The name of the custom section that holds the signed claims.
pub const CLAIMS_SECTION: &str = "lattice-claims";

/// Interfaces every component may import without being allowed explicitly: the base of WASI
/// that Rust's standard library (and most toolchains) pull in even for a plain handler.
pub const BASE_INTERFACES: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

/// What an issuer states about a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who signed (an issuer public key, `A...`).
    pub issuer: PublicKey,
    /// The component's stable identity chosen by the issuer (defaults to its name).
    pub subject: String,
    /// Its human name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// sha256 of the component without the claims section.
    pub module_hash: Digest,
    /// Interfaces it may import besides [`BASE_INTERFACES`]: prefixes such as `wasi:http` or
    /// `wasi:keyvalue/store`. Empty: no restriction was declared.
    pub allow: Vec<String>,
    /// Unix seconds when it was signed.
    pub issued_at: u64,
    /// Unix seconds before which it is not valid.
    pub not_before: Option<u64>,
    /// Unix seconds after which it is not valid.
    pub expires: Option<u64>,
    /// Where the claims came from. Never part of Lattice's signed section (it is set when read).
    #[serde(default, skip_serializing_if = "ClaimsFormat::is_lattice")]
    pub format: ClaimsFormat,
}

/// How a component's claims were signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimsFormat {
    /// Lattice's `lattice-claims` section (`lattice sign`).
    #[default]
    Lattice,
    /// wasmCloud's JWT in a `wasmcloud_jwt` (or `jwt`) section (`wash build`, `wash claims sign`).
    Wash,
}

impl ClaimsFormat {
    /// Whether these are Lattice's own claims.
    pub fn is_lattice(&self) -> bool {
        *self == ClaimsFormat::Lattice
    }
}

impl Claims {
    /// Whether `import` (a WIT name like `wasi:http/types@0.2.0`) is allowed by these claims.
    pub fn allows(&self, import: &str) -> bool {
        allow_list_allows(&self.allow, import)
    }

    /// Whether the claims are valid at `now` (unix seconds): the part of [`verify_component`]
    /// that changes with time, for a host that verified the rest once and starts the same
    /// component again later.
    pub fn check_window(&self, now: u64) -> Result<(), VerifyError> {
        // A wash token's window was set on the signer's machine, in whole days: it is judged
        // with the lattice's skew margin. Lattice's own claims keep their exact window.
        let margin = match self.format {
            ClaimsFormat::Lattice => 0,
            ClaimsFormat::Wash => crate::clock::MAX_SKEW.as_secs(),
        };
        if let Some(expires) = self.expires.filter(|e| now >= e.saturating_add(margin)) {
            return Err(VerifyError::Expired { expires });
        }
        if let Some(not_before) = self
            .not_before
            .filter(|nb| now.saturating_add(margin) < *nb)
        {
            return Err(VerifyError::NotYetValid { not_before });
        }
        Ok(())
    }
}

/// Whether `import` (a WIT name like `wasi:http/types@0.2.0`) is allowed by the claims allow
/// list `allow`: an empty list allows everything; otherwise [`BASE_INTERFACES`] and every
/// import equal to an entry or extending it with `/...` or `@...` (`wasi:http` allows
/// `wasi:http/types@0.2.0`, `wasi:keyvalue/store` allows `wasi:keyvalue/store@0.2.0-draft`).
/// Hosts refuse a component whose imports this does not allow; the control plane refuses a link
/// on an interface it does not allow.
pub fn allow_list_allows(allow: &[String], import: &str) -> bool {
    allow.is_empty()
        || BASE_INTERFACES.iter().any(|p| import.starts_with(p))
        || allow.iter().any(|a| {
            import == a
                || import
                    .strip_prefix(a.as_str())
                    .is_some_and(|rest| rest.starts_with(['/', '@']))
        })
}

#[derive(Debug, Serialize, Deserialize)]
struct ClaimsSection {
    #[serde(with = "serde_bytes")]
    claims: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

/// What the signer chooses; the rest is computed.
#[derive(Debug, Clone, Default)]
pub struct ClaimsOptions {
    /// Human name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Identity; the name when `None`.
    pub subject: Option<String>,
    /// Allowed imports.
    pub allow: Vec<String>,
    /// Not valid before (unix seconds).
    pub not_before: Option<u64>,
    /// Not valid after (unix seconds).
    pub expires: Option<u64>,
}

impl ClaimsOptions {
    /// Options with a name and version and nothing else.
    pub fn named(name: &str, version: &str) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
            ..Self::default()
        }
    }
}

/// The issuers a host trusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    issuers: Vec<PublicKey>,
}

impl Trust {
    /// Trusts exactly these issuers.
    pub fn new(issuers: Vec<PublicKey>) -> Self {
        Self { issuers }
    }

    /// Whether `key` is trusted.
    pub fn trusts(&self, key: &PublicKey) -> bool {
        self.issuers.contains(key)
    }
}

/// Why a component was refused. Each check has its own variant, so a host can report exactly
/// which one failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the wasm magic bytes)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "not a WebAssembly component: it is a core module; build for wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    NotAComponent,
    /// The section structure is broken.
    #[error("malformed WebAssembly: {0}")]
    Malformed(String),
    /// No claims section.
    #[error(
        "unsigned component: it has no `{CLAIMS_SECTION}` section (nor a wasmCloud `wasmcloud_jwt`); sign it with `lattice sign` (or `wash claims sign`)"
    )]
    Unsigned,
    /// The claims section cannot be decoded.
    #[error("malformed claims section: {0}")]
    MalformedClaims(String),
    /// The signature does not match the claims and issuer.
    #[error(
        "bad signature: the claims are not signed by issuer {issuer}; the claims were altered or signed with another key"
    )]
    BadSignature {
        /// The issuer named in the claims.
        issuer: String,
    },
    /// The component's bytes differ from those signed.
    #[error(
        "tampered component: its content hash is {actual} but the claims were signed for {expected}"
    )]
    Tampered {
        /// The hash in the claims.
        expected: Digest,
        /// The hash of the bytes received.
        actual: Digest,
    },
    /// The issuer is not on the trust list.
    #[error(
        "untrusted issuer {issuer}: add it to the host's trusted issuers (`--trust-issuer`; a wash account key `A...` goes there too) or sign with a trusted key"
    )]
    UntrustedIssuer {
        /// The issuer.
        issuer: PublicKey,
    },
    /// Past its expiry.
    #[error("expired component: its claims expired at {expires} (unix seconds); sign it again")]
    Expired {
        /// When it expired.
        expires: u64,
    },
    /// Before its not-before time.
    #[error("component not valid yet: its claims are valid from {not_before} (unix seconds)")]
    NotYetValid {
        /// When it becomes valid.
        not_before: u64,
    },
    /// It imports something its claims do not allow.
    #[error(
        "component imports `{import}`, which its signed claims do not allow (allowed: {allowed})"
    )]
    ImportNotAllowed {
        /// The import.
        import: String,
        /// The allow list.
        allowed: String,
    },
}

/// Why signing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The input is not a component.
    #[error(transparent)]
    Input(#[from] VerifyError),
    /// The key is not an issuer key.
    #[error(
        "signing needs an issuer key (`lattice keys gen issuer`), this one is for the {0} role"
    )]
    NotIssuer(&'static str),
}

const MAGIC: &[u8; 4] = b"\0asm";
const HEADER_LEN: usize = 8;

/// Checks the 8-byte header: wasm magic and the component layer.
pub fn check_component_header(bytes: &[u8]) -> Result<(), VerifyError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(VerifyError::NotWasm);
    }
    // Bytes 6..8 are the layer: 0 for core modules, 1 for components.
    if bytes[6..8] != [1, 0] {
        return Err(VerifyError::NotAComponent);
    }
    Ok(())
}

/// One top-level section: where it starts and ends, and its id.
struct Section {
    id: u8,
    start: usize,
    content_start: usize,
    end: usize,
}

fn read_leb_u32(bytes: &[u8], mut pos: usize) -> Result<(u32, usize), VerifyError> {
    let mut result: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *bytes
            .get(pos)
            .ok_or_else(|| VerifyError::Malformed("section length runs past the end".into()))?;
        pos += 1;
        result |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(result)
                .map(|v| (v, pos))
                .map_err(|_| VerifyError::Malformed("section length too large".into()));
        }
    }
    Err(VerifyError::Malformed(
        "section length is not a valid LEB128".into(),
    ))
}

/// The top-level sections. Components and core modules frame sections the same way (an id byte,
/// a LEB128 length, the content), and only the top level matters for claims.
fn sections(bytes: &[u8]) -> Result<Vec<Section>, VerifyError> {
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        let id = bytes[pos];
        let (len, content_start) = read_leb_u32(bytes, pos + 1)?;
        let end = content_start
            .checked_add(len as usize)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| {
                VerifyError::Malformed("a section runs past the end of the file".into())
            })?;
        out.push(Section {
            id,
            start: pos,
            content_start,
            end,
        });
        pos = end;
    }
    Ok(out)
}

/// The name and data of a custom section.
fn custom_section<'a>(bytes: &'a [u8], s: &Section) -> Result<(&'a str, &'a [u8]), VerifyError> {
    let (name_len, name_start) = read_leb_u32(bytes, s.content_start)?;
    let name_end = name_start + name_len as usize;
    if name_end > s.end {
        return Err(VerifyError::Malformed(
            "custom section name runs past its section".into(),
        ));
    }
    let name = std::str::from_utf8(&bytes[name_start..name_end])
        .map_err(|_| VerifyError::Malformed("custom section name is not UTF-8".into()))?;
    Ok((name, &bytes[name_end..s.end]))
}

/// Splits a component into (its bytes without claims sections, the last claims section's data).
fn split_claims(bytes: &[u8]) -> Result<(Vec<u8>, Option<&[u8]>), VerifyError> {
    check_component_header(bytes)?;
    let mut stripped = Vec::with_capacity(bytes.len());
    stripped.extend_from_slice(&bytes[..HEADER_LEN]);
    let mut claims = None;
    for s in sections(bytes)? {
        if s.id == 0 {
            let (name, data) = custom_section(bytes, &s)?;
            if name == CLAIMS_SECTION {
                claims = Some(data);
                continue;
            }
        }
        stripped.extend_from_slice(&bytes[s.start..s.end]);
    }
    Ok((stripped, claims))
}

fn encode_custom_section(name: &str, data: &[u8]) -> Vec<u8> {
    let mut content = Vec::new();
    leb_u32(&mut content, name.len() as u32);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(data);
    let mut out = vec![0u8];
    leb_u32(&mut out, content.len() as u32);
    out.extend_from_slice(&content);
    out
}

fn leb_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Signs `component`, replacing any claims it already carries, and returns the signed bytes.
pub fn sign_component(
    component: &[u8],
    issuer: &KeyPair,
    options: &ClaimsOptions,
    now: u64,
) -> Result<Vec<u8>, SignError> {
    if issuer.role() != KeyRole::Issuer {
        return Err(SignError::NotIssuer(issuer.role().name()));
    }
    let (mut stripped, _) = split_claims(component)?;
    let claims = Claims {
        issuer: issuer.public_key(),
        subject: options
            .subject
            .clone()
            .unwrap_or_else(|| options.name.clone()),
        name: options.name.clone(),
        version: options.version.clone(),
        module_hash: Digest::of(&stripped),
        allow: options.allow.clone(),
        issued_at: now,
        not_before: options.not_before,
        expires: options.expires,
        format: ClaimsFormat::Lattice,
    };
    let claims_bytes = rmp_serde::to_vec_named(&claims).unwrap_or_default();
    let section = ClaimsSection {
        signature: issuer.sign(&claims_bytes),
        claims: claims_bytes,
    };
    let data = rmp_serde::to_vec_named(&section).unwrap_or_default();
    stripped.extend_from_slice(&encode_custom_section(CLAIMS_SECTION, &data));
    Ok(stripped)
}

/// The claims a component carries, without checking trust or time: for `lattice inspect`.
/// Returns the claims and whether the signature and content hash verify. Lattice's own section
/// is read first; without one, a JWT that `wash` embedded ([`wash`]).
pub fn read_claims(component: &[u8]) -> Result<(Claims, Result<(), VerifyError>), VerifyError> {
    let (stripped, section) = split_claims(component)?;
    let Some(section) = section else {
        return match wash::find_token(component)? {
            Some(jwt) => wash::read(component, jwt),
            None => Err(VerifyError::Unsigned),
        };
    };
    let section: ClaimsSection =
        rmp_serde::from_slice(section).map_err(|e| VerifyError::MalformedClaims(e.to_string()))?;
    let mut claims: Claims = rmp_serde::from_slice(&section.claims)
        .map_err(|e| VerifyError::MalformedClaims(e.to_string()))?;
    claims.format = ClaimsFormat::Lattice;
    let integrity = if !claims.issuer.verify(&section.claims, &section.signature)
        || claims.issuer.role() != KeyRole::Issuer
    {
        Err(VerifyError::BadSignature {
            issuer: claims.issuer.to_string(),
        })
    } else {
        let actual = Digest::of(&stripped);
        if actual != claims.module_hash {
            Err(VerifyError::Tampered {
                expected: claims.module_hash.clone(),
                actual,
            })
        } else {
            Ok(())
        }
    };
    Ok((claims, integrity))
}

/// Verifies a component completely: signature, content hash, trusted issuer, validity window and
/// allowed imports. `now` is unix seconds. Run this before compiling anything.
pub fn verify_component(component: &[u8], trust: &Trust, now: u64) -> Result<Claims, VerifyError> {
    let (claims, integrity) = read_claims(component)?;
    integrity?;
    if !trust.trusts(&claims.issuer) {
        return Err(VerifyError::UntrustedIssuer {
            issuer: claims.issuer,
        });
    }
    claims.check_window(now)?;
    if !claims.allow.is_empty() {
        for import in crate::wit::component_interfaces(component)?.imports {
            if !claims.allows(&import) {
                return Err(VerifyError::ImportNotAllowed {
                    import,
                    allowed: claims.allow.join(", "),
                });
            }
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: just the header.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn component_with_custom(name: &str, data: &[u8]) -> Vec<u8> {
        let mut c = EMPTY_COMPONENT.to_vec();
        c.extend_from_slice(&encode_custom_section(name, data));
        c
    }

    fn setup() -> (KeyPair, Trust, Vec<u8>) {
        let issuer = KeyPair::generate(KeyRole::Issuer);
        let trust = Trust::new(vec![issuer.public_key()]);
        let signed = sign_component(
            &component_with_custom("other", b"payload"),
            &issuer,
            &ClaimsOptions::named("hello", "1.0.0"),
            100,
        )
        .expect("signs");
        (issuer, trust, signed)
    }

    #[test]
    fn signed_component_verifies() {
        let (issuer, trust, signed) = setup();
        let claims = verify_component(&signed, &trust, 100).expect("verifies");
        assert_eq!(claims.issuer, issuer.public_key());
        assert_eq!(claims.subject, "hello");
    }

    #[test]
    fn each_failure_is_named() {
        let (_, trust, signed) = setup();
        assert_eq!(
            verify_component(&component_with_custom("x", b""), &trust, 0),
            Err(VerifyError::Unsigned)
        );

        // Tampering with the payload of another section changes the content hash.
        let mut tampered = signed.clone();
        let pos = tampered
            .windows(7)
            .position(|w| w == b"payload")
            .expect("present");
        tampered[pos] = b'P';
        assert!(matches!(
            verify_component(&tampered, &trust, 100),
            Err(VerifyError::Tampered { .. })
        ));

        // Re-signing with another key keeps a valid signature but an untrusted issuer.
        let stranger = KeyPair::generate(KeyRole::Issuer);
        let resigned = sign_component(&signed, &stranger, &ClaimsOptions::named("hello", "1"), 100)
            .expect("signs");
        assert!(matches!(
            verify_component(&resigned, &trust, 100),
            Err(VerifyError::UntrustedIssuer { .. })
        ));

        let expiring = sign_component(
            &signed,
            &KeyPair::from_seed(&setup().0.seed()).expect("seed"),
            &ClaimsOptions {
                expires: Some(150),
                not_before: Some(50),
                ..ClaimsOptions::named("hello", "1")
            },
            100,
        )
        .expect("signs");
        let (claims, _) = read_claims(&expiring).expect("reads");
        let trust2 = Trust::new(vec![claims.issuer.clone()]);
        assert!(verify_component(&expiring, &trust2, 100).is_ok());
        assert_eq!(
            verify_component(&expiring, &trust2, 150),
            Err(VerifyError::Expired { expires: 150 })
        );
        assert_eq!(
            verify_component(&expiring, &trust2, 10),
            Err(VerifyError::NotYetValid { not_before: 50 })
        );
    }

    #[test]
    fn forged_claims_fail_the_signature() {
        let (_, trust, signed) = setup();
        // Change the version string inside the signed claims: the signature no longer matches.
        let mut forged = signed.clone();
        let pos = forged
            .windows(5)
            .rposition(|w| w == b"1.0.0")
            .expect("present");
        forged[pos] = b'9';
        assert!(matches!(
            verify_component(&forged, &trust, 100),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    #[test]
    fn core_modules_and_garbage_are_refused() {
        let trust = Trust::default();
        assert_eq!(
            verify_component(b"\0asm\x01\0\0\0", &trust, 0),
            Err(VerifyError::NotAComponent)
        );
        assert_eq!(
            verify_component(b"hello", &trust, 0),
            Err(VerifyError::NotWasm)
        );
        let mut truncated = component_with_custom("x", b"abc");
        truncated.pop();
        assert!(matches!(
            verify_component(&truncated, &trust, 0),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn only_issuer_keys_sign() {
        let op = KeyPair::generate(KeyRole::Operator);
        assert!(matches!(
            sign_component(EMPTY_COMPONENT, &op, &ClaimsOptions::named("a", "1"), 0),
            Err(SignError::NotIssuer("operator"))
        ));
    }

    #[test]
    fn allow_list_matches_prefixes() {
        let (_, _, signed) = setup();
        let (mut claims, _) = read_claims(&signed).expect("reads");
        claims.allow = vec!["wasi:http".into(), "wasi:keyvalue/store".into()];
        assert!(claims.allows("wasi:http/types@0.2.0"));
        assert!(claims.allows("wasi:keyvalue/store@0.2.0-draft"));
        assert!(claims.allows("wasi:cli/environment@0.2.6"));
        assert!(!claims.allows("wasi:keyvalue/atomics@0.2.0-draft"));
        assert!(!claims.allows("wasi:httpx/foo"));
    }
}
