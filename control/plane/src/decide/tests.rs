//! Property tests of [`decide`]: a small lattice (a few hosts in two zones, one or two apps)
//! driven through random heartbeats, silences, label changes, stops and rival writes, with the
//! worker's part played by a simulated KV that applies compare-and-set like JetStream does.

use std::collections::BTreeMap;
use std::time::Duration;

use lattice_protocol::assignment::Assignment;
use lattice_protocol::digest::Digest;
use lattice_protocol::messages::{
    AppRequest, Heartbeat, HostAdmission, LabelRequest, StopHostRequest,
};
use lattice_protocol::names::{AppName, ComponentName, HostId, LatticeName};
use proptest::prelude::*;

use super::*;
use crate::model::{
    ResolvedApp, ResolvedComponent, ScalerKind, Scaling, SpreadEntry, StoredApp, StoredVersion,
};

const TOLERANCE: Duration = Duration::from_secs(30);
const ZONES: [&str; 2] = ["a", "b"];
const HOSTS: usize = 5;

fn host_id(i: usize) -> HostId {
    HostId::new(format!("N{i:03}")).expect("valid")
}

fn settings() -> Settings {
    Settings {
        lattice: LatticeName::new("default").expect("valid"),
        epoch: 2,
        host_tolerance: TOLERANCE,
        startup_grace: Duration::from_secs(5),
        assignment_ttl: Duration::from_secs(24 * 3600),
        host_retention: Duration::from_secs(24 * 3600),
        admins: Vec::new(),
    }
}

/// Every simulated host admitted, as an operator would have.
fn admissions() -> BTreeMap<HostId, HostAdmission> {
    (0..HOSTS)
        .map(|i| {
            let record = HostAdmission {
                admitted: true,
                how: "admitted by an operator".into(),
                at: 0,
            };
            (host_id(i), record)
        })
        .collect()
}

/// One component's placement, as generated.
#[derive(Debug, Clone)]
struct Shape {
    daemon: bool,
    instances: u32,
    /// Entries by zone (distinct zones, so a host matches at most one), pinned or not; none:
    /// one entry matching every host.
    entries: Vec<(usize, bool)>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        any::<bool>(),
        1u32..4,
        prop::collection::btree_map(0usize..2, any::<bool>(), 0..=2),
    )
        .prop_map(|(daemon, instances, entries)| Shape {
            daemon,
            instances,
            entries: entries.into_iter().collect(),
        })
}

