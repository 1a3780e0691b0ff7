//! `wasmcloud:messaging@0.3.0` for guests: clients by link name, messages as resources with a
//! content type and metadata, `producer.send`, `request-reply` (`request`, `reply`), and
//! delivery to a component's `incoming-handler` export ([`handle`]).
//!
//! It goes through the same links and checks as 0.2.0 ([`super::send`], [`super::ask`]): a
//! client is the component's messaging link of that name (`connect("default")` takes the one
//! named `default`, else the first), subjects are checked, a queued link queues. Metadata and
//! content type travel as NATS headers (`Content-Type` for the latter) on a direct
//! `messaging-nats` link; any other link refuses a message that has them rather than dropping
//! them. A request returns the first reply: asking for more than one (`set-expected-replies`
//! above 1) is refused, as is a request on a queued link.

use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::super::WorkloadCtx;
use super::{Incoming, Outgoing};
use crate::caps::bindings::messaging3::wasmcloud::messaging::{producer, request_reply, types};
use crate::caps::bindings::messaging3::{Messaging, MessagingPre};
use crate::wasi::HostState;

/// The header carrying a message's content type.
const CONTENT_TYPE: &str = "Content-Type";

/// How long a request waits when its options say nothing (never past the guest's deadline).
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// A component's export of `incoming-handler`, ready to instantiate.
pub type IncomingPre<T> = MessagingPre<T>;

/// A client: the name of the messaging link it goes through.
#[derive(Debug)]
pub struct Client {
    link: String,
}

/// A message, as the guest builds or receives it.
#[derive(Debug, Default)]
pub struct Message {
    topic: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
    metadata: Option<Vec<(String, String)>>,
    /// Where a received request's answer goes (`reply`).
    reply_to: Option<String>,
}

impl Message {
    /// Its headers as they travel: metadata, and the content type.
    fn headers(&self) -> Vec<(String, String)> {
        let mut headers = self.metadata.clone().unwrap_or_default();
        if let Some(ct) = &self.content_type {
            headers.push((CONTENT_TYPE.to_string(), ct.clone()));
        }
        headers
    }

    /// A received message.
    fn received(msg: Incoming) -> Self {
        let content_type = msg
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(CONTENT_TYPE))
            .map(|(_, v)| v.clone());
        let metadata: Vec<(String, String)> = msg
            .headers
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(CONTENT_TYPE))
            .collect();
        Self {
            topic: Some(msg.subject),
            content_type,
            data: msg.body,
            metadata: (!metadata.is_empty()).then_some(metadata),
            reply_to: msg.reply_to,
        }
    }
}

/// A request's options.
#[derive(Debug, Default)]
pub struct RequestOptions {
    timeout_ms: Option<u32>,
    expected_replies: Option<u32>,
}

/// One store's view for `wasmcloud:messaging@0.3.0`: its resources, its workload and deadline.
#[derive(Debug)]
pub struct MessagingView<'a> {
    /// The store's resources (clients, messages, options).
    pub table: &'a mut ResourceTable,
    /// The workload, with its messaging links.
    pub ctx: &'a WorkloadCtx,
    /// When the invocation must end: a request waits no longer.
    pub deadline: Instant,
}

struct Messaging3;

impl HasData for Messaging3 {
    type Data<'a> = MessagingView<'a>;
}

/// Adds `wasmcloud:messaging@0.3.0` (`types`, `producer`, `request-reply`) to `linker`, served
/// through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> MessagingView<'_>,
) -> wasmtime::Result<()> {
    types::add_to_linker::<T, Messaging3>(linker, view)?;
    producer::add_to_linker::<T, Messaging3>(linker, view)?;
    request_reply::add_to_linker::<T, Messaging3>(linker, view)
}

