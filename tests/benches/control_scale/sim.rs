//! Simulated hosts: heartbeats signed with real host keys (as hosts send them, presenting one
//! join token signed by the bench's admin) and labels, and the workloads of their
//! assignment reported as running; no wasm. One shared NATS client for all, and one `watch_all`
//! on the assignments bucket that hands every host its assignment and gives the bench its
//! timings.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use lattice_protocol::assignment::{Assignment, SignedAssignment};
use lattice_protocol::envelope;
use lattice_protocol::keys::{KeyPair, KeyRole, PublicKey};
use lattice_protocol::messages::{Heartbeat, WorkloadState, WorkloadStatus};
use lattice_protocol::names::{HostId, LatticeName};
use lattice_protocol::signed::{JoinGrant, JoinToken, MacKey, seal_heartbeat};
use lattice_protocol::subject::{Buckets, Subject};
use lattice_protocol::unix_now;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::WAIT;

/// What the bench saw in the assignments bucket for one host.
pub struct Seen {
    /// The host whose key it is.
    pub host: HostId,
    /// Its assignment.
    pub assignment: Assignment,
    /// When this process saw it.
    pub at: Instant,
}

struct SimHost {
    silence: CancellationToken,
    task: Option<JoinHandle<Option<Instant>>>,
}

/// Simulated hosts on one shared client, and the bench's view of their assignments.
pub struct Fleet {
    hosts: BTreeMap<HostId, SimHost>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// The latest assignment of each host, as far as [`Fleet::drain`] / [`Fleet::until`] read.
    pub latest: BTreeMap<HostId, Seen>,
    _watcher: AbortOnDropHandle<()>,
}

impl Fleet {
    /// Starts `n` hosts on `client`, each heartbeating every `interval` (tagged for the keys of
    /// `operators`, as a host tags for the operators it trusts), with the watch that serves them
    /// their assignments.
    pub async fn start(
        client: &async_nats::Client,
        lattice: &LatticeName,
        n: usize,
        interval: Duration,
        (admin, operators): (&KeyPair, &[PublicKey]),
    ) -> anyhow::Result<Self> {
        let join_token = JoinToken::sign(
            &JoinGrant {
                lattice: lattice.clone(),
                expires_at: unix_now() + 24 * 3600,
                host: None,
                labels: BTreeMap::new(),
                note: "simulated hosts".into(),
            },
            admin,
        )
        .to_text();
        let js = async_nats::jetstream::new(client.clone());
        let kv = js
            .get_key_value(Buckets::new(lattice).assignments())
            .await
            .context("the control plane creates the assignments bucket")?;
        let mut watch = kv.watch_all().await?;
        let mut hosts = BTreeMap::new();
        let mut inboxes = BTreeMap::new();
        for i in 0..n {
            let key = KeyPair::generate(KeyRole::Host);
            let id = HostId::new(key.public_key().to_string())?;
            let hb = first_heartbeat(&id, i, interval, &join_token);
            let macs = operators
                .iter()
                .map(|operator| MacKey::agree(&key, operator))
                .collect::<Result<Vec<_>, _>>()?;
            let (tx, rx) = mpsc::unbounded_channel();
            let silence = CancellationToken::new();
            // Spread the hosts' phases over one interval, as real hosts started at random would.
            let phase = interval.mul_f64(i as f64 / n as f64);
            let subject = Subject::heartbeat(lattice, &id).to_string();
            let task = tokio::spawn(simulate_host(
                client.clone(),
                subject,
                (hb, key, macs),
                (phase, interval),
                rx,
                silence.clone(),
            ));
            inboxes.insert(id.clone(), tx);
            hosts.insert(
                id,
                SimHost {
                    silence,
                    task: Some(task),
                },
            );
        }
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                let at = Instant::now();
                if entry.operation != async_nats::jetstream::kv::Operation::Put {
                    continue;
                }
                let Ok(assignment) = envelope::decode::<SignedAssignment>(&entry.value)
                    .map_err(anyhow::Error::from)
                    .and_then(|s| Ok(s.decode_unverified()?))
                else {
                    continue;
                };
                if let Some(inbox) = inboxes.get(&assignment.host) {
                    let _ = inbox.send(assignment.clone());
                }
                let _ = seen_tx.send(Seen {
                    host: assignment.host.clone(),
                    assignment,
                    at,
                });
            }
        });
        Ok(Self {
            hosts,
            seen,
            latest: BTreeMap::new(),
            _watcher: AbortOnDropHandle::new(watcher),
        })
    }

    /// Reads everything the watch has seen so far.
    pub fn drain(&mut self) {
        while let Ok(s) = self.seen.try_recv() {
            self.latest.insert(s.host.clone(), s);
        }
    }

    /// Applies what the watch sees one entry at a time until `done` holds; returns the instant
    /// the entry that made it hold was seen (`None`: not within [`WAIT`]).
    pub async fn until(
        &mut self,
        mut done: impl FnMut(&BTreeMap<HostId, Seen>, Instant) -> bool,
    ) -> anyhow::Result<Option<Instant>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = tokio::select! {
                s = self.seen.recv() => s.context("the assignments watch ended")?,
                () = tokio::time::sleep_until(deadline) => return Ok(None),
            };
            let at = s.at;
            self.latest.insert(s.host.clone(), s);
            if done(&self.latest, at) {
                return Ok(Some(at));
            }
        }
    }

    /// Stops `host`'s heartbeats (no last word, as a crash); returns when it last sent one.
    pub async fn silence(&mut self, host: &HostId) -> Option<Instant> {
        let sim = self.hosts.get_mut(host)?;
        sim.silence.cancel();
        sim.task.take()?.await.ok().flatten()
    }

    /// Stops every host.
    pub async fn stop(mut self) {
        for sim in self.hosts.values() {
            sim.silence.cancel();
        }
        for sim in self.hosts.values_mut() {
            if let Some(task) = sim.task.take() {
                let _ = task.await;
            }
        }
    }
}

