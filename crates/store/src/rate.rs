//! Rate limits: how many events a key (a client address, a person, a login name) may have in a
//! sliding window. The key server limits logins, code emails and key requests with them; the
//! console limits failed sign-ins; the gateway limits forward-to-decrypt answers and the reader
//! the messages a person sends.
//!
//! The counts are kept in this process's memory, so a restart forgets them; the durable defences
//! (code attempts, address locks) are in the database. The methods are async so that a shared
//! back end (the database of a cluster) can keep the counts behind the same calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Keys kept before a sweep of those with no event in the window.
const SWEEP_AT: usize = 100_000;

/// Events per key in a sliding window of a fixed length.
#[derive(Debug)]
pub struct RateLimit {
    window: u64,
    events: Mutex<HashMap<String, VecDeque<u64>>>,
}

/// An event counted by [`RateLimit::take`]. Dropped, it is given back (what it stood for did
/// not happen); [`Slot::keep`] keeps it counted.
#[derive(Debug)]
#[must_use = "a slot dropped is given back; call keep() once the event happened"]
pub struct Slot<'a> {
    limit: &'a RateLimit,
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
        let mut map = self.limit.lock();
        if let Some(times) = map.get_mut(&self.key)
            && let Some(i) = times.iter().rposition(|&t| t == self.at)
        {
            times.remove(i);
        }
    }
}

impl RateLimit {
    /// Counts over windows of `window` seconds.
    pub fn new(window: u64) -> Self {
        RateLimit {
            window,
            events: Mutex::new(HashMap::new()),
        }
    }

    /// Counts over the last hour.
    pub fn hourly() -> Self {
        RateLimit::new(3600)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, VecDeque<u64>>> {
        // What it guards stays meaningful after a panic elsewhere (counts of times).
        match self.events.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counts an event for `key` at `now` (Unix seconds) unless `limit` events were counted in
    /// the window before it: those counted here, plus `before` counted elsewhere that this count
    /// has not seen (the database's, from before the process started). `Err` says how many
    /// seconds until one is allowed. A limit of 0 allows nothing.
    pub async fn take(
        &self,
        key: &str,
        now: u64,
        limit: u64,
        before: u64,
    ) -> Result<Slot<'_>, u64> {
        let mut map = self.lock();
        let window = self.window;
        let since = now.saturating_sub(window);
        if map.len() >= SWEEP_AT && !map.contains_key(key) {
            map.retain(|_, times| times.iter().any(|&t| t > since));
            if map.len() >= SWEEP_AT {
                // Under a flood of distinct keys, memory stays bounded and newcomers wait.
                return Err(window.max(1));
            }
        }
        let times = map.entry(key.to_string()).or_default();
        // Callers read the clock before awaiting, so times may arrive out of order.
        times.retain(|&t| t > since);
        if before.saturating_add(times.len() as u64) >= limit {
            let oldest = times.iter().copied().min().unwrap_or(now);
            return Err((oldest + window).saturating_sub(now).max(1));
        }
        times.push_back(now);
        Ok(Slot {
            limit: self,
            key: key.to_string(),
            at: now,
            kept: false,
        })
    }

    /// Counts an event for `key` at `now` and keeps it, unless `limit` were counted in the
    /// window; `Err` says how many seconds until one is allowed.
    pub async fn check(&self, key: &str, now: u64, limit: u64) -> Result<(), u64> {
        self.take(key, now, limit, 0).await.map(Slot::keep)
    }
}

/// The key a client is limited by: its IPv4 address, or its IPv6 /64 (one subscriber's network,
/// which hands out addresses freely).
pub fn client_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn took(h: &RateLimit, key: &str, now: u64, limit: u64, before: u64) -> bool {
        h.take(key, now, limit, before)
            .await
            .map(Slot::keep)
            .is_ok()
    }

    #[tokio::test]
    async fn allows_up_to_the_limit_then_says_when() {
        let l = RateLimit::new(60);
        assert_eq!(l.check("a", 100, 2).await, Ok(()));
        assert_eq!(l.check("a", 110, 2).await, Ok(()));
        assert_eq!(l.check("a", 120, 2).await, Err(40));
        assert_eq!(l.check("b", 120, 2).await, Ok(()));
        assert_eq!(l.check("a", 160, 2).await, Ok(()));
        assert!(
            l.check("c", 100, 0).await.is_err(),
            "a limit of 0 allows nothing"
        );
    }

    #[tokio::test]
    async fn each_key_gets_at_most_the_limit_in_an_hour() {
        let h = RateLimit::hourly();
        assert!(took(&h, "bob", 1000, 2, 0).await);
        assert!(took(&h, "bob", 1500, 2, 0).await);
        assert!(!took(&h, "bob", 2000, 2, 0).await, "the third in the hour");
        assert!(
            took(&h, "carol", 2000, 2, 0).await,
            "another key is not limited by bob"
        );
        assert!(
            took(&h, "bob", 4601, 2, 0).await,
            "an hour after the first, one more"
        );
        assert!(!took(&h, "bob", 4700, 2, 0).await);
    }

    #[tokio::test]
    async fn events_counted_before_add_to_those_counted_here() {
        let h = RateLimit::hourly();
        assert!(
            !took(&h, "dave", 100, 2, 2).await,
            "two from before the restart"
        );
        assert!(took(&h, "erin", 100, 3, 2).await);
        assert!(
            !took(&h, "erin", 101, 3, 2).await,
            "two from before and one here make three"
        );
    }

    #[tokio::test]
    async fn times_taken_out_of_order_leave_the_window_on_time() {
        let h = RateLimit::hourly();
        assert!(took(&h, "bob", 5000, 2, 0).await);
        assert!(took(&h, "bob", 1000, 2, 0).await, "read before an await");
        assert!(
            took(&h, "bob", 4700, 2, 0).await,
            "the one at 1000 is over an hour old, whatever its place"
        );
        assert!(!took(&h, "bob", 4701, 2, 0).await);
    }

    #[tokio::test]
    async fn a_slot_not_kept_is_given_back() {
        let h = RateLimit::hourly();
        let slot = h.take("bob", 1000, 1, 0).await;
        assert!(slot.is_ok());
        assert!(h.take("bob", 1001, 1, 0).await.is_err(), "the slot is held");
        drop(slot);
        assert!(
            took(&h, "bob", 1002, 1, 0).await,
            "the answer failed, so the slot came back"
        );
        assert!(!took(&h, "bob", 1003, 1, 0).await);
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_eq!(client_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
