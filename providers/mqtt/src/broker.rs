//! One MQTT client per broker: its event loop, the links it serves, their subscriptions, and
//! the per-link delivery workers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use lattice_protocol::names::LatticeName;
use lattice_provider_sdk::{LinkId, ProviderError};
use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubAck, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::BrokerAddr;

/// Requests (publishes, subscriptions, acknowledgements) queued for the event loop. Generous,
/// because the event loop itself may only `try_` send (it must never wait on its own queue).
const REQUEST_QUEUE: usize = 1024;

/// Messages queued for one link's worker. QoS 1 messages are bounded well below this by the
/// broker, which sends no more than its in-flight limit (20 for Mosquitto) unacknowledged; only
/// a flood of QoS 0 messages outrunning the component can fill it, and those are dropped.
const LINK_QUEUE: usize = 1024;

/// The largest message either way: NATS's default payload limit, since every delivery is one
/// NATS request.
const MAX_PACKET: usize = 1024 * 1024;

/// How long a message no link wants is held for a link yet to be put: after a restart, the
/// broker sends what it kept for the session as soon as the first link connects the client,
/// and the host puts the other links a moment later.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// The most such messages held; beyond it the oldest is acknowledged and dropped. The broker's
/// in-flight window (20 for Mosquitto) keeps the number far lower.
const ORPHANS: usize = 256;

const KEEP_ALIVE: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// How a broker's client connects: its id, whether its session outlives the connection, and
/// TLS.
#[derive(Debug, Clone)]
pub struct Session {
    /// Stable for a persistent session: the broker finds the session by it.
    pub client_id: String,
    /// `clean_session: false`, so that nothing is lost while the provider is away.
    pub persistent: bool,
    /// The rustls configuration of an `mqtts://` broker.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What happened to the messages of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Handled by the component.
    pub delivered: u64,
    /// Delivery attempted and failed (no instance, a trap, the handler's error): logged,
    /// acknowledged to the broker and dropped.
    pub failed: u64,
    /// Dropped unattempted because the link's queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> LinkStats {
        LinkStats {
            delivered: self.delivered.load(Relaxed),
            failed: self.failed.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}

/// An export link on this broker: its filters, and the worker delivering its messages in order.
#[derive(Debug)]
struct ExportLink {
    filters: Vec<String>,
    qos: QoS,
    queue: mpsc::Sender<Delivery>,
    counters: Arc<Counters>,
    worker: JoinHandle<()>,
}

impl ExportLink {
    fn wants(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| rumqttc::matches(topic, f))
    }

    /// Queues `publish` for this link's worker; never waits, since the event loop must keep
    /// polling (pings, other links' messages).
    fn enqueue(&self, id: &LinkId, publish: &Arc<Publish>, ack: &Arc<Ack>) {
        let delivery = Delivery {
            publish: publish.clone(),
            _ack: ack.clone(),
        };
        if self.queue.try_send(delivery).is_err() {
            self.counters.dropped.fetch_add(1, Relaxed);
            tracing::warn!(link = %id, topic = %publish.topic, "the link's queue is full; message dropped");
        }
    }
}

impl Drop for ExportLink {
    // A deleted link gets nothing more, not even what was queued for it; the dropped
    // deliveries acknowledge their messages.
    fn drop(&mut self) {
        self.worker.abort();
    }
}

/// One received message on its way to one link's component.
#[derive(Debug)]
struct Delivery {
    publish: Arc<Publish>,
    _ack: Arc<Ack>,
}

/// Acknowledges a QoS 1 message to the broker when dropped, that is once every link it matched
/// has attempted its delivery.
#[derive(Debug)]
struct Ack {
    shared: Weak<Shared>,
    publish: Arc<Publish>,
    generation: u64,
}

impl Drop for Ack {
    fn drop(&mut self) {
        if self.publish.qos == QoS::AtMostOnce {
            return;
        }
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        {
            let state = shared.state.lock().expect("not poisoned");
            // A packet id belongs to one connection: after a reconnect the broker has either
            // forgotten the message (clean session) or sends it again, and once the copy is
            // acknowledged the same id may name a new message. The copy is delivered and
            // acknowledged on its own (at least once: the component may see it twice).
            if !state.connected || state.generation != self.generation {
                return;
            }
        }
        if shared.client.try_ack(&self.publish).is_err() {
            // The request queue is full: the acknowledgement waits its turn elsewhere rather
            // than block whichever task dropped the last delivery.
            let (client, publish) = (shared.client.clone(), self.publish.clone());
            tokio::spawn(async move {
                let _ = client.ack(&publish).await;
            });
        }
    }
}

