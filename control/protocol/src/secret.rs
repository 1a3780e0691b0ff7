//! Secret config values: sealed to one key, so that only its holder can read them.
//!
//! A value marked secret in a manifest travels and rests only as a [sealed] string,
//! `lattice-sealed:v1:<base64url>`: a libsodium-compatible sealed box (`crypto_box_seal`: an
//! ephemeral X25519 key, XSalsa20-Poly1305) to the X25519 form of an ed25519 nkey. The CLI
//! seals to the control plane's key (`O...`); the control plane opens a value only to seal it
//! again ([`reseal`]) to each host (`N...`) whose assignment carries it; the host opens it in
//! memory when it starts the component.
//!
//! The X25519 keys are the nkeys themselves, converted (the public key by the birational map
//! from Edwards to Montgomery form, the secret key from the seed's SHA-512 as ed25519 derives
//! its scalar), as libsodium's `crypto_sign_ed25519_pk_to_curve25519` and age's `ssh-ed25519`
//! recipients do: a host's id already is its public key, so nothing new is published or trusted.
//!
//! ```
//! use lattice_protocol::keys::{KeyPair, KeyRole};
//! use lattice_protocol::secret;
//! let host = KeyPair::generate(KeyRole::Host);
//! let sealed = secret::seal(&host.public_key(), "hunter2")?;
//! assert!(secret::is_sealed(&sealed) && !sealed.contains("hunter2"));
//! assert_eq!(secret::open(&host, &sealed)?.as_str(), "hunter2");
//! # Ok::<(), secret::SecretError>(())
//! ```
//!
//! [sealed]: seal

use crypto_box::aead::OsRng;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::montgomery::MontgomeryPoint;
use data_encoding::BASE64URL_NOPAD;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest as _, Sha256, Sha512};
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{KeyPair, PublicKey};

/// What every sealed value starts with (the version is part of it).
pub const SEALED_PREFIX: &str = "lattice-sealed:v1:";

/// What is shown in place of a secret value (`lattice ctl get`, `inspect`).
pub const REDACTED: &str = "<secret>";

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The value does not start with [`SEALED_PREFIX`].
    #[error(
        "the value is not sealed (it must start with `{SEALED_PREFIX}`); deploy with `lattice ctl deploy`, which seals secret values to the control plane's key"
    )]
    NotSealed,
    /// The value starts like a sealed one but is not.
    #[error("the sealed value is malformed ({0}); deploy it again with `lattice ctl deploy`")]
    Malformed(String),
    /// The key is not the one it was sealed to, or the ciphertext was altered.
    #[error(
        "the sealed value cannot be opened with key {0}: it was sealed to another key or altered; seal it to this key (`lattice ctl deploy --control-key`)"
    )]
    WrongKey(String),
    /// The key cannot be turned into an X25519 key.
    #[error("key {0} cannot receive secrets: {1}")]
    BadKey(String, String),
    /// The opened value is not UTF-8 text.
    #[error("the opened value is not UTF-8 text")]
    NotText,
}

/// Whether `value` is a sealed value (by its prefix; opening it is what proves it).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// Seals `plaintext` so that only the holder of `recipient`'s secret key can open it.
pub fn seal(recipient: &PublicKey, plaintext: &str) -> Result<String, SecretError> {
    let key = x25519_public(recipient)?;
    let sealed = key
        .seal(&mut OsRng, plaintext.as_bytes())
        .map_err(|e| SecretError::BadKey(recipient.to_string(), e.to_string()))?;
    Ok(format!(
        "{SEALED_PREFIX}{}",
        BASE64URL_NOPAD.encode(&sealed)
    ))
}

/// Opens a value sealed to `key`; the text is wiped from memory when dropped.
pub fn open(key: &KeyPair, sealed: &str) -> Result<Zeroizing<String>, SecretError> {
    let body = sealed
        .strip_prefix(SEALED_PREFIX)
        .ok_or(SecretError::NotSealed)?;
    let bytes = BASE64URL_NOPAD
        .decode(body.as_bytes())
        .map_err(|e| SecretError::Malformed(e.to_string()))?;
    let opened = x25519_secret(key)?
        .unseal(&bytes)
        .map_err(|_| SecretError::WrongKey(key.public_key().to_string()))?;
    String::from_utf8(opened).map(Zeroizing::new).map_err(|e| {
        e.into_bytes().zeroize();
        SecretError::NotText
    })
}

