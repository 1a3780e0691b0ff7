//! Placement: a pure function from desired apps and ready hosts to per-host workloads.
//!
//! Stability comes from rendezvous hashing: for each (app, component, spread entry) every host
//! gets a score, and instances go to the best-scoring hosts. Adding a host moves an instance only
//! when the new host outscores the one holding it, and removing a host moves only its own work.

use std::collections::BTreeMap;

use lattice_protocol::assignment::Workload;
use lattice_protocol::names::{AppName, ComponentName, HostId};

use crate::model::{ResolvedApp, ResolvedComponent, ScalerKind, SpreadEntry};

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// Its id.
    pub id: HostId,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
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
    }
}

/// Instances of one component per host.
fn place_component(
    app: &ResolvedApp,
    c: &ResolvedComponent,
    hosts: &[HostView],
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
    let mut per_host: BTreeMap<HostId, u32> = BTreeMap::new();
    let mut problems = Vec::new();
    for (entry, share) in entries.iter().zip(shares) {
        let mut candidates: Vec<&HostView> =
            hosts.iter().filter(|h| entry.matches(&h.labels)).collect();
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
                candidates.sort_by_key(|h| (std::cmp::Reverse(score(&key, &h.id)), h.id.clone()));
                let n = candidates.len() as u32;
                for (i, h) in candidates.iter().enumerate() {
                    let count = share / n + u32::from((i as u32) < share % n);
                    if count > 0 {
                        *per_host.entry(h.id.clone()).or_default() += count;
                    }
                }
            }
        }
    }
    (per_host, problems)
}

/// Places every component of every app on `hosts` (the ready ones).
pub fn plan(apps: &[&ResolvedApp], hosts: &[HostView]) -> Plan {
    let mut out = Plan {
        hosts: hosts.iter().map(|h| (h.id.clone(), Vec::new())).collect(),
        unplaced: Vec::new(),
    };
    for app in apps {
        for c in &app.components {
            let (per_host, problems) = place_component(app, c, hosts);
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
                        http: c.http.clone(),
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

    fn host(i: usize, zone: &str) -> HostView {
        HostView {
            id: HostId::new(format!("N{i:03}")).expect("valid"),
            labels: [("zone".to_string(), zone.to_string())].into(),
        }
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
                },
                config: BTreeMap::new(),
                http: None,
            }],
        }
    }

    fn zone_entry(zone: &str, weight: u32) -> SpreadEntry {
        SpreadEntry {
            name: zone.to_string(),
            weight,
            requirements: [("zone".to_string(), zone.to_string())].into(),
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
        let p = plan(&[&a], &[host(1, "edge")]);
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
        let p = plan(&[&a], &hosts);
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
            let p = plan(&[&a], &hosts);
            prop_assert_eq!(&p, &plan(&[&a], &hosts));
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

        // Invariant: adding one host moves at most the instances that the new host takes.
        #[test]
        fn adding_a_host_is_minimally_disruptive(hosts in hosts_strategy(), n in 1u32..20) {
            let a = app(ScalerKind::Spread, n, vec![]);
            let before = plan(&[&a], &hosts);
            let mut more = hosts.clone();
            more.push(host(99, "edge"));
            let after = plan(&[&a], &more);
            let count = |p: &Plan, id: &HostId| p.hosts.get(id).and_then(|w| w.first()).map_or(0, |w| w.instances);
            let new_id = &more.last().expect("pushed").id;
            let moved: u32 = hosts.iter().map(|h| count(&before, &h.id).saturating_sub(count(&after, &h.id))).sum();
            prop_assert!(moved <= count(&after, new_id) + 1, "moved {} for {}", moved, count(&after, new_id));
        }
    }
}
