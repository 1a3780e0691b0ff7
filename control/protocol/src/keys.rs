//! Keys: ed25519 key pairs in NATS nkey form, with a role prefix in the public key.
//!
//! | Role | Public key starts with | Used for |
//! |---|---|---|
//! | issuer | `A` | signing component claims |
//! | operator | `O` | the control plane signing host assignments |
//! | host | `N` | a host's identity |
//! | user | `U` | a person or script using `lattice ctl`: signs its requests ([`crate::auth`]) |
//!
//! The seed (private) form starts with `S` and the role letter (`SA...`, `SO...`, `SN...`). A key
//! file holds the seed on its first line and the public key on the second, so an operator can
//! read the public half without tools.

use std::fmt;

use nkeys::KeyPair as NKeyPair;

/// What a key is for; the role is visible in the first letter of the public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs component claims (`A...`).
    Issuer,
    /// The control plane: signs host assignments (`O...`).
    Operator,
    /// A host's identity (`N...`).
    Host,
    /// A person or a script using `lattice ctl` (`U...`): signs requests.
    User,
}

impl KeyRole {
    /// The role's name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Issuer => "issuer",
            KeyRole::Operator => "operator",
            KeyRole::Host => "host",
            KeyRole::User => "user",
        }
    }

    /// The first letter of a public key of this role.
    pub fn prefix(self) -> char {
        match self {
            KeyRole::Issuer => 'A',
            KeyRole::Operator => 'O',
            KeyRole::Host => 'N',
            KeyRole::User => 'U',
        }
    }

    fn of_prefix(c: char) -> Option<Self> {
        match c {
            'A' => Some(KeyRole::Issuer),
            'O' => Some(KeyRole::Operator),
            'N' => Some(KeyRole::Host),
            'U' => Some(KeyRole::User),
            _ => None,
        }
    }
}

impl std::str::FromStr for KeyRole {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "issuer" => Ok(KeyRole::Issuer),
            "operator" => Ok(KeyRole::Operator),
            "host" => Ok(KeyRole::Host),
            "user" => Ok(KeyRole::User),
            other => Err(KeyError::UnknownRole(other.to_string())),
        }
    }
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a known role name.
    #[error("unknown key role `{0}`; use issuer, operator, host or user")]
    UnknownRole(String),
    /// The string is not a valid nkey.
    #[error("`{shown}` is not a valid {what}: {reason}")]
    Invalid {
        /// The (shortened) refused text.
        shown: String,
        /// "seed" or "public key".
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The key has another role than the one needed here.
    #[error(
        "this is a key for the {found} role, but the {expected} role is needed here; generate one with `lattice keys gen {expected}`"
    )]
    WrongRole {
        /// The role needed.
        expected: &'static str,
        /// The role found.
        found: &'static str,
    },
}

fn shorten(s: &str) -> String {
    if s.len() > 12 {
        format!("{}...", &s[..12])
    } else {
        s.to_string()
    }
}

/// A public key with its role, e.g. `ABCD...` for an issuer. Verifies signatures.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey {
    encoded: String,
}

impl PublicKey {
    /// Parses an nkey public key of any of the three roles: its role prefix, length, encoding
    /// and checksum. Whether its bytes are a point of the curve is left to what uses it (a
    /// signature does not verify, a secret cannot be sealed to it): every signed message carries
    /// its signer's key, and checking the point costs as much as a third of a verification.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let invalid = |reason: String| KeyError::Invalid {
            shown: shorten(s),
            what: "public key",
            reason,
        };
        let role = s
            .chars()
            .next()
            .and_then(KeyRole::of_prefix)
            .ok_or_else(|| {
                invalid("it must start with A (issuer), O (operator) or N (host)".into())
            })?;
        nkeys::from_public_key(s).map_err(|e| invalid(e.to_string()))?;
        let _ = role;
        Ok(Self {
            encoded: s.to_string(),
        })
    }

    /// Parses a public key and checks its role.
    pub fn parse_role(s: &str, role: KeyRole) -> Result<Self, KeyError> {
        let key = Self::parse(s)?;
        if key.role() != role {
            return Err(KeyError::WrongRole {
                expected: role.name(),
                found: key.role().name(),
            });
        }
        Ok(key)
    }

    /// The key's role.
    pub fn role(&self) -> KeyRole {
        self.encoded
            .chars()
            .next()
            .and_then(KeyRole::of_prefix)
            .unwrap_or(KeyRole::Host)
    }

    /// The encoded form.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// Checks `signature` over `data`.
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> bool {
        NKeyPair::from_public_key(&self.encoded)
            .and_then(|kp| kp.verify(data, signature))
            .is_ok()
    }
}

