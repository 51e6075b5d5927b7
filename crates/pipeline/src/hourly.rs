//! Counts of events per key over the last hour, in memory: the per-person limits on
//! forward-to-decrypt answers and on messages sent from the reader.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Keys beyond which those with no event in the hour are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// Events per key in a sliding hour.
#[derive(Debug, Default)]
pub struct Hourly(Mutex<HashMap<String, VecDeque<u64>>>);

impl Hourly {
    /// Counts an event for `key` at `now` (Unix seconds) and returns true, unless `limit` events
    /// were counted in the hour before, or `elsewhere` were (events recorded somewhere this
    /// count may not have seen, such as the database after a restart).
    pub fn take(&self, key: &str, now: u64, limit: u64, elsewhere: u64) -> bool {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let since = now.saturating_sub(3600);
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, times| times.back().is_some_and(|&t| t > since));
        }
        let times = map.entry(key.to_string()).or_default();
        while times.front().is_some_and(|&t| t <= since) {
            times.pop_front();
        }
        if elsewhere.max(times.len() as u64) >= limit {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_at_most_the_limit_in_an_hour() {
        let h = Hourly::default();
        assert!(h.take("bob", 1000, 2, 0));
        assert!(h.take("bob", 1500, 2, 0));
        assert!(!h.take("bob", 2000, 2, 0), "the third in the hour");
        assert!(
            h.take("carol", 2000, 2, 0),
            "another key is not limited by bob"
        );
        assert!(
            h.take("bob", 4601, 2, 0),
            "an hour after the first, one more"
        );
        assert!(!h.take("bob", 4700, 2, 0));
        assert!(
            !h.take("dave", 4700, 2, 2),
            "events counted elsewhere count"
        );
    }
}
