//! `wasmcloud:messaging` over MQTT, as a Lattice provider (`mqtt`): for sensors on gateways,
//! whose readings arrive at a local MQTT broker (Mosquitto) rather than on NATS.
//!
//! Two kinds of link:
//!
//! - **Export** (the component exports `wasmcloud:messaging/handler`): the link's source config
//!   names topic filters (`subscriptions`, comma-separated, `+` and `#` allowed), the broker
//!   (`uri`, `mqtt://host:port` or `tcp://`, over TLS `mqtts://` or `ssl://`; default
//!   `mqtt://127.0.0.1:1883`), an optional `client_id`, the `qos` of the subscriptions (0 or 1,
//!   default 1) and, for TLS, `tls_ca` (a PEM file of CAs to trust instead of the system's
//!   roots) and `tls_cert` with `tls_key` (a client certificate, PEM). Every message matching
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
//! Delivery semantics (at least once): each export link has one worker that delivers its
//! messages one after the other, so a component sees a topic's messages in MQTT order. A QoS 1
//! message is acknowledged to the broker only after every link it matched has attempted its
//! delivery, that is after [`lattice_provider_sdk::deliver_message`] returned: a provider
//! delivery is a call of the component's handler, so `Ok` means the handler ran and returned
//! `ok` (nothing is acknowledged before). That makes the broker's in-flight window the
//! provider's flow control: a slow component holds messages back at the broker (which queues
//! them) instead of in this process's memory.
//!
//! A message the component fails on (no instance, a trap, its own error) is logged, counted
//! ([`Mqtt::stats`]), acknowledged and dropped rather than left for redelivery: MQTT 3.1.1
//! redelivers an unacknowledged message only on the next connection, so an unacknowledged
//! failure would hold one of the broker's few in-flight slots until then, and a poisonous
//! reading would stop the sensor's stream.
//!
//! Sessions are persistent when the client id is stable: a link's `client_id`, or one derived
//! from the lattice, the host and the broker ([`Mqtt::with_host`], which the provider process
//! always sets). The broker then keeps the subscriptions and queues QoS 1 messages while the
//! provider (or its host) is down, and sends again those not acknowledged, so a crash loses
//! nothing a sensor published at QoS 1; a message delivered but not yet acknowledged when the
//! provider died is delivered again (a duplicate: the handler should be idempotent, e.g. by a
//! reading's sequence number or time). Messages the broker sends before the link that wants
//! them is put again are held for a few seconds for it. Filters a restarted provider no
//! longer wants stay in the session until a link unsubscribes them; their messages are
//! acknowledged unseen. A broker restart without its own persistence loses what it held.

mod broker;
mod config;
mod tls;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use lattice_protocol::names::{HostId, LatticeName};
use lattice_provider_sdk::{
    Call, LinkDirection, LinkId, LinkInfo, Provider, ProviderError, Reply, unsupported,
};
use rumqttc::QoS;

pub use broker::LinkStats;
use broker::{Broker, Deliverer, Session};
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
    /// The host this provider serves, which makes its client ids stable (see [`Mqtt::with_host`]).
    host: Option<HostId>,
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
            host: None,
            inner: Mutex::default(),
        }
    }

    /// Serves `host`: each broker's client id is derived from the lattice, the host and the
    /// broker's address, so a restarted provider resumes its persistent session. Without a host
    /// (and without a link's `client_id`) the id is random and the session clean, since no one
    /// could resume it.
    pub fn with_host(mut self, host: HostId) -> Self {
        self.host = Some(host);
        self
    }

    /// How the client for `settings`' broker connects; reads the TLS files.
    fn session(&self, settings: &Settings) -> Result<Session, ProviderError> {
        let tls = settings.tls.as_ref().map(tls::client_config).transpose()?;
        let (client_id, persistent) = match (&settings.client_id, &self.host) {
            (Some(id), _) => (id.clone(), true),
            (None, Some(host)) => (
                stable_client_id(&self.deliverer.lattice, host, &settings.broker),
                true,
            ),
            // Unique: a broker disconnects the older of two clients with one id, and two
            // providers must not take turns.
            (None, None) => (
                format!(
                    "lattice-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                ),
                false,
            ),
        };
        Ok(Session {
            client_id,
            persistent,
            tls,
        })
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
        // Failing fast while the broker is away tells the component, which knows whether the
        // message is worth keeping; queued here it would sit in memory a crash loses.
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

/// `lattice-` and 14 hex digits of a hash of who connects where: short enough for any broker
/// (MQTT 3.1.1 promises 23 characters), the same after a restart, and distinct per host and
/// broker (the user is part of the address, so two accounts on one broker get two sessions).
fn stable_client_id(lattice: &LatticeName, host: &HostId, broker: &BrokerAddr) -> String {
    use sha2::Digest as _;
    let user = broker.credentials.as_ref().map_or("", |(u, _)| u.as_str());
    let digest = sha2::Sha256::digest(format!("{lattice}\n{host}\n{broker}\n{user}"));
    let hex: String = digest[..7].iter().map(|b| format!("{b:02x}")).collect();
    format!("lattice-{hex}")
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
        // Built before locking: TLS reads files. Used only if this link starts the client.
        let session = self.session(&settings)?;
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
                .or_insert_with(|| Broker::start(settings.broker.clone(), session));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_stable_short_and_distinct_per_host_and_broker() {
        let lattice = LatticeName::new("default").expect("valid");
        let (a, b) = (
            HostId::new("NHOSTA").expect("valid"),
            HostId::new("NHOSTB").expect("valid"),
        );
        let broker = BrokerAddr::parse("mqtt://127.0.0.1:1883").expect("valid");
        let other = BrokerAddr::parse("mqtts://127.0.0.1:1883").expect("valid");
        let id = stable_client_id(&lattice, &a, &broker);
        assert_eq!(id, stable_client_id(&lattice, &a, &broker));
        assert!(id.len() <= 23 && id.starts_with("lattice-"), "{id}");
        assert_ne!(id, stable_client_id(&lattice, &b, &broker));
        assert_ne!(id, stable_client_id(&lattice, &a, &other));
    }
}
