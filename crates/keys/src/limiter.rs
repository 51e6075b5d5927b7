//! Sliding-window rate limits kept in memory (per address, per client IP). A restart forgets
//! them; the durable defences (code attempts, address locks) live in the database.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// At most `limit` events per `window` seconds for each key.
#[derive(Debug)]
pub struct Limiter {
    limit: usize,
    window: u64,
    events: Mutex<HashMap<String, VecDeque<u64>>>,
}

/// Keys kept before a sweep of idle ones.
const SWEEP_AT: usize = 100_000;

impl Limiter {
    /// A limiter of `limit` events per `window` seconds (a limit of 0 allows nothing).
    pub fn new(limit: u32, window: u64) -> Self {
        Limiter {
            limit: limit as usize,
            window,
            events: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an event for `key` at `now`; `Err(seconds)` says how long until one is allowed.
    pub fn check(&self, key: &str, now: u64) -> Result<(), u64> {
        let Ok(mut map) = self.events.lock() else {
            return Ok(());
        };
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|&t| t + window > now));
        }
        let queue = map.entry(key.to_string()).or_default();
        while queue.front().is_some_and(|&t| t + self.window <= now) {
            queue.pop_front();
        }
        if queue.len() >= self.limit {
            let oldest = queue.front().copied().unwrap_or(now);
            return Err((oldest + self.window).saturating_sub(now).max(1));
        }
        queue.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit_then_says_when() {
        let l = Limiter::new(2, 60);
        assert_eq!(l.check("a", 100), Ok(()));
        assert_eq!(l.check("a", 110), Ok(()));
        assert_eq!(l.check("a", 120), Err(40));
        assert_eq!(l.check("b", 120), Ok(()));
        assert_eq!(l.check("a", 160), Ok(()));
    }
}
