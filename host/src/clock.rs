//! The host's view of time: its own wall clock and how far that is from the hub's.
//!
//! Gateways' clocks drift; Lattice tolerates a skew of up to [`MAX_SKEW`] (see
//! [`lattice_protocol::clock`]). The host measures its offset from the hub by writing a probe to
//! its own key in the lattice's `clocks` bucket and reading back the server's timestamp of that
//! write ([`measure`]): the server stamped it between the request and the reply, so the offset
//! is known to within half a round trip. [`keep_measuring`] does so every [`PROBE_EVERY`]; the
//! heartbeat reports the last offset, and the host warns when it passes [`SKEW_WARNING`](lattice_protocol::clock::SKEW_WARNING).
//!
//! [`HubClock::hub_now_ms`] is the host's clock corrected by that offset: queued items' expiry
//! is stamped and judged in it, so a host whose clock is off neither gives its items a longer
//! life nor sees another's expire early.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use lattice_protocol::clock::{Clock, MAX_SKEW, is_worth_warning, offset_ms};
use lattice_protocol::jetstream::{Bucket, Storage, open_kv};
use lattice_protocol::names::{HostId, LatticeName};
use lattice_protocol::subject::Buckets;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often the host measures its offset from the hub.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);

/// The host's wall clock and its last measured offset from the hub; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct HubClock {
    local: Clock,
    offset_ms: Arc<AtomicI64>,
}

impl HubClock {
    /// A hub clock over `local` (the system's, or a test's shifted one), offset not measured yet.
    pub fn new(local: Clock) -> Self {
        Self {
            local,
            offset_ms: Arc::default(),
        }
    }

    /// Unix milliseconds by the host's own clock.
    pub fn local_now_ms(&self) -> u64 {
        self.local.now_ms()
    }

    /// Unix milliseconds by the hub's clock, as far as the host knows it (its own clock until
    /// the first measurement).
    pub fn hub_now_ms(&self) -> u64 {
        self.local
            .now_ms()
            .saturating_add_signed(self.offset_ms().saturating_neg())
    }

    /// How far the host's clock is ahead of the hub's (negative: behind), last measured.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    fn set_offset_ms(&self, offset: i64) {
        self.offset_ms.store(offset, Ordering::Relaxed);
    }
}

/// Opens the lattice's `clocks` bucket (a probe per host, kept a day).
pub async fn clocks_bucket(
    js: &jetstream::Context,
    lattice: &LatticeName,
    storage: &Storage,
) -> anyhow::Result<kv::Store> {
    let bucket = Bucket {
        name: &Buckets::new(lattice).clocks(),
        history: 1,
        max_age: Duration::from_secs(24 * 3600),
        description: "per host, its last clock probe: the server's time of it is the hub's",
    };
    open_kv(js, bucket, storage).await
}

/// Measures how far `clock` is ahead of the hub's: writes a probe to `host`'s key and compares
/// the server's timestamp of that write with the middle of the round trip.
pub async fn measure(store: &kv::Store, host: &HostId, clock: &HubClock) -> anyhow::Result<i64> {
    let before = clock.local_now_ms();
    let revision = store.put(host.as_str(), before.to_string().into()).await?;
    let after = clock.local_now_ms();
    let entry = store
        .entry(host.as_str())
        .await?
        .filter(|e| e.revision == revision)
        .ok_or_else(|| anyhow::anyhow!("the clock probe was replaced before it was read"))?;
    let server_ms = u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Ok(offset_ms(before + (after - before) / 2, server_ms))
}

/// Measures the host's offset from the hub every [`PROBE_EVERY`] until `stop`, keeping the last
/// in `clock`; warns when the offset passes [`SKEW_WARNING`](lattice_protocol::clock::SKEW_WARNING) (and says when it is back).
pub async fn keep_measuring(
    js: jetstream::Context,
    lattice: LatticeName,
    storage: Storage,
    host: HostId,
    clock: HubClock,
    stop: CancellationToken,
) {
    let mut store = None;
    let mut warned = false;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if store.is_none() {
            match clocks_bucket(&js, &lattice, &storage).await {
                Ok(s) => store = Some(s),
                Err(e) => {
                    debug!(error = %format!("{e:#}"), "cannot open the clocks bucket; will retry");
                    continue;
                }
            }
        }
        let Some(s) = &store else { continue };
        let offset = match measure(s, &host, &clock).await {
            Ok(offset) => offset,
            Err(e) => {
                debug!(error = %format!("{e:#}"), "measuring the clock's offset failed; will retry");
                continue;
            }
        };
        clock.set_offset_ms(offset);
        match (is_worth_warning(offset), warned) {
            (true, false) => warn!(
                offset_ms = offset,
                "this host's clock is {} the hub's by {} s (Lattice tolerates {} s): set it right, e.g. with NTP",
                if offset > 0 { "ahead of" } else { "behind" },
                offset.unsigned_abs() / 1000,
                MAX_SKEW.as_secs(),
            ),
            (false, true) => info!(
                offset_ms = offset,
                "this host's clock agrees with the hub's again"
            ),
            _ => {}
        }
        warned = is_worth_warning(offset);
        debug!(
            offset_ms = offset,
            "measured the clock's offset from the hub"
        );
    }
}
