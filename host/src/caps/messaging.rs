//! Messaging over the lattice's NATS: `wasmcloud:messaging/consumer` (publish, request) for
//! components linked to the `messaging-nats` capability, and delivery of subscribed subjects
//! to a component's `wasmcloud:messaging/handler` export; 0.3.0 (`producer`, `request-reply`,
//! `incoming-handler`) in [`v0_3`], through the same [`send`] and [`ask`].
//!
//! Guests may not touch the lattice's own subjects (`lattice.`, `$JS.`, `$KV.`, `$O.`,
//! `$SYS.`): a component that could publish there could forge control-plane requests. They may
//! publish to `_INBOX.` subjects (that is how a handler answers a request) but not subscribe.
//!
//! Publish and request go to a provider either way: [`NatsMessaging`] in-process for
//! `messaging-nats` (a call is a direct method call, no encoding), a provider process such as
//! `mqtt` otherwise. The subject checks are the host's, before the provider sees the call.
//!
//! Subscriptions join a queue group per app and component, so each message is handled by one
//! instance wherever the component runs, like every other call.
//!
//! **Queued messages.** On a `consumer` link to `messaging-nats` with `delivery: queued`,
//! `publish` appends the message to the host's durable outbox and returns once it is committed
//! (same capacity and `on_full` rules as queued calls); [`crate::queue`] forwards it to the
//! queue stream and delivers it, once per subscribed app and component, through [`deliver`].
//! `request` on such a link is refused: a request needs its answer now. Queued messages are not
//! also published on the plain subject (a subscribed component would get each twice).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lattice_protocol::assignment::{LinkTarget, QueuedDelivery, WorkloadLink};
use lattice_protocol::names::{AppName, ComponentName};
use lattice_protocol::provider::{Call, LinkId, LinkInfo, ProviderError, Reply};
use lattice_protocol::queue::QueuedMessage;
use lattice_protocol::subject::Subject;
use lattice_provider_sdk::{Provider, unsupported};
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument as _, instrument};
use wasmtime::component::{HasData, Linker};

use super::bindings::handler::wasmcloud::messaging::types::BrokerMessage as HandlerMessage;
use super::bindings::handler::{Handles, HandlesPre};
use super::bindings::wasmcloud::messaging::consumer::Host;
use super::bindings::wasmcloud::messaging::types::BrokerMessage;
use super::bus::LinkNames;
use super::calls::Loaded;
use super::providers::link_id;
use super::{LatticeLink, WorkloadCtx};
use crate::wasi::HostState;

pub mod v0_3;

/// The built-in capability's name in links.
pub const BUILTIN: &str = lattice_protocol::provider::catalog::MESSAGING_NATS.name;

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

/// Why a subject cannot carry a queued message, if it cannot: it must name one subject (no
/// wildcards, no empty tokens), and not a reply inbox (the requester waits now, not later).
fn refuse_queued_subject(subject: &str) -> Option<String> {
    if subject.starts_with(INBOXES) {
        return Some(format!(
            "`{subject}` is a reply inbox: a reply cannot be queued, since the requester waits for it now; answer over a direct `messaging-nats` link"
        ));
    }
    subject
        .split('.')
        .any(|t| t.is_empty() || t == "*" || t == ">")
        .then(|| format!("`{subject}` is not one subject (empty token or wildcard): a queued message goes to one subject, e.g. `orders.new`"))
}

/// Room kept in a stream message for the envelope and the headers around a queued body.
const QUEUED_OVERHEAD: usize = 4096;

/// Why a queued body of `len` bytes would never be accepted by the stream, if it would not:
/// such an entry would wait in the outbox, ahead of every later one, until its `ttl`.
fn too_big(ctx: &WorkloadCtx, len: usize) -> Option<String> {
    // Zero when the host has not reached NATS yet: then it cannot tell, and accepts.
    let max = ctx.lattice()?.client.server_info().max_payload;
    (max > 0 && len + QUEUED_OVERHEAD > max).then(|| {
        format!(
            "a queued message of {len} bytes does not fit in NATS's max_payload ({max} bytes, less {QUEUED_OVERHEAD} for the envelope); the message was not queued: send a smaller body (or a reference to it, e.g. a blob name)"
        )
    })
}

