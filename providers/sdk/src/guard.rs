//! A provider process's check that a request comes from the host that started it
//! (`lattice_protocol::provider::auth`): the tag under the process's key, then the counter's
//! freshness, before the request is decoded.

use std::collections::HashSet;
use std::sync::Mutex;

use async_nats::HeaderName;
use lattice_protocol::envelope;
use lattice_protocol::provider::auth::{CALL_AUTH_HEADER, CallAuthError, CallKey, ReplayWindow};
use lattice_protocol::provider::{LinkInfo, ProviderError};

/// How many senders a process remembers having warned about (beyond it, it stops warning).
const WARNED_MAX: usize = 1024;

/// The key the host gave this process and the counters it has accepted.
pub(crate) struct Guard {
    key: CallKey,
    window: Mutex<ReplayWindow>,
    warned: Mutex<HashSet<String>>,
}

impl Guard {
    pub(crate) fn new(key: CallKey) -> Self {
        Self {
            key,
            window: Mutex::default(),
            warned: Mutex::default(),
        }
    }

    /// Whether `message` is a request of this process's host, seen for the first time; if
    /// not, why (and a warning in the log, once per sender).
    pub(crate) fn check(&self, message: &async_nats::Message) -> Result<(), ProviderError> {
        self.authenticate(message).map_err(|e| {
            let sender = sender(message);
            let mut warned = self.warned.lock().expect("not poisoned");
            if warned.len() < WARNED_MAX && warned.insert(sender.clone()) {
                tracing::warn!(%sender, reason = %e, "refused a request not sent by this provider's host");
            }
            ProviderError::Unauthenticated(e.to_string())
        })
    }

    fn authenticate(&self, message: &async_nats::Message) -> Result<(), CallAuthError> {
        let header = message
            .headers
            .as_ref()
            .and_then(|h| h.get(HeaderName::from_static(CALL_AUTH_HEADER)))
            .ok_or(CallAuthError::Missing)?;
        let counter = self.key.verify(header.as_str(), &message.payload)?;
        self.window.lock().expect("not poisoned").accept(counter)
    }

    /// The link a [`ProviderRequest::SealedLinkPut`] carries, opened with this process's key.
    ///
    /// [`ProviderRequest::SealedLinkPut`]: lattice_protocol::provider::ProviderRequest::SealedLinkPut
    pub(crate) fn open_link(&self, sealed: &[u8]) -> Result<LinkInfo, ProviderError> {
        let bytes = self
            .key
            .open(sealed)
            .map_err(|e| ProviderError::Unauthenticated(e.to_string()))?;
        envelope::decode(&bytes).map_err(|e| {
            ProviderError::Other(format!("a sealed link opened but does not read: {e}"))
        })
    }
}

/// Who sent `message`, as far as NATS says: its reply subject without the last token (the
/// sender's inbox).
fn sender(message: &async_nats::Message) -> String {
    let reply = message.reply.as_ref().map_or("", |r| r.as_str());
    reply
        .rsplit_once('.')
        .map_or(reply, |(inbox, _)| inbox)
        .to_string()
}
