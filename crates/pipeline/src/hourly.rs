//! Counts of events per key over the last hour, in memory: the per-person limits on
//! forward-to-decrypt answers and on messages sent from the reader.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Keys beyond which those with no event in the hour are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// Events per key in a sliding hour.
#[derive(Debug, Default)]
pub struct Hourly(Mutex<HashMap<String, VecDeque<u64>>>);

/// An event counted by [`Hourly::take`]. Dropped, it is given back (what it stood for did not
/// happen); [`Slot::keep`] keeps it counted.
#[derive(Debug)]
#[must_use = "a slot dropped is given back; call keep() once the event happened"]
pub struct Slot<'a> {
    hourly: &'a Hourly,
    key: String,
    at: u64,
    kept: bool,
}

impl Slot<'_> {
    /// The event happened: it stays counted.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut map = self.hourly.lock();
        if let Some(times) = map.get_mut(&self.key)
            && let Some(i) = times.iter().rposition(|&t| t == self.at)
        {
            times.remove(i);
        }
    }
}

impl Hourly {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, VecDeque<u64>>> {
        match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counts an event for `key` at `now` (Unix seconds), unless `limit` events were counted
    /// in the hour before: those counted here, plus `before` counted elsewhere that this count
    /// has not seen (the database's, from before the process started).
    pub fn take(&self, key: &str, now: u64, limit: u64, before: u64) -> Option<Slot<'_>> {
        let mut map = self.lock();
        let since = now.saturating_sub(3600);
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, times| times.back().is_some_and(|&t| t > since));
        }
        let times = map.entry(key.to_string()).or_default();
        // Callers read the clock before awaiting, so times may arrive out of order.
        times.retain(|&t| t > since);
        if before.saturating_add(times.len() as u64) >= limit {
            return None;
        }
        times.push_back(now);
        Some(Slot {
            hourly: self,
            key: key.to_string(),
            at: now,
            kept: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn took(h: &Hourly, key: &str, now: u64, limit: u64, before: u64) -> bool {
        h.take(key, now, limit, before).map(Slot::keep).is_some()
    }

    #[test]
    fn each_key_gets_at_most_the_limit_in_an_hour() {
        let h = Hourly::default();
        assert!(took(&h, "bob", 1000, 2, 0));
        assert!(took(&h, "bob", 1500, 2, 0));
        assert!(!took(&h, "bob", 2000, 2, 0), "the third in the hour");
        assert!(
            took(&h, "carol", 2000, 2, 0),
            "another key is not limited by bob"
        );
        assert!(
            took(&h, "bob", 4601, 2, 0),
            "an hour after the first, one more"
        );
        assert!(!took(&h, "bob", 4700, 2, 0));
    }

    #[test]
    fn events_counted_before_add_to_those_counted_here() {
        let h = Hourly::default();
        assert!(!took(&h, "dave", 100, 2, 2), "two from before the restart");
        assert!(took(&h, "erin", 100, 3, 2));
        assert!(
            !took(&h, "erin", 101, 3, 2),
            "two from before and one here make three"
        );
    }

    #[test]
    fn times_taken_out_of_order_leave_the_hour_on_time() {
        let h = Hourly::default();
        assert!(took(&h, "bob", 5000, 2, 0));
        assert!(took(&h, "bob", 1000, 2, 0), "read before an await");
        assert!(
            took(&h, "bob", 4700, 2, 0),
            "the one at 1000 is over an hour old, whatever its place"
        );
        assert!(!took(&h, "bob", 4701, 2, 0));
    }

    #[test]
    fn a_slot_not_kept_is_given_back() {
        let h = Hourly::default();
        let slot = h.take("bob", 1000, 1, 0);
        assert!(slot.is_some());
        assert!(h.take("bob", 1001, 1, 0).is_none(), "the slot is held");
        drop(slot);
        assert!(
            took(&h, "bob", 1002, 1, 0),
            "the answer failed, so the slot came back"
        );
        assert!(!took(&h, "bob", 1003, 1, 0));
    }
}
