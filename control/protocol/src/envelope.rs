//! The envelope every lattice message travels in: a protocol version and a MessagePack body.
//!
//! Bodies are encoded with named fields (`rmp_serde::to_vec_named`) so that a newer peer can add
//! optional fields without breaking an older one.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{ErrorCode, WireError};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

#[derive(serde::Serialize)]
struct EnvelopeOut<'a, T> {
    v: u16,
    body: &'a T,
}

#[derive(serde::Deserialize)]
struct EnvelopeIn<T> {
    v: u16,
    body: T,
}

#[derive(serde::Deserialize)]
struct VersionOnly {
    v: u16,
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The peer speaks another protocol version.
    #[error(
        "message uses protocol version {found}, this build speaks {PROTOCOL_VERSION}; upgrade the older side"
    )]
    Version {
        /// The version found in the envelope.
        found: u16,
    },
    /// The bytes are not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
}

impl From<DecodeError> for WireError {
    fn from(e: DecodeError) -> Self {
        WireError::new(ErrorCode::BadMessage, e.to_string())
    }
}

/// Encodes `body` in an envelope.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    // Encoding plain data structures to a Vec cannot fail: every type we send is a tree of
    // structs, strings, numbers, maps and sequences with string keys.
    rmp_serde::to_vec_named(&EnvelopeOut {
        v: PROTOCOL_VERSION,
        body,
    })
    .unwrap_or_default()
}

/// Decodes a message, checking the envelope's version first so that a version mismatch is
/// reported as such rather than as a confusing shape error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    // One pass in the common case (heartbeats arrive by the thousand); the version is read on
    // its own only to explain a failure.
    match rmp_serde::from_slice::<EnvelopeIn<T>>(bytes) {
        Ok(env) if env.v == PROTOCOL_VERSION => Ok(env.body),
        Ok(env) => Err(DecodeError::Version { found: env.v }),
        Err(e) => match rmp_serde::from_slice::<VersionOnly>(bytes) {
            Ok(VersionOnly { v }) if v != PROTOCOL_VERSION => {
                Err(DecodeError::Version { found: v })
            }
            _ => Err(DecodeError::Malformed(e)),
        },
    }
}

/// A reply: the answer or a typed error.
pub type Reply<T> = Result<T, WireError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Thing {
        a: u32,
        b: String,
    }

    #[test]
    fn round_trip_and_version_check() {
        let t = Thing {
            a: 7,
            b: "x".into(),
        };
        let bytes = encode(&t);
        assert_eq!(decode::<Thing>(&bytes).expect("decodes"), t);

        let other = rmp_serde::to_vec_named(&EnvelopeOut { v: 99, body: &t }).expect("encodes");
        assert!(matches!(
            decode::<Thing>(&other),
            Err(DecodeError::Version { found: 99 })
        ));
        assert!(matches!(
            decode::<Thing>(b"\x01\x02"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn replies_carry_typed_errors() {
        let r: Reply<u32> = Err(WireError::new(
            ErrorCode::NoHosts,
            "nothing matches zone=edge",
        ));
        let back: Reply<u32> = decode(&encode(&r)).expect("decodes");
        assert_eq!(back.unwrap_err().code, ErrorCode::NoHosts);
    }
}
