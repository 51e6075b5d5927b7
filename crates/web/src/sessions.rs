//! Sessions kept in memory: each expires after a time without use and after a fixed lifetime.
//! A restart ends every session, which is what a person signed in to read one message or an
//! administrator expects of a gateway restart.
//!
//! Sessions live in two pools by [`Standing`], each with its own cap, and when one is full its
//! least recently used session goes. Anyone can start an anonymous session (a post from
//! `encrypted_message.htm` needs nothing more), so no number of them may push out a session
//! that proved who it belongs to: a signed-in session only gives way to another sign-in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::security::random_token;

/// Whether a session has proven who it belongs to (a password, a one-time code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Started by anyone; bounded apart from the signed-in ones.
    Anonymous,
    /// Proven; only another sign-in can push it out.
    SignedIn,
}

struct Entry<T> {
    value: Arc<Mutex<T>>,
    created: u64,
    used: u64,
}

/// The sessions of one standing, at most `max`.
struct Pool<T> {
    entries: HashMap<String, Entry<T>>,
    max: usize,
}

impl<T> Pool<T> {
    /// Drops the least recently used sessions until one more fits.
    fn make_room(&mut self) {
        while self.entries.len() >= self.max {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
    }
}

struct Pools<T> {
    anonymous: Pool<T>,
    signed_in: Pool<T>,
}

impl<T> Pools<T> {
    fn pool(&mut self, standing: Standing) -> &mut Pool<T> {
        match standing {
            Standing::Anonymous => &mut self.anonymous,
            Standing::SignedIn => &mut self.signed_in,
        }
    }

    fn remove(&mut self, id: &str) -> Option<Entry<T>> {
        self.anonymous
            .entries
            .remove(id)
            .or_else(|| self.signed_in.entries.remove(id))
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Entry<T>> {
        if self.anonymous.entries.contains_key(id) {
            self.anonymous.entries.get_mut(id)
        } else {
            self.signed_in.entries.get_mut(id)
        }
    }
}

/// Sessions of one kind (reader or console).
pub struct Sessions<T> {
    pools: Mutex<Pools<T>>,
    idle_secs: u64,
    lifetime_secs: u64,
}

impl<T> Sessions<T> {
    /// Sessions ending after `idle_secs` without a request or `lifetime_secs` after they began;
    /// at most `max_anonymous` anonymous and `max_signed_in` signed-in sessions at once.
    pub fn new(
        idle_secs: u64,
        lifetime_secs: u64,
        max_anonymous: usize,
        max_signed_in: usize,
    ) -> Self {
        Sessions {
            pools: Mutex::new(Pools {
                anonymous: Pool {
                    entries: HashMap::new(),
                    max: max_anonymous.max(1),
                },
                signed_in: Pool {
                    entries: HashMap::new(),
                    max: max_signed_in.max(1),
                },
            }),
            idle_secs,
            lifetime_secs,
        }
    }

    /// Starts a session of `standing`; returns its id. A full pool drops its least recently
    /// used session; the other pool is untouched.
    pub fn start(&self, value: T, standing: Standing, now: u64) -> String {
        let id = random_token();
        let Ok(mut pools) = self.pools.lock() else {
            return id;
        };
        self.drop_ended(&mut pools, now);
        let pool = pools.pool(standing);
        pool.make_room();
        pool.entries.insert(
            id.clone(),
            Entry {
                value: Arc::new(Mutex::new(value)),
                created: now,
                used: now,
            },
        );
        id
    }

    /// Session `id`, now proven, under a new id (returned) among the signed-in sessions; the
    /// old id is worth nothing from now on, so an id planted before the proof sees nothing
    /// after it. `None` when `id` is not a live session. The lifetime still counts from the
    /// session's start.
    pub fn sign_in(&self, id: &str, now: u64) -> Option<String> {
        let mut pools = self.pools.lock().ok()?;
        let mut entry = pools.remove(id).filter(|e| self.alive(e, now))?;
        entry.used = now;
        let new = random_token();
        let pool = pools.pool(Standing::SignedIn);
        pool.make_room();
        pool.entries.insert(new.clone(), entry);
        Some(new)
    }

    /// Drops the sessions that have ended (and what they hold).
    pub fn sweep(&self, now: u64) {
        if let Ok(mut pools) = self.pools.lock() {
            self.drop_ended(&mut pools, now);
        }
    }

