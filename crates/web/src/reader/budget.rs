//! The reader's memory budget. Anyone can post a sealed message, so without a bound a few
//! large posts would take the gateway's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;

use crate::page::PageError;

/// Bytes the reader holds in memory across every session: the sealed messages posted to it
/// and the messages opened. Past it, a post is refused with 503 until sessions end.
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

/// A share of the [`Budget`], given back when its letter or opened message is dropped (with its
/// session, when that ends).
pub(crate) struct Ticket {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    /// A budget of `limit` bytes, none of them taken.
    pub(super) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// A share of `bytes`, or none when that would pass the limit.
    pub(super) fn take(self: &Arc<Self>, bytes: usize) -> Option<Ticket> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .ok()
            .map(|_| Ticket {
                budget: self.clone(),
                bytes,
            })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// The answer when the budget is spent.
pub(super) fn busy() -> PageError {
    PageError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The reader is busy",
        "The gateway is holding as many messages as it may just now. Try again in a few minutes.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_budget_refuses_past_its_limit_and_takes_back_what_is_dropped() {
        let budget = Budget::new(100);
        let a = budget.take(60);
        assert!(a.is_some());
        assert!(budget.take(41).is_none(), "over the limit");
        let b = budget.take(40);
        assert!(b.is_some(), "exactly at the limit");
        drop(a);
        assert!(budget.take(60).is_some(), "a dropped share is given back");
        drop(b);
        assert_eq!(budget.used.load(Ordering::SeqCst), 0);
    }
}