fn stored_app(i: usize, shape: &Shape) -> StoredApp {
    let name = AppName::new(format!("app{i}")).expect("valid");
    let resolved = ResolvedApp {
        name: name.clone(),
        version: "v1".into(),
        components: vec![ResolvedComponent {
            name: ComponentName::new("c").expect("valid"),
            image: Digest::of(format!("app{i}").as_bytes()),
            scaler: Scaling {
                kind: if shape.daemon {
                    ScalerKind::Daemon
                } else {
                    ScalerKind::Spread
                },
                instances: shape.instances,
                spread: shape
                    .entries
                    .iter()
                    .map(|(zone, pinned)| SpreadEntry {
                        name: ZONES[*zone].to_string(),
                        weight: 100,
                        requirements: [("zone".to_string(), ZONES[*zone].to_string())].into(),
                        pinned: *pinned,
                    })
                    .collect(),
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
    };
    StoredApp {
        name,
        versions: vec![StoredVersion {
            version: "v1".into(),
            manifest: String::new(),
            deployed_at: 0,
            resolved,
        }],
        deployed: Some("v1".into()),
        rollout: None,
        rolled_back: None,
    }
}

/// What happens to the lattice between two decisions.
#[derive(Debug, Clone)]
enum Op {
    /// A host reports, in a zone (stopping or not).
    Heartbeat {
        host: usize,
        zone: usize,
        stopping: bool,
    },
    /// Time passes.
    Advance(u64),
    Tick,
    /// `ctl label <host> zone=<zone>`.
    Label {
        host: usize,
        zone: usize,
    },
    /// `ctl stop host <host>`.
    Stop(usize),
    /// Another writer (a deposed leader) writes a host's key first.
    Rival {
        host: usize,
        ahead: u64,
    },
    /// `ctl get hosts`, `ctl get apps`, `ctl status`: answers only.
    Ask(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..HOSTS, 0usize..2, prop::bool::weighted(0.1))
            .prop_map(|(host, zone, stopping)| Op::Heartbeat { host, zone, stopping }),
        3 => (0u64..40).prop_map(Op::Advance),
        1 => Just(Op::Tick),
        1 => (0..HOSTS, 0usize..2).prop_map(|(host, zone)| Op::Label { host, zone }),
        1 => (0..HOSTS).prop_map(Op::Stop),
        1 => (0..HOSTS, 1u64..3).prop_map(|(host, ahead)| Op::Rival { host, ahead }),
        1 => (0usize..3).prop_map(Op::Ask),
    ]
}

fn heartbeat(host: usize, zone: usize, stopping: bool) -> Heartbeat {
    Heartbeat {
        host: host_id(host),
        name: format!("h{host}"),
        labels: [("zone".to_string(), ZONES[zone].to_string())].into(),
        started_at: 0,
        sent_at_ms: 0,
        clock_offset_ms: 0,
        version: String::new(),
        assignment_revision: 0,
        interval_secs: 5,
        workloads: Vec::new(),
        last_refusal: None,
        stopping,
        queues: Vec::new(),
        join_token: None,
    }
}

/// A successful assignment write: the revision the key held before, and the one written.
#[derive(Debug, Clone)]
struct Landed {
    before: Option<u64>,
    assignment: Assignment,
}

/// The decisions with the worker played by a simulated KV.
struct Sim {
    state: State,
    now: Time,
    /// Assignments: host -> (KV revision, assignment).
    assignments: BTreeMap<HostId, (u64, Assignment)>,
    apps: BTreeMap<AppName, (u64, StoredApp)>,
    kv_revision: u64,
    /// Every write attempted: with the effective labels of its host when it was decided.
    attempts: Vec<(Assignment, BTreeMap<String, String>)>,
    landed: Vec<Landed>,
}

impl Sim {
    fn new(shapes: &[Shape]) -> Self {
        let apps: BTreeMap<AppName, (StoredApp, u64)> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let app = stored_app(i, s);
                (app.name.clone(), (app, i as u64 + 1))
            })
            .collect();
        Self {
            apps: apps
                .iter()
                .map(|(n, (a, r))| (n.clone(), (*r, a.clone())))
                .collect(),
            kv_revision: apps.len() as u64,
            state: State::new(
                settings(),
                apps,
                BTreeMap::new(),
                BTreeMap::new(),
                admissions(),
            ),
            now: Time {
                since_start: Duration::ZERO,
                unix_secs: 1_000_000,
            },
            assignments: BTreeMap::new(),
            attempts: Vec::new(),
            landed: Vec::new(),
        }
    }

    fn input(&self, op: &Op) -> Option<Input> {
        let reply = ReplyTo::new("_INBOX.test", Vec::new());
        let request = |request| {
            Some(Input::Request {
                reply: reply.clone(),
                request,
            })
        };
        match op {
            Op::Heartbeat {
                host,
                zone,
                stopping,
            } => Some(Input::Heartbeat(heartbeat(*host, *zone, *stopping))),
            // The worker ticks every second: time never passes unnoticed.
            Op::Tick | Op::Advance(_) => Some(Input::Tick),
            Op::Label { host, zone } => request(Request::Label(LabelRequest {
                host: host_id(*host).to_string(),
                set: [("zone".to_string(), ZONES[*zone].to_string())].into(),
                delete: Vec::new(),
            })),
            Op::Stop(host) => request(Request::StopHost(StopHostRequest {
                host: host_id(*host).to_string(),
            })),
            Op::Ask(0) => request(Request::Hosts),
            Op::Ask(1) => request(Request::Apps),
            Op::Ask(_) => request(Request::Status(AppRequest {
                name: AppName::new("app0").expect("valid"),
            })),
            Op::Rival { .. } => None,
        }
    }

    /// Applies `op` as the worker would: its input, then a re-plan.
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Advance(secs) => {
                self.now.since_start += Duration::from_secs(*secs);
                self.now.unix_secs += secs;
            }
            Op::Rival { host, ahead } => {
                let host = host_id(*host);
                if let Some((_, current)) = self.assignments.get(&host) {
                    let mut rival = current.clone();
                    rival.revision += ahead;
                    rival.epoch = 1;
                    self.kv_revision += 1;
                    self.assignments.insert(host, (self.kv_revision, rival));
                }
            }
            _ => {}
        }
        if let Some(input) = self.input(op) {
            self.step(input);
        }
        self.step(Input::Reconcile);
    }

    fn step(&mut self, input: Input) {
        let mut pending = decide(&mut self.state, input, self.now);
        pending.reverse();
        while let Some(action) = pending.pop() {
            if let Some(outcome) = self.act(action) {
                let mut more = decide(&mut self.state, outcome, self.now);
                more.reverse();
                pending.extend(more);
            }
        }
    }

    fn act(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::WriteAssignment {
                assignment,
                revision,
            } => {
                let labels = self
                    .state
                    .hosts
                    .get(&assignment.host)
                    .map(|o| self.state.labels_of(&o.heartbeat))
                    .unwrap_or_default();
                self.attempts.push((assignment.clone(), labels));
                let held = self.assignments.get(&assignment.host).cloned();
                let outcome = if held.as_ref().map(|(rev, _)| *rev) == revision {
                    self.kv_revision += 1;
                    self.landed.push(Landed {
                        before: held.map(|(_, a)| a.revision),
                        assignment: assignment.clone(),
                    });
                    self.assignments.insert(
                        assignment.host.clone(),
                        (self.kv_revision, assignment.clone()),
                    );
                    Outcome::Written(self.kv_revision)
                } else {
                    Outcome::Lost {
                        current: held.map(|(rev, a)| Box::new((a, rev))),
                        error: "wrong last sequence".into(),
                    }
                };
                Some(Input::AssignmentWritten {
                    assignment,
                    outcome,
                })
            }
            Action::StoreApp {
                app,
                revision,
                after,
            } => {
                let held = self.apps.get(&app.name).cloned();
                let outcome = if held.as_ref().map(|(rev, _)| *rev) == revision {
                    self.kv_revision += 1;
                    self.apps
                        .insert(app.name.clone(), (self.kv_revision, app.clone()));
                    Outcome::Written(self.kv_revision)
                } else {
                    Outcome::Lost {
                        current: held.map(|(rev, a)| Box::new((a, rev))),
                        error: "wrong last sequence".into(),
                    }
                };
                Some(Input::AppStored {
                    app: Box::new(app),
                    outcome,
                    after,
                })
            }
            Action::StoreLabels {
                host,
                overrides,
                reply,
            } => Some(Input::LabelsStored {
                host,
                overrides,
                reply,
                outcome: Ok(()),
            }),
            Action::StoreAdmission {
                host,
                record,
                reply,
            } => Some(Input::AdmissionStored {
                host,
                record,
                reply,
                outcome: Ok(()),
            }),
            Action::ClearAssignment { host, revision } => {
                if self
                    .assignments
                    .get(&host)
                    .is_some_and(|(r, _)| *r == revision)
                {
                    self.assignments.remove(&host);
                }
                None
            }
            Action::Reply { .. } | Action::Emit(_) | Action::AnswerQueues { .. } => None,
        }
    }

    /// The entries of the component a workload of `app` runs.
    fn entries(&self, app: &AppName) -> Vec<SpreadEntry> {
        let (stored, _) = &self.state.apps[app];
        stored.versions[0].resolved.components[0]
            .scaler
            .spread
            .clone()
    }
}

