//! Typed errors that cross the wire. A caller branches on the [`ErrorCode`]; the message is for
//! people and says what to do next.

use serde::{Deserialize, Serialize};

/// What kind of failure a reply reports. Callers branch on this, never on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The input was refused (a malformed manifest, a bad name, ...).
    InvalidInput,
    /// The named thing does not exist.
    NotFound,
    /// No host can take the work.
    NoHosts,
    /// The import is not linked to anything.
    NotLinked,
    /// A signature, trust or permission check refused the operation.
    NotAllowed,
    /// Nobody answered in time.
    Timeout,
    /// Nobody is there to answer (no control plane, no host).
    Unavailable,
    /// The operation conflicts with the current state (e.g. a concurrent write).
    Conflict,
    /// The message could not be decoded or is of an unsupported version.
    BadMessage,
    /// Something failed on the answering side.
    Internal,
}

/// An error as it travels in a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What happened and what to do next.
    pub message: String,
}

impl WireError {
    /// Builds an error of `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
