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

/// What an `image` reference names: an artifact by its content, or a `name:version` tag that
/// points at one. Parsed once where a reference comes in (a manifest, `lattice push --tag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `sha256:<hex>`.
    Digest(Digest),
    /// `name:version`.
    Tag {
        /// The tag as written.
        tag: String,
        /// Its key in the lattice's tag bucket ([`crate::subject::tag_key`]).
        key: String,
    },
}

/// An `image` reference that is neither a digest nor a tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// It starts like a digest but is not one.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// It is not a `name:version` tag either.
    #[error("image `{0}` is neither `sha256:<hex>` nor a `name:version` tag")]
    Neither(String),
}

impl ImageRef {
    /// Parses `sha256:<hex>` or `name:version`.
    pub fn parse(image: &str) -> Result<Self, ImageRefError> {
        if image.starts_with("sha256:") {
            return Ok(Self::Digest(Digest::parse(image)?));
        }
        let key = crate::subject::tag_key(image)
            .ok_or_else(|| ImageRefError::Neither(image.to_string()))?;
        Ok(Self::Tag {
            tag: image.to_string(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_digests_or_tags() {
        let d = Digest::of(b"abc");
        assert_eq!(ImageRef::parse(&d.to_string()), Ok(ImageRef::Digest(d)));
        assert_eq!(
            ImageRef::parse("hello:0.1.0"),
            Ok(ImageRef::Tag {
                tag: "hello:0.1.0".into(),
                key: "hello.0.1.0".into()
            })
        );
        assert!(matches!(
            ImageRef::parse("sha256:abc"),
            Err(ImageRefError::Digest(_))
        ));
        assert!(matches!(
            ImageRef::parse("hello"),
            Err(ImageRefError::Neither(_))
        ));
    }

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