/// `ops` with every host keeping the zone of its first heartbeat, and no `ctl label`.
fn labels_held(ops: &[Op]) -> Vec<Op> {
    let mut zones = BTreeMap::new();
    ops.iter()
        .filter(|op| !matches!(op, Op::Label { .. }))
        .map(|op| match op {
            Op::Heartbeat {
                host,
                zone,
                stopping,
            } => Op::Heartbeat {
                host: *host,
                zone: *zones.entry(*host).or_insert(*zone),
                stopping: *stopping,
            },
            other => other.clone(),
        })
        .collect()
}

fn scenario() -> impl Strategy<Value = (Vec<Shape>, Vec<Op>)> {
    (
        prop::collection::vec(shape(), 1..=2),
        prop::collection::vec(op(), 1..40),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // Invariant (determinism): the same state, input and time decide the same actions and
    // leave the same state, whatever the lattice went through before.
    #[test]
    fn same_state_and_input_same_actions((shapes, ops) in scenario(), next in op()) {
        let mut sim = Sim::new(&shapes);
        for op in &ops {
            sim.apply(op);
        }
        for input in sim.input(&next).into_iter().chain([Input::Tick, Input::Reconcile]) {
            let mut twin = sim.state.clone();
            let ours = decide(&mut sim.state, input.clone(), sim.now);
            let theirs = decide(&mut twin, input, sim.now);
            prop_assert_eq!(ours, theirs);
            prop_assert_eq!(&sim.state, &twin);
        }
    }

    // Invariant (labels): no assignment puts a workload on a host whose labels (with the
    // operator's changes) match none of its component's spread entries.
    #[test]
    fn workloads_go_only_to_matching_hosts((shapes, ops) in scenario()) {
        let mut sim = Sim::new(&shapes);
        for op in &ops {
            sim.apply(op);
        }
        for (assignment, labels) in &sim.attempts {
            for w in &assignment.workloads {
                let entries = sim.entries(&w.app);
                prop_assert!(
                    entries.is_empty() || entries.iter().any(|e| e.matches(labels)),
                    "{}/{} on {} with labels {:?}", w.app, w.component, assignment.host, labels
                );
            }
        }
    }

    // Invariant (pinning): a workload of a pinned spread entry stays on its host while that
    // host is within its tolerance: no assignment written for the host drops it. Every host
    // keeps its labels here (each its first zone; no `ctl label`): a host relabelled into the
    // pinned entry's requirements that already runs the component for another entry competes
    // for the entry's share on equal terms, since an assignment does not say which entry a
    // workload came from (see architecture.md, decision (f)).
    #[test]
    fn pinned_work_stays_while_its_host_is_within_tolerance((shapes, ops) in scenario()) {
        let mut sim = Sim::new(&shapes);
        for op in &labels_held(&ops) {
            let pinned: Vec<(HostId, AppName)> = sim
                .assignments
                .iter()
                .filter(|(host, _)| {
                    sim.state.hosts.get(*host).is_some_and(|o| sim.state.silent(o, sim.now) <= TOLERANCE)
                })
                .flat_map(|(host, (_, a))| {
                    a.workloads.iter().map(move |w| (host.clone(), w.app.clone()))
                })
                .filter(|(host, app)| {
                    let labels = sim.state.labels_of(&sim.state.hosts[host].heartbeat);
                    sim.entries(app).iter().any(|e| e.pinned && e.matches(&labels))
                })
                .collect();
            let landed = sim.landed.len();
            sim.apply(op);
            for (host, app) in &pinned {
                for l in sim.landed[landed..].iter().filter(|l| &l.assignment.host == host) {
                    prop_assert!(
                        l.assignment.workloads.iter().any(|w| &w.app == app),
                        "{app} dropped from {host}"
                    );
                }
            }
        }
    }

    // Invariant (revisions): each host's assignment revision only grows: every write that
    // lands carries a higher revision than the one its key held, rival writers included.
    #[test]
    fn assignment_revisions_only_grow((shapes, ops) in scenario()) {
        let mut sim = Sim::new(&shapes);
        for op in &ops {
            sim.apply(op);
        }
        for l in &sim.landed {
            prop_assert!(
                l.before.is_none_or(|before| l.assignment.revision > before),
                "host {} went from {:?} to {}", l.assignment.host, l.before, l.assignment.revision
            );
        }
    }
}

/// The time the decisions saw is the only clock: a host silent past its tolerance is lost at
/// the first tick after, and an event says so.
#[test]
fn a_host_is_lost_when_the_time_given_passes_its_tolerance() {
    let mut sim = Sim::new(&[Shape {
        daemon: false,
        instances: 1,
        entries: Vec::new(),
    }]);
    sim.apply(&Op::Heartbeat {
        host: 0,
        zone: 0,
        stopping: false,
    });
    sim.apply(&Op::Advance(10));
    assert!(!sim.assignments.is_empty(), "placed after the grace");
    sim.now.since_start += TOLERANCE;
    let actions = decide(&mut sim.state, Input::Tick, sim.now);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Emit(Note {
                kind: lattice_protocol::messages::EventKind::HostLost,
                ..
            })
        )),
        "{actions:?}"
    );
}

