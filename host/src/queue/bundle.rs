//! How the forwarder makes a batch of outbox entries into stream messages ("Bundles" in
//! [`lattice_protocol::queue`]): pure, so that the grouping is tested without NATS.

use std::collections::HashMap;

use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{Lane, MAX_BUNDLE, MAX_BUNDLE_BYTES};
use lattice_protocol::subject::Subject;
use tracing::warn;

use super::outbox::{OutboxEntry, Sequence};

/// Entries that go out in one stream message: one entry, or a bundle of consecutive entries of
/// one lane.
#[derive(Debug)]
pub(super) struct Group {
    /// The stream subject it goes to.
    pub(super) subject: String,
    /// The entries, in lane order.
    pub(super) entries: Vec<(Sequence, OutboxEntry)>,
    /// Their payloads' bytes.
    bytes: usize,
}

/// Makes a batch (in outbox order) into stream messages: an entry joins its lane's latest group
/// when it follows that group's last entry in the lane and the group has room ([`MAX_BUNDLE`],
/// [`MAX_BUNDLE_BYTES`]); otherwise it starts one. Groups come in the order of their first
/// entries, so each lane's stay in lane order. A batch of one entry (live traffic) is one
/// message at once: bundles form only from entries already waiting. Also returns the entries
/// with no stream subject, which cannot be sent (they are dropped, with a warning).
pub(super) fn bundle(
    lattice: &LatticeName,
    batch: Vec<(Sequence, OutboxEntry)>,
) -> (Vec<Group>, Vec<(Sequence, String)>) {
    let mut groups: Vec<Group> = Vec::new();
    let mut unroutable = Vec::new();
    // Each lane's latest group, by index.
    let mut latest: HashMap<String, usize> = HashMap::new();
    for (seq, entry) in batch {
        let size = entry.payload.len();
        // One that joins its lane's group goes where the group goes: no subject of its own.
        if let Some(group) = latest.get(&entry.lane).map(|&i| &mut groups[i])
            && group.entries.last().map(|(_, e)| e.lane_seq + 1) == Some(entry.lane_seq)
            && group.entries.len() < MAX_BUNDLE
            && group.bytes + size <= MAX_BUNDLE_BYTES
        {
            group.bytes += size;
            group.entries.push((seq, entry));
            continue;
        }
        let Some(subject) = lane_subject(lattice, &entry.lane) else {
            warn!(stream = %entry.stream_key, lane = %entry.lane, "dropping a queued entry whose lane names no queue subject of this lattice");
            unroutable.push((seq, entry.stream_key));
            continue;
        };
        latest.insert(entry.lane.clone(), groups.len());
        groups.push(Group {
            subject: subject.to_string(),
            entries: vec![(seq, entry)],
            bytes: size,
        });
    }
    (groups, unroutable)
}

/// The queue-stream subject of the lane whose text (as the outbox stores it) is `lane`; `None`
/// when it is no [`Lane`] or belongs to another lattice (the host's lattice changed under the
/// same state directory), since no stream of this lattice would take it.
pub(super) fn lane_subject(lattice: &LatticeName, lane: &str) -> Option<Subject> {
    let Lane { subject, .. } = lane.parse().ok()?;
    (subject.lattice() == lattice).then_some(subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::names::{AppName, ComponentName};
    use std::time::Duration;

    /// Entries of lanes `a` and `b` (on their own subjects), with the given lane sequences and
    /// payload sizes, in outbox order.
    fn batch(entries: &[(&str, u64, usize)]) -> Vec<(Sequence, OutboxEntry)> {
        entries
            .iter()
            .zip(1..)
            .map(|(&(lane, lane_seq, size), seq)| {
                let l = LatticeName::new("edge").expect("valid");
                let app = AppName::new("app").expect("valid");
                let target = ComponentName::new(lane).expect("valid");
                let subject = Subject::queued_calls(&l, &app, &target);
                let mut entry = OutboxEntry::new(
                    format!("app/src -> {lane}"),
                    vec![0u8; size],
                    Duration::from_secs(60),
                );
                let link = entry.stream_key.parse().expect("a link");
                entry.lane = Lane::new(subject, link).to_string();
                entry.lane_seq = lane_seq;
                (Sequence(seq), entry)
            })
            .collect()
    }

    /// Each group as (subject's last token, lane sequences).
    fn shape(groups: &[Group]) -> Vec<(String, Vec<u64>)> {
        groups
            .iter()
            .map(|g| {
                let target = g.subject.rsplit('.').next().unwrap_or_default().to_string();
                (target, g.entries.iter().map(|(_, e)| e.lane_seq).collect())
            })
            .collect()
    }

    #[test]
    fn consecutive_entries_of_a_lane_travel_together_and_lanes_keep_their_order() {
        let l = LatticeName::new("edge").expect("valid");
        let (groups, unroutable) = bundle(
            &l,
            batch(&[
                ("a", 1, 8),
                ("b", 7, 8),
                ("a", 2, 8),
                ("a", 3, 8),
                ("b", 8, 8),
            ]),
        );
        assert!(unroutable.is_empty());
        assert_eq!(
            shape(&groups),
            [("a".into(), vec![1, 2, 3]), ("b".into(), vec![7, 8])]
        );
        assert_eq!(groups[0].bytes, 24);
    }

    /// A gap in a lane's numbers (entries dropped or expired between) starts a new message, so
    /// that a bundle's items are always its first sequence and the ones after it.
    #[test]
    fn a_gap_in_the_lane_or_a_full_bundle_starts_another_message() {
        let l = LatticeName::new("edge").expect("valid");
        let (groups, _) = bundle(&l, batch(&[("a", 1, 8), ("a", 3, 8), ("a", 4, 8)]));
        assert_eq!(
            shape(&groups),
            [("a".into(), vec![1]), ("a".into(), vec![3, 4])]
        );

        let many: Vec<(&str, u64, usize)> =
            (1..=MAX_BUNDLE as u64 + 1).map(|s| ("a", s, 1)).collect();
        let (groups, _) = bundle(&l, batch(&many));
        assert_eq!(
            groups.iter().map(|g| g.entries.len()).collect::<Vec<_>>(),
            [MAX_BUNDLE, 1]
        );

        let big = MAX_BUNDLE_BYTES / 2 + 1;
        let (groups, _) = bundle(&l, batch(&[("a", 1, big), ("a", 2, big), ("a", 3, 8)]));
        assert_eq!(
            shape(&groups),
            [("a".into(), vec![1]), ("a".into(), vec![2, 3])]
        );
    }

    /// An entry whose lane names no queue subject of this lattice cannot be sent: it is
    /// returned as unroutable, not published.
    #[test]
    fn entries_whose_lane_names_no_subject_of_this_lattice_are_unroutable() {
        let l = LatticeName::new("edge").expect("valid");
        let mut entries = batch(&[("a", 1, 8), ("a", 2, 8), ("b", 1, 8)]);
        entries[0].1.lane = "app/src -> a".into();
        entries[2].1.lane = entries[2].1.lane.replace("lattice.edge.", "lattice.other.");
        let (groups, unroutable) = bundle(&l, entries);
        assert_eq!(shape(&groups), [("a".into(), vec![2])]);
        assert_eq!(
            unroutable,
            [
                (Sequence(1), "app/src -> a".to_string()),
                (Sequence(3), "app/src -> b".to_string())
            ]
        );
    }
}
