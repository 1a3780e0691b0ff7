//! Component-to-component calls over NATS: the request a caller's host sends on
//! [`crate::subject::Subject::Rpc`] and the reply a target's host returns.
//!
//! Arguments and results are MessagePack arrays of the function's values, encoded by their WIT
//! types (see the host's `caps::codec`); this module only carries them.

use serde::{Deserialize, Serialize};

use crate::wit::InterfaceName;

/// A call of `interface.function` on some instance of the target component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcCall {
    /// The interface without version, e.g. `example:greeter/greet`.
    pub interface: InterfaceName,
    /// The function, e.g. `greet`.
    pub function: String,
    /// The arguments: a MessagePack array, one element per parameter.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// Unix time in milliseconds after which the caller no longer waits: the target stops the
    /// call there too.
    pub deadline_ms: u64,
    /// `app/component` of the caller, for the target's logs.
    pub caller: String,
}

/// The outcome of an [`RpcCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcReply {
    /// The function returned: a MessagePack array of its results.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// It did not.
    Err(CallError),
}

/// Why a component call failed, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CallError {
    /// Which kind of failure.
    pub kind: CallErrorKind,
    /// What happened, and what to do.
    pub message: String,
}

impl CallError {
    /// A failure of `kind`.
    pub fn new(kind: CallErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The kinds of call failure a caller can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallErrorKind {
    /// The import is not linked to anything.
    NotLinked,
    /// No instance of the target runs anywhere the caller can reach.
    NoInstance,
    /// The target did not answer before the deadline.
    Timeout,
    /// The target trapped (or failed to instantiate).
    Trap,
    /// The arguments or results did not match the function's types.
    InvalidPayload,
    /// A queued call was not queued: the link's queue is full (policy `refuse`) or the host's
    /// outbox could not store it.
    QueueFull,
    /// The target runs as many instances as its `concurrency` allows on the host that got the
    /// call: try again shortly (or raise the limit).
    Busy,
}

impl std::fmt::Display for CallErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallErrorKind::NotLinked => "not-linked",
            CallErrorKind::NoInstance => "no-instance",
            CallErrorKind::Timeout => "timeout",
            CallErrorKind::Trap => "trap",
            CallErrorKind::InvalidPayload => "invalid-payload",
            CallErrorKind::QueueFull => "queue-full",
            CallErrorKind::Busy => "busy",
        })
    }
}