/// Simulated host number `i`'s first heartbeat: its labels (a zone of four), no workloads yet.
fn first_heartbeat(id: &HostId, i: usize, interval: Duration, join_token: &str) -> Heartbeat {
    let name = format!("sim-{i:04}");
    let labels: BTreeMap<String, String> = [
        ("arch", "x86_64".to_string()),
        ("os", "linux".to_string()),
        ("hostname", name.clone()),
        ("zone", format!("z{}", i % 4)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Heartbeat {
        host: id.clone(),
        name,
        labels,
        started_at: unix_now(),
        sent_at_ms: 0,
        clock_offset_ms: 0,
        version: "sim".to_string(),
        assignment_revision: 0,
        interval_secs: interval.as_secs().max(1),
        workloads: Vec::new(),
        last_refusal: None,
        stopping: false,
        queues: Vec::new(),
        join_token: Some(join_token.to_string()),
    }
}

/// One simulated host: a heartbeat every `interval` (the first after `phase`), and at once when
/// its assignment changes (reporting every assigned workload as running). Returns when it last
/// sent a heartbeat.
async fn simulate_host(
    client: async_nats::Client,
    subject: String,
    (mut hb, key, macs): (Heartbeat, KeyPair, Vec<MacKey>),
    (phase, interval): (Duration, Duration),
    mut assignments: mpsc::UnboundedReceiver<Assignment>,
    silence: CancellationToken,
) -> Option<Instant> {
    tokio::select! {
        () = silence.cancelled() => return None,
        () = tokio::time::sleep(phase) => {}
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            biased;
            () = silence.cancelled() => return last,
            Some(mut a) = assignments.recv() => {
                while let Ok(newer) = assignments.try_recv() {
                    a = newer;
                }
                hb.assignment_revision = a.revision;
                hb.workloads = a
                    .workloads
                    .iter()
                    .map(|w| WorkloadStatus {
                        app: w.app.clone(),
                        app_version: w.app_version.clone(),
                        component: w.component.clone(),
                        image: w.image.clone(),
                        instances: w.instances,
                        state: WorkloadState::Running,
                        message: String::new(),
                        reason: None,
                        endpoint: None,
                        failures: 0,
                    })
                    .collect();
            }
            _ = tick.tick() => {}
        }
        hb.sent_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if client
            .publish(subject.clone(), seal_heartbeat(&hb, &key, &macs).into())
            .await
            .is_ok()
        {
            last = Some(Instant::now());
        }
    }
}
