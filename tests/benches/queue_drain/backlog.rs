//! A host's outbox holding a backlog of queued calls, as after a long outage: shared by the
//! `queue_drain` bench (which forwards and delivers it) and the `cold_start` bench (a host
//! restarted offline with it).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lattice_host::queue::outbox::{Outbox, OutboxConfig, OutboxEntry};
use lattice_protocol::envelope;
use lattice_protocol::names::LatticeName;
use lattice_protocol::queue::{Queued, QueuedItem};
use lattice_protocol::rpc::RpcCall;
use lattice_tests::queued::names::{call_lane, call_subject};

/// Concurrent appenders filling the outbox (setup, not timed).
const FILLERS: usize = 256;
const DAY: Duration = Duration::from_secs(86_400);

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The payload of queued call `i` to `app`'s greeter, as `Queue::enqueue` encodes it.
pub fn payload(lattice: &LatticeName, app: &str, i: usize) -> Vec<u8> {
    let in_a_day = unix_ms(SystemTime::now() + DAY);
    envelope::encode(&Queued {
        max_attempts: 5,
        expires_at_ms: in_a_day,
        subject: call_subject(lattice, app, "greeter"),
        item: QueuedItem::Call(RpcCall {
            interface: "example:greeter/notifier"
                .parse()
                .expect("an interface name"),
            function: "notify".into(),
            args: rmp_serde::to_vec(&(format!("reading-{i:08}."),)).expect("encodes"),
            deadline_ms: in_a_day,
            caller: "bench/client".into(),
        }),
        trace: None,
    })
}

/// The link (stream key) of the calls from `app`'s client to its greeter.
pub fn link(app: &str) -> String {
    format!("{app}/client -> greeter")
}

/// The one lane those calls travel in, as the sender's outbox names it.
pub fn lane(lattice: &LatticeName, app: &str) -> String {
    call_lane(lattice, &link(app))
}

/// Appends `n` queued calls from `app`'s client to its greeter (one lane) to the outbox at
/// `path`, as the guest's calls would have been during an outage.
pub async fn fill(path: &Path, lattice: &LatticeName, app: &str, n: usize) -> anyhow::Result<()> {
    let outbox = Outbox::open(
        path,
        OutboxConfig {
            capacity_entries: n as u64 + 1,
            capacity_bytes: u64::MAX,
            ..OutboxConfig::default()
        },
    )?;
    let mut tasks = Vec::new();
    for t in 0..FILLERS {
        let (outbox, lattice, app) = (outbox.clone(), lattice.clone(), app.to_string());
        tasks.push(tokio::spawn(async move {
            let (key, lane) = (link(&app), lane(&lattice, &app));
            for i in (t..n).step_by(FILLERS) {
                let entry = OutboxEntry::new(key.as_str(), payload(&lattice, &app, i), DAY)
                    .in_lane(lane.as_str());
                outbox.append(entry).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    anyhow::ensure!(
        outbox.stats().pending == n as u64,
        "the outbox holds every entry"
    );
    Ok(())
}
