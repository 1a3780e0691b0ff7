//! The lanes layer: between the consumer and the run, each message goes to its lane ("Lanes" in
//! [`lattice_protocol::queue`]). [`take`] reads a message's place from its headers, unpacks a
//! bundle into its items, and asks the lane ([`decide`], pure) what to do with each: skip a copy,
//! run it now ([`super::run`]), or hold it until the items before it ran or are known gone.
//! Before that, [`super::check`] checks the message (size, signature, signer, lane headers):
//! one it refuses is dead-lettered with the reason and acknowledged, and reaches no lane.
//! [`Lanes`] keeps one consumer's lanes, each under its sender, read from the lanes bucket the
//! first time each is seen, and hands out what changed for the consumer to write before it
//! acknowledges. A message outside any lane (a requeued item) runs at once, deduplicated by its
//! id instead.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use lattice_protocol::envelope;
use lattice_protocol::keys::PublicKey;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{ConsumerName, LaneId, LaneKey, LaneState};
use tokio_util::sync::CancellationToken;

use super::check::{Checked, Senders, check};
use super::run::{Delivery, Item, Target, prepare, refuse, settle};
use super::stream::lanes_store;
use crate::caps::LatticeLink;

mod decide;

use decide::{Lane, Offer, Release};

/// What running an item needs.
pub(super) struct Ctx<'a> {
    pub(super) target: &'a Target,
    pub(super) lattice: &'a LatticeLink,
    /// Ids of items without a lane (requeued).
    pub(super) processed: &'a kv::Store,
    pub(super) stop: &'a CancellationToken,
}

/// Takes one delivered message: runs its items (and whatever waited for them) or holds them. The message
/// goes to `acks`, to be acknowledged, once it is taken: one holding an item still waiting in
/// its lane ([`Lanes::first_waiting`]) or left unsettled by a stop (`unfinished`) stays
/// unacknowledged all the same, since acknowledgements stop short of it (see [`committer`]).
pub(super) async fn take(
    ctx: &Ctx<'_>,
    lanes: &mut Lanes,
    unfinished: &mut Option<u64>,
    delivery: Arc<Delivery>,
    acks: &mut Vec<Arc<Delivery>>,
) -> anyhow::Result<()> {
    let (sender, place) = match check(&mut lanes.senders, &delivery.message).await? {
        Ok(Checked::Lane { sender, place }) => (sender, place),
        Ok(Checked::Alone) => return take_alone(ctx, delivery, acks).await,
        Err(refusal) => {
            refuse(ctx.target, ctx.lattice, &delivery, &refusal).await?;
            acks.push(delivery);
            return Ok(());
        }
    };
    let items = if place.marker {
        Vec::new()
    } else if place.count == 1 {
        vec![Item::whole(delivery.clone(), place.seq)]
    } else {
        match Item::unbundle(&delivery, place.seq, place.count) {
            Ok(items) => items,
            Err(refusal) => {
                refuse(ctx.target, ctx.lattice, &delivery, &refusal).await?;
                acks.push(delivery);
                return Ok(());
            }
        }
    };
    let lane = lanes.get(&sender, &place.lane).await?;
    acks.push(delivery);
    if place.marker {
        lane.floor(place.floor);
        release(ctx, lane, acks, unfinished).await?;
        return Ok(());
    }
    for item in items {
        match lane.offer(item.seq, place.floor) {
            Offer::Copy => {}
            Offer::Wait => lane.hold(item.seq, item),
            Offer::Run => {
                let through = item.through;
                if !run(ctx, item, unfinished).await? {
                    return Ok(());
                }
                lane.done(through);
            }
        }
        release(ctx, lane, acks, unfinished).await?;
    }
    Ok(())
}

/// Runs a message outside any lane (a requeued item) at once, deduplicated by its id.
async fn take_alone(
    ctx: &Ctx<'_>,
    delivery: Arc<Delivery>,
    acks: &mut Vec<Arc<Delivery>>,
) -> anyhow::Result<()> {
    let prepared = prepare(Item::whole(delivery, 0));
    let settled = settle(
        ctx.target,
        ctx.lattice,
        Some(ctx.processed),
        prepared,
        ctx.stop,
    );
    acks.extend(settled.await?);
    Ok(())
}