/// Opens a value sealed to `key` and seals it again to `recipient`; the plain text lives only
/// in between.
///
/// The same `sealed` resealed by the same key to the same recipient gives the same text: the
/// ephemeral key is drawn from a generator seeded by a hash of the three (the secret half of
/// `key` included, so nobody else can predict it). An assignment re-signed with the same
/// secrets then equals the one the host runs, and does not restart the workload.
pub fn reseal(key: &KeyPair, sealed: &str, recipient: &PublicKey) -> Result<String, SecretError> {
    let plain = open(key, sealed)?;
    let secret = x25519_secret(key)?;
    let mut seed = Zeroizing::new([0u8; 32]);
    let mut hash = Sha256::new();
    hash.update(b"lattice-reseal-v1\0");
    hash.update(secret.to_bytes());
    hash.update(recipient.as_str().as_bytes());
    hash.update([0]);
    hash.update(sealed.as_bytes());
    seed.copy_from_slice(&hash.finalize());
    let mut rng = ChaCha20Rng::from_seed(*seed);
    let sealed_again = x25519_public(recipient)?
        .seal(&mut rng, plain.as_bytes())
        .map_err(|e| SecretError::BadKey(recipient.to_string(), e.to_string()))?;
    Ok(format!(
        "{SEALED_PREFIX}{}",
        BASE64URL_NOPAD.encode(&sealed_again)
    ))
}

/// A 32-byte key only the holders of `own`'s secret half and of `peer`'s can make: SHA-256 over
/// `domain`, their X25519 agreement and both public keys (in sorted order, so that both sides
/// make the same key).
pub fn agree(
    own: &KeyPair,
    peer: &PublicKey,
    domain: &[u8],
) -> Result<Zeroizing<[u8; 32]>, SecretError> {
    let secret = Zeroizing::new(x25519_secret(own)?.to_bytes());
    let public = x25519_public(peer)?;
    let shared = Zeroizing::new(
        MontgomeryPoint(*public.as_bytes())
            .mul_clamped(*secret)
            .to_bytes(),
    );
    // A low-order public key would make a key anybody can compute.
    if *shared == [0u8; 32] {
        return Err(SecretError::BadKey(
            peer.to_string(),
            "a low-order point".into(),
        ));
    }
    let own_public = own.public_key();
    let (first, second) = if own_public.as_str() < peer.as_str() {
        (own_public.as_str(), peer.as_str())
    } else {
        (peer.as_str(), own_public.as_str())
    };
    let mut hash = Sha256::new();
    hash.update(domain);
    hash.update(*shared);
    hash.update(first.as_bytes());
    hash.update([0]);
    hash.update(second.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&hash.finalize());
    Ok(key)
}

/// The X25519 public key of an ed25519 nkey (its Montgomery form).
fn x25519_public(key: &PublicKey) -> Result<crypto_box::PublicKey, SecretError> {
    let bad = |why: &str| SecretError::BadKey(key.to_string(), why.to_string());
    let (_, raw) = nkeys::from_public_key(key.as_str()).map_err(|e| bad(&e.to_string()))?;
    let point = CompressedEdwardsY(raw)
        .decompress()
        .ok_or_else(|| bad("not a point of the curve"))?;
    Ok(crypto_box::PublicKey::from(
        point.to_montgomery().to_bytes(),
    ))
}

