//! What a target does with the next message of a lane: pure decisions over one lane's numbers
//! (see "Lanes" in [`lattice_protocol::queue`]), kept apart from NATS so they can be tested
//! on every order a stream can hold.
//!
//! An item numbered `seq` with the lane's last run item `last` and highest floor `floor`:
//! - `seq <= last`: a copy of one already handled (a publish repeated after a lost
//!   acknowledgement, a redelivery): acknowledged without running.
//! - `seq == last + 1`, or `seq <= floor`: every item between `last` and it was stored before
//!   a message already seen, or will never come: it runs.
//! - otherwise it waits ([`Lane::hold`]) until the items before it ran or a floor proves them
//!   gone; then [`Lane::next`] hands it out.

use std::collections::BTreeMap;

use lattice_protocol::queue::LaneState;

/// What to do with an item just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offer {
    /// Already handled: acknowledge it.
    Copy,
    /// Its turn: run it, then [`Lane::done`].
    Run,
    /// Items before it may still come: [`Lane::hold`] it.
    Wait,
}

/// A held item released by [`Lane::next`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Release<M> {
    /// Its turn: run the first, then [`Lane::done`]; the others are copies of it.
    Run(u64, Vec<M>),
    /// Handled meanwhile (a copy of it ran): acknowledge them.
    Copies(Vec<M>),
}

/// One lane as its receiver sees it: the remembered state and the items waiting for their turn.
#[derive(Debug)]
pub(super) struct Lane<M> {
    state: LaneState,
    held: BTreeMap<u64, Vec<M>>,
    /// Whether `state` changed since [`Lane::saved`].
    dirty: bool,
}