#[derive(Debug, Default)]
struct State {
    exports: HashMap<LinkId, ExportLink>,
    imports: HashSet<LinkId>,
    connected: bool,
    /// Counts connections, to tell acknowledgements of an earlier one.
    generation: u64,
    /// Subscribe requests queued, in queue order, until the event loop writes them.
    queued_subscribes: VecDeque<Vec<String>>,
    /// Subscribe packets written, by packet id, until the broker answers.
    sent_subscribes: HashMap<u16, Vec<String>>,
    /// Filters the broker has confirmed on this connection.
    confirmed: HashSet<String>,
    /// Filters the broker refused on this connection.
    refused: HashSet<String>,
    /// Messages of a persistent session that matched no link, oldest first, held for the
    /// links still to be put ([`ORPHAN_GRACE`]).
    orphans: VecDeque<Orphan>,
}

/// A message that arrived before the link that wants it was put.
#[derive(Debug)]
struct Orphan {
    publish: Arc<Publish>,
    ack: Arc<Ack>,
    since: tokio::time::Instant,
}

impl State {
    /// Every filter some link wants, at the highest QoS any of them asks.
    fn wanted(&self) -> BTreeMap<String, QoS> {
        let mut wanted = BTreeMap::new();
        for link in self.exports.values() {
            for filter in &link.filters {
                let qos = wanted.entry(filter.clone()).or_insert(link.qos);
                if link.qos == QoS::AtLeastOnce {
                    *qos = QoS::AtLeastOnce;
                }
            }
        }
        wanted
    }

    fn users(&self) -> usize {
        self.exports.len() + self.imports.len()
    }
}

/// What the event loop and the provider share about one broker.
#[derive(Debug)]
struct Shared {
    addr: BrokerAddr,
    client: AsyncClient,
    state: Mutex<State>,
    /// Bumped on every connection change and subscription answer, for waiters.
    changes: watch::Sender<u64>,
    /// Whether the broker keeps the session (and so sends messages before every link is put).
    persistent: bool,
}

impl Shared {
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Queues a SUBSCRIBE for `filters`; called with the state locked, so that the queue order
    /// and `queued_subscribes` agree.
    fn subscribe(&self, state: &mut State, filters: Vec<(String, QoS)>) -> Result<(), String> {
        if filters.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = filters.iter().map(|(f, _)| f.clone()).collect();
        for name in &names {
            state.refused.remove(name);
        }
        self.client
            .try_subscribe_many(filters.into_iter().map(|(f, q)| SubscribeFilter::new(f, q)))
            .map_err(|e| format!("subscribing at {}: {e}", self.addr))?;
        state.queued_subscribes.push_back(names);
        Ok(())
    }

    /// Brings the broker's subscriptions from `before` to what the links want now.
    fn reconcile(
        &self,
        state: &mut State,
        before: &BTreeMap<String, QoS>,
    ) -> Result<(), ProviderError> {
        let after = state.wanted();
        for filter in before.keys().filter(|f| !after.contains_key(*f)) {
            state.confirmed.remove(filter);
            // Unsubscribed only while connected: a new connection subscribes just what is
            // wanted then.
            if state.connected && self.client.try_unsubscribe(filter.clone()).is_err() {
                tracing::warn!(broker = %self.addr, %filter, "could not queue the unsubscribe");
            }
        }
        let added: Vec<(String, QoS)> = after
            .iter()
            .filter(|(f, q)| before.get(*f) != Some(*q))
            .map(|(f, q)| (f.clone(), *q))
            .collect();
        for (filter, _) in &added {
            state.confirmed.remove(filter);
        }
        if state.connected {
            self.subscribe(state, added)
                .map_err(ProviderError::Unavailable)?;
        }
        Ok(())
    }

