//! wasmCloud's claims: the JWT that `wash` (through the `wascap` crate) embeds in a component,
//! read and verified the way wascap writes it, so `wash build` output runs with signatures
//! enforced.
//!
//! A wash-signed component carries a custom section `wasmcloud_jwt` (older wascap: `jwt`) whose
//! data is a compact JWT: `base64url(header).base64url(claims).base64url(signature)`, the header
//! `{"typ":"jwt","alg":"Ed25519"}`, the signature an ed25519 signature over the first two parts
//! by the issuer (`iss`, an nkey *account* key `A...`, which is what a Lattice issuer key is).
//! The claims' `wascap.hash` is the upper-case hex sha256 of the component with every JWT
//! section removed *and every section re-encoded*: wascap walks the component with `wasmparser`
//! and writes each section back with `wasm-encoder` (minimal LEB128 lengths, nested modules and
//! components rebuilt the same way). [`module_hash`] does exactly that, so a component whose
//! toolchain padded its section lengths still matches.
//!
//! The token becomes a [`Claims`] with [`ClaimsFormat::Wash`]: `iss` the issuer, `sub` (the
//! module key `M...`) the subject, `wascap.name`/`ver` the name and version, `iat`/`nbf`/`exp`
//! the window. wascap's claims name no WIT interfaces (its `caps` were 0.x actor contracts), so
//! the allow list is empty: a wash-signed component may import anything the host provides, as
//! in wasmCloud, and links are still checked at deploy against its real imports.
//!
//! Stricter than wascap, on purpose: the hash is always checked (wascap skipped it for tokens
//! older than its revision 3), and the signature is checked on every load.

use data_encoding::{BASE64URL_NOPAD, HEXUPPER};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use wasm_encoder::{ComponentSectionId, Encode as _, Section as _};
use wasmparser::{Encoding, Parser, Payload};

use super::{Claims, ClaimsFormat, VerifyError};
use crate::digest::Digest;
use crate::keys::{KeyRole, PublicKey};

/// The section current wascap writes.
pub const JWT_SECTION: &str = "wasmcloud_jwt";

/// The section wascap before 0.9 wrote; still read.
pub const LEGACY_JWT_SECTION: &str = "jwt";

fn is_jwt_section(name: &str) -> bool {
    name == JWT_SECTION || name == LEGACY_JWT_SECTION
}

/// The JOSE header wascap writes.
#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// The registered claims of a wascap token (JSON field names as wascap writes them).
#[derive(Deserialize)]
struct Token {
    iss: String,
    sub: String,
    #[serde(default)]
    iat: u64,
    nbf: Option<u64>,
    exp: Option<u64>,
    wascap: Option<Metadata>,
}

/// The `wascap` namespace of a component's token.
#[derive(Deserialize)]
struct Metadata {
    name: Option<String>,
    hash: String,
    ver: Option<String>,
    rev: Option<i64>,
}

fn malformed(why: impl std::fmt::Display) -> VerifyError {
    VerifyError::MalformedClaims(format!("wasmCloud claims JWT: {why}"))
}