impl TryFrom<String> for PublicKey {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PublicKey> for String {
    fn from(value: PublicKey) -> Self {
        value.encoded
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encoded)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.encoded)
    }
}

/// A key pair that can sign. Its `Debug` never shows the seed.
pub struct KeyPair {
    inner: NKeyPair,
    role: KeyRole,
}

impl KeyPair {
    /// Generates a new random key pair for `role`.
    pub fn generate(role: KeyRole) -> Self {
        let inner = match role {
            KeyRole::Issuer => NKeyPair::new_account(),
            KeyRole::Operator => NKeyPair::new_operator(),
            KeyRole::Host => NKeyPair::new_server(),
            KeyRole::User => NKeyPair::new_user(),
        };
        Self { inner, role }
    }

    /// Parses a seed (`SA...`, `SO...`, `SN...`), or a key file whose first non-empty line is one.
    pub fn from_seed(text: &str) -> Result<Self, KeyError> {
        let seed = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        let invalid = |reason: String| KeyError::Invalid {
            shown: shorten(&seed.chars().take(3).collect::<String>()),
            what: "seed",
            reason,
        };
        let inner = NKeyPair::from_seed(seed).map_err(|e| invalid(e.to_string()))?;
        let role = inner
            .public_key()
            .chars()
            .next()
            .and_then(KeyRole::of_prefix)
            .ok_or_else(|| invalid("not an issuer, operator, host or user seed".into()))?;
        Ok(Self { inner, role })
    }

    /// Parses a seed and checks its role.
    pub fn from_seed_role(text: &str, role: KeyRole) -> Result<Self, KeyError> {
        let kp = Self::from_seed(text)?;
        if kp.role != role {
            return Err(KeyError::WrongRole {
                expected: role.name(),
                found: kp.role.name(),
            });
        }
        Ok(kp)
    }

    /// The key's role.
    pub fn role(&self) -> KeyRole {
        self.role
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            encoded: self.inner.public_key(),
        }
    }

    /// The seed: secret, to be written only to files with mode 0600.
    pub fn seed(&self) -> String {
        self.inner.seed().unwrap_or_default()
    }

    /// The content of a key file: seed, then public key, one per line.
    pub fn to_file_contents(&self) -> String {
        format!("{}\n{}\n", self.seed(), self.public_key())
    }

    /// Signs `data` (ed25519, 64-byte signature).
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.inner.sign(data).unwrap_or_default()
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("role", &self.role)
            .field("public_key", &self.inner.public_key())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_show_in_prefixes_and_round_trip() {
        for role in [KeyRole::Issuer, KeyRole::Operator, KeyRole::Host] {
            let kp = KeyPair::generate(role);
            let public = kp.public_key();
            assert!(public.as_str().starts_with(role.prefix()));
            assert_eq!(public.role(), role);
            let again = KeyPair::from_seed(&kp.to_file_contents()).expect("seed parses");
            assert_eq!(again.public_key(), public);
            assert_eq!(PublicKey::parse(public.as_str()).expect("parses"), public);
        }
    }

    #[test]
    fn signatures_verify_only_for_the_signer_and_data() {
        let kp = KeyPair::generate(KeyRole::Issuer);
        let other = KeyPair::generate(KeyRole::Issuer);
        let sig = kp.sign(b"hello");
        assert!(kp.public_key().verify(b"hello", &sig));
        assert!(!kp.public_key().verify(b"hellO", &sig));
        assert!(!other.public_key().verify(b"hello", &sig));
    }

    #[test]
    fn wrong_role_is_named() {
        let kp = KeyPair::generate(KeyRole::Host);
        let err = KeyPair::from_seed_role(&kp.seed(), KeyRole::Operator).unwrap_err();
        assert!(
            err.to_string()
                .contains("the host role, but the operator role"),
            "{err}"
        );
        assert!(PublicKey::parse("Zgarbage").is_err());
    }

    #[test]
    fn debug_hides_the_seed() {
        let kp = KeyPair::generate(KeyRole::Operator);
        assert!(!format!("{kp:?}").contains(&kp.seed()));
    }
}
