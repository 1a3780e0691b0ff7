//! The lanes layer: between the consumer and the run, each message goes to its lane ("Lanes" in
//! [`lattice_protocol::queue`]). [`take`] reads a message's place from its headers, unpacks a
//! bundle into its items, and asks the lane ([`decide`], pure) what to do with each: skip a copy,
//! run it now ([`super::run`]), or hold it until the items before it ran or are known gone.
//! [`Lanes`] keeps one consumer's lanes, read from the lanes bucket the first time each is seen,
//! and hands out what changed for the consumer to write before it acknowledges. A message
//! outside any lane (a requeued item) runs at once, deduplicated by its id instead.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::HeaderName;
use async_nats::jetstream::{self, kv};
use lattice_protocol::envelope;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{
    ConsumerName, LANE_COUNT_HEADER, LANE_FLOOR_HEADER, LANE_HEADER, LANE_MARKER_HEADER,
    LANE_SEQ_HEADER, LaneId, LaneKey, LaneState,
};
use tokio_util::sync::CancellationToken;

use super::run::{Delivery, Item, Target, prepare, settle};
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

/// A message's place in its lane, from its headers.
struct Place {
    lane: LaneId,
    /// Its (first) item's lane sequence.
    seq: u64,
    /// How many items it carries (more than one: a bundle).
    count: u64,
    floor: u64,
    marker: bool,
}

impl Place {
    fn of(message: &jetstream::Message) -> Option<Self> {
        // Names made once: a `&str` name is checked and copied on every lookup, per item.
        const LANE: HeaderName = HeaderName::from_static(LANE_HEADER);
        const SEQ: HeaderName = HeaderName::from_static(LANE_SEQ_HEADER);
        const COUNT: HeaderName = HeaderName::from_static(LANE_COUNT_HEADER);
        const FLOOR: HeaderName = HeaderName::from_static(LANE_FLOOR_HEADER);
        const MARKER: HeaderName = HeaderName::from_static(LANE_MARKER_HEADER);
        let headers = message.headers.as_ref()?;
        let number = |name| {
            headers
                .get(name)
                .and_then(|v| v.as_str().parse::<u64>().ok())
        };
        let marker = headers.get(MARKER).is_some();
        let seq = number(SEQ);
        if seq.is_none() && !marker {
            return None;
        }
        Some(Self {
            // A lane id that does not read as one is no lane: the item is taken by its id.
            lane: headers.get(LANE)?.as_str().parse().ok()?,
            seq: seq.unwrap_or(0),
            count: number(COUNT).unwrap_or(1).max(1),
            floor: number(FLOOR).unwrap_or(0),
            marker,
        })
    }
}

/// Takes one message: runs its items (and whatever waited for them) or holds them. The message
/// goes to `acks`, to be acknowledged, once it is taken: one holding an item still waiting in
/// its lane ([`Lanes::first_waiting`]) or left unsettled by a stop (`unfinished`) stays
/// unacknowledged all the same, since acknowledgements stop short of it (see [`committer`]).
pub(super) async fn take(
    ctx: &Ctx<'_>,
    lanes: &mut Lanes,
    unfinished: &mut Option<u64>,
    message: jetstream::Message,
    acks: &mut Vec<Arc<Delivery>>,
) -> anyhow::Result<()> {
    let delivery = Delivery::of(message)?;
    let Some(place) = Place::of(&delivery.message) else {
        let prepared = prepare(Item::whole(delivery, 0));
        let settled = settle(
            ctx.target,
            ctx.lattice,
            Some(ctx.processed),
            prepared,
            ctx.stop,
        );
        acks.extend(settled.await?);
        return Ok(());
    };
    let lane = lanes.get(&place.lane).await?;
    acks.push(delivery.clone());
    if place.marker {
        lane.floor(place.floor);
        release(ctx, lane, acks, unfinished).await?;
    } else {
        let items = if place.count == 1 {
            vec![Item::whole(delivery, place.seq)]
        } else {
            Item::unbundle(&delivery, place.seq, place.count)
        };
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
    }
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

/// The lanes one consumer has seen, and their states in the lanes bucket.
pub(super) struct Lanes {
    kv: kv::Store,
    durable: ConsumerName,
    open: HashMap<LaneId, Lane<Item>>,
}

impl Lanes {
    /// Consumer `durable`'s lanes, none read yet.
    pub(super) async fn open(
        js: &jetstream::Context,
        l: &LatticeName,
        storage: &lattice_protocol::jetstream::Storage,
        durable: &ConsumerName,
    ) -> anyhow::Result<Self> {
        let kv = lanes_store(js, l, storage).await?;
        Ok(Self {
            kv,
            durable: durable.clone(),
            open: HashMap::new(),
        })
    }

    /// Lane `id`, read from the bucket the first time it is seen.
    async fn get(&mut self, id: &LaneId) -> anyhow::Result<&mut Lane<Item>> {
        if !self.open.contains_key(id) {
            let key = LaneKey::new(&self.durable, id).to_string();
            let state: LaneState = match self
                .kv
                .get(&key)
                .await
                .map_err(|e| anyhow::anyhow!("reading lane {key}: {e}"))?
            {
                Some(bytes) => envelope::decode(&bytes)
                    .map_err(|e| anyhow::anyhow!("reading lane {key}: {e}"))?,
                None => LaneState::default(),
            };
            self.open.insert(id.clone(), Lane::new(state));
        }
        Ok(self.open.get_mut(id).expect("inserted above"))
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
        for (id, lane) in &mut self.open {
            if lane.dirty() {
                let value = envelope::encode(&lane.state());
                out.push((LaneKey::new(&self.durable, id).to_string(), value.into()));
                lane.saved();
            }
        }
        out
    }
}