    fn on_connack(&self, ack: &ConnAck) {
        let mut state = self.state.lock().expect("not poisoned");
        state.connected = true;
        state.generation += 1;
        state.queued_subscribes.clear();
        state.sent_subscribes.clear();
        state.confirmed.clear();
        state.refused.clear();
        // Held messages of the last connection: the broker sends them again if it kept them.
        let stale = std::mem::take(&mut state.orphans);
        // Every filter is subscribed again, even when the broker kept the session: it may have
        // lost it (a restart without persistence), and subscribing again is harmless. The
        // answers are also what `Waiter::subscribed` waits for.
        let wanted: Vec<(String, QoS)> = state.wanted().into_iter().collect();
        tracing::info!(
            broker = %self.addr, filters = wanted.len(), session_present = ack.session_present,
            "connected to the MQTT broker"
        );
        if let Err(e) = self.subscribe(&mut state, wanted) {
            tracing::warn!(broker = %self.addr, error = %e, "could not subscribe again");
        }
        drop(state);
        // Dropped unlocked (their acknowledgements lock, and are skipped: an older connection).
        drop(stale);
        self.changed();
    }

    fn on_disconnect(&self, error: &ConnectionError) {
        let mut state = self.state.lock().expect("not poisoned");
        let was = std::mem::replace(&mut state.connected, false);
        state.queued_subscribes.clear();
        state.sent_subscribes.clear();
        state.confirmed.clear();
        drop(state);
        // Every failed attempt is one poll: say it once per outage.
        if was {
            tracing::warn!(broker = %self.addr, %error, "lost the MQTT broker; reconnecting");
        } else {
            tracing::debug!(broker = %self.addr, %error, "MQTT broker unreachable");
        }
        self.changed();
    }

    fn on_subscribe_sent(&self, pkid: u16) {
        let mut state = self.state.lock().expect("not poisoned");
        // A request queued before a reconnect and written after it has no entry: the
        // subscriptions made on `ConnAck` cover its filters.
        if let Some(filters) = state.queued_subscribes.pop_front() {
            state.sent_subscribes.insert(pkid, filters);
        }
    }

    fn on_suback(&self, ack: &SubAck) {
        let mut state = self.state.lock().expect("not poisoned");
        let Some(filters) = state.sent_subscribes.remove(&ack.pkid) else {
            return;
        };
        let wanted = state.wanted();
        for (filter, code) in filters.into_iter().zip(&ack.return_codes) {
            if !wanted.contains_key(&filter) {
                continue;
            }
            match code {
                SubscribeReasonCode::Success(_) => {
                    state.confirmed.insert(filter);
                }
                SubscribeReasonCode::Failure => {
                    tracing::warn!(broker = %self.addr, %filter, "the broker refused the subscription");
                    state.refused.insert(filter);
                }
            }
        }
        drop(state);
        self.changed();
    }

    /// Hands `publish` to every link whose filters match its topic, in arrival order.
    fn dispatch(self: &Arc<Self>, publish: Publish) {
        let mut state = self.state.lock().expect("not poisoned");
        let publish = Arc::new(publish);
        let ack = Arc::new(Ack {
            shared: Arc::downgrade(self),
            publish: publish.clone(),
            generation: state.generation,
        });
        let mut matched = false;
        for (id, link) in &state.exports {
            if link.wants(&publish.topic) {
                matched = true;
                link.enqueue(id, &publish, &ack);
            }
        }
        let mut expired = None;
        if !matched && self.persistent && publish.qos != QoS::AtMostOnce {
            if state.orphans.is_empty() {
                tokio::spawn(expire_orphans(Arc::downgrade(self)));
            }
            state.orphans.push_back(Orphan {
                publish,
                ack,
                since: tokio::time::Instant::now(),
            });
            if state.orphans.len() > ORPHANS {
                expired = state.orphans.pop_front();
            }
            drop(state);
            drop(expired);
            return;
        }
        // Unlock before `ack` may drop here (no link matched), since dropping it locks.
        drop(state);
    }
}

