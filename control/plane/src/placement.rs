//! Placement: a pure function from desired apps, known hosts and the current assignments to
//! per-host workloads.
//!
//! - Movable work (a spread entry that is not pinned) goes only to hosts heard from within the
//!   component's tolerance and not stopped. A host silent for longer loses it to another host;
//!   when it returns, its copy is trimmed because the work now lives elsewhere.
//! - Pinned spread entries and daemons stay on every matching known host however long it is
//!   silent or stopped: an edge gateway off the network keeps its work.
//! - Hosts not admitted (no join token, revoked) get nothing, pinned or not.
//! - Stability: hosts that already run a component rank first, then rendezvous hashing orders
//!   the rest, so adding a host moves nothing that runs, and losing one moves only its own work.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_protocol::assignment::{QueueInbox, Workload};
use lattice_protocol::names::{AppName, ComponentName, HostId};

use crate::model::{ResolvedApp, ResolvedComponent, ScalerKind, SpreadEntry};

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// Its id.
    pub id: HostId,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// How long since its last heartbeat.
    pub silent: Duration,
    /// It stopped gracefully (its movable work goes elsewhere at once).
    pub stopped: bool,
    /// It is admitted to the lattice: a host that is not (no join token, revoked) gets no
    /// work of any kind, and loses what it had.
    pub admitted: bool,
}

impl HostView {
    /// A host heard from just now.
    pub fn ready(id: HostId, labels: BTreeMap<String, String>) -> Self {
        Self {
            id,
            labels,
            silent: Duration::ZERO,
            stopped: false,
            admitted: true,
        }
    }
}

/// What placement needs besides apps and hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Tolerance for components whose manifest gives none.
    pub default_tolerance: Duration,
}

/// Work that could not be placed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// The app.
    pub app: AppName,
    /// The component.
    pub component: ComponentName,
    /// Why: names the requirement nothing matched.
    pub reason: String,
}

/// The outcome of placement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every ready host, with its workloads (possibly none), sorted by app then component.
    pub hosts: BTreeMap<HostId, Vec<Workload>>,
    /// What found no host.
    pub unplaced: Vec<Unplaced>,
}

/// FNV-1a: a small, stable hash (the same on every build and platform), for rendezvous scores.
fn score(key: &str, host: &HostId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0]).chain(host.as_str().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Splits `total` over `weights` by largest remainder; zero weights get nothing.
fn split(total: u32, weights: &[u32]) -> Vec<u32> {
    let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<u64> = weights
        .iter()
        .map(|w| u64::from(total) * u64::from(*w))
        .collect();
    let mut out: Vec<u32> = exact.iter().map(|e| (e / sum) as u32).collect();
    let mut left = total - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest remainder first; ties go to the earlier entry so the result is deterministic.
    order.sort_by_key(|i| (std::cmp::Reverse(exact[*i] % sum), *i));
    for i in order {
        if left == 0 {
            break;
        }
        if weights[i] > 0 {
            out[i] += 1;
            left -= 1;
        }
    }
    out
}

fn default_entry() -> SpreadEntry {
    SpreadEntry {
        name: "default".to_string(),
        weight: 100,
        requirements: BTreeMap::new(),
        pinned: false,
    }
}

/// Which hosts run (any version of) each component now, indexed once per plan.
type Running<'a> = BTreeMap<(&'a AppName, &'a ComponentName), BTreeSet<&'a HostId>>;

fn running_index(current: &BTreeMap<HostId, Vec<Workload>>) -> Running<'_> {
    let mut index = Running::new();
    for (host, workloads) in current {
        for w in workloads {
            index
                .entry((&w.app, &w.component))
                .or_default()
                .insert(host);
        }
    }
    index
}

