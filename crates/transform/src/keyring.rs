//! The gateway's keys: the key client (with its encrypted cache) in front, parsed keys kept in
//! memory, and the key server's reachability, so that an outage ending is noticed.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clock::SharedClock;
use envelope::{Address, DecryptionKey, Epoch, KeyId, PublicParams, SigningKey};
use keys::cache::CacheError;
use keys::{ClientError, KeyClient, KeyKind};
use lru::LruCache;
use zeroize::Zeroizing;

/// Why a key could not be had; [`KeyFailure::is_transient`] says whether the pipeline waits for
/// it in the errored queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFailure {
    /// The key server did not answer and the key is not cached.
    #[error("the key server is unreachable and the key is not cached ({0})")]
    Unreachable(String),
    /// The key server refused the key.
    #[error("the key server refused the key: {0}")]
    Refused(String),
    /// The gateway's own key cache failed (a full disk): the key may be had once it works.
    #[error("the local key cache failed: {0}")]
    Local(String),
    /// Anything else (a damaged key, a protocol error).
    #[error("{0}")]
    Broken(String),
}

impl KeyFailure {
    /// True when asking again later may give the key: the key server was down or the local
    /// cache failed. A refusal or a broken key is not retried by the pipeline.
    pub fn is_transient(&self) -> bool {
        matches!(self, KeyFailure::Unreachable(_) | KeyFailure::Local(_))
    }
}

impl From<ClientError> for KeyFailure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Unreachable(why) => KeyFailure::Unreachable(why),
            ClientError::Refused { code, reason, .. } => {
                KeyFailure::Refused(format!("{reason} ({code})"))
            }
            ClientError::BadCredentials(why) => {
                KeyFailure::Refused(format!("the gateway token was not accepted: {why}"))
            }
            ClientError::Cache(e @ (CacheError::Db(_) | CacheError::KeyFile { .. })) => {
                KeyFailure::Local(e.to_string())
            }
            other => KeyFailure::Broken(other.to_string()),
        }
    }
}

/// Parsed keys kept in memory (parsing a key costs milliseconds; a message must not pay it).
const PARSED_KEYS: usize = 4096;

/// Seconds between requests for uncached keys while the key server is down (a message whose
/// key is cached never waits for a server that does not answer).
const DOWN_RETRY_SECS: u64 = 1;

/// Seconds public parameters are used before they are fetched again.
const PARAMS_TTL: u64 = 600;

type SigningCache = LruCache<(Address, Epoch), Arc<SigningKey>>;
type DecryptionCache = LruCache<(Address, Epoch, KeyId), Arc<DecryptionKey>>;

/// Keys for the mail path.
pub struct KeyRing {
    client: KeyClient,
    clock: SharedClock,
    params: Mutex<Option<(Arc<PublicParams>, u64)>>,
    signing: Mutex<SigningCache>,
    decryption: Mutex<DecryptionCache>,
    down: AtomicBool,
    last_request: AtomicU64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

fn cache<K: std::hash::Hash + Eq, V>() -> LruCache<K, V> {
    LruCache::new(NonZeroUsize::new(PARSED_KEYS).unwrap_or(NonZeroUsize::MIN))
}

impl KeyRing {
    /// Keys from `client`, with time from `clock`.
    pub fn new(client: KeyClient, clock: SharedClock) -> Self {
        KeyRing {
            client,
            clock,
            params: Mutex::new(None),
            signing: Mutex::new(cache()),
            decryption: Mutex::new(cache()),
            down: AtomicBool::new(false),
            last_request: AtomicU64::new(0),
        }
    }

    /// The key client.
    pub fn client(&self) -> &KeyClient {
        &self.client
    }

    /// The clock the ring reads (the process's one clock).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The time now.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// True when the last request found the key server unreachable.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    fn note<T>(&self, r: &Result<T, ClientError>) {
        // Only the probe says the server is back: an `Ok` here may have come from the cache.
        if let Err(e) = r
            && e.is_unreachable()
            && !self.down.swap(true, Ordering::SeqCst)
        {
            tracing::warn!(
                "the key server is unreachable; cached keys keep mail moving, the rest waits in the errored queue"
            );
        }
    }

    /// Asks the key server whether it is back; true when it answers (and the outage is over).
    pub async fn probe(&self) -> bool {
        if self.client.reachable().await {
            if self.down.swap(false, Ordering::SeqCst) {
                tracing::info!("the key server answers again");
            }
            // New parameters (a rotated master key) are taken up at once.
            if let Ok(mut p) = self.params.lock() {
                *p = None;
            }
            true
        } else {
            false
        }
    }

