//! Wall clocks and their skew: gateways' clocks drift, and a host may run a minute off the hub.
//!
//! Lattice judges nothing that decides *who may act* by comparing two machines' wall clocks:
//! leases ([`crate::lease`]) are judged on the reader's monotonic clock. Where a wall-clock
//! time crosses machines (a signed assignment's expiry, a queued item's `ttl`, a join token),
//! its reader allows [`MAX_SKEW`] of difference before calling it expired. A host measures its
//! offset from the hub (the server's timestamp on a KV entry it reads, against its own clock) and
//! reports it in its heartbeat; beyond [`SKEW_WARNING`] it warns.
//!
//! [`Clock`] is the wall clock a piece of code reads, so that a test can run one shifted.
//!
//! ```
//! use lattice_protocol::clock::Clock;
//! let ahead = Clock::offset_by_ms(60_000);
//! assert!(ahead.now_ms() >= Clock::system().now_ms() + 59_000);
//! ```

use std::time::{Duration, SystemTime};

/// The largest skew between two clocks of a lattice that Lattice tolerates without refusing or
/// expiring anything early.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// The largest `ttl` a queued link may ask for (the manifest refuses more): the queue stream
/// keeps messages longer than this, so nothing queued ages out of the stream before its `ttl`.
pub const MAX_QUEUED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A skew beyond this is worth an operator's attention: a host says so in its heartbeat and log.
pub const SKEW_WARNING: Duration = Duration::from_secs(30);

/// A wall clock: the system's, or (in tests) the system's shifted by a fixed offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    /// The system's wall clock.
    pub const fn system() -> Self {
        Self { offset_ms: 0 }
    }

    /// The system's clock shifted by `offset_ms` (positive: ahead), as a machine whose clock is
    /// off would read it.
    pub const fn offset_by_ms(offset_ms: i64) -> Self {
        Self { offset_ms }
    }

    /// Unix milliseconds now, by this clock.
    pub fn now_ms(&self) -> u64 {
        let system = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        system.saturating_add_signed(self.offset_ms)
    }
}

/// How far `local_ms` (this machine's clock) is ahead of `server_ms` (the hub's, read at about
/// the same moment): positive when the local clock is ahead.
pub fn offset_ms(local_ms: u64, server_ms: u64) -> i64 {
    let diff = i128::from(local_ms) - i128::from(server_ms);
    i64::try_from(diff).unwrap_or(if diff > 0 { i64::MAX } else { i64::MIN })
}

/// Whether `offset_ms` is large enough to warn about.
pub fn is_worth_warning(offset_ms: i64) -> bool {
    offset_ms.unsigned_abs() > SKEW_WARNING.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_clock_reads_shifted_both_ways() {
        let now = Clock::system().now_ms();
        let ahead = Clock::offset_by_ms(60_000).now_ms();
        let behind = Clock::offset_by_ms(-60_000).now_ms();
        assert!(
            ahead >= now + 60_000 && ahead < now + 61_000,
            "{ahead} vs {now}"
        );
        assert!(
            behind + 60_000 >= now && behind + 59_000 < now,
            "{behind} vs {now}"
        );
    }

    #[test]
    fn offsets_have_the_sign_of_the_local_clock_and_warn_past_the_threshold() {
        assert_eq!(offset_ms(1_000, 400), 600);
        assert_eq!(offset_ms(400, 1_000), -600);
        assert!(!is_worth_warning(-30_000));
        assert!(is_worth_warning(30_001));
        assert!(is_worth_warning(-45_000));
    }
}
