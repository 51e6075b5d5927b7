//! Time as the key server sees it. Tests replace the clock to stand at the end of a month.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in seconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock, moved by the process-wide offset (zero unless a test sets one with
/// [`set_offset`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

static OFFSET: AtomicI64 = AtomicI64::new(0);

/// Moves [`SystemClock`] by `secs` for the whole process. For tests that run Postern at the end
/// of a month (`POSTERN_FAKE_NOW`); never set in production.
pub fn set_offset(secs: i64) {
    OFFSET.store(secs, Ordering::SeqCst);
}

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        real.saturating_add_signed(OFFSET.load(Ordering::SeqCst))
    }
}

/// The current month by [`SystemClock`] (for the envelope caches).
pub fn current_epoch() -> envelope::Epoch {
    envelope::Epoch::from_unix(SystemClock.now())
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