/// The JWT text of a component's top-level `wasmcloud_jwt` (or `jwt`) section, if any.
pub(super) fn find_token(component: &[u8]) -> Result<Option<&str>, VerifyError> {
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(component) {
        match payload.map_err(|e| VerifyError::Malformed(e.to_string()))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(c) if depth == 0 && is_jwt_section(c.name()) => {
                let text = std::str::from_utf8(c.data())
                    .map_err(|_| malformed("the section is not UTF-8 text"))?;
                return Ok(Some(text));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The hash wascap signs: upper-case hex sha256 of the component with its JWT sections removed,
/// every section re-encoded as wascap's `strip_custom_section` does.
pub fn module_hash(component: &[u8]) -> Result<String, VerifyError> {
    Ok(HEXUPPER.encode(&Sha256::digest(strip_jwt_sections(component)?)))
}

fn strip_jwt_sections(component: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let mut output = Vec::new();
    // The enclosing modules or components being rebuilt while a nested one is written.
    let mut parents: Vec<Vec<u8>> = Vec::new();
    for payload in Parser::new(0).parse_all(component) {
        let payload = payload.map_err(|e| VerifyError::Malformed(e.to_string()))?;
        match &payload {
            Payload::Version { encoding, .. } => output.extend_from_slice(match encoding {
                Encoding::Component => &wasm_encoder::Component::HEADER,
                Encoding::Module => &wasm_encoder::Module::HEADER,
            }),
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                parents.push(std::mem::take(&mut output));
                continue;
            }
            Payload::End(_) => {
                let Some(mut parent) = parents.pop() else {
                    break;
                };
                let id = if output.starts_with(&wasm_encoder::Component::HEADER) {
                    ComponentSectionId::Component
                } else {
                    ComponentSectionId::CoreModule
                };
                parent.push(id as u8);
                output.encode(&mut parent);
                output = parent;
            }
            Payload::CustomSection(c) if is_jwt_section(c.name()) => continue,
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            let data = component
                .get(range)
                .ok_or_else(|| VerifyError::Malformed("a section runs past the end".into()))?;
            wasm_encoder::RawSection { id, data }.append_to(&mut output);
        }
    }
    Ok(output)
}

fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, VerifyError> {
    BASE64URL_NOPAD
        .decode(part.as_bytes())
        .map_err(|e| malformed(format_args!("its {what} is not base64url: {e}")))
}

/// Reads a wascap token found in `component`: the claims, and whether its signature and module
/// hash verify (as [`super::read_claims`] reports them).
pub(super) fn read(
    component: &[u8],
    jwt: &str,
) -> Result<(Claims, Result<(), VerifyError>), VerifyError> {
    let parts: Vec<&str> = jwt.trim().split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(malformed(format_args!(
            "expected three dot-separated parts, found {}",
            parts.len()
        )));
    };
    let head: Header = serde_json::from_slice(&decode_part(header, "header")?)
        .map_err(|e| malformed(format_args!("its header: {e}")))?;
    if !head.alg.eq_ignore_ascii_case("ed25519") {
        return Err(malformed(format_args!(
            "algorithm `{}` is not supported; wash signs with Ed25519",
            head.alg
        )));
    }
    let token: Token = serde_json::from_slice(&decode_part(payload, "claims")?)
        .map_err(|e| malformed(format_args!("its claims: {e}")))?;
    let signature = decode_part(signature, "signature")?;
    let issuer = PublicKey::parse_role(&token.iss, KeyRole::Issuer).map_err(|e| {
        malformed(format_args!(
            "its issuer must be an account key (A...): {e}"
        ))
    })?;
    let meta = token
        .wascap
        .ok_or_else(|| malformed("it has no `wascap` claims (not a component's token)"))?;
    let signed = wascap_digest(&meta.hash)?;
    let claims = Claims {
        issuer: issuer.clone(),
        name: meta.name.unwrap_or_else(|| token.sub.clone()),
        subject: token.sub,
        version: meta
            .ver
            .or(meta.rev.map(|r| r.to_string()))
            .unwrap_or_else(|| "0".to_string()),
        module_hash: signed.clone(),
        allow: Vec::new(),
        issued_at: token.iat,
        not_before: token.nbf,
        expires: token.exp,
        format: ClaimsFormat::Wash,
    };
    let signing_input = &jwt.trim()[..header.len() + 1 + payload.len()];
    let integrity = if !issuer.verify(signing_input.as_bytes(), &signature) {
        Err(VerifyError::BadSignature {
            issuer: issuer.to_string(),
        })
    } else {
        let actual = wascap_digest(&module_hash(component)?)?;
        if actual == signed {
            Ok(())
        } else {
            Err(VerifyError::Tampered {
                expected: signed,
                actual,
            })
        }
    };
    Ok((claims, integrity))
}

/// wascap's upper-case hex hash as a [`Digest`] (the same sha256, Lattice's spelling).
fn wascap_digest(hex: &str) -> Result<Digest, VerifyError> {
    Digest::parse(&format!("sha256:{}", hex.to_ascii_lowercase())).map_err(|_| {
        malformed(format_args!(
            "its module hash `{hex}` is not a sha256 in hex"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{Trust, verify_component};
    use crate::keys::KeyPair;

    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn custom(name: &str, data: &[u8]) -> Vec<u8> {
        super::super::encode_custom_section(name, data)
    }

    /// Signs as wascap does: hash of the stripped component, JSON claims, Ed25519 over
    /// `header.claims`, appended as a `wasmcloud_jwt` section.
    fn wash_sign(component: &[u8], issuer: &KeyPair, exp: Option<u64>) -> Vec<u8> {
        let hash = module_hash(component).expect("hashes");
        let header = BASE64URL_NOPAD.encode(br#"{"typ":"jwt","alg":"Ed25519"}"#);
        let mut claims = serde_json::json!({
            "jti": "x", "iat": 100, "iss": issuer.public_key().to_string(),
            "sub": "MODULEKEY", "wascap": {"name": "hello", "hash": hash, "ver": "0.1.0", "prov": false},
            "wascap_revision": 3,
        });
        if let Some(exp) = exp {
            claims["exp"] = exp.into();
        }
        let payload = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
        let input = format!("{header}.{payload}");
        let sig = BASE64URL_NOPAD.encode(&issuer.sign(input.as_bytes()));
        let mut out = strip_jwt_sections(component).expect("strips");
        out.extend(custom(JWT_SECTION, format!("{input}.{sig}").as_bytes()));
        out
    }

    #[test]
    fn a_wash_token_verifies_and_names_its_format() {
        let issuer = KeyPair::generate(KeyRole::Issuer);
        let mut c = EMPTY_COMPONENT.to_vec();
        c.extend(custom("other", b"payload"));
        let signed = wash_sign(&c, &issuer, None);
        let trust = Trust::new(vec![issuer.public_key()]);
        let claims = verify_component(&signed, &trust, 100).expect("verifies");
        assert_eq!(
            (claims.name.as_str(), claims.version.as_str()),
            ("hello", "0.1.0")
        );
        assert_eq!(claims.format, ClaimsFormat::Wash);
        assert!(claims.allow.is_empty());

        let pos = signed.windows(7).position(|w| w == b"payload").expect("in");
        let mut tampered = signed.clone();
        tampered[pos] ^= 0x20;
        assert!(matches!(
            verify_component(&tampered, &trust, 100),
            Err(VerifyError::Tampered { .. })
        ));
    }

    #[test]
    fn expiry_allows_the_lattice_skew_margin() {
        let issuer = KeyPair::generate(KeyRole::Issuer);
        let signed = wash_sign(EMPTY_COMPONENT, &issuer, Some(1_000));
        let trust = Trust::new(vec![issuer.public_key()]);
        let margin = crate::clock::MAX_SKEW.as_secs();
        assert!(verify_component(&signed, &trust, 1_000 + margin - 1).is_ok());
        assert_eq!(
            verify_component(&signed, &trust, 1_000 + margin),
            Err(VerifyError::Expired { expires: 1_000 })
        );
    }

    #[test]
    fn padded_section_lengths_hash_as_wascap_re_encodes_them() {
        // A section whose length is written in 5 bytes (as some linkers do) is re-encoded with
        // a minimal length before hashing, so the padded and minimal forms hash alike.
        let mut padded = EMPTY_COMPONENT.to_vec();
        padded.extend([
            0, 0x86, 0x80, 0x80, 0x80, 0x00, 5, b'o', b't', b'h', b'e', b'r',
        ]);
        let mut minimal = EMPTY_COMPONENT.to_vec();
        minimal.extend(custom("other", b""));
        assert_eq!(
            module_hash(&padded).expect("hashes"),
            module_hash(&minimal).expect("hashes")
        );
    }
}
