//! A Lattice key as a NATS user nkey: the same ed25519 key, re-encoded with the user prefix
//! (`U...`, seed `SU...`), so that a host (or the control plane) authenticates to nats-server
//! with the key it already signs with, and the server's permissions for a host id bind to the
//! key that signs that host's heartbeats.

use nkeys::{KeyPair as NKeyPair, KeyPairType};

use crate::keys::{KeyError, PublicKey};

/// The nkey prefix byte of a user public key (`U`).
const PREFIX_BYTE_USER: u8 = 20 << 3;

/// The NATS user nkey (`U...`) of `key`: its public key under the user prefix.
pub fn user_nkey(key: &PublicKey) -> String {
    // `PublicKey` holds only valid keys.
    let (_, raw) = nkeys::from_public_key(key.as_str()).unwrap_or((0, [0; 32]));
    let mut bytes = Vec::with_capacity(35);
    bytes.push(PREFIX_BYTE_USER);
    bytes.extend_from_slice(&raw);
    bytes.extend_from_slice(&crc16(&bytes).to_le_bytes());
    data_encoding::BASE32_NOPAD.encode(&bytes)
}

/// The NATS user seed (`SU...`) of a Lattice seed (`SN...`, `SO...`, `SU...`) or key file, and
/// its public user nkey.
pub fn user_seed(text: &str) -> Result<(String, String), KeyError> {
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let invalid = |reason: String| KeyError::Invalid {
        shown: seed.chars().take(3).collect(),
        what: "seed",
        reason,
    };
    let (_, raw) = nkeys::decode_seed(seed).map_err(|e| invalid(e.to_string()))?;
    let user =
        NKeyPair::new_from_raw(KeyPairType::User, raw).map_err(|e| invalid(e.to_string()))?;
    let seed = user.seed().map_err(|e| invalid(e.to_string()))?;
    Ok((seed, user.public_key()))
}

/// The prefix of a client's reply subjects (`_INBOX.<user nkey>`): permissions let each user
/// subscribe only under its own, so no one reads another's replies.
pub fn inbox_prefix(user_nkey: &str) -> String {
    format!("_INBOX.{user_nkey}")
}

/// CRC-16/XMODEM, the checksum nkeys end with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyPair, KeyRole};

    /// Invariant: the public nkey made from a public key is the one nkeys derives from the
    /// re-encoded seed, for every role, so a server verifying the seed's signature finds the
    /// user the authorization names.
    #[test]
    fn public_and_seed_re_encodings_agree() {
        for role in [KeyRole::Host, KeyRole::Operator, KeyRole::User] {
            let key = KeyPair::generate(role);
            let from_public = user_nkey(&key.public_key());
            let (seed, from_seed) = user_seed(&key.to_file_contents()).expect("a seed");
            assert_eq!(from_public, from_seed);
            assert!(from_public.starts_with('U') && seed.starts_with("SU"));
            let nkey = NKeyPair::from_seed(&seed).expect("valid");
            let signature = nkey.sign(b"nonce").expect("signs");
            NKeyPair::from_public_key(&from_public)
                .expect("valid user key")
                .verify(b"nonce", &signature)
                .expect("the user key verifies what the seed signed");
        }
        let user = KeyPair::generate(KeyRole::User);
        assert_eq!(user_nkey(&user.public_key()), user.public_key().as_str());
    }

    #[test]
    fn a_bad_seed_is_refused() {
        assert!(user_seed("not a seed").is_err());
    }
}
