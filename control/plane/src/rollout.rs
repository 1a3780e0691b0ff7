//! Rollouts as pure decisions: which hosts run the new version, when the next batch may
//! switch, and when a failure means going back.
//!
//! While an app rolls out from version `from` to `to`, both are placed; hosts in the rollout's
//! `switched` set get `to`'s workloads and the others keep `from`'s ([`merge`]). Each step,
//! [`next_step`] looks at what hosts report: any `to` workload failed → roll back; every
//! switched host running `to` for the health period → switch the next batch, or finish.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_protocol::assignment::Workload;
use lattice_protocol::messages::{Heartbeat, WorkloadState};
use lattice_protocol::names::{AppName, HostId};

use crate::model::{RolloutPolicy, RolloutState};
use crate::placement::Plan;

/// Failed requests (traps, timeouts) of a new version on one host that stop its rollout.
pub const FAILURES_TO_ROLL_BACK: u64 = 3;

/// What to do with a rollout now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep waiting: instances are starting (`running: false`), or all run but not yet for
    /// the health period (`running: true`: start or keep the health clock).
    Wait {
        /// Whether every switched host runs the new version.
        running: bool,
    },
    /// Switch these hosts too.
    Switch(Vec<HostId>),
    /// Every host runs the new version healthy: done.
    Complete,
    /// A new-version workload failed: go back, with the reason.
    RollBack(String),
}

/// Hosts on which `app` has workloads in `plan`.
fn hosts_of(plan: &Plan, app: &AppName) -> BTreeSet<HostId> {
    plan.hosts
        .iter()
        .filter(|(_, ws)| ws.iter().any(|w| &w.app == app))
        .map(|(h, _)| h.clone())
        .collect()
}

/// Decides the next step of `rollout` of `app`, given the plans of both versions, what hosts
/// report, and how long the switched hosts have all been running the new version.
pub fn next_step(
    app: &AppName,
    rollout: &RolloutState,
    policy: &RolloutPolicy,
    to_plan: &Plan,
    from_plan: &Plan,
    observed: &BTreeMap<HostId, Heartbeat>,
    healthy_for: Option<Duration>,
) -> Step {
    // Nowhere to place it (yet): not a failure of the version; wait for hosts.
    if to_plan.unplaced.iter().any(|u| &u.app == app) {
        return Step::Wait { running: false };
    }
    let switched: BTreeSet<&HostId> = rollout.switched.iter().collect();
    let mut all_running = true;
    for host in &switched {
        for w in to_plan
            .hosts
            .get(*host)
            .into_iter()
            .flatten()
            .filter(|w| &w.app == app)
        {
            let reported = observed.get(*host).and_then(|hb| {
                hb.workloads.iter().find(|r| {
                    r.app == w.app && r.component == w.component && r.app_version == w.app_version
                })
            });
            match reported {
                Some(r) if r.failures >= FAILURES_TO_ROLL_BACK => {
                    return Step::RollBack(format!(
                        "{} on host {}: {} requests failed (the component traps or times out)",
                        w.component,
                        crate::status::short(host),
                        r.failures
                    ));
                }
                Some(r) if r.state == WorkloadState::Failed => {
                    return Step::RollBack(format!(
                        "{} on host {}: {}",
                        w.component,
                        crate::status::short(host),
                        r.message
                    ));
                }
                Some(r) if r.state == WorkloadState::Running => {}
                _ => all_running = false,
            }
        }
    }
    let remaining: Vec<HostId> = hosts_of(to_plan, app)
        .union(&hosts_of(from_plan, app))
        .filter(|h| !switched.contains(h))
        .cloned()
        .collect();
    let healthy = all_running
        && (switched.is_empty()
            || healthy_for.is_some_and(|d| d >= Duration::from_secs(policy.healthy_for_secs)));
    if !healthy {
        return Step::Wait {
            running: all_running,
        };
    }
    if remaining.is_empty() {
        return Step::Complete;
    }
    let all = remaining.len() + switched.len();
    let batch = policy.batch.map_or(remaining.len(), |b| b.hosts(all));
    Step::Switch(remaining.into_iter().take(batch).collect())
}