/// Runs `msg` through a fresh instance's `incoming-handler`.
pub(super) async fn handle(
    store: &mut Store<HostState>,
    pre: &IncomingPre<HostState>,
    msg: Incoming,
) -> wasmtime::Result<Result<(), String>> {
    let instance: Messaging = pre.instantiate_async(&mut *store).await?;
    let message = store.data_mut().table.push(Message::received(msg))?;
    let handled = instance
        .wasmcloud_messaging_incoming_handler()
        .call_handle(&mut *store, message)
        .await?;
    Ok(handled.map_err(|e| describe(&e)))
}

fn describe(e: &types::Error) -> String {
    match e {
        types::Error::Timeout => "timeout".to_string(),
        types::Error::Connection(m) => format!("connection: {m}"),
        types::Error::PermissionDenied(m) => format!("permission denied: {m}"),
        types::Error::Other(m) => m.clone(),
    }
}

impl MessagingView<'_> {
    /// The name of the link a client of `name` goes through.
    fn link_named(&self, name: &str) -> Result<String, types::Error> {
        let links = &self.ctx.messaging.consumers;
        links
            .iter()
            .find(|(l, _)| l.name == name)
            .or_else(|| {
                // wadm's name for a link that gives none.
                let default = name.is_empty() || name == "default";
                default.then(|| links.first()).flatten()
            })
            .map(|(l, _)| l.name.clone())
            .ok_or_else(|| {
                types::Error::Connection(format!(
                    "no messaging link named `{name}` for `{}`: link wasmcloud:messaging (producer, request-reply) to a messaging capability, e.g. `builtin:messaging-nats`",
                    self.ctx.name()
                ))
            })
    }

    /// How long a request may wait: its option, else the default, never past the deadline.
    fn wait(&self, timeout_ms: Option<u32>) -> Duration {
        timeout_ms
            .map_or(DEFAULT_WAIT, |ms| Duration::from_millis(u64::from(ms)))
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }
}

impl types::Host for MessagingView<'_> {}

impl types::HostClient for MessagingView<'_> {
    async fn connect(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Client>, types::Error>> {
        match self.link_named(&name) {
            Ok(link) => Ok(Ok(self.table.push(Client { link })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn disconnect(
        &mut self,
        _client: Resource<Client>,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        // Clients share the host's connection: nothing to close.
        Ok(Ok(()))
    }

    async fn drop(&mut self, client: Resource<Client>) -> wasmtime::Result<()> {
        self.table.delete(client)?;
        Ok(())
    }
}

impl types::HostMessage for MessagingView<'_> {
    async fn new(&mut self, data: Vec<u8>) -> wasmtime::Result<Resource<Message>> {
        Ok(self.table.push(Message {
            data,
            ..Message::default()
        })?)
    }

    async fn topic(&mut self, m: Resource<Message>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.topic.clone())
    }

    async fn content_type(&mut self, m: Resource<Message>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.content_type.clone())
    }

    async fn set_content_type(
        &mut self,
        m: Resource<Message>,
        content_type: String,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.content_type = Some(content_type);
        Ok(())
    }

    async fn data(&mut self, m: Resource<Message>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&m)?.data.clone())
    }

    async fn set_data(&mut self, m: Resource<Message>, data: Vec<u8>) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.data = data;
        Ok(())
    }

    async fn metadata(
        &mut self,
        m: Resource<Message>,
    ) -> wasmtime::Result<Option<Vec<(String, String)>>> {
        Ok(self.table.get(&m)?.metadata.clone())
    }

    async fn add_metadata(
        &mut self,
        m: Resource<Message>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        let message = self.table.get_mut(&m)?;
        message
            .metadata
            .get_or_insert_with(Vec::new)
            .push((key, value));
        Ok(())
    }

    async fn set_metadata(
        &mut self,
        m: Resource<Message>,
        meta: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.metadata = Some(meta);
        Ok(())
    }

    async fn remove_metadata(&mut self, m: Resource<Message>, key: String) -> wasmtime::Result<()> {
        if let Some(meta) = &mut self.table.get_mut(&m)?.metadata {
            meta.retain(|(k, _)| *k != key);
        }
        Ok(())
    }

    async fn drop(&mut self, m: Resource<Message>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

impl producer::Host for MessagingView<'_> {
    #[tracing::instrument(name = "lattice.messaging.publish", level = "debug", skip_all, fields(subject = %topic))]
    async fn send(
        &mut self,
        c: Resource<Client>,
        topic: String,
        message: Resource<Message>,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        let link = self.table.get(&c)?.link.clone();
        let message = self.table.delete(message)?;
        let msg = Outgoing {
            subject: topic,
            headers: message.headers(),
            body: message.data,
            reply_to: None,
        };
        Ok(super::send(self.ctx, Some(&link), msg)
            .await
            .map_err(types::Error::Other))
    }
}

