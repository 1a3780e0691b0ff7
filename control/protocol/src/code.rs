//! Precompiled code: a component's native code, compiled ahead for one engine, signed by an
//! issuer, kept in the lattice's artifact store beside the component.
//!
//! A gateway that finds code for its engine downloads it instead of compiling (hundreds of
//! milliseconds of CPU for a small component, seconds for a large one). Code is mapped and run
//! as native code, so a host loads only code an issuer it trusts signed: the signature covers
//! the component's digest, the engine fingerprint the code was made for and the code's own
//! digest ([`CodeClaim`]), under a domain of its own so no other signed thing can pass for it.
//!
//! The object is named by component and fingerprint ([`object_name`]), so a host asks for
//! exactly the code it can load and never lists the store. Its bytes are [`Precompiled::encode`]:
//! the signed claim (an envelope), then the code.
//!
//! ```
//! use lattice_protocol::claims::Trust;
//! use lattice_protocol::code::{CodeClaim, Precompiled};
//! use lattice_protocol::digest::Digest;
//! use lattice_protocol::keys::{KeyPair, KeyRole};
//! let issuer = KeyPair::generate(KeyRole::Issuer);
//! let component = Digest::of(b"the component");
//! let claim = CodeClaim::new(&component, "x86_64-unknown-linux-gnu", "0123456789abcdef", b"code");
//! let object = Precompiled::sign(claim, b"code".to_vec(), &issuer).encode();
//! let trust = Trust::new(vec![issuer.public_key()]);
//! let stored = Precompiled::decode(&object)?;
//! assert_eq!(stored.open(&component, "0123456789abcdef", &trust)?, b"code");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::claims::Trust;
use crate::digest::Digest;
use crate::envelope;
use crate::keys::{KeyPair, KeyRole, PublicKey};

/// Signed bytes start with this, so a code signature cannot be any other signature.
const DOMAIN: &[u8] = b"lattice-precompiled-code/1\0";

/// The object holding `component`'s code for the engine with `fingerprint`.
pub fn object_name(component: &Digest, fingerprint: &str) -> String {
    format!("code/{}/{fingerprint}", component.hex())
}

/// What an issuer vouches for: this code is `component` compiled for this engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeClaim {
    /// The component the code was compiled from.
    pub component: Digest,
    /// The target triple it was compiled for.
    pub target: String,
    /// The fingerprint of the engine that can load it.
    pub fingerprint: String,
    /// The digest of the code.
    pub code: Digest,
}

impl CodeClaim {
    /// The claim for `code`, compiled from `component` for `target` and `fingerprint`.
    pub fn new(component: &Digest, target: &str, fingerprint: &str, code: &[u8]) -> Self {
        Self {
            component: component.clone(),
            target: target.to_owned(),
            fingerprint: fingerprint.to_owned(),
            code: Digest::of(code),
        }
    }
}

/// The signed claim, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SignedClaim {
    /// The claim (an envelope): what is signed, after the domain.
    #[serde(with = "serde_bytes")]
    claim: Vec<u8>,
    signer: PublicKey,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

/// Precompiled code with its signed claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precompiled {
    signed: SignedClaim,
    /// The native code.
    pub code: Vec<u8>,
}

/// Why precompiled code was not used. Every case falls back to compiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Not an object this format describes.
    #[error("not precompiled code: {0}")]
    Malformed(String),
    /// Signed by a key that is not an issuer key, or not one this host trusts.
    #[error(
        "signed by {0}, which this host does not trust; sign the code with an issuer key the \
         host trusts (`lattice compile --key`)"
    )]
    Untrusted(String),
    /// The signature does not verify.
    #[error("its signature does not verify (changed after signing)")]
    BadSignature,
    /// Signed for another component or engine than the one asked for.
    #[error("signed as {what} {claimed}, but {expected} was asked for")]
    Mismatch {
        /// Which part of the claim differs.
        what: &'static str,
        /// What the claim says.
        claimed: String,
        /// What the host asked for.
        expected: String,
    },
    /// The code is not the code the claim names.
    #[error("the code does not match its signed digest (changed after signing)")]
    CodeChanged,
}

fn signed_bytes(claim: &[u8]) -> Vec<u8> {
    [DOMAIN, claim].concat()
}

impl Precompiled {
    /// `code`, with `claim` signed by `issuer`.
    pub fn sign(claim: CodeClaim, code: Vec<u8>, issuer: &KeyPair) -> Self {
        let claim = envelope::encode(&claim);
        let signature = issuer.sign(&signed_bytes(&claim));
        Self {
            signed: SignedClaim {
                claim,
                signer: issuer.public_key(),
                signature,
            },
            code,
        }
    }

    /// The stored form: the claim's length (4 bytes, big-endian), the signed claim, the code.
    pub fn encode(&self) -> Vec<u8> {
        let claim = envelope::encode(&self.signed);
        let len = u32::try_from(claim.len()).expect("a signed claim is a few hundred bytes");
        let mut out = Vec::with_capacity(4 + claim.len() + self.code.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&claim);
        out.extend_from_slice(&self.code);
        out
    }

