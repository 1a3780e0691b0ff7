//! Messaging over the lattice's NATS: `wasmcloud:messaging/consumer` (publish, request) for
//! components linked to the `messaging-nats` capability, and delivery of subscribed subjects
//! to a component's `wasmcloud:messaging/handler` export.
//!
//! Guests may not touch the lattice's own subjects (`lattice.`, `$JS.`, `$KV.`, `$O.`,
//! `$SYS.`): a component that could publish there could forge control-plane requests. They may
//! publish to `_INBOX.` subjects (that is how a handler answers a request) but not subscribe.
//!
//! Subscriptions join a queue group per app and component, so each message is handled by one
//! instance wherever the component runs, like every other call.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use lattice_protocol::subject::Subject;
use tokio_util::task::AbortOnDropHandle;

use super::LatticeLink;
use super::bindings::handler::Handles;
use super::bindings::handler::wasmcloud::messaging::types::BrokerMessage as HandlerMessage;
use super::bindings::wasmcloud::messaging::consumer::Host;
use super::bindings::wasmcloud::messaging::types::BrokerMessage;
use super::calls::Loaded;
use crate::wasi::HostState;

/// The built-in capability's name in links.
pub const BUILTIN: &str = "messaging-nats";

/// Messages handled at once per workload on this host; more wait in NATS's buffer.
const CONCURRENT_HANDLERS: usize = 64;

/// Subject prefixes guests may neither publish on nor subscribe to.
const RESERVED: [&str; 5] = ["lattice.", "$JS.", "$KV.", "$O.", "$SYS."];

/// Where request replies go: guests answer there, but never listen there.
const INBOXES: &str = "_INBOX.";

/// Why a guest may not use `subject`, if it may not.
pub fn refuse_subject(subject: &str) -> Option<String> {
    if subject.is_empty() || subject.contains(char::is_whitespace) {
        return Some(format!("`{subject}` is not a valid NATS subject"));
    }
    RESERVED
        .iter()
        .find(|p| subject.starts_with(**p) || format!("{subject}.") == **p)
        .map(|p| format!("subjects under `{p}` are reserved for the lattice itself"))
}

impl HostState {
    fn messaging(&self) -> Result<&LatticeLink, String> {
        if self
            .ctx
            .builtin_links(BUILTIN, "wasmcloud", "messaging", "consumer")
            .next()
            .is_none()
        {
            return Err(format!(
                "not-linked: wasmcloud:messaging/consumer is not linked for `{}`: add a link trait from it to a `builtin:messaging-nats` capability",
                self.ctx.name()
            ));
        }
        self.ctx
            .lattice
            .as_ref()
            .ok_or_else(|| "this host is not connected to a lattice".to_string())
    }
}

impl super::bindings::wasmcloud::messaging::types::Host for HostState {}

impl Host for HostState {
    async fn request(
        &mut self,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<BrokerMessage, String>> {
        let lattice = match self.messaging() {
            Ok(l) => l.clone(),
            Err(e) => return Ok(Err(e)),
        };
        if let Some(why) = refuse_subject(&subject) {
            return Ok(Err(why));
        }
        // Never past the guest's own deadline.
        let wait = Duration::from_millis(u64::from(timeout_ms)).min(
            self.deadline()
                .saturating_duration_since(std::time::Instant::now()),
        );
        let request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(wait));
        Ok(
            match lattice.client.send_request(subject.clone(), request).await {
                Ok(reply) => Ok(BrokerMessage {
                    subject: reply.subject.to_string(),
                    body: reply.payload.to_vec(),
                    reply_to: None,
                }),
                Err(e) => Err(format!("request on `{subject}`: {e}")),
            },
        )
    }

    async fn publish(&mut self, msg: BrokerMessage) -> wasmtime::Result<Result<(), String>> {
        let lattice = match self.messaging() {
            Ok(l) => l.clone(),
            Err(e) => return Ok(Err(e)),
        };
        if let Some(why) = refuse_subject(&msg.subject) {
            return Ok(Err(why));
        }
        let sent = match msg.reply_to {
            Some(reply) => {
                lattice
                    .client
                    .publish_with_reply(msg.subject.clone(), reply, msg.body.into())
                    .await
            }
            None => {
                lattice
                    .client
                    .publish(msg.subject.clone(), msg.body.into())
                    .await
            }
        };
        Ok(sent.map_err(|e| format!("publish on `{}`: {e}", msg.subject)))
    }
}

/// Delivers messages on `subjects` to `loaded`'s handler export until the handle is dropped.
pub async fn serve(
    loaded: Arc<Loaded>,
    lattice: &LatticeLink,
    subjects: &[String],
) -> anyhow::Result<AbortOnDropHandle<()>> {
    let pre = super::bindings::handler::HandlesPre::new(loaded.pre.clone()).map_err(|e| {
        anyhow::anyhow!(
            "the component has subscriptions but does not export wasmcloud:messaging/handler@0.2.0: {e:#}"
        )
    })?;
    let ctx = &loaded.ctx;
    let group = Subject::rpc(&lattice.lattice, &ctx.app, &ctx.component).to_string();
    let mut streams = Vec::new();
    for subject in subjects {
        if let Some(why) = refuse_subject(subject).or_else(|| {
            subject
                .starts_with(INBOXES)
                .then(|| "reply inboxes belong to the requester".to_string())
        }) {
            anyhow::bail!("cannot subscribe to `{subject}`: {why}");
        }
        streams.push(
            lattice
                .client
                .queue_subscribe(subject.clone(), group.clone())
                .await?,
        );
    }
    let mut messages = futures::stream::select_all(streams);
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_HANDLERS));
    Ok(AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let (loaded, pre) = (loaded.clone(), pre.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let msg = HandlerMessage {
                    subject: message.subject.to_string(),
                    body: message.payload.to_vec(),
                    reply_to: message.reply.map(|r| r.to_string()),
                };
                let mut store = loaded.store(None);
                let outcome = async {
                    let handles: Handles = pre.instantiate_async(&mut store).await?;
                    handles
                        .wasmcloud_messaging_handler()
                        .call_handle_message(&mut store, &msg)
                        .await
                }
                .await;
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(workload = %loaded.ctx.name(), subject = %msg.subject, error = %e, "the handler refused a message");
                    }
                    Err(e) => {
                        loaded.failures.add();
                        tracing::warn!(workload = %loaded.ctx.name(), subject = %msg.subject, error = %format!("{e:#}"), "the handler trapped");
                    }
                }
            });
        }
    })))
}
