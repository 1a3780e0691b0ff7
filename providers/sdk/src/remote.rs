//! A provider in another process, reached over NATS.

use std::time::Duration;

use async_trait::async_trait;
use lattice_protocol::envelope;
use lattice_protocol::provider::{ProviderRequest, ProviderResponse};

use crate::{Call, LinkId, LinkInfo, Provider, ProviderError, Reply};

/// The host's handle on a provider process: every request goes to it on its subject.
#[derive(Debug, Clone)]
pub struct Remote {
    name: String,
    client: async_nats::Client,
    subject: String,
    timeout: Duration,
}

impl Remote {
    /// Talks to provider `name` on `subject`, waiting at most `timeout` for each answer.
    pub fn new(name: &str, client: async_nats::Client, subject: String, timeout: Duration) -> Self {
        Self {
            name: name.to_string(),
            client,
            subject,
            timeout,
        }
    }

    async fn request(&self, request: &ProviderRequest) -> Result<Reply, ProviderError> {
        let mut message = async_nats::Request::new()
            .payload(envelope::encode(request).into())
            .timeout(Some(self.timeout));
        // The provider process continues the caller's trace (`lattice.provider.serve`).
        if let Some(headers) = lattice_telemetry::propagation::nats_headers() {
            message = message.headers(headers);
        }
        let reply = self
            .client
            .send_request(self.subject.clone(), message)
            .await
            .map_err(|e| {
                ProviderError::Unavailable(format!("provider `{}` did not answer: {e}", self.name))
            })?;
        match envelope::decode::<ProviderResponse>(&reply.payload) {
            Ok(ProviderResponse::Ok(reply)) => Ok(reply),
            Ok(ProviderResponse::Err(e)) => Err(e),
            Ok(ProviderResponse::Ready { .. }) => Ok(Reply::Unit),
            Err(e) => Err(ProviderError::Other(format!(
                "provider `{}` answered something unreadable: {e}",
                self.name
            ))),
        }
    }

    /// Whether the process answers, and how many links it holds.
    pub async fn ping(&self) -> Result<usize, ProviderError> {
        let message = async_nats::Request::new()
            .payload(envelope::encode(&ProviderRequest::Ping).into())
            .timeout(Some(self.timeout));
        let reply = self
            .client
            .send_request(self.subject.clone(), message)
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        match envelope::decode::<ProviderResponse>(&reply.payload) {
            Ok(ProviderResponse::Ready { links, .. }) => Ok(links),
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
        self.request(&ProviderRequest::LinkPut(link))
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
