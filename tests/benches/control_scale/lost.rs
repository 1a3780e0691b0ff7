//! Part 1's lost hosts: in rounds, simulated hosts holding instances stop heartbeating (as a
//! crash would: no last "stopping" heartbeat), and the bench times each host's last heartbeat
//! to the control plane's `host-lost` event and to all its instances written into other hosts'
//! assignments.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lattice_protocol::assignment::Assignment;
use lattice_protocol::envelope;
use lattice_protocol::messages::{Event, EventKind};
use lattice_protocol::names::{ComponentName, HostId};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::sim::Fleet;
use super::{APP, LOST_PER_ROUND, LOST_ROUNDS, ms, opt_ms};

/// One lost host's figures.
pub struct LostFigures {
    /// Last heartbeat -> the control plane's `host-lost` event.
    pub detected: Option<Duration>,
    /// Last heartbeat -> every instance it held is in another host's assignment.
    pub replaced: Option<Duration>,
}

/// The app's components in assignment `a`.
pub fn app_components(a: &Assignment) -> BTreeSet<ComponentName> {
    a.workloads
        .iter()
        .filter(|w| w.app.as_str() == APP)
        .map(|w| w.component.clone())
        .collect()
}

/// [`LOST_ROUNDS`] rounds of [`LOST_PER_ROUND`] hosts silenced; `events` is a subscription to
/// the lattice's events, `tolerance` the control plane's `host_tolerance` (printed figures are
/// also given minus it).
pub async fn lost_hosts(
    fleet: &mut Fleet,
    mut events: async_nats::Subscriber,
    tolerance: Duration,
) -> anyhow::Result<Vec<LostFigures>> {
    // Who the control plane called lost, and when this process saw it say so.
    let (lost_tx, mut lost_rx) = mpsc::unbounded_channel::<(HostId, Instant)>();
    let _events = AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(msg) = events.next().await {
            if let Ok(event) = envelope::decode::<Event>(&msg.payload)
                && event.kind == EventKind::HostLost
                && let Some(host) = event.host
            {
                let _ = lost_tx.send((host, Instant::now()));
            }
        }
    }));
    let mut lost = Vec::new();
    let mut silenced: BTreeSet<HostId> = BTreeSet::new();
    for round in 1..=LOST_ROUNDS {
        // Let the previous round's moves settle, so each round starts from a steady state.
        tokio::time::sleep(Duration::from_secs(1)).await;
        fleet.drain();
        let victims: Vec<(HostId, BTreeSet<ComponentName>)> = fleet
            .latest
            .iter()
            .filter(|(h, _)| !silenced.contains(*h))
            .map(|(h, s)| (h.clone(), app_components(&s.assignment)))
            .filter(|(_, cs)| !cs.is_empty())
            .take(LOST_PER_ROUND)
            .collect();
        let mut last_beat = BTreeMap::new();
        for (host, _) in &victims {
            silenced.insert(host.clone());
            last_beat.insert(host.clone(), fleet.silence(host).await);
        }
        let replaced = wait_replaced(fleet, &victims, &silenced).await?;
        let mut lost_at = BTreeMap::new();
        while let Ok((host, at)) = lost_rx.try_recv() {
            lost_at.entry(host).or_insert(at);
        }
        println!("round {round}: {} hosts silenced", victims.len());
        for (host, components) in &victims {
            let Some(Some(last)) = last_beat.get(host).copied() else {
                continue;
            };
            let f = LostFigures {
                replaced: replaced
                    .get(host)
                    .map(|t| t.saturating_duration_since(last)),
                detected: lost_at.get(host).map(|t| t.saturating_duration_since(last)),
            };
            println!(
                "  host {}..: {} instance(s); last heartbeat -> declared lost {}, -> re-placed {} (minus tolerance: {})",
                &host.as_str()[..8],
                components.len(),
                opt_ms(f.detected),
                opt_ms(f.replaced),
                f.replaced.map_or("-".to_string(), |r| format!(
                    "{:.0} ms",
                    ms(r) - ms(tolerance)
                ))
            );
            lost.push(f);
        }
    }
    Ok(lost)
}

/// Waits until every victim's instances are in hosts' assignments that are not silenced;
/// returns when each victim's were (a victim missing: not within the fleet's wait).
async fn wait_replaced(
    fleet: &mut Fleet,
    victims: &[(HostId, BTreeSet<ComponentName>)],
    silenced: &BTreeSet<HostId>,
) -> anyhow::Result<BTreeMap<HostId, Instant>> {
    let mut pending: BTreeMap<HostId, BTreeSet<ComponentName>> = victims.iter().cloned().collect();
    let mut replaced: BTreeMap<HostId, Instant> = BTreeMap::new();
    fleet
        .until(|latest, at| {
            pending.retain(|host, components| {
                let moved = latest
                    .iter()
                    .filter(|(h, _)| !silenced.contains(*h))
                    .flat_map(|(_, s)| s.assignment.workloads.iter())
                    .filter(|w| w.app.as_str() == APP && components.contains(&w.component))
                    .count();
                let done = moved >= components.len();
                if done {
                    replaced.insert(host.clone(), at);
                }
                !done
            });
            pending.is_empty()
        })
        .await?;
    Ok(replaced)
}