/// The MQTT client for one broker, shared by every link that names it.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Broker {
    // The last link is gone: the connection closes with the event loop.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Broker {
    /// A client for `addr`, connecting (and reconnecting) in the background from now on.
    pub fn start(addr: BrokerAddr, session: Session) -> Self {
        let mut options = MqttOptions::new(session.client_id.clone(), addr.host.clone(), addr.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            // A persistent session: the broker keeps the subscriptions and queues QoS 1 messages
            // while this client is away, and sends again those it did not acknowledge.
            .set_clean_session(!session.persistent)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            // Acknowledged only after the delivery attempt (see `Ack`).
            .set_manual_acks(true);
        if let Some((user, password)) = &addr.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = session.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        let shared = Arc::new(Shared {
            addr,
            client,
            state: Mutex::default(),
            changes: watch::Sender::new(0),
            persistent: session.persistent,
        });
        let task = tokio::spawn(run(eventloop, Arc::downgrade(&shared)));
        Self { shared, task }
    }

    pub fn addr(&self) -> &BrokerAddr {
        &self.shared.addr
    }

    /// The links (of either direction) this client serves.
    pub fn users(&self) -> usize {
        self.shared.state.lock().expect("not poisoned").users()
    }

    /// Serves export link `id` (again): its messages go to its worker, and the broker's
    /// subscriptions follow its filters.
    pub fn put_export(
        &self,
        id: &LinkId,
        filters: Vec<String>,
        qos: QoS,
        deliverer: Deliverer,
    ) -> Result<(), ProviderError> {
        let mut state = self.shared.state.lock().expect("not poisoned");
        let before = state.wanted();
        state.imports.remove(id);
        // A link put again (new configuration) keeps its worker, and with it the messages
        // already queued and their order.
        if let Some(link) = state.exports.get_mut(id) {
            link.filters = filters;
            link.qos = qos;
        } else {
            let (queue, rx) = mpsc::channel(LINK_QUEUE);
            let counters = Arc::new(Counters::default());
            let worker = tokio::spawn(deliver(deliverer, id.clone(), rx, counters.clone()));
            let link = ExportLink {
                filters,
                qos,
                queue,
                counters,
                worker,
            };
            // What the broker sent for this link before it was put comes first, in order.
            for orphan in state
                .orphans
                .iter()
                .filter(|o| link.wants(&o.publish.topic))
            {
                link.enqueue(id, &orphan.publish, &orphan.ack);
            }
            state.exports.insert(id.clone(), link);
        }
        self.shared.reconcile(&mut state, &before)
    }

    /// Serves import link `id`: its publishes go out on this client.
    pub fn put_import(&self, id: &LinkId) -> Result<(), ProviderError> {
        let mut state = self.shared.state.lock().expect("not poisoned");
        let before = state.wanted();
        let replaced = state.exports.remove(id);
        state.imports.insert(id.clone());
        let reconciled = self.shared.reconcile(&mut state, &before);
        drop(state);
        drop(replaced);
        reconciled
    }

    /// Stops serving `id`: its worker stops, and filters no other link wants are unsubscribed.
    pub fn remove(&self, id: &LinkId) {
        let mut state = self.shared.state.lock().expect("not poisoned");
        let before = state.wanted();
        state.imports.remove(id);
        let removed = state.exports.remove(id);
        if let Err(e) = self.shared.reconcile(&mut state, &before) {
            tracing::debug!(broker = %self.shared.addr, error = %e, "unsubscribing");
        }
        drop(state);
        // Dropped unlocked: its queued deliveries acknowledge, which locks.
        drop(removed);
    }

    pub fn stats(&self, id: &LinkId) -> Option<LinkStats> {
        let state = self.shared.state.lock().expect("not poisoned");
        state.exports.get(id).map(|l| l.counters.snapshot())
    }

    /// A handle to wait on this broker without holding the provider's lock.
    pub fn waiter(&self) -> Waiter {
        Waiter {
            shared: self.shared.clone(),
        }
    }

    /// The client, to publish for components.
    pub fn publisher(&self) -> AsyncClient {
        self.shared.client.clone()
    }
}

/// Waits for a broker's state, bounded.
#[derive(Debug)]
pub struct Waiter {
    shared: Arc<Shared>,
}