/// `messaging-nats` as a provider: publish and request on the host's NATS connection. Runs
/// in-process (the host registers it beside `keyvalue-nats`), so a call costs a method call.
#[derive(Debug, Clone)]
pub struct NatsMessaging {
    client: async_nats::Client,
}

impl NatsMessaging {
    /// Messaging on `client`.
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }

    async fn publish(
        &self,
        subject: String,
        body: Vec<u8>,
        reply_to: Option<String>,
        extra: Vec<(String, String)>,
    ) -> Result<Reply, ProviderError> {
        // Called in the guest's `lattice.messaging.publish`: the message carries its trace
        // context, which the handler of a subscribed component continues.
        let mut headers = lattice_telemetry::propagation::nats_headers();
        if !extra.is_empty() {
            let all = headers.get_or_insert_with(async_nats::HeaderMap::new);
            for (key, value) in extra {
                all.append(key.as_str(), value.as_str());
            }
        }
        let sent = match (reply_to, headers) {
            (Some(reply), Some(headers)) => {
                self.client
                    .publish_with_reply_and_headers(subject.clone(), reply, headers, body.into())
                    .await
            }
            (Some(reply), None) => {
                self.client
                    .publish_with_reply(subject.clone(), reply, body.into())
                    .await
            }
            (None, Some(headers)) => {
                self.client
                    .publish_with_headers(subject.clone(), headers, body.into())
                    .await
            }
            (None, None) => self.client.publish(subject.clone(), body.into()).await,
        };
        sent.map(|()| Reply::Unit)
            .map_err(|e| ProviderError::Other(format!("publish on `{subject}`: {e}")))
    }

    async fn request(
        &self,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<Reply, ProviderError> {
        let mut request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(Duration::from_millis(u64::from(timeout_ms))));
        if let Some(headers) = lattice_telemetry::propagation::nats_headers() {
            request = request.headers(headers);
        }
        match self.client.send_request(subject.clone(), request).await {
            Ok(reply) => Ok(Reply::Message {
                subject: reply.subject.to_string(),
                body: reply.payload.to_vec(),
            }),
            Err(e) => Err(ProviderError::Other(format!("request on `{subject}`: {e}"))),
        }
    }
}

#[lattice_provider_sdk::async_trait]
impl Provider for NatsMessaging {
    fn name(&self) -> &str {
        BUILTIN
    }

    // Every link publishes on the same connection: nothing to set up or take down per link.
    async fn link_put(&self, _link: LinkInfo) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn link_del(&self, _link: &LinkId) {}

    async fn call(&self, _link: &LinkId, call: Call) -> Result<Reply, ProviderError> {
        match call {
            Call::Publish {
                subject,
                body,
                reply_to,
                headers,
            } => self.publish(subject, body, reply_to, headers).await,
            Call::Request {
                subject,
                body,
                timeout_ms,
            } => self.request(subject, body, timeout_ms).await,
            call => Err(unsupported(&call)),
        }
    }
}

/// Where a workload's `consumer` calls go.
enum Via {
    /// `messaging-nats`'s provider, on this link: the host checks subjects first.
    Nats(Arc<dyn Provider>, LinkId),
    /// The host's outbox, on a queued `messaging-nats` link (named for errors).
    Queued(String, QueuedDelivery),
    /// A provider (e.g. `mqtt`), on this link.
    Provider(Arc<dyn Provider>, LinkId),
}

/// What a workload may publish through: its `wasmcloud:messaging/consumer` links, found once
/// when it starts.
#[derive(Debug, Default)]
pub struct MessagingGrant {
    /// The links, and their ids as providers know them; the first serves unless the guest
    /// chose another by name.
    pub(super) consumers: Vec<(WorkloadLink, LinkId)>,
}

impl MessagingGrant {
    /// The grant of `app/component`, whose links are `links`.
    pub fn new(app: &AppName, component: &ComponentName, links: &[WorkloadLink]) -> Self {
        Self {
            consumers: links
                .iter()
                .filter(|l| {
                    ["consumer", "producer", "request-reply"]
                        .iter()
                        .any(|i| l.serves("wasmcloud", "messaging", i))
                })
                .map(|l| (l.clone(), link_id(app, component, l)))
                .collect(),
        }
    }
}

