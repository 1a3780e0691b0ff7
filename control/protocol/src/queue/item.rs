//! The envelope of one queued item, in an outbox entry and in the stream: [`Queued`], a call or
//! a message with its delivery terms and stream subject.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::rpc::RpcCall;

/// What one queued call or message carries, in an outbox entry and in the stream.
///
/// Encoded with its item flattened: `{max_attempts, expires_at_ms, subject, call: ..}` or
/// `{.., message: ..}`. Decoded by hand (`QueuedVisitor`): serde's `flatten` buffers every
/// field before it decodes one, which cost a delivering host about 1 µs of each queued call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Queued {
    /// Delivery attempts before dead-lettering.
    pub max_attempts: u32,
    /// Unix ms after which the item is not worth delivering.
    pub expires_at_ms: u64,
    /// The queue-stream subject it is forwarded to
    /// ([`Subject::QueuedCalls`](crate::subject::Subject::QueuedCalls) or
    /// [`Subject::QueuedMessages`](crate::subject::Subject::QueuedMessages)), as text: a requeue
    /// puts a dead letter back there.
    pub subject: String,
    /// The call or the message.
    #[serde(flatten)]
    pub item: QueuedItem,
    /// The trace the item was queued in, continued by its delivery, however long after.
    ///
    /// In the body, so inside what the sending host signs: a relay cannot graft a call onto
    /// another trace, and the context stays with the item through the outbox, bundles, the
    /// stream and a dead letter's requeue, where per-message NATS headers would not (a bundle
    /// carries many items, each queued in its own trace). Absent when traces are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

impl<'de> Deserialize<'de> for Queued {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(QueuedVisitor)
    }
}

/// [`Queued`]'s fields in any order; fields it does not know are skipped, as `flatten` did.
struct QueuedVisitor;

impl<'de> Visitor<'de> for QueuedVisitor {
    type Value = Queued;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a queued item: a map with max_attempts, expires_at_ms, subject and a call or a message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Queued, A::Error> {
        let (mut max_attempts, mut expires_at_ms, mut subject) = (None, None, None);
        let (mut item, mut trace) = (None, None);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::MaxAttempts => max_attempts = Some(map.next_value()?),
                Field::ExpiresAtMs => expires_at_ms = Some(map.next_value()?),
                Field::Subject => subject = Some(map.next_value()?),
                Field::Call | Field::Message if item.is_some() => {
                    return Err(de::Error::custom(
                        "a queued item holds both a call and a message",
                    ));
                }
                Field::Call => item = Some(QueuedItem::Call(map.next_value()?)),
                Field::Message => item = Some(QueuedItem::Message(map.next_value()?)),
                Field::Trace => trace = map.next_value()?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Queued {
            max_attempts: max_attempts.ok_or_else(|| de::Error::missing_field("max_attempts"))?,
            expires_at_ms: expires_at_ms
                .ok_or_else(|| de::Error::missing_field("expires_at_ms"))?,
            subject: subject.ok_or_else(|| de::Error::missing_field("subject"))?,
            item: item
                .ok_or_else(|| de::Error::custom("a queued item holds no call and no message"))?,
            trace,
        })
    }
}

/// A key of [`Queued`]'s map, read without allocating.
enum Field {
    MaxAttempts,
    ExpiresAtMs,
    Subject,
    Call,
    Message,
    Trace,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(match name {
                    "max_attempts" => Field::MaxAttempts,
                    "expires_at_ms" => Field::ExpiresAtMs,
                    "subject" => Field::Subject,
                    "call" => Field::Call,
                    "message" => Field::Message,
                    "trace" => Field::Trace,
                    _ => Field::Other,
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// W3C trace context (<https://www.w3.org/TR/trace-context/>) as it travels with a queued item:
/// the `traceparent` and `tracestate` header values of the span that queued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The `traceparent` value: version, trace id, parent span id, flags.
    pub traceparent: String,
    /// The `tracestate` value (vendor entries), often empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tracestate: String,
}

impl TraceContext {
    /// From header pairs (name, value): `None` without a `traceparent`.
    pub fn from_pairs(pairs: &[(String, String)]) -> Option<Self> {
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        Some(Self {
            traceparent: value("traceparent")?,
            tracestate: value("tracestate").unwrap_or_default(),
        })
    }

    /// As header pairs (name, value), `tracestate` only when it says something.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = vec![("traceparent".to_owned(), self.traceparent.clone())];
        if !self.tracestate.is_empty() {
            pairs.push(("tracestate".to_owned(), self.tracestate.clone()));
        }
        pairs
    }
}

/// The payload of a [`Queued`] entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueuedItem {
    /// A one-way call to a component's export.
    Call(RpcCall),
    /// A message published on a queued `wasmcloud:messaging` link, for the components
    /// subscribed to its subject.
    Message(QueuedMessage),
}

impl QueuedItem {
    /// `call` or `message`, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            QueuedItem::Call(_) => "call",
            QueuedItem::Message(_) => "message",
        }
    }
}

