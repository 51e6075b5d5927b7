//! Connection slots of one listener.
//!
//! A listener has at most `max_total` connections and `max_per_client` from one address. When
//! every slot is taken, a connection that is waiting for its peer (not busy with a request it
//! has received) is told to close and the newcomer takes its slot: one from the address that
//! holds the most connections, the longest waiting of those, and only when that address holds
//! more than the newcomer's would. Hosts that open connections and send nothing, or a byte
//! every few seconds, however fast they open them, cannot keep out a host with fewer.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

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
}

impl Admission {
    /// Slots for at most `max_total` connections, `max_per_client` from one address.
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        Admission {
            table: Arc::default(),
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves counts that are still consistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`; when all slots are taken, closes a waiting connection of
    /// the address that holds the most, if it holds more than `ip` would.
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let now = Instant::now();
        let mut t = self.lock();
        let holds = t.per_client.get(&ip).copied().unwrap_or(0);
        if holds >= self.max_per_client {
            return Err(Refused::PerClient);
        }
        if t.conns.len() >= self.max_total {
            let victim = t
                .conns
                .iter()
                .filter_map(|(id, c)| {
                    let since = c.waiting_since?;
                    let theirs = t.per_client.get(&c.ip).copied().unwrap_or(0);
                    Some(((theirs, Reverse(since)), *id))
                })
                .max()
                .filter(|((theirs, _), _)| *theirs > holds + 1)
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
        let a = Admission::new(3, 2);
        let s1 = a.admit(ip(2)).unwrap();
        let _s2 = a.admit(ip(3)).unwrap();
        let _s3 = a.admit(ip(2)).unwrap();
        assert_eq!(a.admit(ip(2)).err(), Some(Refused::PerClient));
        // Full, and nobody holds more than this host would with one more: refused.
        assert_eq!(a.admit(ip(3)).err(), Some(Refused::Full));
        drop(s1);
        assert!(a.admit(ip(4)).is_ok());
    }

    #[tokio::test]
    async fn the_host_holding_most_gives_up_its_longest_waiting_connection() {
        let a = Admission::new(4, 10);
        let flood_old = a.admit(ip(2)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let flood_busy = a.admit(ip(2)).unwrap();
        flood_busy.working();
        let _flood_new = a.admit(ip(2)).unwrap();
        let other = a.admit(ip(3)).unwrap();
        // A newcomer: the flood's oldest waiting connection goes, not its busy one, not the
        // other host's.
        let _new = a.admit(ip(4)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), flood_old.evicted())
            .await
            .unwrap();
        for untouched in [&flood_busy, &other] {
            assert!(
                tokio::time::timeout(std::time::Duration::from_millis(20), untouched.evicted())
                    .await
                    .is_err()
            );
        }
        assert_eq!(a.open(), 4);
        assert_eq!(a.evicted(), 1);
        // Dropping the evicted slot later does not free the newcomer's.
        drop(flood_old);
        assert_eq!(a.open(), 4);
    }
}
