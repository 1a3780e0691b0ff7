//! Content addresses: `sha256:<64 lowercase hex>`, the only way artifacts are named on the wire.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A sha256 content address of an artifact.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

/// A string that is not a `sha256:<hex>` reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a content reference; expected `sha256:` followed by 64 lowercase hex digits")]
pub struct DigestError(pub String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let hex = s
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or_else(|| DigestError(s.to_string()))?;
        Ok(Self {
            hex: hex.to_string(),
        })
    }

    /// The 64 hex digits, without the `sha256:` prefix (safe as a file or object name).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Digest> for String {
    fn from(value: Digest) -> Self {
        value.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let d = Digest::of(b"abc");
        assert_eq!(Digest::parse(&d.to_string()).expect("parses"), d);
        for bad in [
            "sha256:",
            "md5:00",
            "sha256:ABC",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}
