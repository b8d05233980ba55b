//! Wall-clock time, injected. The embedded store decides lease expiry itself (etcd's server does it for the
//! etcd store), so its TTL tests would have to sleep unless time is a parameter: [`ManualClock`] lets a test
//! jump past a TTL in an instant. Milliseconds since the Unix epoch, because that is what leases publish
//! (`expires_at_ms`) and what several processes sharing one database file can agree on.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Starts at the current system time, so leases still look plausible to a human reading them.
    pub fn new() -> Self {
        Self(Arc::new(AtomicU64::new(SystemClock.now_ms())))
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Converts a TTL to milliseconds, at least 1 so a lease never starts out expired.
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let c = ManualClock::new();
        let c2 = c.clone();
        let t0 = c.now_ms();
        assert!(t0.abs_diff(SystemClock.now_ms()) < 60_000);
        c.advance(Duration::from_secs(90));
        assert_eq!(c2.now_ms(), t0 + 90_000);
    }
}