/// How one spread entry's `share` falls on its `candidates`: hosts that run the component now
/// (`running`, a subset of the candidates) rank first, then the rest in rendezvous order
/// (highest score of `key`, then id); each gets `share / n` and the first `share % n` ranked
/// get one more.
///
/// Only those first hosts need an order, so they are selected (O(n)) rather than the whole list
/// sorted; and when the hosts that run the component are enough, only they are scored. A
/// converged lattice thus re-plans in time proportional to its instances rather than to
/// components x hosts x log(hosts) (1,000 x 1,000 took seconds per tick with a full sort).
fn spread_counts<'h>(
    key: &str,
    candidates: &[&'h HostView],
    running: &[&'h HostView],
    share: u32,
) -> Vec<(&'h HostId, u32)> {
    let n = candidates.len() as u32;
    if n == 0 {
        return Vec::new();
    }
    let (base, extra) = (share / n, (share % n) as usize);
    let rank = |h: &'h HostView, runs: bool| (!runs, Reverse(score(key, &h.id)), &h.id);
    let mut first: Vec<(bool, Reverse<u64>, &'h HostId)> = Vec::new();
    if extra > 0 {
        first = running.iter().map(|h| rank(h, true)).collect();
        if first.len() < extra {
            let runs: BTreeSet<&HostId> = running.iter().map(|h| &h.id).collect();
            first.extend(
                candidates
                    .iter()
                    .filter(|h| !runs.contains(&h.id))
                    .map(|h| rank(h, false)),
            );
        }
        if first.len() > extra {
            first.select_nth_unstable(extra);
            first.truncate(extra);
        }
    }
    if base == 0 {
        return first.into_iter().map(|(_, _, id)| (id, 1)).collect();
    }
    let first: BTreeSet<&HostId> = first.into_iter().map(|(_, _, id)| id).collect();
    candidates
        .iter()
        .map(|h| (&h.id, base + u32::from(first.contains(&h.id))))
        .collect()
}

/// Instances of one component per host.
fn place_component(
    app: &ResolvedApp,
    c: &ResolvedComponent,
    hosts: &[HostView],
    by_id: &BTreeMap<&HostId, &HostView>,
    running: Option<&BTreeSet<&HostId>>,
    policy: Policy,
) -> (BTreeMap<HostId, u32>, Vec<String>) {
    let entries: Vec<SpreadEntry> = if c.scaler.spread.is_empty() {
        vec![default_entry()]
    } else {
        c.scaler.spread.clone()
    };
    let shares = match c.scaler.kind {
        ScalerKind::Spread => split(
            c.scaler.instances,
            &entries.iter().map(|e| e.weight).collect::<Vec<_>>(),
        ),
        ScalerKind::Daemon => vec![c.scaler.instances; entries.len()],
    };
    let tolerance = c
        .scaler
        .tolerance_secs
        .map_or(policy.default_tolerance, Duration::from_secs);
    let mut per_host: BTreeMap<HostId, u32> = BTreeMap::new();
    let mut problems = Vec::new();
    for (entry, share) in entries.iter().zip(shares) {
        // Daemons and pinned entries keep their hosts through any silence.
        let stays = entry.pinned || c.scaler.kind == ScalerKind::Daemon;
        let is_candidate = |h: &HostView| {
            h.admitted
                && entry.matches(&h.labels)
                && (stays || (!h.stopped && h.silent <= tolerance))
        };
        let mut candidates: Vec<&HostView> = hosts.iter().filter(|h| is_candidate(h)).collect();
        if candidates.is_empty() && !stays {
            // Nowhere else to go: movable work stays with the silent or stopped hosts that
            // hold it, rather than being taken from them for nothing (a lone gateway that
            // restarts must find its work still assigned).
            candidates = hosts
                .iter()
                .filter(|h| {
                    h.admitted
                        && entry.matches(&h.labels)
                        && running.is_some_and(|r| r.contains(&h.id))
                })
                .collect();
        }
        if candidates.is_empty() {
            if share > 0 || c.scaler.kind == ScalerKind::Daemon {
                problems.push(format!(
                    "no ready host matches spread `{}` ({})",
                    entry.name,
                    entry.describe()
                ));
            }
            continue;
        }
        match c.scaler.kind {
            ScalerKind::Daemon => {
                for h in candidates {
                    *per_host.entry(h.id.clone()).or_default() += share;
                }
            }
            ScalerKind::Spread => {
                let key = format!("{}/{}/{}", app.name, c.name, entry.name);
                // Found from the few hosts that run it, not by asking every candidate.
                let running: Vec<&HostView> = running
                    .into_iter()
                    .flatten()
                    .filter_map(|id| by_id.get(id).copied())
                    .filter(|h| is_candidate(h))
                    .collect();
                for (id, count) in spread_counts(&key, &candidates, &running, share) {
                    *per_host.entry(id.clone()).or_default() += count;
                }
            }
        }
    }
    (per_host, problems)
}

/// Places every component of every app on the known `hosts`, given what each host is assigned
/// now (`current`, for stability).
pub fn plan(
    apps: &[&ResolvedApp],
    hosts: &[HostView],
    current: &BTreeMap<HostId, Vec<Workload>>,
    policy: Policy,
) -> Plan {
    let mut out = Plan {
        hosts: hosts.iter().map(|h| (h.id.clone(), Vec::new())).collect(),
        unplaced: Vec::new(),
    };
    let running = running_index(current);
    let by_id: BTreeMap<&HostId, &HostView> = hosts.iter().map(|h| (&h.id, h)).collect();
    for app in apps {
        for c in &app.components {
            let running = running.get(&(&app.name, &c.name));
            let (per_host, problems) = place_component(app, c, hosts, &by_id, running, policy);
            if !problems.is_empty() {
                out.unplaced.push(Unplaced {
                    app: app.name.clone(),
                    component: c.name.clone(),
                    reason: problems.join("; "),
                });
            }
            for (host, instances) in per_host {
                if let Some(list) = out.hosts.get_mut(&host) {
                    list.push(Workload {
                        app: app.name.clone(),
                        app_version: app.version.clone(),
                        component: c.name.clone(),
                        image: c.image.clone(),
                        instances,
                        config: c.config.clone(),
                        secrets: c.secrets.clone(),
                        http: c.http.clone(),
                        links: c.links.clone(),
                        subscriptions: c.subscriptions.clone(),
                        // Derived here, from the links stored with the app, so that apps
                        // resolved before it existed get it too.
                        queue: Some(QueueInbox::of(
                            &c.name,
                            app.components.iter().flat_map(|o| &o.links),
                            &c.subscriptions,
                        )),
                        limits: c.limits,
                    });
                }
            }
        }
    }
    for list in out.hosts.values_mut() {
        list.sort_by(|a, b| (&a.app, &a.component).cmp(&(&b.app, &b.component)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Scaling;
    use lattice_protocol::digest::Digest;
    use proptest::prelude::*;

    const POLICY: Policy = Policy {
        default_tolerance: Duration::from_secs(30),
    };

    fn host(i: usize, zone: &str) -> HostView {
        HostView::ready(
            HostId::new(format!("N{i:03}")).expect("valid"),
            [("zone".to_string(), zone.to_string())].into(),
        )
    }

    fn place(apps: &[&ResolvedApp], hosts: &[HostView]) -> Plan {
        plan(apps, hosts, &BTreeMap::new(), POLICY)
    }

    /// Placement applied to its own output: what the lattice looks like after one pass.
    fn replan(apps: &[&ResolvedApp], hosts: &[HostView], previous: &Plan) -> Plan {
        plan(apps, hosts, &previous.hosts, POLICY)
    }

    fn app(kind: ScalerKind, instances: u32, spread: Vec<SpreadEntry>) -> ResolvedApp {
        ResolvedApp {
            name: AppName::new("app").expect("valid"),
            version: "v1".into(),
            components: vec![ResolvedComponent {
                name: ComponentName::new("c").expect("valid"),
                image: Digest::of(b"c"),
                scaler: Scaling {
                    kind,
                    instances,
                    spread,
                    tolerance_secs: None,
                },
                config: BTreeMap::new(),
                secrets: BTreeMap::new(),
                http: None,
                links: Vec::new(),
                subscriptions: Vec::new(),
                limits: Default::default(),
            }],
            rollout: Default::default(),
            wait_for_hosts: false,
        }
    }

    fn zone_entry(zone: &str, weight: u32) -> SpreadEntry {
        SpreadEntry {
            name: zone.to_string(),
            weight,
            requirements: [("zone".to_string(), zone.to_string())].into(),
            pinned: false,
        }
    }

    fn total(plan: &Plan) -> u32 {
        plan.hosts.values().flatten().map(|w| w.instances).sum()
    }

    #[test]
    fn split_by_largest_remainder() {
        assert_eq!(split(10, &[80, 20]), vec![8, 2]);
        assert_eq!(split(1, &[50, 50]), vec![1, 0]);
        assert_eq!(split(3, &[1, 1, 1]), vec![1, 1, 1]);
        assert_eq!(split(5, &[0, 1]), vec![0, 5]);
        assert_eq!(split(5, &[0, 0]), vec![0, 0]);
    }

    #[test]
    fn no_matching_host_names_the_requirement() {
        let a = app(ScalerKind::Spread, 2, vec![zone_entry("mars", 100)]);
        let p = place(&[&a], &[host(1, "edge")]);
        assert_eq!(total(&p), 0);
        assert_eq!(p.unplaced.len(), 1);
        assert!(
            p.unplaced[0].reason.contains("zone=mars"),
            "{:?}",
            p.unplaced
        );
    }

    #[test]
    fn daemon_runs_on_every_matching_host() {
        let a = app(ScalerKind::Daemon, 2, vec![zone_entry("edge", 100)]);
        let hosts = [host(1, "edge"), host(2, "cloud"), host(3, "edge")];
        let p = place(&[&a], &hosts);
        assert_eq!(p.hosts[&hosts[0].id][0].instances, 2);
        assert!(p.hosts[&hosts[1].id].is_empty());
        assert_eq!(p.hosts[&hosts[2].id][0].instances, 2);
    }

    fn hosts_strategy() -> impl Strategy<Value = Vec<HostView>> {
        prop::collection::vec(prop::sample::select(vec!["edge", "cloud", "core"]), 0..12)
            .prop_map(|zones| zones.iter().enumerate().map(|(i, z)| host(i, z)).collect())
    }

    proptest! {
        // Invariants of spread placement: the total is exactly N when every entry has a matching
        // host; no instance lands on a host that does not match its entry; each entry's share is
        // within one instance of its weighted proportion; and placing twice gives the same plan.
        #[test]
        fn spread_invariants(hosts in hosts_strategy(), n in 0u32..50, w1 in 0u32..5, w2 in 1u32..5) {
            let a = app(ScalerKind::Spread, n, vec![zone_entry("edge", w1), zone_entry("cloud", w2)]);
            let p = place(&[&a], &hosts);
            prop_assert_eq!(&p, &place(&[&a], &hosts));
            // Converged: placing again on top of its own output changes nothing.
            prop_assert_eq!(&p, &replan(&[&a], &hosts, &p));
            let zone_of = |id: &HostId| hosts.iter().find(|h| &h.id == id).map(|h| h.labels["zone"].clone());
            let mut per_zone: BTreeMap<String, u32> = BTreeMap::new();
            for (id, ws) in &p.hosts {
                for w in ws {
                    let z = zone_of(id).expect("known host");
                    prop_assert!(z == "edge" || z == "cloud", "placed on {}", z);
                    *per_zone.entry(z).or_default() += w.instances;
                }
            }
            let has = |z: &str| hosts.iter().any(|h| h.labels["zone"] == z);
            let want = split(n, &[w1, w2]);
            if has("edge") { prop_assert_eq!(per_zone.get("edge").copied().unwrap_or(0), want[0]); }
            if has("cloud") { prop_assert_eq!(per_zone.get("cloud").copied().unwrap_or(0), want[1]); }
            if has("edge") && has("cloud") { prop_assert_eq!(total(&p), n); }
            for (i, w) in [w1, w2].iter().enumerate() {
                let exact = f64::from(n) * f64::from(*w) / f64::from(w1 + w2);
                prop_assert!((f64::from(want[i]) - exact).abs() < 1.0);
            }
        }

        // Invariant: adding a host to a converged lattice never reshuffles among the hosts
        // already there: none of them gains an instance, and exactly the instances the new host
        // takes leave them (an even spread may hand it its share).
        #[test]
        fn adding_a_host_only_hands_it_its_share(hosts in hosts_strategy(), n in 1u32..20) {
            prop_assume!(!hosts.is_empty());
            let a = app(ScalerKind::Spread, n, vec![]);
            let before = place(&[&a], &hosts);
            let mut more = hosts.clone();
            more.push(host(99, "edge"));
            let after = replan(&[&a], &more, &before);
            let count = |p: &Plan, id: &HostId| p.hosts.get(id).and_then(|w| w.first()).map_or(0, |w| w.instances);
            let mut left = 0;
            for h in &hosts {
                prop_assert!(count(&after, &h.id) <= count(&before, &h.id));
                left += count(&before, &h.id) - count(&after, &h.id);
            }
            prop_assert_eq!(left, count(&after, &more[hosts.len()].id));
        }
    }

    /// The ranking written plainly: sort every candidate, count down the list.
    fn spread_counts_by_sorting(
        key: &str,
        candidates: &[&HostView],
        running: &BTreeSet<&HostId>,
        share: u32,
    ) -> BTreeMap<HostId, u32> {
        let mut sorted = candidates.to_vec();
        sorted.sort_by_key(|h| {
            (
                !running.contains(&h.id),
                Reverse(score(key, &h.id)),
                h.id.clone(),
            )
        });
        let n = sorted.len() as u32;
        sorted
            .iter()
            .enumerate()
            .map(|(i, h)| (h.id.clone(), share / n + u32::from((i as u32) < share % n)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    proptest! {
        // Invariant: selecting the first-ranked hosts gives exactly what sorting every candidate
        // gives, whichever hosts run the component now and whatever the share.
        #[test]
        fn spread_counts_match_a_full_sort(
            count in 1usize..40,
            running in prop::collection::btree_set(0usize..40, 0..10),
            share in 0u32..100,
        ) {
            let hosts: Vec<HostView> = (0..count).map(|i| host(i, "edge")).collect();
            let candidates: Vec<&HostView> = hosts.iter().collect();
            let running: Vec<&HostView> = running.iter().filter_map(|i| hosts.get(*i)).collect();
            let fast: BTreeMap<HostId, u32> = spread_counts("app/c/default", &candidates, &running, share)
                .into_iter()
                .map(|(id, n)| (id.clone(), n))
                .collect();
            let running: BTreeSet<&HostId> = running.iter().map(|h| &h.id).collect();
            prop_assert_eq!(fast, spread_counts_by_sorting("app/c/default", &candidates, &running, share));
        }
    }

    fn silent(mut h: HostView, secs: u64) -> HostView {
        h.silent = Duration::from_secs(secs);
        h
    }

    #[test]
    fn a_silent_host_loses_movable_work_only_past_its_tolerance() {
        let a = app(ScalerKind::Spread, 1, vec![]);
        let hosts = vec![host(1, "edge"), host(2, "edge")];
        let first = place(&[&a], &hosts);
        let holder = first
            .hosts
            .iter()
            .find(|(_, w)| !w.is_empty())
            .map(|(h, _)| h.clone())
            .expect("placed");
        let other = hosts
            .iter()
            .find(|h| h.id != holder)
            .expect("two hosts")
            .id
            .clone();
        let with_silence = |secs| -> Vec<HostView> {
            hosts
                .iter()
                .map(|h| {
                    if h.id == holder {
                        silent(h.clone(), secs)
                    } else {
                        h.clone()
                    }
                })
                .collect()
        };
        // Within the tolerance nothing moves.
        assert_eq!(replan(&[&a], &with_silence(20), &first), first);
        // Past it, the instance moves and the silent host's copy is trimmed.
        let moved = replan(&[&a], &with_silence(40), &first);
        assert!(moved.hosts[&holder].is_empty());
        assert_eq!(moved.hosts[&other][0].instances, 1);
        // When it returns, the work stays where it went.
        assert_eq!(replan(&[&a], &hosts, &moved), moved);
    }

    #[test]
    fn movable_work_stays_when_no_other_host_can_take_it() {
        let a = app(ScalerKind::Spread, 1, vec![]);
        let hosts = vec![host(1, "edge")];
        let first = place(&[&a], &hosts);
        let mut stopped = hosts.clone();
        stopped[0].stopped = true;
        assert_eq!(replan(&[&a], &stopped, &first), first);
        assert_eq!(
            replan(&[&a], &[silent(hosts[0].clone(), 3600)], &first),
            first
        );
    }

    #[test]
    fn a_stopped_host_loses_movable_work_at_once() {
        let a = app(ScalerKind::Spread, 2, vec![]);
        let hosts = vec![host(1, "edge"), host(2, "edge")];
        let first = place(&[&a], &hosts);
        let mut stopping = hosts.clone();
        stopping[0].stopped = true;
        let after = replan(&[&a], &stopping, &first);
        assert!(after.hosts[&hosts[0].id].is_empty());
        assert_eq!(after.hosts[&hosts[1].id][0].instances, 2);
    }

    #[test]
    fn pinned_and_daemon_work_never_moves_off_a_silent_host() {
        let pinned = SpreadEntry {
            pinned: true,
            ..zone_entry("edge", 100)
        };
        let a = app(ScalerKind::Spread, 1, vec![pinned]);
        let d = ResolvedApp {
            name: AppName::new("daemon").expect("valid"),
            ..app(ScalerKind::Daemon, 1, vec![zone_entry("edge", 100)])
        };
        let hosts = vec![host(1, "edge"), host(2, "edge")];
        let first = place(&[&a, &d], &hosts);
        let gone: Vec<HostView> = hosts.iter().map(|h| silent(h.clone(), 86_400)).collect();
        let mut stopped = gone.clone();
        stopped[0].stopped = true;
        for lattice in [gone, stopped] {
            assert_eq!(replan(&[&a, &d], &lattice, &first), first);
        }
    }
}
