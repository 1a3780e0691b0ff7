//! The JetStream names of queued delivery (its streams and buckets) and the keys consumers are
//! named and remember items by: [`ConsumerName`] (a durable consumer of the queue stream) and
//! [`ProcessedKey`] (a requeued item that ran). Each text form is written by `Display` and read
//! by `FromStr`, side by side.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use super::item::QueuedItem;
use crate::names::{AppName, ComponentName, LatticeName};

/// A key or name that does not read as the kind it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a queue {kind}")]
pub struct KeyError {
    kind: &'static str,
    given: String,
}

impl KeyError {
    pub(super) fn new(kind: &'static str, given: &str) -> Self {
        Self {
            kind,
            given: given.to_string(),
        }
    }
}

/// The stream queued calls and messages travel in.
pub fn queue_stream(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_queue")
}

/// The stream calls and messages that failed `max_attempts` times go to.
pub fn deadletter_stream(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_deadletter")
}

/// The KV bucket of [`LaneState`](super::LaneState)s, by [`LaneKey`](super::LaneKey).
pub fn lanes_bucket(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_lanes")
}

/// The KV bucket of the leases naming the one host that consumes for each queue consumer (the
/// key is the [`ConsumerName`]).
pub fn leases_bucket(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_queue_leases")
}

/// The KV bucket of the [`ProcessedKey`]s of requeued items that ran.
pub fn processed_bucket(lattice: &LatticeName) -> String {
    format!("LATTICE_{lattice}_processed")
}

/// A durable consumer of the queue stream: `queue-<app>-<component>` for a target's calls,
/// `queue-<app>-<component>-msg-<hash>` for one of its subscriptions (subscriptions hold `.`,
/// `*` and `>`, which consumer names cannot: a hash names it; the consumer's filter subject
/// shows the subscription itself). App and component names may hold `-`, so a name read back is
/// kept whole rather than split.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsumerName(String);

impl ConsumerName {
    /// The consumer delivering queued calls to `app`'s `component`.
    pub fn calls(app: &AppName, component: &ComponentName) -> Self {
        Self(format!("queue-{app}-{component}"))
    }

    /// The consumer delivering the queued messages on `subscription` to `app`'s `component`.
    pub fn messages(app: &AppName, component: &ComponentName, subscription: &str) -> Self {
        let hash = Sha256::digest(subscription.as_bytes());
        Self(format!(
            "queue-{app}-{component}-msg-{}",
            hex::encode(&hash[..8])
        ))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ConsumerName {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("queue-").unwrap_or_default();
        let ok = rest.len() >= 3
            && rest.contains('-')
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        ok.then(|| Self(s.to_string()))
            .ok_or_else(|| KeyError::new("consumer name", s))
    }
}

/// The key, in the processed-ids bucket, recording that a requeued item ran: for a call its
/// id (a call has one target); for a message `<app>.<component>.<id>`, since each component
/// subscribed to it runs it once. Item ids hold no `.` (UUIDs, or `seq-<n>`), which tells the
/// two apart when read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcessedKey {
    /// A call's: its id.
    Call {
        /// The call's id.
        id: String,
    },
    /// A message's, per subscribed component.
    Message {
        /// The subscriber's app.
        app: AppName,
        /// The subscribed component.
        component: ComponentName,
        /// The message's id.
        id: String,
    },
}

impl ProcessedKey {
    /// The key of `item` with id `id` run by `app`'s `component`.
    pub fn new(item: &QueuedItem, app: &AppName, component: &ComponentName, id: &str) -> Self {
        match item {
            QueuedItem::Call(_) => ProcessedKey::Call { id: id.to_string() },
            QueuedItem::Message(_) => ProcessedKey::Message {
                app: app.clone(),
                component: component.clone(),
                id: id.to_string(),
            },
        }
    }
}

impl fmt::Display for ProcessedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessedKey::Call { id } => f.write_str(id),
            ProcessedKey::Message { app, component, id } => write!(f, "{app}.{component}.{id}"),
        }
    }
}

impl FromStr for ProcessedKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KeyError::new("processed key", s);
        if s.is_empty() {
            return Err(err());
        }
        let parts: Vec<&str> = s.split('.').collect();
        match parts[..] {
            [id] => Ok(ProcessedKey::Call { id: id.to_string() }),
            [app, component, id] if !id.is_empty() => Ok(ProcessedKey::Message {
                app: AppName::new(app).map_err(|_| err())?,
                component: ComponentName::new(component).map_err(|_| err())?,
                id: id.to_string(),
            }),
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueuedMessage;
    use crate::rpc::RpcCall;

    fn names() -> (AppName, ComponentName) {
        (
            AppName::new("app").expect("valid"),
            ComponentName::new("sink").expect("valid"),
        )
    }

    #[test]
    fn consumer_names_are_as_before_and_valid_per_subscription() {
        let (app, sink) = names();
        assert_eq!(ConsumerName::calls(&app, &sink).as_str(), "queue-app-sink");
        let a = ConsumerName::messages(&app, &sink, "orders.>");
        let b = ConsumerName::messages(&app, &sink, "orders.*");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("queue-app-sink-msg-"), "{a}");
        assert!(!a.as_str().contains(['.', '*', '>', ' ']), "{a}");
        for name in [ConsumerName::calls(&app, &sink), a] {
            assert_eq!(name.to_string().parse::<ConsumerName>(), Ok(name));
        }
        for bad in [
            "queue-",
            "other-app-sink",
            "queue-app.sink",
            "queue-app sink",
        ] {
            assert!(bad.parse::<ConsumerName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn processed_keys_are_a_calls_id_or_a_messages_subscriber_and_id() {
        let (app, sink) = names();
        let call = QueuedItem::Call(RpcCall {
            interface: "example:greeter/notifier"
                .parse()
                .expect("an interface name"),
            function: "notify".into(),
            args: Vec::new(),
            deadline_ms: 0,
            caller: "app/client".into(),
        });
        let message = QueuedItem::Message(QueuedMessage {
            subject: "orders.new".into(),
            body: Vec::new(),
            reply_to: None,
        });
        let id = "0190b6a4-7c1e-7d2a-9f00-0123456789ab";
        let keys = [
            (ProcessedKey::new(&call, &app, &sink, id), id.to_string()),
            (
                ProcessedKey::new(&message, &app, &sink, id),
                format!("app.sink.{id}"),
            ),
        ];
        for (key, text) in keys {
            assert_eq!(key.to_string(), text);
            assert_eq!(text.parse::<ProcessedKey>(), Ok(key));
        }
        for bad in ["", "a.b", "a.b.", "a b.c.d", "a.b.c.d"] {
            assert!(bad.parse::<ProcessedKey>().is_err(), "{bad}");
        }
    }
}