    /// The live session `id`, marked as used now.
    pub fn get(&self, id: &str, now: u64) -> Option<Arc<Mutex<T>>> {
        let mut pools = self.pools.lock().ok()?;
        let entry = pools.get_mut(id)?;
        if !self.alive(entry, now) {
            pools.remove(id);
            return None;
        }
        entry.used = now;
        Some(entry.value.clone())
    }

    /// Ends session `id`.
    pub fn end(&self, id: &str) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.remove(id);
        }
    }

    /// How many sessions of `standing` are live.
    pub fn count(&self, standing: Standing, now: u64) -> usize {
        self.pools
            .lock()
            .map(|mut p| {
                p.pool(standing)
                    .entries
                    .values()
                    .filter(|e| self.alive(e, now))
                    .count()
            })
            .unwrap_or(0)
    }

    fn drop_ended(&self, pools: &mut Pools<T>, now: u64) {
        pools.anonymous.entries.retain(|_, e| self.alive(e, now));
        pools.signed_in.entries.retain(|_, e| self.alive(e, now));
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
        let s = Sessions::new(10, 100, 10, 10);
        let id = s.start(1u8, Standing::Anonymous, 0);
        assert!(s.get(&id, 9).is_some());
        assert!(s.get(&id, 18).is_some(), "use keeps it alive");
        assert!(s.get(&id, 29).is_none(), "idle too long");
        let id = s.start(2u8, Standing::SignedIn, 0);
        for t in (5..100).step_by(5) {
            assert!(s.get(&id, t).is_some());
        }
        assert!(s.get(&id, 100).is_none(), "lifetime over");
        assert!(s.get("nonsense", 0).is_none());
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let s = Sessions::new(1000, 1000, 2, 2);
        let a = s.start('a', Standing::Anonymous, 0);
        let b = s.start('b', Standing::Anonymous, 1);
        assert!(s.get(&a, 2).is_some());
        let c = s.start('c', Standing::Anonymous, 3);
        assert!(s.get(&b, 4).is_none());
        assert!(s.get(&a, 4).is_some() && s.get(&c, 4).is_some());
        s.end(&a);
        assert_eq!(s.count(Standing::Anonymous, 5), 1);
        s.sweep(5000);
        assert_eq!(
            s.count(Standing::Anonymous, 0),
            0,
            "swept sessions are gone"
        );
    }

    #[test]
    fn anonymous_sessions_never_push_out_signed_in_ones() {
        let s = Sessions::new(1000, 1000, 3, 2);
        let admin = s.start('x', Standing::SignedIn, 0);
        let anon = s.start('p', Standing::Anonymous, 0);
        let proven = s.sign_in(&anon, 1).expect("a live session signs in");
        for t in 2..500 {
            s.start('a', Standing::Anonymous, t);
        }
        assert_eq!(s.count(Standing::Anonymous, 500), 3);
        assert!(
            s.get(&admin, 500).is_some(),
            "a flood of anonymous sessions left it"
        );
        assert!(s.get(&proven, 500).is_some());
        // Only another sign-in makes room among the signed-in sessions.
        assert!(s.get(&admin, 501).is_some());
        s.start('y', Standing::SignedIn, 502);
        assert!(
            s.get(&proven, 503).is_none(),
            "the least recently used sign-in went"
        );
        assert!(s.get(&admin, 503).is_some());
    }

    #[test]
    fn signing_in_changes_the_id() {
        let s = Sessions::new(1000, 1000, 10, 10);
        let old = s.start(7u8, Standing::Anonymous, 0);
        let new = s.sign_in(&old, 1).expect("signed in");
        assert_ne!(old, new);
        assert!(
            s.get(&old, 2).is_none(),
            "the id from before the proof is worth nothing"
        );
        assert_eq!(s.get(&new, 2).map(|v| *v.lock().unwrap()), Some(7));
        assert_eq!(s.count(Standing::Anonymous, 2), 0);
        assert_eq!(s.count(Standing::SignedIn, 2), 1);
        // Signing in again (another address proven) changes it again.
        let newer = s.sign_in(&new, 3).expect("signed in");
        assert!(s.get(&new, 4).is_none() && s.get(&newer, 4).is_some());
        assert!(s.sign_in("nonsense", 5).is_none());
    }
}