/// A queued message: what `wasmcloud:messaging/consumer.publish` was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The NATS subject it was published on.
    pub subject: String,
    /// Its body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Where answers go, if the publisher gave a place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope;

    fn call() -> RpcCall {
        RpcCall {
            interface: "example:greeter/notifier"
                .parse()
                .expect("an interface name"),
            function: "notify".into(),
            args: vec![0x91, 0xa1, b'x'],
            deadline_ms: 0,
            caller: "app/client".into(),
        }
    }

    #[test]
    fn both_items_round_trip() {
        for item in [
            QueuedItem::Call(call()),
            QueuedItem::Message(QueuedMessage {
                subject: "orders.new".into(),
                body: b"\x00body".to_vec(),
                reply_to: Some("orders.reply".into()),
            }),
        ] {
            let queued = Queued {
                max_attempts: 3,
                expires_at_ms: 42,
                subject: "lattice.edge.q.x.y".into(),
                item,
                trace: None,
            };
            let back: Queued = envelope::decode(&envelope::encode(&queued)).expect("decodes");
            assert_eq!(back, queued);
        }
    }

    /// A queued item's trace context round-trips, and an item queued without one (traces
    /// off, or a host from before traces) still decodes.
    #[test]
    fn the_trace_context_travels_with_the_item_and_may_be_absent() {
        let pairs = vec![
            (
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            ),
            ("tracestate".to_owned(), "vendor=1".to_owned()),
        ];
        let trace = TraceContext::from_pairs(&pairs).expect("a traceparent");
        assert_eq!(trace.to_pairs(), pairs);
        assert_eq!(TraceContext::from_pairs(&pairs[1..]), None);
        let queued = Queued {
            max_attempts: 1,
            expires_at_ms: 1,
            subject: "lattice.edge.q.x.y".into(),
            item: QueuedItem::Call(call()),
            trace: Some(trace),
        };
        let back: Queued = envelope::decode(&envelope::encode(&queued)).expect("decodes");
        assert_eq!(back, queued);
        let untraced = Queued {
            trace: None,
            ..queued
        };
        let bytes = envelope::encode(&untraced);
        let back: Queued = envelope::decode(&bytes).expect("decodes");
        assert_eq!(back.trace, None);
    }

    /// An envelope without its subject (a shape of the development before queued messages,
    /// which no release wrote) is refused, not read as a call.
    #[test]
    fn an_envelope_without_a_subject_is_refused() {
        #[derive(Serialize)]
        struct QueuedCall {
            max_attempts: u32,
            expires_at_ms: u64,
            call: RpcCall,
        }
        let old = envelope::encode(&QueuedCall {
            max_attempts: 5,
            expires_at_ms: 7,
            call: call(),
        });
        assert!(envelope::decode::<Queued>(&old).is_err());
    }

    /// The hand-written decoder reads fields in any order and skips ones it does not know (as
    /// serde's `flatten` did), and refuses an item with both a call and a message, or neither.
    #[test]
    fn fields_decode_in_any_order_and_the_item_must_be_one() {
        #[derive(Serialize)]
        struct Shuffled {
            call: RpcCall,
            added_later: Vec<u32>,
            subject: String,
            expires_at_ms: u64,
            max_attempts: u32,
        }
        let bytes = envelope::encode(&Shuffled {
            call: call(),
            added_later: vec![1, 2],
            subject: "lattice.edge.q.x.y".into(),
            expires_at_ms: 7,
            max_attempts: 5,
        });
        let back: Queued = envelope::decode(&bytes).expect("decodes");
        assert_eq!(
            back,
            Queued {
                max_attempts: 5,
                expires_at_ms: 7,
                subject: "lattice.edge.q.x.y".into(),
                item: QueuedItem::Call(call()),
                trace: None,
            }
        );

        #[derive(Serialize)]
        struct Both {
            max_attempts: u32,
            expires_at_ms: u64,
            subject: String,
            call: RpcCall,
            message: QueuedMessage,
        }
        let both = envelope::encode(&Both {
            max_attempts: 5,
            expires_at_ms: 7,
            subject: "s".into(),
            call: call(),
            message: QueuedMessage {
                subject: "m".into(),
                body: Vec::new(),
                reply_to: None,
            },
        });
        let err = envelope::decode::<Queued>(&both)
            .expect_err("two items")
            .to_string();
        assert!(err.contains("both a call and a message"), "{err}");

        #[derive(Serialize)]
        struct Neither {
            max_attempts: u32,
            expires_at_ms: u64,
            subject: String,
        }
        let neither = envelope::encode(&Neither {
            max_attempts: 5,
            expires_at_ms: 7,
            subject: "s".into(),
        });
        let err = envelope::decode::<Queued>(&neither)
            .expect_err("no item")
            .to_string();
        assert!(err.contains("no call and no message"), "{err}");
    }
}
