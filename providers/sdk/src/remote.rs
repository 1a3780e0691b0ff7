//! A provider in another process, reached over NATS, each request authenticated with the key
//! the process was started with (`lattice_protocol::provider::auth`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use lattice_protocol::envelope;
use lattice_protocol::provider::auth::{CALL_AUTH_HEADER, CallKey};
use lattice_protocol::provider::{ProviderRequest, ProviderResponse};

use crate::{Call, LinkId, LinkInfo, Provider, ProviderError, Reply};

/// The host's handle on a provider process: every request goes to it on its subject.
#[derive(Debug, Clone)]
pub struct Remote {
    name: String,
    client: async_nats::Client,
    subject: String,
    timeout: Duration,
    signer: Arc<Signer>,
}

/// The current process's key and the counter of requests sent (shared by every clone).
#[derive(Debug)]
struct Signer {
    key: RwLock<CallKey>,
    counter: AtomicU64,
}

impl Remote {
    /// Talks to provider `name` on `subject`, authenticating each request with `key` (the one
    /// written on the process's standard input) and waiting at most `timeout` for each answer.
    pub fn new(
        name: &str,
        client: async_nats::Client,
        subject: String,
        timeout: Duration,
        key: CallKey,
    ) -> Self {
        Self {
            name: name.to_string(),
            client,
            subject,
            timeout,
            signer: Arc::new(Signer {
                key: RwLock::new(key),
                counter: AtomicU64::new(0),
            }),
        }
    }

    /// Authenticates requests with `key` from now on (the process was started again with it);
    /// every clone of this handle follows.
    pub fn set_key(&self, key: CallKey) {
        *self.signer.key.write().expect("not poisoned") = key;
    }

    async fn send(&self, request: &ProviderRequest) -> Result<ProviderResponse, ProviderError> {
        let payload = envelope::encode(request);
        let counter = self.signer.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let tag = self
            .signer
            .key
            .read()
            .expect("not poisoned")
            .sign(counter, &payload);
        // The provider process continues the caller's trace (`lattice.provider.serve`).
        let mut headers = lattice_telemetry::propagation::nats_headers().unwrap_or_default();
        headers.insert(CALL_AUTH_HEADER, tag.as_str());
        let message = async_nats::Request::new()
            .payload(payload.into())
            .headers(headers)
            .timeout(Some(self.timeout));
        let reply = self
            .client
            .send_request(self.subject.clone(), message)
            .await
            .map_err(|e| {
                ProviderError::Unavailable(format!("provider `{}` did not answer: {e}", self.name))
            })?;
        envelope::decode::<ProviderResponse>(&reply.payload).map_err(|e| {
            ProviderError::Other(format!(
                "provider `{}` answered something unreadable: {e}",
                self.name
            ))
        })
    }

    async fn request(&self, request: &ProviderRequest) -> Result<Reply, ProviderError> {
        match self.send(request).await? {
            ProviderResponse::Ok(reply) => Ok(reply),
            ProviderResponse::Err(e) => Err(e),
            ProviderResponse::Ready { .. } => Ok(Reply::Unit),
        }
    }

    /// Whether the process answers, and how many links it holds.
    pub async fn ping(&self) -> Result<usize, ProviderError> {
        match self.send(&ProviderRequest::Ping).await? {
            ProviderResponse::Ready { links, .. } => Ok(links),
            ProviderResponse::Err(e) => Err(e),
            other => Err(ProviderError::Other(format!(
                "unexpected answer to ping: {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl Provider for Remote {
    fn name(&self) -> &str {
        &self.name
    }

    async fn link_put(&self, link: LinkInfo) -> Result<(), ProviderError> {
        // Its configuration may hold secrets the host opened: only the process can read it.
        let sealed = self
            .signer
            .key
            .read()
            .expect("not poisoned")
            .seal(&envelope::encode(&link));
        self.request(&ProviderRequest::SealedLinkPut(sealed))
            .await
            .map(drop)
    }

    async fn link_del(&self, link: &LinkId) {
        if let Err(e) = self.request(&ProviderRequest::LinkDel(link.clone())).await {
            tracing::debug!(provider = %self.name, %link, error = %e, "deleting a link failed");
        }
    }

    async fn call(&self, link: &LinkId, call: Call) -> Result<Reply, ProviderError> {
        self.request(&ProviderRequest::Call {
            link: link.clone(),
            call,
        })
        .await
    }
}
