//! The one retry delay of the host: exponential, capped, reset after a healthy run.
//!
//! Every loop that retries something that failed (watching the assignment, supervising a
//! provider process, consuming a queue, forwarding the outbox, retrying a queued item) takes
//! its delays from a [`Backoff`], so they all grow and cap the same way.
//!
//! ```
//! use std::time::Duration;
//! use lattice_host::backoff::Backoff;
//! let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
//! assert_eq!(backoff.next_delay(), Duration::from_millis(200));
//! assert_eq!(backoff.next_delay(), Duration::from_millis(400));
//! backoff.reset();
//! assert_eq!(backoff.next_delay(), Duration::from_millis(200));
//! ```

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Delays that double from `min` up to `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

/// How a [`Backoff::wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The delay passed: try again.
    Elapsed,
    /// The token was cancelled first: stop trying.
    Cancelled,
}

impl Backoff {
    /// Delays from `min`, doubling, never above `max`.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait now; the one after it is twice as long (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next.saturating_mul(2)).min(self.max);
        delay
    }

    /// Starts again from the shortest delay (after a success, or a run that lasted).
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay before attempt `attempt` (0 for the first retry), without keeping state: for
    /// retries counted elsewhere (a queued item's delivery count).
    pub fn nth(&self, attempt: u32) -> Duration {
        self.min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max)
    }

    /// Sleeps for the next delay, or less if `stop` is cancelled meanwhile.
    pub async fn wait(&mut self, stop: &CancellationToken) -> Waited {
        let delay = self.next_delay();
        tokio::select! {
            () = stop.cancelled() => Waited::Cancelled,
            () = tokio::time::sleep(delay) => Waited::Elapsed,
        }
    }

    /// Sleeps for the next delay.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn nth_matches_the_sequence_and_never_overflows() {
        let b = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut s = b.clone();
        for attempt in 0..10 {
            assert_eq!(b.nth(attempt), s.next_delay());
        }
        assert_eq!(b.nth(u32::MAX), Duration::from_secs(30));
    }
}
