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

/// What an `image` reference names: an artifact by its content, a `name:version` tag that
/// points at one, or (before `lattice ctl deploy` has pulled or pushed it into the lattice) an
/// OCI registry reference or a file. Parsed once where a reference comes in (a manifest,
/// `lattice push --tag`).
///
/// The control plane resolves only digests and tags: hosts fetch from the lattice's object
/// store, never from a registry or a workstation's disk, so OCI and file references are turned
/// into digests by the CLI that deploys them.
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
    /// An OCI registry reference: `registry/org/name:tag`, `...@sha256:<hex>`, or either with
    /// `oci://` in front.
    Oci {
        /// The reference without `oci://`.
        reference: String,
    },
    /// `file://PATH`: a component on the deploying machine's disk, relative to the manifest's
    /// directory unless absolute.
    File {
        /// The path as written (after `file://`).
        path: String,
    },
}

/// An `image` reference of none of the forms [`ImageRef`] knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// It starts like a digest but is not one.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// It is not a `name:version` tag either.
    #[error(
        "image `{0}` is neither `sha256:<hex>`, a `name:version` tag, an OCI reference \
         (`registry/org/name:tag`) nor `file://PATH`"
    )]
    Neither(String),
}

impl ImageRef {
    /// Parses `sha256:<hex>`, `name:version`, `file://PATH` or an OCI reference (`oci://...`,
    /// or anything with a `/` or an `@`: `registry/org/name:tag`, `...@sha256:<hex>`).
    pub fn parse(image: &str) -> Result<Self, ImageRefError> {
        if let Some(path) = image.strip_prefix("file://") {
            if path.is_empty() {
                return Err(ImageRefError::Neither(image.to_string()));
            }
            return Ok(Self::File {
                path: path.to_string(),
            });
        }
        if let Some(reference) = image.strip_prefix("oci://") {
            if reference.is_empty() {
                return Err(ImageRefError::Neither(image.to_string()));
            }
            return Ok(Self::Oci {
                reference: reference.to_string(),
            });
        }
        if image.contains('/') || image.contains('@') {
            return Ok(Self::Oci {
                reference: image.to_string(),
            });
        }
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
    fn registry_and_file_references_are_recognised() {
        let oci = |r: &str| ImageRef::Oci {
            reference: r.to_string(),
        };
        assert_eq!(
            ImageRef::parse("ghcr.io/org/hello:0.1.0"),
            Ok(oci("ghcr.io/org/hello:0.1.0"))
        );
        assert_eq!(
            ImageRef::parse("oci://localhost:5000/hello:1"),
            Ok(oci("localhost:5000/hello:1"))
        );
        let pinned = format!("ghcr.io/org/hello@{}", Digest::of(b"x"));
        assert_eq!(ImageRef::parse(&pinned), Ok(oci(&pinned)));
        assert_eq!(
            ImageRef::parse("file://./build/hello.wasm"),
            Ok(ImageRef::File {
                path: "./build/hello.wasm".into()
            })
        );
        assert!(ImageRef::parse("file://").is_err());
        assert!(ImageRef::parse("oci://").is_err());
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