    /// The public parameters: fetched every few minutes, from the cache while the server is down.
    pub async fn params(&self) -> Result<Arc<PublicParams>, KeyFailure> {
        let now = self.now();
        let cached = self.params.lock().ok().and_then(|p| p.clone());
        if let Some((params, at)) = &cached
            && (now.saturating_sub(*at) < PARAMS_TTL || self.is_down())
        {
            return Ok(params.clone());
        }
        let fetched = self.client.params().await;
        self.note(&fetched);
        match fetched {
            Ok(p) => {
                let p = Arc::new(p);
                if let Ok(mut slot) = self.params.lock() {
                    *slot = Some((p.clone(), now));
                }
                Ok(p)
            }
            Err(e) => match cached {
                Some((p, _)) => Ok(p),
                None => Err(e.into()),
            },
        }
    }

    /// Forgets the parameters, so that the next message fetches them (a message names a master
    /// key they do not have).
    pub fn refresh_params(&self) {
        if let Ok(mut p) = self.params.lock() {
            *p = None;
        }
    }

    /// A key's encoding: from the cache, else the server. While the server is known to be down
    /// only the cache is asked, so that mail with cached keys does not wait for timeouts; the
    /// probe in the pipeline notices when the server is back.
    async fn key_bytes(
        &self,
        address: &Address,
        epoch: Epoch,
        kind: KeyKind,
        key_id: Option<KeyId>,
    ) -> Result<Zeroizing<Vec<u8>>, KeyFailure> {
        if self.is_down() {
            if let Some(cache) = self.client.cache() {
                let id = key_id.map(|k| k.to_string());
                if let Ok(Some(bytes)) = cache
                    .get(address.as_str(), &epoch.to_string(), kind, id.as_deref())
                    .await
                {
                    return Ok(bytes);
                }
            }
            // A key the cache lacks is asked for at most every few seconds while the server is
            // down (a resend by hand gets its try; a flood of mail does not wait on timeouts).
            let last = self.last_request.load(Ordering::SeqCst);
            if self.now().saturating_sub(last) < DOWN_RETRY_SECS {
                return Err(KeyFailure::Unreachable(
                    "the key server did not answer the last request".into(),
                ));
            }
        }
        self.last_request.store(self.now(), Ordering::SeqCst);
        let fetched = self
            .client
            .key_bytes_for(address, epoch, kind, key_id)
            .await;
        self.note(&fetched);
        Ok(fetched?.0)
    }

    /// The signing key of `address` for `epoch`.
    pub async fn signing_key(
        &self,
        address: &Address,
        epoch: Epoch,
    ) -> Result<Arc<SigningKey>, KeyFailure> {
        let key = (address.clone(), epoch);
        if let Some(k) = self
            .signing
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).cloned())
        {
            return Ok(k);
        }
        let newest = self.params().await?.newest().id();
        let bytes = self
            .key_bytes(address, epoch, KeyKind::Sign, Some(newest))
            .await?;
        let parsed = tokio::task::spawn_blocking(move || SigningKey::from_bytes(&bytes))
            .await
            .map_err(|e| KeyFailure::Broken(e.to_string()))?
            .map_err(|e| KeyFailure::Broken(format!("signing key of {address}: {e}")))?;
        let parsed = Arc::new(parsed);
        if let Ok(mut c) = self.signing.lock() {
            c.put(key, parsed.clone());
        }
        Ok(parsed)
    }

    /// The decryption key of `address` for `epoch` under the master key `key_id`.
    pub async fn decryption_key(
        &self,
        address: &Address,
        epoch: Epoch,
        key_id: KeyId,
    ) -> Result<Arc<DecryptionKey>, KeyFailure> {
        let key = (address.clone(), epoch, key_id);
        if let Some(k) = self
            .decryption
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).cloned())
        {
            return Ok(k);
        }
        let bytes = self
            .key_bytes(address, epoch, KeyKind::Decrypt, Some(key_id))
            .await?;
        let parsed = tokio::task::spawn_blocking(move || DecryptionKey::from_bytes(&bytes))
            .await
            .map_err(|e| KeyFailure::Broken(e.to_string()))?
            .map_err(|e| KeyFailure::Broken(format!("decryption key of {address}: {e}")))?;
        let parsed = Arc::new(parsed);
        if let Ok(mut c) = self.decryption.lock() {
            c.put(key, parsed.clone());
        }
        Ok(parsed)
    }
}
