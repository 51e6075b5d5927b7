//! Connection slots of one listener.
//!
//! A listener has at most `max_total` connections and `max_per_client` from one address. When
//! every slot is taken, the connection that has waited longest for its peer's next request
//! (and at least [`Admission::min_stall`]) is told to close, and the newcomer takes its slot:
//! a client that opens connections and sends nothing, or a byte every few seconds, cannot keep
//! out a client that speaks. A connection busy with a request it has received is never chosen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is busy with a connection that is not stalled.
    Full,
    /// The client's address has its share.
    PerClient,
}

struct Conn {
    ip: IpAddr,
    /// When the connection began to wait for its peer; `None` while it works on a request.
    waiting_since: Option<Instant>,
    evict: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    per_client: HashMap<IpAddr, usize>,
    evicted: u64,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if let Some(n) = self.per_client.get_mut(&conn.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&conn.ip);
            }
        }
        Some(conn)
    }
}

/// The slots of one listener; clones share them.
#[derive(Clone)]
pub struct Admission {
    table: Arc<Mutex<Table>>,
    max_total: usize,
    max_per_client: usize,
    min_stall: Duration,
}

impl Admission {
    /// How long a connection must have waited for its peer before it can be closed to make
    /// room: longer than a client that speaks ever pauses between its commands.
    pub const DEFAULT_MIN_STALL: Duration = Duration::from_secs(1);

    /// Slots for at most `max_total` connections, `max_per_client` from one address.
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        Admission {
            table: Arc::default(),
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            min_stall: Self::DEFAULT_MIN_STALL,
        }
    }

    /// The same with another minimum stall before a connection can be closed for room.
    pub fn with_min_stall(mut self, min_stall: Duration) -> Self {
        self.min_stall = min_stall;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves counts that are still consistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`, closing the longest-stalled one when all slots are taken.
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let now = Instant::now();
        let mut t = self.lock();
        if t.per_client.get(&ip).copied().unwrap_or(0) >= self.max_per_client {
            return Err(Refused::PerClient);
        }
        if t.conns.len() >= self.max_total {
            let victim = t
                .conns
                .iter()
                .filter_map(|(id, c)| c.waiting_since.map(|since| (since, *id)))
                .filter(|(since, _)| now.saturating_duration_since(*since) >= self.min_stall)
                .min()
                .map(|(_, id)| id);
            let Some(victim) = victim.and_then(|id| t.remove(id)) else {
                return Err(Refused::Full);
            };
            t.evicted += 1;
            // `notify_one` keeps the wake-up for a task that is not waiting at this moment.
            victim.evict.notify_one();
        }
        let id = t.next_id;
        t.next_id += 1;
        let evict = Arc::new(Notify::new());
        t.conns.insert(
            id,
            Conn {
                ip,
                waiting_since: Some(now),
                evict: evict.clone(),
            },
        );
        *t.per_client.entry(ip).or_default() += 1;
        Ok(Slot {
            admission: self.clone(),
            id,
            evict,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().conns.len()
    }

    /// Connections closed so far to make room for others.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }
}

/// One admitted connection's slot; dropping it frees the slot.
pub struct Slot {
    admission: Admission,
    id: u64,
    evict: Arc<Notify>,
}

impl Slot {
    /// The connection now waits for its peer's next command or request; the wait counts
    /// towards being closed for room.
    pub fn waiting(&self) {
        let mut t = self.admission.lock();
        if let Some(c) = t.conns.get_mut(&self.id) {
            c.waiting_since = Some(Instant::now());
        }
    }

    /// The peer has sent a whole command or request, which is being worked on.
    pub fn working(&self) {
        let mut t = self.admission.lock();
        if let Some(c) = t.conns.get_mut(&self.id) {
            c.waiting_since = None;
        }
    }

    /// Resolves once the slot was given to another connection: close this one.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test]
    async fn caps_per_client_and_in_total() {
        let a = Admission::new(3, 2).with_min_stall(Duration::from_secs(3600));
        let s1 = a.admit(ip(2)).unwrap();
        let _s2 = a.admit(ip(2)).unwrap();
        assert_eq!(a.admit(ip(2)).err(), Some(Refused::PerClient));
        let _s3 = a.admit(ip(3)).unwrap();
        assert_eq!(a.admit(ip(4)).err(), Some(Refused::Full));
        drop(s1);
        assert!(a.admit(ip(2)).is_ok());
    }

    #[tokio::test]
    async fn the_longest_stalled_connection_makes_room() {
        let a = Admission::new(2, 10).with_min_stall(Duration::ZERO);
        let old = a.admit(ip(2)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let busy = a.admit(ip(3)).unwrap();
        busy.working();
        let new = a.admit(ip(4)).unwrap();
        // The stalled one is told, the busy one is not.
        tokio::time::timeout(Duration::from_secs(1), old.evicted())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), busy.evicted())
                .await
                .is_err()
        );
        assert_eq!(a.open(), 2);
        assert_eq!(a.evicted(), 1);
        // Dropping the evicted slot later does not free the newcomer's.
        drop(old);
        assert_eq!(a.open(), 2);
        // Nobody is stalled now: busy works, new waits but `new` is the only candidate.
        new.working();
        assert_eq!(a.admit(ip(5)).err(), Some(Refused::Full));
    }
}
