//! The relay that carries code emails, as the key server last found it. A code that cannot be
//! sent is said at once rather than promised, and the status page and `/metrics` show the relay.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use clock::SharedClock;

/// What the last check or send said about the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayState {
    /// Not checked yet.
    Unchecked,
    /// It answered (connected, greeted, took EHLO and NOOP, or took a message).
    Reachable,
    /// It did not answer, with why.
    Unreachable(String),
}

/// The last word on the relay, and when it was had (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCheck {
    /// Reachable or not.
    pub state: RelayState,
    /// When it was checked, if it was.
    pub at: Option<u64>,
}

/// The relay's health, shared by the key server (which checks it and sends through it) and the
/// pages that report it.
#[derive(Debug)]
pub struct RelayHealth {
    address: String,
    last: Mutex<RelayCheck>,
    failed_sends: AtomicU64,
    clock: SharedClock,
}

impl RelayHealth {
    /// The health of the relay at `address` (`host:port`), not checked yet.
    pub fn new(address: String, clock: SharedClock) -> Self {
        RelayHealth {
            clock,
            address,
            last: Mutex::new(RelayCheck {
                state: RelayState::Unchecked,
                at: None,
            }),
            failed_sends: AtomicU64::new(0),
        }
    }

    /// `host:port`, as configured in `keyserver.mail`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The last check.
    pub fn last(&self) -> RelayCheck {
        match self.last.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Code emails that could not be sent since the start.
    pub fn failed_sends(&self) -> u64 {
        self.failed_sends.load(Ordering::Relaxed)
    }

    pub(crate) fn count_failed_send(&self) {
        self.failed_sends.fetch_add(1, Ordering::Relaxed);
    }

    /// Records what a check or a send found; a change after the first check is logged (the
    /// first is for whoever checks at start, who knows the setting's name).
    pub(crate) fn record(&self, state: RelayState) {
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match (&last.state, &state) {
            (RelayState::Reachable, RelayState::Unreachable(why)) => tracing::warn!(
                relay = %self.address,
                error = %why,
                "the relay for code emails no longer answers: recipients cannot get sign-in codes"
            ),
            (RelayState::Unreachable(_), RelayState::Reachable) => {
                tracing::info!(relay = %self.address, "the relay for code emails answers again");
            }
            _ => {}
        }
        *last = RelayCheck {
            state,
            at: Some(self.clock.now()),
        };
    }
}