/// One store's view for `wasmcloud:messaging/consumer`: its workload and deadline.
#[derive(Debug)]
pub struct MessagingView<'a> {
    /// The workload, with its [`MessagingGrant`].
    pub ctx: &'a WorkloadCtx,
    /// The links the guest chose by name.
    pub names: &'a LinkNames,
    /// When the invocation must end: a request waits no longer.
    pub deadline: Instant,
}

struct Messaging;

impl HasData for Messaging {
    type Data<'a> = MessagingView<'a>;
}

/// Adds `wasmcloud:messaging/consumer` (and its `types`) to `linker`, served through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> MessagingView<'_>,
) -> wasmtime::Result<()> {
    super::bindings::wasmcloud::messaging::types::add_to_linker::<T, Messaging>(linker, view)?;
    super::bindings::wasmcloud::messaging::consumer::add_to_linker::<T, Messaging>(linker, view)
}

/// The link serving `ctx`'s `wasmcloud:messaging/consumer` (the one named `chosen`, else
/// the first), and where it goes.
async fn consumer(ctx: &WorkloadCtx, chosen: Option<&str>) -> Result<Via, String> {
    let consumers = &ctx.messaging.consumers;
    let found = match chosen {
        Some(name) => consumers.iter().find(|(l, _)| l.name == name),
        None => consumers.first(),
    };
    let Some((link, id)) = found else {
        if let Some(name) = chosen {
            return Err(format!(
                "not-linked: no wasmcloud:messaging/consumer link named `{name}` (chosen with wasmcloud:bus/lattice.set-link-name) for `{}`: name one of its messaging links",
                ctx.name()
            ));
        }
        return Err(format!(
            "not-linked: wasmcloud:messaging/consumer is not linked for `{}`: add a link trait from it to a messaging capability (e.g. `builtin:messaging-nats`)",
            ctx.name()
        ));
    };
    match &link.target {
        LinkTarget::Builtin(name)
            if name == BUILTIN
                && let Some(q) = &link.queued =>
        {
            Ok(Via::Queued(link.name.clone(), q.clone()))
        }
        target => {
            let providers = ctx.providers().ok_or("this host has no providers")?;
            let provider = providers.get(target).await.ok_or_else(|| {
                format!(
                    "the messaging provider of link `{}` is not running on this host",
                    link.name
                )
            })?;
            let id = id.clone();
            Ok(match target {
                LinkTarget::Builtin(name) if name == BUILTIN => Via::Nats(provider, id),
                _ => Via::Provider(provider, id),
            })
        }
    }
}

/// A message a guest sends.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// Its subject.
    pub(super) subject: String,
    /// Its body.
    pub(super) body: Vec<u8>,
    /// Where answers go.
    pub(super) reply_to: Option<String>,
    /// Its headers (0.3's metadata and content type); only a direct `messaging-nats` link
    /// carries them.
    pub(super) headers: Vec<(String, String)>,
}