/// Runs the items of `lane` whose turn came, and hands out held copies of handled ones.
async fn release(
    ctx: &Ctx<'_>,
    lane: &mut Lane<Item>,
    acks: &mut Vec<Arc<Delivery>>,
    unfinished: &mut Option<u64>,
) -> anyhow::Result<()> {
    while let Some(release) = lane.next() {
        match release {
            Release::Copies(copies) => acks.extend(copies.into_iter().map(|c| c.delivery)),
            Release::Run(seq, copies) => {
                let mut copies = copies.into_iter();
                let mut through = seq;
                if let Some(first) = copies.next() {
                    through = through.max(first.through);
                    acks.push(first.delivery.clone());
                    if !run(ctx, first, unfinished).await? {
                        return Ok(());
                    }
                }
                lane.done(through);
                acks.extend(copies.map(|c| c.delivery));
            }
        }
    }
    Ok(())
}

/// Runs an item in its lane's turn (its lane, not an id record, says whether it ran before);
/// `false` when stopped before it was settled: its message is then `unfinished`, not to be
/// acknowledged.
async fn run(ctx: &Ctx<'_>, item: Item, unfinished: &mut Option<u64>) -> anyhow::Result<bool> {
    let stream_seq = item.delivery.stream_seq;
    let settled = settle(ctx.target, ctx.lattice, None, prepare(item), ctx.stop).await?;
    if settled.is_none() {
        *unfinished = Some(unfinished.map_or(stream_seq, |u| u.min(stream_seq)));
    }
    Ok(settled.is_some())
}

/// The lanes one consumer has seen, by sender, and their states in the lanes bucket.
pub(super) struct Lanes {
    kv: kv::Store,
    durable: ConsumerName,
    open: HashMap<(PublicKey, LaneId), Lane<Item>>,
    /// Who may send (see [`super::check`]).
    senders: Senders,
}

impl Lanes {
    /// Consumer `durable`'s lanes, none read yet.
    pub(super) async fn open(
        js: &jetstream::Context,
        l: &LatticeName,
        storage: &lattice_protocol::jetstream::Storage,
        durable: &ConsumerName,
        trusted: &[PublicKey],
    ) -> anyhow::Result<Self> {
        let kv = lanes_store(js, l, storage).await?;
        Ok(Self {
            kv,
            durable: durable.clone(),
            open: HashMap::new(),
            senders: Senders::new(js, l, trusted).await,
        })
    }

    /// Lane `id` of `sender`, read from the bucket the first time it is seen (under its key
    /// without the sender when the release before signatures wrote it so).
    async fn get(&mut self, sender: &PublicKey, id: &LaneId) -> anyhow::Result<&mut Lane<Item>> {
        let at = (sender.clone(), id.clone());
        if !self.open.contains_key(&at) {
            let key = LaneKey::new(&self.durable, sender, id);
            let state = match self.read(&key.to_string()).await? {
                Some(state) => state,
                None => self.read(&key.unsigned()).await?.unwrap_or_default(),
            };
            self.open.insert(at.clone(), Lane::new(state));
        }
        Ok(self.open.get_mut(&at).expect("inserted above"))
    }

    /// The state stored under `key`.
    async fn read(&self, key: &str) -> anyhow::Result<Option<LaneState>> {
        let Some(bytes) = self
            .kv
            .get(key)
            .await
            .map_err(|e| anyhow::anyhow!("reading lane {key}: {e}"))?
        else {
            return Ok(None);
        };
        Ok(Some(
            envelope::decode(&bytes).map_err(|e| anyhow::anyhow!("reading lane {key}: {e}"))?,
        ))
    }

    /// The bucket the lane states are written to.
    pub(super) fn store(&self) -> kv::Store {
        self.kv.clone()
    }

    /// The stream sequence of the first message with an item waiting in its lane.
    pub(super) fn first_waiting(&self) -> Option<u64> {
        self.open
            .values()
            .flat_map(Lane::held)
            .map(|item| item.delivery.stream_seq)
            .min()
    }

    /// The state of every lane changed since the last call, to write, by key.
    pub(super) fn changes(&mut self) -> Vec<(String, bytes::Bytes)> {
        let mut out = Vec::new();
        for ((sender, id), lane) in &mut self.open {
            if lane.dirty() {
                let value = envelope::encode(&lane.state());
                let key = LaneKey::new(&self.durable, sender, id).to_string();
                out.push((key, value.into()));
                lane.saved();
            }
        }
        out
    }
}
