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
use lattice_protocol::assignment::LinkTarget;
use lattice_protocol::provider::{Call, LinkId, Reply};
use lattice_protocol::subject::Subject;
use lattice_provider_sdk::Provider;
use tokio_util::task::AbortOnDropHandle;

use super::bindings::handler::Handles;
use super::bindings::handler::wasmcloud::messaging::types::BrokerMessage as HandlerMessage;
use super::bindings::wasmcloud::messaging::consumer::Host;
use super::bindings::wasmcloud::messaging::types::BrokerMessage;
use super::calls::Loaded;
use super::providers::link_id;
use super::{LatticeLink, WorkloadCtx};
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

/// Where a workload's `consumer` calls go.
enum Via {
    /// The lattice's NATS (`messaging-nats`).
    Nats(Box<LatticeLink>),
    /// A provider (e.g. `mqtt`), on this link.
    Provider(Arc<dyn Provider>, LinkId),
}

/// The link serving `ctx`'s `wasmcloud:messaging/consumer`, and where it goes.
async fn consumer(ctx: Arc<WorkloadCtx>) -> Result<Via, String> {
    let Some(link) = ctx
        .links
        .iter()
        .find(|l| l.serves("wasmcloud", "messaging", "consumer"))
    else {
        return Err(format!(
            "not-linked: wasmcloud:messaging/consumer is not linked for `{}`: add a link trait from it to a messaging capability (e.g. `builtin:messaging-nats`)",
            ctx.name()
        ));
    };
    match &link.target {
        LinkTarget::Builtin(name) if name == BUILTIN => ctx
            .lattice()
            .cloned()
            .map(|l| Via::Nats(Box::new(l)))
            .ok_or_else(|| "this host is not connected to a lattice".to_string()),
        target => {
            let providers = ctx.providers().ok_or("this host has no providers")?;
            let provider = providers.get(target).await.ok_or_else(|| {
                format!(
                    "the messaging provider of link `{}` is not running on this host",
                    link.name
                )
            })?;
            Ok(Via::Provider(
                provider,
                link_id(&ctx.app, &ctx.component, link),
            ))
        }
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
        // Never past the guest's own deadline.
        let wait = Duration::from_millis(u64::from(timeout_ms)).min(
            self.deadline()
                .saturating_duration_since(std::time::Instant::now()),
        );
        let via = match consumer(self.ctx.clone()).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match via {
            Via::Nats(lattice) => {
                if let Some(why) = refuse_subject(&subject) {
                    return Ok(Err(why));
                }
                let request = async_nats::Request::new()
                    .payload(body.into())
                    .timeout(Some(wait));
                match lattice.client.send_request(subject.clone(), request).await {
                    Ok(reply) => Ok(BrokerMessage {
                        subject: reply.subject.to_string(),
                        body: reply.payload.to_vec(),
                        reply_to: None,
                    }),
                    Err(e) => Err(format!("request on `{subject}`: {e}")),
                }
            }
            Via::Provider(provider, link) => {
                let call = Call::Request {
                    subject,
                    body,
                    timeout_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
                };
                match provider.call(&link, call).await {
                    Ok(Reply::Message { subject, body }) => Ok(BrokerMessage {
                        subject,
                        body,
                        reply_to: None,
                    }),
                    Ok(other) => Err(format!("the provider answered {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
    }

    async fn publish(&mut self, msg: BrokerMessage) -> wasmtime::Result<Result<(), String>> {
        let via = match consumer(self.ctx.clone()).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match via {
            Via::Nats(lattice) => {
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
                sent.map_err(|e| format!("publish on `{}`: {e}", msg.subject))
            }
            Via::Provider(provider, link) => {
                let call = Call::Publish {
                    subject: msg.subject,
                    body: msg.body,
                    reply_to: msg.reply_to,
                };
                provider
                    .call(&link, call)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
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