impl<M> Lane<M> {
    /// A lane resumed from its remembered state.
    pub(super) fn new(state: LaneState) -> Self {
        Self {
            state,
            held: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Its state, to remember.
    pub(super) fn state(&self) -> LaneState {
        self.state
    }

    /// Whether its state changed since it was last remembered.
    pub(super) fn dirty(&self) -> bool {
        self.dirty
    }

    /// Its state was remembered.
    pub(super) fn saved(&mut self) {
        self.dirty = false;
    }

    /// Items waiting.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.held.values().map(Vec::len).sum()
    }

    /// The items waiting.
    pub(super) fn held(&self) -> impl Iterator<Item = &M> {
        self.held.values().flatten()
    }

    /// Takes in a floor (from an item or a marker).
    pub(super) fn floor(&mut self, floor: u64) {
        if floor > self.state.floor {
            self.state.floor = floor;
            self.dirty = true;
        }
    }

    /// Decides about item `seq`, published with `floor`.
    pub(super) fn offer(&mut self, seq: u64, floor: u64) -> Offer {
        self.floor(floor);
        if seq <= self.state.last {
            Offer::Copy
        } else if self.runs(seq) && !self.held.contains_key(&seq) {
            Offer::Run
        } else {
            Offer::Wait
        }
    }

    fn runs(&self, seq: u64) -> bool {
        seq == self.state.last + 1 || seq <= self.state.floor
    }

    /// Keeps item `seq` until its turn.
    pub(super) fn hold(&mut self, seq: u64, item: M) {
        self.held.entry(seq).or_default().push(item);
    }

    /// Item `seq` was run (or dead-lettered).
    pub(super) fn done(&mut self, seq: u64) {
        if seq > self.state.last {
            self.state.last = seq;
            self.dirty = true;
        }
    }

    /// The next held item whose turn has come, or held copies of handled ones.
    pub(super) fn next(&mut self) -> Option<Release<M>> {
        let (&seq, _) = self.held.first_key_value()?;
        if seq <= self.state.last {
            return self
                .held
                .pop_first()
                .map(|(_, items)| Release::Copies(items));
        }
        if self.runs(seq) {
            return self
                .held
                .pop_first()
                .map(|(seq, items)| Release::Run(seq, items));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stream message of one lane: its sequence and floor, or a marker's floor.
    #[derive(Debug, Clone, Copy)]
    enum Msg {
        Item { seq: u64, floor: u64 },
        Marker { floor: u64 },
    }

    /// Feeds `msgs` in stream order; returns the sequences run, in order.
    fn receive(lane: &mut Lane<u64>, msgs: &[Msg]) -> Vec<u64> {
        let mut ran = Vec::new();
        for m in msgs {
            match *m {
                Msg::Marker { floor } => lane.floor(floor),
                Msg::Item { seq, floor } => match lane.offer(seq, floor) {
                    Offer::Copy => {}
                    Offer::Wait => lane.hold(seq, seq),
                    Offer::Run => {
                        ran.push(seq);
                        lane.done(seq);
                    }
                },
            }
            while let Some(release) = lane.next() {
                if let Release::Run(seq, _) = release {
                    ran.push(seq);
                    lane.done(seq);
                }
            }
        }
        ran
    }

    fn item(seq: u64, floor: u64) -> Msg {
        Msg::Item { seq, floor }
    }

    #[test]
    fn in_order_items_run_and_copies_do_not() {
        let mut lane = Lane::new(LaneState::default());
        let ran = receive(&mut lane, &[item(1, 1), item(2, 1), item(2, 2), item(3, 1)]);
        assert_eq!(ran, [1, 2, 3]);
        assert_eq!(lane.state().last, 3);
    }

    /// Item 2 lost in transit, 3 stored, then 2 and 3 published again.
    #[test]
    fn a_lost_publish_published_again_runs_before_the_items_after_it() {
        let mut lane = Lane::new(LaneState::default());
        let ran = receive(&mut lane, &[item(1, 1), item(3, 1), item(2, 2), item(3, 2)]);
        assert_eq!(ran, [1, 2, 3]);
        assert_eq!(lane.waiting(), 0);
    }

    /// Items 2 and 3 dropped at the sender before they were ever published.
    #[test]
    fn items_dropped_before_publishing_leave_no_gap() {
        let mut lane = Lane::new(LaneState::default());
        assert_eq!(receive(&mut lane, &[item(1, 1), item(4, 4)]), [1, 4]);
    }

    /// Item 2 lost in transit, 3 stored, then 2 expired at the sender: a marker frees 3.
    #[test]
    fn a_marker_frees_items_waiting_for_one_that_is_gone() {
        let mut lane = Lane::new(LaneState::default());
        assert_eq!(receive(&mut lane, &[item(1, 1), item(3, 2)]), [1]);
        assert_eq!(lane.waiting(), 1);
        assert_eq!(receive(&mut lane, &[Msg::Marker { floor: 4 }]), [3]);
    }

    /// A lane remembered earlier (e.g. by another host) skips what it handled.
    #[test]
    fn a_resumed_lane_skips_what_it_handled() {
        let mut lane = Lane::new(LaneState { last: 5, floor: 5 });
        assert_eq!(
            receive(&mut lane, &[item(4, 1), item(5, 5), item(6, 5)]),
            [6]
        );
    }

    /// How a sender's pipelined publishes of items `1..=n` may land in the stream: each attempt
    /// publishes the items not yet acknowledged, in order, with the floor of that moment (the
    /// oldest item still unacknowledged); any publish may be lost, and any stored one may lose
    /// its acknowledgement.
    fn sender(n: u64, fates: &[u8]) -> Vec<Msg> {
        let mut stream = Vec::new();
        let mut unacked: Vec<u64> = (1..=n).collect();
        let mut fate = fates.iter().copied().cycle();
        let mut rounds = 0;
        while !unacked.is_empty() && rounds < 50 {
            rounds += 1;
            let floor = unacked[0];
            let mut still = Vec::new();
            for &seq in &unacked {
                match fate.next().unwrap_or(0) % 4 {
                    // Lost in transit.
                    0 => still.push(seq),
                    // Stored, acknowledgement lost.
                    1 => {
                        stream.push(item(seq, floor));
                        still.push(seq);
                    }
                    // Stored and acknowledged.
                    _ => stream.push(item(seq, floor)),
                }
            }
            unacked = still;
            if rounds == 49 {
                // The rest is given up (expired) and said so.
                unacked.clear();
                stream.push(Msg::Marker { floor: n + 1 });
            }
        }
        stream
    }

    proptest! {
        /// Whatever the losses, every item that reached the stream runs exactly once and in
        /// order, and nothing is left waiting.
        #[test]
        fn every_stored_item_runs_once_in_order(n in 1u64..40, fates in proptest::collection::vec(any::<u8>(), 1..64)) {
            let stream = sender(n, &fates);
            let mut stored: Vec<u64> = stream
                .iter()
                .filter_map(|m| match m { Msg::Item { seq, .. } => Some(*seq), Msg::Marker { .. } => None })
                .collect();
            stored.sort_unstable();
            stored.dedup();
            let mut lane = Lane::new(LaneState::default());
            let ran = receive(&mut lane, &stream);
            prop_assert_eq!(ran, stored);
            prop_assert_eq!(lane.waiting(), 0);
        }
    }
}
