//! The one clock of Postern. Every part that asks what time it is (the queue's timestamps, the
//! key ring's month, the key server's grants, the pages' sessions, the dates on the mail Postern
//! writes) reads a [`Clock`] it was given, so that one setting moves them all together:
//! `POSTERN_FAKE_NOW` makes `postern serve` run at a chosen time (tests at the end of a month),
//! and crate tests stand still on a [`ManualClock`].

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in seconds since the Unix epoch.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;

    /// The current time as RFC 5322 writes it in `Date:` and `Received:`.
    fn rfc2822(&self) -> String {
        rfc2822(self.now())
    }
}

/// The clock as it is shared between the parts of a process.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock, optionally shifted by a fixed number of seconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock {
    offset: i64,
}

impl SystemClock {
    /// The system clock as it is.
    pub fn new() -> Self {
        SystemClock { offset: 0 }
    }

    /// A clock that reads `at` now and runs on from there at the system clock's pace. For tests
    /// that run Postern at another time (`POSTERN_FAKE_NOW`); never used in production.
    pub fn starting_at(at: u64) -> Self {
        let real = SystemClock::new().now();
        let offset = i128::from(at) - i128::from(real);
        SystemClock {
            offset: i64::try_from(offset).unwrap_or(0),
        }
    }

    /// The shared form of the unshifted system clock.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock::new())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        real.saturating_add_signed(self.offset)
    }
}

/// A clock that stands still until moved: for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `secs`.
    pub fn at(secs: u64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicU64::new(secs)))
    }

    /// Sets the time.
    pub fn set(&self, secs: u64) {
        self.0.store(secs, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `secs` since the Unix epoch as RFC 5322 writes a date, in UTC (`Mon, 07 Dec 2026 22:17:43
/// +0000`).
pub fn rfc2822(secs: u64) -> String {
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc_5322_in_utc() {
        assert_eq!(rfc2822(1_796_681_863), "Mon, 07 Dec 2026 22:17:43 +0000");
        let d = SystemClock::new().rfc2822();
        let parsed =
            time::OffsetDateTime::parse(&d, &time::format_description::well_known::Rfc2822)
                .unwrap();
        assert_eq!(parsed.offset(), time::UtcOffset::UTC);
    }

    #[test]
    fn a_shifted_clock_reads_the_time_it_was_set_to_and_runs_on() {
        let c = SystemClock::starting_at(1_000_000);
        let now = c.now();
        assert!((1_000_000..1_000_010).contains(&now), "{now}");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::at(5);
        assert_eq!(c.now(), 5);
        c.advance(10);
        assert_eq!(c.now(), 15);
        c.set(3);
        assert_eq!(c.now(), 3);
    }
}