/// Sends `msg` through `ctx`'s messaging link named `chosen` (else its first): published, or
/// queued on a queued link.
pub(super) async fn send(
    ctx: &WorkloadCtx,
    chosen: Option<&str>,
    msg: Outgoing,
) -> Result<(), String> {
    let via = consumer(ctx, chosen).await?;
    let nats = matches!(via, Via::Nats(..));
    if !nats && !msg.headers.is_empty() {
        return Err(format!(
            "the message on `{}` has metadata or a content type, which only a direct link to {BUILTIN} carries; send it without them",
            msg.subject
        ));
    }
    match via {
        Via::Queued(_, delivery) => {
            if let Some(why) =
                refuse_subject(&msg.subject).or_else(|| refuse_queued_subject(&msg.subject))
            {
                return Err(why);
            }
            let Some(queue) = ctx.queue() else {
                return Err(
                    "queue-full: this host has no outbox (see its log for why it could not be opened); the message was not queued".to_string(),
                );
            };
            if let Some(why) = too_big(ctx, msg.body.len()) {
                return Err(why);
            }
            let message = QueuedMessage {
                subject: msg.subject,
                body: msg.body,
                reply_to: msg.reply_to,
            };
            queue
                .enqueue_message(ctx, message, &delivery)
                .await
                .map_err(|e| e.to_string())
        }
        Via::Nats(provider, link) | Via::Provider(provider, link) => {
            if nats && let Some(why) = refuse_subject(&msg.subject) {
                return Err(why);
            }
            let call = Call::Publish {
                subject: msg.subject,
                body: msg.body,
                reply_to: msg.reply_to,
                headers: msg.headers,
            };
            provider
                .call(&link, call)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

/// Sends `body` on `subject` through `ctx`'s messaging link named `chosen` (else its first)
/// and waits at most `wait` for the answer: its subject and body.
pub(super) async fn ask(
    ctx: &WorkloadCtx,
    chosen: Option<&str>,
    subject: String,
    body: Vec<u8>,
    wait: Duration,
) -> Result<(String, Vec<u8>), String> {
    let via = consumer(ctx, chosen).await?;
    let nats = matches!(via, Via::Nats(..));
    match via {
        Via::Queued(link, _) => Err(format!(
            "request on `{subject}`: link `{link}` to {BUILTIN} has `delivery: queued`, and a queued message cannot bring an answer now; publish instead (an answer can come back as a message to a subject you subscribe to), or make the link `delivery: direct`"
        )),
        Via::Nats(provider, link) | Via::Provider(provider, link) => {
            if nats && let Some(why) = refuse_subject(&subject) {
                return Err(why);
            }
            let call = Call::Request {
                subject,
                body,
                timeout_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            };
            match provider.call(&link, call).await {
                Ok(Reply::Message { subject, body }) => Ok((subject, body)),
                Ok(other) => Err(format!("the provider answered {other:?}")),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

impl super::bindings::wasmcloud::messaging::types::Host for MessagingView<'_> {}

// Spans name the subject, never the body.
impl Host for MessagingView<'_> {
    #[instrument(name = "lattice.messaging.request", level = "debug", skip_all, fields(%subject))]
    async fn request(
        &mut self,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<BrokerMessage, String>> {
        // Never past the guest's own deadline.
        let wait = Duration::from_millis(u64::from(timeout_ms)).min(
            self.deadline
                .saturating_duration_since(std::time::Instant::now()),
        );
        let chosen = self.names.chosen("wasmcloud", "messaging", "consumer");
        Ok(ask(self.ctx, chosen, subject, body, wait)
            .await
            .map(|(subject, body)| BrokerMessage {
                subject,
                body,
                reply_to: None,
            }))
    }

    #[instrument(name = "lattice.messaging.publish", level = "debug", skip_all, fields(subject = %msg.subject))]
    async fn publish(&mut self, msg: BrokerMessage) -> wasmtime::Result<Result<(), String>> {
        let chosen = self.names.chosen("wasmcloud", "messaging", "consumer");
        let msg = Outgoing {
            subject: msg.subject,
            body: msg.body,
            reply_to: msg.reply_to,
            headers: Vec::new(),
        };
        Ok(send(self.ctx, chosen, msg).await)
    }
}

/// Delivers messages on `subjects` to `loaded`'s handler export until the handle is dropped.
pub async fn serve(
    loaded: Arc<Loaded>,
    lattice: &LatticeLink,
    subjects: &[String],
) -> anyhow::Result<AbortOnDropHandle<()>> {
    let pre = handler(&loaded)?;
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
                // Only 0.3.0's handler sees headers (as metadata): 0.2.0's pays nothing.
                let headers = match (&pre, message.headers.as_ref()) {
                    (HandlerPre::V3(_), Some(h)) => h
                        .iter()
                        .flat_map(|(k, values)| {
                            values.iter().map(move |v| (k.to_string(), v.to_string()))
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                let msg = Incoming {
                    subject: message.subject.to_string(),
                    body: message.payload.to_vec(),
                    reply_to: message.reply.as_ref().map(|r| r.to_string()),
                    headers,
                };
                // A child of the publisher's span when the message carries its trace.
                let span = tracing::debug_span!("lattice.messaging.handle", component = %loaded.ctx.name(), subject = %msg.subject);
                lattice_telemetry::propagation::continue_nats(&span, message.headers.as_ref());
                match handle(&loaded, &pre, &msg, None).instrument(span).await {
                    Ok(()) => {}
                    Err(HandlerError::Refused(e)) => {
                        tracing::warn!(workload = %loaded.ctx.name(), subject = %msg.subject, error = %e, "the handler refused a message");
                    }
                    Err(HandlerError::Trapped(e)) => {
                        tracing::warn!(workload = %loaded.ctx.name(), subject = %msg.subject, error = %e, "the handler trapped");
                    }
                }
            });
        }
    })))
}

/// A message arriving for a component's handler.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    /// The subject it came on.
    pub(crate) subject: String,
    /// Its body.
    pub(crate) body: Vec<u8>,
    /// Where its answer goes, if it expects one.
    pub(crate) reply_to: Option<String>,
    /// Its headers (0.3's metadata).
    pub(crate) headers: Vec<(String, String)>,
}

/// A component's message handler export, ready to instantiate: `wasmcloud:messaging/handler`
/// (0.2.0) or `/incoming-handler` (0.3.0).
#[derive(Clone)]
pub(crate) enum HandlerPre {
    /// 0.2.0's `handle-message`.
    V2(HandlesPre<HostState>),
    /// 0.3.0's `handle`, with the message as a resource.
    V3(v0_3::IncomingPre<HostState>),
}

/// The handler export of `loaded`, ready to instantiate.
pub(crate) fn handler(loaded: &Loaded) -> anyhow::Result<HandlerPre> {
    if let Ok(pre) = HandlesPre::new(loaded.pre.clone()) {
        return Ok(HandlerPre::V2(pre));
    }
    v0_3::IncomingPre::new(loaded.pre.clone())
        .map(HandlerPre::V3)
        .map_err(|e| {
            anyhow::anyhow!(
                "the component has subscriptions but exports neither wasmcloud:messaging/handler@0.2.0 nor wasmcloud:messaging/incoming-handler@0.3.0: {e:#}"
            )
        })
}

/// Why a handler did not take a message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerError {
    /// It returned its own error.
    #[error("the handler refused the message: {0}")]
    Refused(String),
    /// It trapped (counted as a failure of the workload).
    #[error("the handler trapped: {0}")]
    Trapped(String),
}

/// Runs `msg` in a fresh instance of `loaded`'s handler, ended by `deadline` at the latest.
async fn handle(
    loaded: &Loaded,
    pre: &HandlerPre,
    msg: &Incoming,
    deadline: Option<Instant>,
) -> Result<(), HandlerError> {
    // Messages wait for one of the workload's slots (its `concurrency`, shared with its HTTP
    // requests and calls) rather than being dropped; no longer than the message may take.
    let wait_until = deadline.unwrap_or_else(|| Instant::now() + loaded.limits.execution_timeout);
    let Some(_slot) = loaded.gate.enter_by(wait_until).await else {
        return Err(HandlerError::Refused(format!(
            "busy: `{}` ran {} instances at once until the message's deadline",
            loaded.ctx.name(),
            loaded.gate.limit()
        )));
    };
    let mut store = loaded.store(deadline);
    let outcome = match pre {
        HandlerPre::V2(pre) => {
            let msg = HandlerMessage {
                subject: msg.subject.clone(),
                body: msg.body.clone(),
                reply_to: msg.reply_to.clone(),
            };
            async {
                let handles: Handles = pre.instantiate_async(&mut store).await?;
                handles
                    .wasmcloud_messaging_handler()
                    .call_handle_message(&mut store, &msg)
                    .await
            }
            .await
        }
        HandlerPre::V3(pre) => v0_3::handle(&mut store, pre, msg.clone()).await,
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HandlerError::Refused(e)),
        Err(e) => {
            loaded.failures.add();
            Err(HandlerError::Trapped(format!("{e:#}")))
        }
    }
}

/// Delivers a queued message to `loaded`'s handler (see [`crate::queue`]).
pub(crate) async fn deliver(
    loaded: &Loaded,
    pre: &HandlerPre,
    message: &QueuedMessage,
    deadline: Instant,
) -> Result<(), HandlerError> {
    let msg = Incoming {
        subject: message.subject.clone(),
        body: message.body.clone(),
        reply_to: message.reply_to.clone(),
        headers: Vec::new(),
    };
    handle(loaded, pre, &msg, Some(deadline)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_message_goes_to_one_plain_subject() {
        assert_eq!(refuse_queued_subject("orders.new"), None);
        for bad in [
            "orders.*",
            "orders.>",
            "orders..new",
            "orders.",
            "_INBOX.abc",
        ] {
            assert!(
                refuse_queued_subject(bad).is_some(),
                "{bad} must be refused"
            );
        }
        assert!(
            refuse_queued_subject("_INBOX.x")
                .is_some_and(|why| why.contains("a reply cannot be queued"))
        );
    }
}
