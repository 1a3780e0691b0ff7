//! `wasmcloud:messaging` over MQTT, as a Lattice provider (`mqtt`): for sensors on gateways,
//! whose readings arrive at a local MQTT broker (Mosquitto) rather than on NATS.
//!
//! Two kinds of link:
//!
//! - **Export** (the component exports `wasmcloud:messaging/handler`): the link's source config
//!   names topic filters (`subscriptions`, comma-separated, `+` and `#` allowed), the broker
//!   (`uri`, `mqtt://host:port` or `tcp://`, default `mqtt://127.0.0.1:1883`), an optional
//!   `client_id`, and the `qos` of the subscriptions (0 or 1, default 1). Every message matching
//!   a filter is delivered to the component with [`lattice_provider_sdk::deliver_message`].
//! - **Import** (the component imports `wasmcloud:messaging/consumer`): `publish` sends to the
//!   MQTT topic named by the subject, on the broker of the target config's `uri` (`qos` as
//!   above). `request` is unsupported: MQTT 3.1.1 has no request/reply.
//!
//! Layout: `config` reads link configuration; `broker` holds one MQTT client per distinct
//! broker address, shared by every link that names it, with its event loop, the broker's
//! subscriptions (the union of its links' filters), and one delivery worker per export link;
//! this file maps links to brokers and answers the host.
//!
//! Delivery semantics: each export link has one worker that delivers its messages one after
//! the other, so a component sees a topic's messages in MQTT order. A QoS 1 message is
//! acknowledged to the broker only after every link it matched has attempted its delivery,
//! successful or not. That makes the broker's in-flight window the provider's flow control: a
//! slow component holds messages back at the broker (which queues them) instead of in this
//! process's memory. A message the component fails on (no instance, a trap, its own error) is
//! logged, counted ([`Mqtt::stats`]) and dropped rather than retried, since one poisonous
//! reading must not stop a sensor's stream. Sessions are clean and the client subscribes again
//! on every connection: a broker restart costs the messages published while it was down and
//! those not yet acknowledged, never the subscriptions. (Surviving a provider crash with its
//! unacknowledged messages would take persistent sessions, with fixed client ids.)

mod broker;
mod config;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use lattice_protocol::names::LatticeName;
use lattice_provider_sdk::{
    Call, LinkDirection, LinkId, LinkInfo, Provider, ProviderError, Reply, unsupported,
};
use rumqttc::QoS;

pub use broker::LinkStats;
use broker::{Broker, Deliverer};
use config::{BrokerAddr, Settings};

/// The provider's name in links.
pub const NAME: &str = lattice_provider_sdk::catalog::MQTT.name;

/// How long `link_put` waits for the broker to confirm a link's subscriptions before it
/// returns anyway (the client keeps trying; deliveries start once the broker is there).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// How long a publish waits for the broker's connection (and a place in the client's queue).
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// How long one delivery to a component may take by default.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The provider: its links and the broker clients they share.
#[derive(Debug)]
pub struct Mqtt {
    deliverer: Deliverer,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    brokers: HashMap<BrokerAddr, Broker>,
    links: HashMap<LinkId, LinkEntry>,
}

#[derive(Debug)]
struct LinkEntry {
    broker: BrokerAddr,
    direction: LinkDirection,
    qos: QoS,
}

impl Inner {
    /// Takes `id` off its broker, and ends the broker's client when no link uses it any more.
    fn leave(&mut self, id: &LinkId) {
        let Some(entry) = self.links.remove(id) else {
            return;
        };
        if let Some(broker) = self.brokers.get(&entry.broker) {
            broker.remove(id);
            if broker.users() == 0 {
                tracing::info!(broker = %broker.addr(), "no link uses the MQTT broker; disconnecting");
                self.brokers.remove(&entry.broker);
            }
        }
    }
}

impl Mqtt {
    /// A provider delivering messages on `lattice` through `nats` (the provider's own
    /// connection: deliveries are ordinary component calls).
    pub fn new(nats: async_nats::Client, lattice: LatticeName) -> Self {
        Self {
            deliverer: Deliverer {
                nats,
                lattice,
                timeout: DELIVERY_TIMEOUT,
            },
            inner: Mutex::default(),
        }
    }