fn prepared(version: &str, text: &str) -> Prepared {
    let mut resolved = stored_app(
        0,
        &Shape {
            daemon: false,
            instances: 1,
            entries: Vec::new(),
        },
    )
    .versions[0]
        .resolved
        .clone();
    resolved.version = version.into();
    Prepared {
        text: text.into(),
        name: AppName::new("app0").expect("valid"),
        version: version.into(),
        resolved: Some(resolved),
        trace: None,
    }
}

fn reply_body(actions: &[Action]) -> Option<&[u8]> {
    actions.iter().find_map(|a| match a {
        Action::Reply { body, .. } => Some(body.as_slice()),
        _ => None,
    })
}

/// A deploy is answered only once its app is stored: the answer travels with the store, and a
/// store lost to another writer is answered with a conflict (and the winner's app is learnt).
#[test]
fn a_deploy_is_answered_from_its_store_outcome() {
    use lattice_protocol::envelope::{self, Reply};
    use lattice_protocol::error::ErrorCode;
    use lattice_protocol::messages::DeployReply;

    let mut sim = Sim::new(&[]);
    let reply = ReplyTo::new("_INBOX.deploy", Vec::new());
    let input = Input::Prepared {
        reply: reply.clone(),
        prepared: Ok(prepared("v2", "text v2")),
    };
    let actions = decide(&mut sim.state, input, sim.now);
    let [
        Action::StoreApp {
            app,
            revision,
            after,
        },
    ] = actions.as_slice()
    else {
        panic!("one store, nothing else yet: {actions:?}");
    };
    assert_eq!(*revision, None, "a new app's key is created");
    assert!(reply_body(&after.then).is_some(), "answered once stored");

    // Lost: someone else stored the app first.
    let mut rival = app.clone();
    rival.versions.clear();
    let lost = Input::AppStored {
        app: Box::new(app.clone()),
        outcome: Outcome::Lost {
            current: Some(Box::new((rival.clone(), 7))),
            error: "wrong last sequence".into(),
        },
        after: after.clone(),
    };
    let answer = decide(&mut sim.state.clone(), lost, sim.now);
    let body = reply_body(&answer).expect("answered");
    let decoded: Reply<DeployReply> = envelope::decode(body).expect("decodes");
    assert_eq!(decoded.expect_err("refused").code, ErrorCode::Conflict);

    // Written: the app is the state's, and the answer goes out.
    let written = Input::AppStored {
        app: Box::new(app.clone()),
        outcome: Outcome::Written(3),
        after: after.clone(),
    };
    let answer = decide(&mut sim.state, written, sim.now);
    let decoded: Reply<DeployReply> =
        envelope::decode(reply_body(&answer).expect("answered")).expect("decodes");
    assert!(decoded.expect("deployed").changed);
    assert_eq!(sim.state.apps[&app.name].1, 3);
}