/// The plan hosts get during a rollout: `to`'s workloads of `app` on switched hosts, `from`'s
/// elsewhere; other apps as in `to_plan`.
pub fn merge(app: &AppName, rollout: &RolloutState, to_plan: &mut Plan, from_plan: &Plan) {
    let hosts: BTreeSet<HostId> = to_plan
        .hosts
        .keys()
        .chain(from_plan.hosts.keys())
        .cloned()
        .collect();
    for host in hosts {
        if rollout.switched.contains(&host) {
            continue;
        }
        let old: Vec<Workload> = from_plan
            .hosts
            .get(&host)
            .into_iter()
            .flatten()
            .filter(|w| &w.app == app)
            .cloned()
            .collect();
        let list = to_plan.hosts.entry(host).or_default();
        list.retain(|w| &w.app != app);
        list.extend(old);
        list.sort_by(|a, b| (&a.app, &a.component).cmp(&(&b.app, &b.component)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::digest::Digest;
    use lattice_protocol::messages::WorkloadStatus;
    use lattice_protocol::names::ComponentName;

    fn id(n: &str) -> HostId {
        HostId::new(n).expect("valid")
    }

    fn workload(version: &str) -> Workload {
        Workload {
            app: AppName::new("app").expect("valid"),
            app_version: version.into(),
            component: ComponentName::new("c").expect("valid"),
            image: Digest::of(version.as_bytes()),
            instances: 1,
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
            http: None,
            links: Vec::new(),
            subscriptions: Vec::new(),
            queue: None,
            limits: Default::default(),
        }
    }

    fn plan(version: &str, hosts: &[&str]) -> Plan {
        Plan {
            hosts: hosts
                .iter()
                .map(|h| (id(h), vec![workload(version)]))
                .collect(),
            unplaced: Vec::new(),
        }
    }

    fn report(host: &str, version: &str, state: WorkloadState) -> (HostId, Heartbeat) {
        let w = workload(version);
        (
            id(host),
            Heartbeat {
                host: id(host),
                name: host.into(),
                labels: BTreeMap::new(),
                started_at: 0,
                sent_at_ms: 0,
                clock_offset_ms: 0,
                version: String::new(),
                assignment_revision: 1,
                interval_secs: 1,
                workloads: vec![WorkloadStatus {
                    app: w.app,
                    app_version: w.app_version,
                    component: w.component,
                    image: w.image,
                    instances: 1,
                    state,
                    message: "boom".into(),
                    reason: None,
                    endpoint: None,
                    failures: 0,
                }],
                last_refusal: None,
                stopping: false,
                queues: Vec::new(),
                join_token: None,
            },
        )
    }

    fn state(switched: &[&str]) -> RolloutState {
        RolloutState {
            from: "v1".into(),
            to: "v2".into(),
            switched: switched.iter().map(|h| id(h)).collect(),
        }
    }

    const ONE_BY_ONE: RolloutPolicy = RolloutPolicy {
        batch: Some(lattice_manifest::Batch::Hosts(1)),
        healthy_for_secs: 10,
    };

    #[test]
    fn batches_wait_for_health_then_finish() {
        let app = AppName::new("app").expect("valid");
        let (to, from) = (plan("v2", &["a", "b"]), plan("v1", &["a", "b"]));
        let step = |s: &RolloutState, obs: &[(HostId, Heartbeat)], healthy: Option<u64>| {
            next_step(
                &app,
                s,
                &ONE_BY_ONE,
                &to,
                &from,
                &obs.iter().cloned().collect(),
                healthy.map(Duration::from_secs),
            )
        };
        assert_eq!(step(&state(&[]), &[], None), Step::Switch(vec![id("a")]));
        let a_up = [report("a", "v2", WorkloadState::Running)];
        assert_eq!(
            step(&state(&["a"]), &[], None),
            Step::Wait { running: false },
            "not reported yet"
        );
        assert_eq!(
            step(&state(&["a"]), &a_up, Some(3)),
            Step::Wait { running: true },
            "not healthy long enough"
        );
        assert_eq!(
            step(&state(&["a"]), &a_up, Some(10)),
            Step::Switch(vec![id("b")])
        );
        let both = [
            report("a", "v2", WorkloadState::Running),
            report("b", "v2", WorkloadState::Running),
        ];
        assert_eq!(step(&state(&["a", "b"]), &both, Some(10)), Step::Complete);
    }

    #[test]
    fn percentages_round_up_to_whole_hosts() {
        use lattice_manifest::Batch;
        assert_eq!(Batch::Percent(25).hosts(10), 3);
        assert_eq!(Batch::Percent(1).hosts(3), 1);
        assert_eq!(Batch::Percent(100).hosts(3), 3);
        assert_eq!(Batch::Hosts(2).hosts(10), 2);
    }

    #[test]
    fn a_failure_rolls_back_naming_the_host() {
        let app = AppName::new("app").expect("valid");
        let (to, from) = (plan("v2", &["a", "b"]), plan("v1", &["a", "b"]));
        let obs: BTreeMap<_, _> = [report("a", "v2", WorkloadState::Failed)]
            .into_iter()
            .collect();
        let step = next_step(&app, &state(&["a"]), &ONE_BY_ONE, &to, &from, &obs, None);
        assert!(
            matches!(&step, Step::RollBack(r) if r.contains("c on host a: boom")),
            "{step:?}"
        );
    }

    #[test]
    fn a_version_that_keeps_failing_requests_rolls_back() {
        let app = AppName::new("app").expect("valid");
        let (to, from) = (plan("v2", &["a", "b"]), plan("v1", &["a", "b"]));
        let (host, mut hb) = report("a", "v2", WorkloadState::Running);
        hb.workloads[0].failures = FAILURES_TO_ROLL_BACK;
        let obs: BTreeMap<_, _> = [(host, hb)].into_iter().collect();
        let step = next_step(&app, &state(&["a"]), &ONE_BY_ONE, &to, &from, &obs, None);
        assert!(
            matches!(&step, Step::RollBack(r) if r.contains("3 requests failed")),
            "{step:?}"
        );
    }

    #[test]
    fn merge_keeps_unswitched_hosts_on_the_old_version() {
        let app = AppName::new("app").expect("valid");
        let mut to = plan("v2", &["a", "b"]);
        merge(&app, &state(&["a"]), &mut to, &plan("v1", &["a", "b"]));
        assert_eq!(to.hosts[&id("a")][0].app_version, "v2");
        assert_eq!(to.hosts[&id("b")][0].app_version, "v1");
    }
}