impl Waiter {
    /// Waits until `ready` says `Some`, or `wait` passes (`None`).
    async fn until<T>(&self, wait: Duration, ready: impl Fn(&State) -> Option<T>) -> Option<T> {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            changes.borrow_and_update();
            if let Some(v) = ready(&self.shared.state.lock().expect("not poisoned")) {
                return Some(v);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Whether the client is connected, waiting at most `wait` for it.
    pub async fn connected(&self, wait: Duration) -> bool {
        self.until(wait, |s| s.connected.then_some(()))
            .await
            .is_some()
    }

    /// Waits at most `wait` until the broker confirmed every one of `filters`: `Ok(true)` when
    /// it did, `Ok(false)` when time ran out, `Err` with a filter it refused.
    pub async fn subscribed(&self, filters: &[String], wait: Duration) -> Result<bool, String> {
        let outcome = self
            .until(wait, |s| {
                if let Some(f) = filters.iter().find(|f| s.refused.contains(*f)) {
                    return Some(Err(f.clone()));
                }
                filters
                    .iter()
                    .all(|f| s.confirmed.contains(f))
                    .then_some(Ok(()))
            })
            .await;
        match outcome {
            Some(Ok(())) => Ok(true),
            Some(Err(f)) => Err(f),
            None => Ok(false),
        }
    }

    pub fn addr(&self) -> &BrokerAddr {
        &self.shared.addr
    }
}

/// Polls the client's event loop for as long as the broker exists. Polling is what connects,
/// and after an error, reconnects: this loop never ends by itself, whatever the broker does.
async fn run(mut eventloop: EventLoop, shared: Weak<Shared>) {
    let mut retry = FIRST_RETRY;
    loop {
        let event = eventloop.poll().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                retry = FIRST_RETRY;
                shared.on_connack(&ack);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => shared.dispatch(publish),
            Ok(Event::Incoming(Packet::SubAck(ack))) => shared.on_suback(&ack),
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => shared.on_subscribe_sent(pkid),
            Ok(_) => {}
            Err(error) => {
                shared.on_disconnect(&error);
                drop(shared);
                // Polling again at once would spin while the broker is down.
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
    }
}

/// Acknowledges (by dropping) the held messages of `shared` once they are [`ORPHAN_GRACE`]
/// old, until none is left; one such task runs while there are any.
async fn expire_orphans(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(ORPHAN_GRACE / 4).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut state = shared.state.lock().expect("not poisoned");
        let now = tokio::time::Instant::now();
        let mut expired = Vec::new();
        while state
            .orphans
            .front()
            .is_some_and(|o| now.duration_since(o.since) >= ORPHAN_GRACE)
        {
            expired.extend(state.orphans.pop_front());
        }
        let done = state.orphans.is_empty();
        drop(state);
        if !expired.is_empty() {
            tracing::debug!(broker = %shared.addr, messages = expired.len(), "no link took these messages; acknowledged");
        }
        // Dropped unlocked: acknowledging locks.
        drop(expired);
        if done {
            return;
        }
    }
}

/// What a worker needs to call components.
#[derive(Debug, Clone)]
pub struct Deliverer {
    pub nats: async_nats::Client,
    pub lattice: LatticeName,
    pub timeout: Duration,
}

/// One link's worker: delivers its messages one after the other, so the component sees them in
/// the order the broker sent them.
async fn deliver(
    deliverer: Deliverer,
    link: LinkId,
    mut queue: mpsc::Receiver<Delivery>,
    counters: Arc<Counters>,
) {
    while let Some(delivery) = queue.recv().await {
        let publish = &delivery.publish;
        let outcome = lattice_provider_sdk::deliver_message(
            &deliverer.nats,
            &deliverer.lattice,
            &link,
            &publish.topic,
            &publish.payload,
            None,
            deliverer.timeout,
        )
        .await;
        match outcome {
            Ok(()) => {
                counters.delivered.fetch_add(1, Relaxed);
            }
            Err(error) => {
                let failed = counters.failed.fetch_add(1, Relaxed) + 1;
                tracing::warn!(
                    %link, topic = %publish.topic, %error, failed,
                    "delivering an MQTT message failed; dropped"
                );
            }
        }
        // Dropping the delivery is what lets its message be acknowledged.
        drop(delivery);
    }
}