/// A prepared version that another deploy stored meanwhile with other content is refused on the
/// state as it is when the prepared deploy arrives.
#[test]
fn a_version_stored_meanwhile_with_other_content_is_a_conflict() {
    use lattice_protocol::envelope::{self, Reply};
    use lattice_protocol::error::ErrorCode;
    use lattice_protocol::messages::DeployReply;

    let mut sim = Sim::new(&[Shape {
        daemon: false,
        instances: 1,
        entries: Vec::new(),
    }]);
    let input = Input::Prepared {
        reply: ReplyTo::new("_INBOX.deploy", Vec::new()),
        prepared: Ok(prepared("v1", "another text")),
    };
    let actions = decide(&mut sim.state, input, sim.now);
    let decoded: Reply<DeployReply> =
        envelope::decode(reply_body(&actions).expect("answered")).expect("decodes");
    assert_eq!(decoded.expect_err("refused").code, ErrorCode::Conflict);
}

/// A deploy's trace goes with the assignments it changes, and with nothing written later: a
/// re-signing carries none.
#[test]
fn assignments_a_deploy_changes_carry_its_trace_and_later_ones_none() {
    use lattice_protocol::queue::TraceContext;

    let trace = TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: String::new(),
    };
    let mut sim = Sim::new(&[]);
    for host in 0..2 {
        sim.apply(&Op::Heartbeat {
            host,
            zone: 0,
            stopping: false,
        });
    }
    sim.apply(&Op::Advance(10));
    assert!(sim.attempts.is_empty(), "nothing to run yet");
    let mut deploy = prepared("v1", "text v1");
    deploy.trace = Some(trace.clone());
    sim.step(Input::Prepared {
        reply: ReplyTo::new("_INBOX.deploy", Vec::new()),
        prepared: Ok(deploy),
    });
    sim.step(Input::Reconcile);
    let written: Vec<_> = sim.attempts.drain(..).map(|(a, _)| a).collect();
    assert!(!written.is_empty(), "the deploy placed its app");
    assert!(
        written.iter().all(|a| a.trace.as_ref() == Some(&trace)),
        "{written:#?}"
    );
    assert!(sim.state.deploy_traces.is_empty(), "forgotten once written");

    // Half the assignments' lifetime later they are signed again, outside any deploy.
    sim.apply(&Op::Advance(settings().assignment_ttl.as_secs() / 2 + 1));
    for host in 0..2 {
        sim.apply(&Op::Heartbeat {
            host,
            zone: 0,
            stopping: false,
        });
    }
    let resigned: Vec<_> = sim.attempts.drain(..).map(|(a, _)| a).collect();
    assert!(!resigned.is_empty(), "re-signed before expiry");
    assert!(resigned.iter().all(|a| a.trace.is_none()), "{resigned:#?}");
}
