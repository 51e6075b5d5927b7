//! Sessions kept in memory: each expires after a time without use and after a fixed lifetime,
//! and the oldest are dropped when there are too many. A restart ends every session, which is
//! what a person signed in to read one message or an administrator expects of a gateway restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::security::random_token;

struct Entry<T> {
    value: Arc<Mutex<T>>,
    created: u64,
    used: u64,
}

/// Sessions of one kind (reader or console).
pub struct Sessions<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
    idle_secs: u64,
    lifetime_secs: u64,
    max: usize,
}

impl<T> Sessions<T> {
    /// Sessions ending after `idle_secs` without a request or `lifetime_secs` after they began;
    /// at most `max` at once.
    pub fn new(idle_secs: u64, lifetime_secs: u64, max: usize) -> Self {
        Sessions {
            entries: Mutex::new(HashMap::new()),
            idle_secs,
            lifetime_secs,
            max: max.max(1),
        }
    }

    /// Starts a session; returns its id.
    pub fn start(&self, value: T, now: u64) -> String {
        let id = random_token();
        let Ok(mut map) = self.entries.lock() else {
            return id;
        };
        map.retain(|_, e| self.alive(e, now));
        while map.len() >= self.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            id.clone(),
            Entry {
                value: Arc::new(Mutex::new(value)),
                created: now,
                used: now,
            },
        );
        id
    }

    /// Drops the sessions that have ended (and what they hold).
    pub fn sweep(&self, now: u64) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|_, e| self.alive(e, now));
        }
    }

    /// The live session `id`, marked as used now.
    pub fn get(&self, id: &str, now: u64) -> Option<Arc<Mutex<T>>> {
        let mut map = self.entries.lock().ok()?;
        let alive = map.get(id).is_some_and(|e| self.alive(e, now));
        if !alive {
            map.remove(id);
            return None;
        }
        let entry = map.get_mut(id)?;
        entry.used = now;
        Some(entry.value.clone())
    }

    /// Ends session `id`.
    pub fn end(&self, id: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(id);
        }
    }

    /// How many sessions are live.
    pub fn count(&self, now: u64) -> usize {
        self.entries
            .lock()
            .map(|m| m.values().filter(|e| self.alive(e, now)).count())
            .unwrap_or(0)
    }

    fn alive(&self, e: &Entry<T>, now: u64) -> bool {
        now.saturating_sub(e.used) < self.idle_secs
            && now.saturating_sub(e.created) < self.lifetime_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_old() {
        let s = Sessions::new(10, 100, 10);
        let id = s.start(1u8, 0);
        assert!(s.get(&id, 9).is_some());
        assert!(s.get(&id, 18).is_some(), "use keeps it alive");
        assert!(s.get(&id, 29).is_none(), "idle too long");
        let id = s.start(2u8, 0);
        for t in (5..100).step_by(5) {
            assert!(s.get(&id, t).is_some());
        }
        assert!(s.get(&id, 100).is_none(), "lifetime over");
        assert!(s.get("nonsense", 0).is_none());
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let s = Sessions::new(1000, 1000, 2);
        let a = s.start('a', 0);
        let b = s.start('b', 1);
        assert!(s.get(&a, 2).is_some());
        let c = s.start('c', 3);
        assert!(s.get(&b, 4).is_none());
        assert!(s.get(&a, 4).is_some() && s.get(&c, 4).is_some());
        s.end(&a);
        assert_eq!(s.count(5), 1);
        s.sweep(5000);
        assert_eq!(s.count(0), 0, "swept sessions are gone");
    }
}
