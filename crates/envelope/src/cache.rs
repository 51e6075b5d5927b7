//! Amortized IBE: an encapsulation costs about 5.5 ms, so the sealing side reuses one per
//! (master key, recipient identity) and the opening side remembers decapsulations.
//!
//! Reuse is safe because the shared secret never keys anything directly: each message derives
//! its key-encryption key with HKDF under a fresh salt. Both caches are bounded (least recently
//! used entries go first), hold secrets in zeroizing buffers, and drop every entry of a month
//! once that month is over.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use ibe::Compress;
use ibe::kem::IBKEM;
use ibe::kem::cgw_kv::{self, CGWKV};
use lru::LruCache;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::header::CT_BYTES;
use crate::identity::{Epoch, Identity};
use crate::keys::{DecryptionKey, KeyId, MasterPublicKey};

/// Entries a cache holds unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Where a cache reads the current month; tests substitute their own clock.
type Clock = Box<dyn Fn() -> Epoch + Send + Sync>;

struct Bounded<K: std::hash::Hash + Eq, V> {
    map: LruCache<K, V>,
    clock: Clock,
    current: Epoch,
}

impl<K: std::hash::Hash + Eq, V> Bounded<K, V> {
    fn new(capacity: usize, clock: Clock) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let current = clock();
        Bounded {
            map: LruCache::new(capacity),
            clock,
            current,
        }
    }

    /// Drops the entries of months that have ended; returns the current month.
    fn expire(&mut self, epoch_of: impl Fn(&K) -> Epoch) -> Epoch {
        let now = (self.clock)();
        if now != self.current {
            self.current = now;
            if self.map.iter().any(|(k, _)| epoch_of(k) < now) {
                let mut kept = LruCache::new(self.map.cap());
                // Oldest first, so that recency order survives.
                while let Some((k, v)) = self.map.pop_lru() {
                    if epoch_of(&k) >= now {
                        kept.put(k, v);
                    }
                }
                self.map = kept;
            }
        }
        now
    }
}

struct Encapsulation {
    ct: [u8; CT_BYTES],
    shared_secret: Zeroizing<[u8; 32]>,
}

/// The sealing side's cache: one encapsulation per (master key, identity) for the month.
pub struct EncapsCache {
    inner: Mutex<Bounded<(KeyId, Identity), Encapsulation>>,
}

impl std::fmt::Debug for EncapsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncapsCache")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for EncapsCache {
    fn default() -> Self {
        EncapsCache::new(DEFAULT_CAPACITY)
    }
}

impl EncapsCache {
    /// A cache of at most `capacity` identities, using the system clock.
    pub fn new(capacity: usize) -> Self {
        EncapsCache::with_clock(capacity, Epoch::current)
    }

    /// A cache with its own notion of the current month.
    pub fn with_clock(capacity: usize, clock: impl Fn() -> Epoch + Send + Sync + 'static) -> Self {
        EncapsCache {
            inner: Mutex::new(Bounded::new(capacity, Box::new(clock))),
        }
    }

    /// Identities cached now.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.map.len())
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the encapsulation for `identity`, making one when none is cached (or when the
    /// identity's month is over, in which case nothing is cached). The flag is true when a new
    /// encapsulation was made.
    pub(crate) fn get_or_encaps<R: RngCore + CryptoRng>(
        &self,
        mpk: &MasterPublicKey,
        identity: &Identity,
        rng: &mut R,
    ) -> ([u8; CT_BYTES], Zeroizing<[u8; 32]>, bool) {
        let key = (mpk.id(), identity.clone());
        if let Ok(mut guard) = self.inner.lock() {
            guard.expire(|k| k.1.epoch);
            if let Some(hit) = guard.map.get(&key) {
                return (hit.ct, hit.shared_secret.clone(), false);
            }
        }
        // Encapsulate without holding the lock: it takes milliseconds.
        let (ct, ss) = mpk.encaps(identity, rng);
        let ct = ct_bytes(&ct);
        if let Ok(mut guard) = self.inner.lock() {
            let now = guard.expire(|k| k.1.epoch);
            if identity.epoch >= now {
                guard.map.put(
                    key,
                    Encapsulation {
                        ct,
                        shared_secret: ss.clone(),
                    },
                );
            }
        }
        (ct, ss, true)
    }
}

fn ct_bytes(ct: &cgw_kv::CipherText) -> [u8; CT_BYTES] {
    let mut out = [0u8; CT_BYTES];
    out.copy_from_slice(ct.to_bytes().as_ref());
    out
}

/// A decapsulation is identified by the key that made it and the ciphertext it opened.
type DecapsKey = (KeyId, Identity, [u8; CT_BYTES]);

/// The opening side's cache: one shared secret per (master key, identity, encapsulation).
pub struct DecapsCache {
    inner: Mutex<Bounded<DecapsKey, Zeroizing<[u8; 32]>>>,
}

impl std::fmt::Debug for DecapsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecapsCache")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for DecapsCache {
    fn default() -> Self {
        DecapsCache::new(DEFAULT_CAPACITY)
    }
}

impl DecapsCache {
    /// A cache of at most `capacity` decapsulations, using the system clock.
    pub fn new(capacity: usize) -> Self {
        DecapsCache::with_clock(capacity, Epoch::current)
    }

    /// A cache with its own notion of the current month.
    pub fn with_clock(capacity: usize, clock: impl Fn() -> Epoch + Send + Sync + 'static) -> Self {
        DecapsCache {
            inner: Mutex::new(Bounded::new(capacity, Box::new(clock))),
        }
    }

    /// Decapsulations cached now.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.map.len())
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached shared secret of `ct` under `key`.
    ///
    /// CGWKV rejects implicitly: a foreign ciphertext yields a wrong secret, not an error, and the
    /// data-key unwrap that follows catches it. Callers cache only secrets that unwrapped.
    pub(crate) fn get(
        &self,
        key: &DecryptionKey,
        ct: &[u8; CT_BYTES],
    ) -> Option<Zeroizing<[u8; 32]>> {
        let k = (key.key_id(), key.identity().clone(), *ct);
        let mut guard = self.inner.lock().ok()?;
        guard.expire(|k| k.1.epoch);
        guard.map.get(&k).cloned()
    }

    pub(crate) fn put(&self, key: &DecryptionKey, ct: &[u8; CT_BYTES], ss: Zeroizing<[u8; 32]>) {
        if let Ok(mut guard) = self.inner.lock() {
            // A month that is over is not cached: its messages are opened rarely.
            if key.identity().epoch >= guard.expire(|k| k.1.epoch) {
                guard
                    .map
                    .put((key.key_id(), key.identity().clone(), *ct), ss);
            }
        }
    }
}

/// Decapsulates without a cache.
pub(crate) fn decaps(key: &DecryptionKey, ct: &[u8; CT_BYTES]) -> Option<Zeroizing<[u8; 32]>> {
    let ct = Option::<cgw_kv::CipherText>::from(cgw_kv::CipherText::from_bytes(ct))?;
    let ss = CGWKV::decaps(None, &key.usk, &ct).ok()?;
    Some(Zeroizing::new(ss.0))
}
