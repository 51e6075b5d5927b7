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
        // A poisoned lock means a panic elsewhere: refuse rather than stop limiting.
        let Ok(mut map) = self.events.lock() else {
            return Err(self.window.max(1));
        };
        if map.len() >= SWEEP_AT && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|&t| t + window > now));
            if map.len() >= SWEEP_AT {
                // Under a flood of distinct clients, memory stays bounded and newcomers wait.
                return Err(self.window.max(1));
            }
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

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_eq!(client_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