    /// Reads [`Precompiled::encode`]'s form; checks nothing but the shape.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodeError> {
        let malformed = |why: &str| CodeError::Malformed(why.to_owned());
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("shorter than its header"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(malformed("shorter than its signed claim"));
        }
        let (claim, code) = rest.split_at(len);
        let signed = envelope::decode(claim).map_err(|e| CodeError::Malformed(e.to_string()))?;
        Ok(Self {
            signed,
            code: code.to_vec(),
        })
    }

    /// The signer's key.
    pub fn signer(&self) -> &PublicKey {
        &self.signed.signer
    }

    /// The claim, whether or not its signature verifies.
    pub fn claim(&self) -> Result<CodeClaim, CodeError> {
        envelope::decode(&self.signed.claim).map_err(|e| CodeError::Malformed(e.to_string()))
    }

    /// The code, if a trusted issuer signed it as `component` compiled for `fingerprint`.
    pub fn open(
        &self,
        component: &Digest,
        fingerprint: &str,
        trust: &Trust,
    ) -> Result<&[u8], CodeError> {
        let signer = &self.signed.signer;
        if signer.role() != KeyRole::Issuer || !trust.trusts(signer) {
            return Err(CodeError::Untrusted(signer.to_string()));
        }
        if !signer.verify(&signed_bytes(&self.signed.claim), &self.signed.signature) {
            return Err(CodeError::BadSignature);
        }
        let claim = self.claim()?;
        if claim.component != *component {
            return Err(CodeError::Mismatch {
                what: "component",
                claimed: claim.component.to_string(),
                expected: component.to_string(),
            });
        }
        if claim.fingerprint != fingerprint {
            return Err(CodeError::Mismatch {
                what: "engine",
                claimed: claim.fingerprint,
                expected: fingerprint.to_owned(),
            });
        }
        if Digest::of(&self.code) != claim.code {
            return Err(CodeError::CodeChanged);
        }
        Ok(&self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "00112233aabbccdd";

    fn signed(issuer: &KeyPair) -> (Digest, Vec<u8>) {
        let component = Digest::of(b"component");
        let claim = CodeClaim::new(&component, "x86_64-unknown-linux-gnu", FP, b"native code");
        let object = Precompiled::sign(claim, b"native code".to_vec(), issuer).encode();
        (component, object)
    }

    #[test]
    fn trusted_code_opens() {
        let issuer = KeyPair::generate(KeyRole::Issuer);
        let (component, object) = signed(&issuer);
        let trust = Trust::new(vec![issuer.public_key()]);
        let code = Precompiled::decode(&object).unwrap();
        assert_eq!(code.open(&component, FP, &trust).unwrap(), b"native code");
        assert_eq!(code.claim().unwrap().target, "x86_64-unknown-linux-gnu");
    }

    #[test]
    fn untrusted_or_non_issuer_signers_are_refused() {
        let issuer = KeyPair::generate(KeyRole::Issuer);
        let (component, object) = signed(&issuer);
        let other = Trust::new(vec![KeyPair::generate(KeyRole::Issuer).public_key()]);
        let code = Precompiled::decode(&object).unwrap();
        assert!(matches!(
            code.open(&component, FP, &other),
            Err(CodeError::Untrusted(_))
        ));
        // A host key trusted by mistake still cannot vouch for code.
        let host = KeyPair::generate(KeyRole::Host);
        let (component, object) = signed(&host);
        let trust = Trust::new(vec![host.public_key()]);
        assert!(matches!(
            Precompiled::decode(&object)
                .unwrap()
                .open(&component, FP, &trust),
            Err(CodeError::Untrusted(_))
        ));
    }

    #[test]
    fn changed_code_claims_and_other_engines_are_refused() {
        let issuer = KeyPair::generate(KeyRole::Issuer);
        let trust = Trust::new(vec![issuer.public_key()]);
        let (component, mut object) = signed(&issuer);
        let code = Precompiled::decode(&object).unwrap();
        assert!(matches!(
            code.open(&component, "ffffffffffffffff", &trust),
            Err(CodeError::Mismatch { what: "engine", .. })
        ));
        assert!(matches!(
            code.open(&Digest::of(b"other"), FP, &trust),
            Err(CodeError::Mismatch {
                what: "component",
                ..
            })
        ));
        // One byte of the code changed.
        *object.last_mut().unwrap() ^= 1;
        let code = Precompiled::decode(&object).unwrap();
        assert_eq!(
            code.open(&component, FP, &trust),
            Err(CodeError::CodeChanged)
        );
        // One byte of the signed claim changed (inside the envelope's claim bytes).
        let (_, mut object) = signed(&issuer);
        object[40] ^= 1;
        assert!(
            Precompiled::decode(&object)
                .map_or(true, |code| code.open(&component, FP, &trust).is_err())
        );
    }

    #[test]
    fn truncated_objects_are_malformed() {
        let issuer = KeyPair::generate(KeyRole::Issuer);
        let (_, object) = signed(&issuer);
        for len in [0, 3, 4, 10] {
            assert!(matches!(
                Precompiled::decode(&object[..len]),
                Err(CodeError::Malformed(_))
            ));
        }
    }
}