/// The X25519 secret key of an ed25519 nkey: the scalar ed25519 derives from the seed (the
/// first half of its SHA-512; X25519 clamps it the same way).
fn x25519_secret(key: &KeyPair) -> Result<crypto_box::SecretKey, SecretError> {
    let seed = Zeroizing::new(key.seed());
    let (_, mut raw) = nkeys::decode_seed(&seed)
        .map_err(|e| SecretError::BadKey(key.public_key().to_string(), e.to_string()))?;
    let mut hash = Sha512::digest(raw);
    raw.zeroize();
    let mut scalar = [0u8; 32];
    scalar.copy_from_slice(&hash[..32]);
    hash.as_mut_slice().zeroize();
    let secret = crypto_box::SecretKey::from(scalar);
    scalar.zeroize();
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRole;

    #[test]
    fn the_converted_keys_are_one_pair() {
        // The secret key's own public half must equal the converted public key, or nothing
        // sealed to a host could be opened by it.
        for role in [KeyRole::Host, KeyRole::Operator] {
            let pair = KeyPair::generate(role);
            let secret = x25519_secret(&pair).expect("secret");
            let public = x25519_public(&pair.public_key()).expect("public");
            assert_eq!(secret.public_key(), public);
        }
    }

    #[test]
    fn both_sides_agree_on_one_key_and_nobody_else_makes_it() {
        let host = KeyPair::generate(KeyRole::Host);
        let control = KeyPair::generate(KeyRole::Operator);
        let other = KeyPair::generate(KeyRole::Operator);
        let at_host = agree(&host, &control.public_key(), b"test").expect("agree");
        let at_control = agree(&control, &host.public_key(), b"test").expect("agree");
        assert_eq!(*at_host, *at_control);
        let with_other = agree(&other, &host.public_key(), b"test").expect("agree");
        assert_ne!(*with_other, *at_host);
        let other_domain = agree(&host, &control.public_key(), b"another").expect("agree");
        assert_ne!(*other_domain, *at_host);
    }

    #[test]
    fn round_trip() {
        let host = KeyPair::generate(KeyRole::Host);
        for text in [
            "",
            "hunter2",
            "ünïcödé and a long value ".repeat(50).as_str(),
        ] {
            let sealed = seal(&host.public_key(), text).expect("seal");
            assert!(is_sealed(&sealed));
            assert_eq!(open(&host, &sealed).expect("open").as_str(), text);
        }
        // Sealing twice gives different ciphertexts (a fresh ephemeral key each time).
        let a = seal(&host.public_key(), "same").expect("seal");
        let b = seal(&host.public_key(), "same").expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn another_key_is_refused() {
        let host = KeyPair::generate(KeyRole::Host);
        let other = KeyPair::generate(KeyRole::Host);
        let sealed = seal(&host.public_key(), "hunter2").expect("seal");
        let error = open(&other, &sealed).expect_err("not its key");
        assert_eq!(error, SecretError::WrongKey(other.public_key().to_string()));
        assert!(error.to_string().contains("sealed to another key"));
    }

    #[test]
    fn tampering_is_refused() {
        let host = KeyPair::generate(KeyRole::Host);
        let sealed = seal(&host.public_key(), "hunter2").expect("seal");
        let mut bytes = BASE64URL_NOPAD
            .decode(&sealed.as_bytes()[SEALED_PREFIX.len()..])
            .expect("base64");
        // Every byte matters: the ephemeral key, and the ciphertext under its tag.
        for at in [0, 31, 32, bytes.len() - 1] {
            bytes[at] ^= 1;
            let forged = format!("{SEALED_PREFIX}{}", BASE64URL_NOPAD.encode(&bytes));
            assert!(
                matches!(open(&host, &forged), Err(SecretError::WrongKey(_))),
                "byte {at} flipped was accepted"
            );
            bytes[at] ^= 1;
        }
        let truncated = &sealed[..sealed.len() - 4];
        assert!(open(&host, truncated).is_err());
        assert_eq!(open(&host, "hunter2"), Err(SecretError::NotSealed));
        assert!(matches!(
            open(&host, &format!("{SEALED_PREFIX}not base64!")),
            Err(SecretError::Malformed(_))
        ));
    }

    #[test]
    fn reseal_moves_a_value_from_one_key_to_another() {
        let control = KeyPair::generate(KeyRole::Operator);
        let host = KeyPair::generate(KeyRole::Host);
        let for_control = seal(&control.public_key(), "hunter2").expect("seal");
        let for_host = reseal(&control, &for_control, &host.public_key()).expect("reseal");
        assert_eq!(open(&host, &for_host).expect("open").as_str(), "hunter2");
        assert!(open(&control, &for_host).is_err());
        assert!(reseal(&host, &for_control, &host.public_key()).is_err());
        // Stable for the same value and recipient; another recipient or value differs.
        let again = reseal(&control, &for_control, &host.public_key()).expect("reseal");
        assert_eq!(again, for_host);
        let other = KeyPair::generate(KeyRole::Host);
        let for_other = reseal(&control, &for_control, &other.public_key()).expect("reseal");
        assert_ne!(for_other, for_host);
        let second = seal(&control.public_key(), "hunter2").expect("seal");
        assert_ne!(
            reseal(&control, &second, &host.public_key()).expect("reseal"),
            for_host
        );
    }
}