impl request_reply::HostRequestOptions for MessagingView<'_> {
    async fn new(&mut self) -> wasmtime::Result<Resource<RequestOptions>> {
        Ok(self.table.push(RequestOptions::default())?)
    }

    async fn set_timeout_ms(
        &mut self,
        o: Resource<RequestOptions>,
        timeout_ms: u32,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&o)?.timeout_ms = Some(timeout_ms);
        Ok(())
    }

    async fn set_expected_replies(
        &mut self,
        o: Resource<RequestOptions>,
        expected_replies: u32,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&o)?.expected_replies = Some(expected_replies);
        Ok(())
    }

    async fn drop(&mut self, o: Resource<RequestOptions>) -> wasmtime::Result<()> {
        self.table.delete(o)?;
        Ok(())
    }
}

impl request_reply::Host for MessagingView<'_> {
    #[tracing::instrument(name = "lattice.messaging.request", level = "debug", skip_all, fields(subject = %topic))]
    async fn request(
        &mut self,
        c: Resource<Client>,
        topic: String,
        message: Resource<Message>,
        options: Option<Resource<RequestOptions>>,
    ) -> wasmtime::Result<Result<Vec<Resource<Message>>, types::Error>> {
        let link = self.table.get(&c)?.link.clone();
        let options = match options {
            Some(o) => self.table.delete(o)?,
            None => RequestOptions::default(),
        };
        if options.expected_replies.is_some_and(|n| n > 1) {
            return Ok(Err(types::Error::Other(
                "a request here returns its first reply only: ask for 1 reply (or none), or publish and subscribe for more".to_string(),
            )));
        }
        let message = self.table.get(&message)?;
        if !message.headers().is_empty() {
            return Ok(Err(types::Error::Other(
                "a request carries no metadata or content type here: send its body alone"
                    .to_string(),
            )));
        }
        let body = message.data.clone();
        let wait = self.wait(options.timeout_ms);
        match super::ask(self.ctx, Some(&link), topic, body, wait).await {
            Ok((subject, data)) => {
                let reply = self.table.push(Message {
                    topic: Some(subject),
                    data,
                    ..Message::default()
                })?;
                Ok(Ok(vec![reply]))
            }
            Err(e) if e.contains("timed out") => Ok(Err(types::Error::Timeout)),
            Err(e) => Ok(Err(types::Error::Other(e))),
        }
    }

    #[tracing::instrument(name = "lattice.messaging.publish", level = "debug", skip_all)]
    async fn reply(
        &mut self,
        reply_to: Resource<Message>,
        message: Resource<Message>,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        let Some(subject) = self.table.get(&reply_to)?.reply_to.clone() else {
            return Ok(Err(types::Error::Other(
                "the message has no reply subject: it was not sent as a request".to_string(),
            )));
        };
        let message = self.table.delete(message)?;
        let msg = Outgoing {
            subject,
            headers: message.headers(),
            body: message.data,
            reply_to: None,
        };
        Ok(super::send(self.ctx, None, msg)
            .await
            .map_err(types::Error::Other))
    }
}