    /// How long one delivery may take before it counts as failed (30 s unless set).
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.deliverer.timeout = timeout;
        self
    }

    /// What happened to an export link's messages so far, if it is served.
    pub fn stats(&self, link: &LinkId) -> Option<LinkStats> {
        let inner = self.inner.lock().expect("not poisoned");
        let entry = inner.links.get(link)?;
        inner.brokers.get(&entry.broker)?.stats(link)
    }

    async fn publish(
        &self,
        link: &LinkId,
        subject: String,
        body: Vec<u8>,
    ) -> Result<Reply, ProviderError> {
        let (client, waiter, qos) = {
            let inner = self.inner.lock().expect("not poisoned");
            let entry = inner
                .links
                .get(link)
                .ok_or_else(|| ProviderError::UnknownLink(link.to_string()))?;
            if entry.direction != LinkDirection::Import {
                return Err(ProviderError::Unsupported(
                    "publish on a handler (export) link".into(),
                ));
            }
            let broker = inner
                .brokers
                .get(&entry.broker)
                .ok_or_else(|| ProviderError::UnknownLink(link.to_string()))?;
            (broker.publisher(), broker.waiter(), entry.qos)
        };
        if subject.is_empty() || !rumqttc::valid_topic(&subject) {
            return Err(ProviderError::Other(format!(
                "`{subject}` is not an MQTT topic to publish to (no `+` or `#`, not empty)"
            )));
        }
        // Failing fast while the broker is away tells the component; queueing would lose the
        // message anyway when the clean session starts over.
        if !waiter.connected(PUBLISH_WAIT).await {
            return Err(ProviderError::Unavailable(format!(
                "the MQTT broker at {} is not connected",
                waiter.addr()
            )));
        }
        // `reply_to` has no place in MQTT 3.1.1 messages: it is not sent.
        match tokio::time::timeout(PUBLISH_WAIT, client.publish(subject, qos, false, body)).await {
            Ok(Ok(())) => Ok(Reply::Unit),
            Ok(Err(e)) => Err(ProviderError::Other(format!("publishing: {e}"))),
            Err(_) => Err(ProviderError::Unavailable(format!(
                "the MQTT client for {} is saturated",
                waiter.addr()
            ))),
        }
    }
}

#[async_trait]
impl Provider for Mqtt {
    fn name(&self) -> &str {
        NAME
    }

    async fn link_put(&self, link: LinkInfo) -> Result<(), ProviderError> {
        // The provider's end of the link carries the configuration: the source of a handler
        // link, the target of a consumer link.
        let (settings, filters) = match link.direction {
            LinkDirection::Export => (
                Settings::from_config(&link.source_config)?,
                Some(config::filters(&link.source_config)?),
            ),
            LinkDirection::Import => (Settings::from_config(&link.target_config)?, None),
        };
        let id = link.id;
        let waiter = {
            let mut inner = self.inner.lock().expect("not poisoned");
            if inner
                .links
                .get(&id)
                .is_some_and(|e| e.broker != settings.broker)
            {
                inner.leave(&id);
            }
            // One client per broker: the first link to name a broker names its client
            // (`client_id`); later links share it.
            let broker = inner
                .brokers
                .entry(settings.broker.clone())
                .or_insert_with(|| {
                    Broker::start(settings.broker.clone(), settings.client_id.clone())
                });
            let put = match &filters {
                Some(filters) => {
                    broker.put_export(&id, filters.clone(), settings.qos, self.deliverer.clone())
                }
                None => broker.put_import(&id),
            };
            let waiter = broker.waiter();
            inner.links.insert(
                id.clone(),
                LinkEntry {
                    broker: settings.broker.clone(),
                    direction: link.direction,
                    qos: settings.qos,
                },
            );
            if let Err(e) = put {
                inner.leave(&id);
                return Err(e);
            }
            waiter
        };
        // Waiting lets a caller rely on deliveries once this returns; a broker that is away
        // delays them but does not fail the link, since the client connects when it comes.
        match &filters {
            Some(filters) => match waiter.subscribed(filters, SUBSCRIBE_WAIT).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    link = %id, broker = %settings.broker,
                    "the broker has not confirmed the subscriptions yet; deliveries start when it does"
                ),
                Err(filter) => {
                    self.inner.lock().expect("not poisoned").leave(&id);
                    return Err(ProviderError::Other(format!(
                        "the MQTT broker at {} refused the subscription to `{filter}`",
                        settings.broker
                    )));
                }
            },
            None => {
                if !waiter.connected(SUBSCRIBE_WAIT).await {
                    tracing::warn!(
                        link = %id, broker = %settings.broker,
                        "the MQTT broker is not reachable yet; publishes fail until it is"
                    );
                }
            }
        }
        Ok(())
    }

    async fn link_del(&self, link: &LinkId) {
        self.inner.lock().expect("not poisoned").leave(link);
    }

    async fn call(&self, link: &LinkId, call: Call) -> Result<Reply, ProviderError> {
        match call {
            Call::Publish { subject, body, .. } => self.publish(link, subject, body).await,
            Call::Request { .. } => Err(ProviderError::Unsupported(
                "wasmcloud:messaging/consumer.request: MQTT has no request/reply (publish, and \
                 receive answers on a handler link's subscription)"
                    .into(),
            )),
            other => Err(unsupported(&other)),
        }
    }
}
