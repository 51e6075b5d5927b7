//! The key client used by the gateway, the reader and the CLI: fetches public parameters and
//! user keys, keeps them in the encrypted [`KeyCache`], and answers from the cache first, so that
//! a key server outage stops nothing a cached key can do.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use clock::SharedClock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use envelope::{Address, DecryptionKey, Epoch, KeyId, PublicParams, SigningKey};
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::api::{
    ErrorBody, KeyKind, KeyRequest, KeyResponse, LoginStart, LoginStarted, LoginVerify,
    MAIL_UNAVAILABLE, PREFIX, ParamsResponse, Session,
};
use crate::cache::{CacheError, KeyCache};

/// Why the client could not get what it asked for. The three first kinds call for different
/// actions: wait and retry, fix the request, fix the credentials.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer (connection refused, timeout, 5xx) after the bounded retries.
    #[error("the key server is unreachable ({0}); retry later")]
    Unreachable(String),
    /// The key server answered no, with a reason.
    #[error("the key server refused: {reason} ({code})")]
    Refused {
        /// Stable reason code.
        code: String,
        /// The server's sentence.
        reason: String,
        /// Seconds until a retry makes sense.
        retry_after: Option<u64>,
    },
    /// The key server cannot send the code email now (its relay does not answer): its own
    /// fault, nothing to do with the address; no code was made.
    #[error("no code was sent: {0}")]
    MailUnavailable(String),
    /// The token is missing, unknown, revoked or expired.
    #[error("the key server rejected the credentials: {0}")]
    BadCredentials(String),
    /// The answer did not make sense.
    #[error("unexpected answer from the key server: {0}")]
    Protocol(String),
    /// The local cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The client could not be set up.
    #[error("key client setup: {0}")]
    Setup(String),
}

impl ClientError {
    /// True when retrying later may succeed.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable(_))
    }
}

/// How to reach a key server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://keys.corp.example:8080`.
    pub server: String,
    /// A gateway token (or none, for code logins).
    pub token: Option<Zeroizing<String>>,
    /// Trust only this CA (PEM) instead of the system's web roots.
    pub ca_file: Option<PathBuf>,
    /// Limit for one request.
    pub timeout: Duration,
    /// Retries after the first attempt when there is no answer (key and parameter requests
    /// only: a login request is never sent twice).
    pub retries: u32,
    /// Allow `http://` to a host other than loopback. Keys and tokens would cross the network
    /// in clear; only for a network that is itself protected.
    pub allow_plain_http: bool,
}

impl ClientConfig {
    /// Defaults for `server`: 10 s per request, 2 retries.
    pub fn new(server: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            token: None,
            ca_file: None,
            timeout: Duration::from_secs(10),
            retries: 2,
            allow_plain_http: false,
        }
    }
}

/// What a prefetch did.
#[derive(Debug, Default)]
pub struct PrefetchReport {
    /// Keys fetched from the server now.
    pub fetched: usize,
    /// Keys that were already cached.
    pub cached: usize,
    /// Keys that could not be had, with why.
    pub failed: Vec<(Address, KeyKind, ClientError)>,
}

/// A key server client with an optional cache.
#[derive(Debug)]
pub struct KeyClient {
    http: reqwest::Client,
    base: String,
    token: Mutex<Option<Zeroizing<String>>>,
    cache: Option<KeyCache>,
    retries: u32,
    /// The newest master key seen in the parameters: keys are asked for (and looked up) under it.
    newest: Mutex<Option<KeyId>>,
    /// When a cached key was fetched.
    clock: SharedClock,
}

impl KeyClient {
    /// A client for `config`, caching in `cache` when given.
    pub fn new(config: ClientConfig, cache: Option<KeyCache>) -> Result<Self, ClientError> {
        let url = reqwest::Url::parse(&config.server)
            .map_err(|e| ClientError::Setup(format!("server URL {:?}: {e}", config.server)))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback || config.allow_plain_http => {}
            "http" => {
                return Err(ClientError::Setup(format!(
                    "refusing plain HTTP to {}: keys and tokens would cross the network in clear; use https://",
                    config.server
                )));
            }
            other => {
                return Err(ClientError::Setup(format!(
                    "server URL scheme {other:?}: use https://"
                )));
            }
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5).min(config.timeout))
            .timeout(config.timeout)
            .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| ClientError::Setup(format!("CA file {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::Setup(format!("CA file {}: {e}", ca.display())))?;
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(KeyClient {
            http,
            base: config.server.trim_end_matches('/').to_string(),
            token: Mutex::new(config.token),
            cache,
            retries: config.retries,
            newest: Mutex::new(None),
            clock: clock::SystemClock::shared(),
        })
    }

    /// The same client, reading the time from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// A client for one person's login: the same server and connection settings, but none of
    /// this client's credentials and no cache (a person's keys are not kept on the gateway).
    pub fn for_person(&self) -> KeyClient {
        KeyClient {
            http: self.http.clone(),
            base: self.base.clone(),
            token: Mutex::new(None),
            cache: None,
            retries: self.retries,
            newest: Mutex::new(None),
            clock: self.clock.clone(),
        }
    }

    /// The cache, if any.
    pub fn cache(&self) -> Option<&KeyCache> {
        self.cache.as_ref()
    }

    fn bearer(&self) -> Option<Zeroizing<String>> {
        self.token.lock().ok().and_then(|t| t.clone())
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
        retry: bool,
    ) -> Result<T, ClientError> {
        let url = format!("{}{PREFIX}{path}", self.base);
        let mut last = String::new();
        let retries = if retry { self.retries } else { 0 };
        for attempt in 0..=retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * 4u64.pow(attempt - 1))).await;
            }
            let mut req = match body {
                Some(b) => self.http.post(&url).json(b),
                None => self.http.get(&url),
            };
            if let Some(token) = self.bearer() {
                req = req.bearer_auth(token.as_str());
            }
            let response = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = describe(&e);
                    continue;
                }
            };
            let status = response.status();
            if status.is_server_error() {
                last = match response.json::<ErrorBody>().await {
                    // The server answered, and said what is wrong: not a retry's business.
                    Ok(b) if b.error == MAIL_UNAVAILABLE => {
                        return Err(ClientError::MailUnavailable(b.reason));
                    }
                    Ok(b) => format!("HTTP {status}: {}", b.reason),
                    Err(_) => format!("HTTP {status}"),
                };
                continue;
            }
            if status.is_success() {
                return response
                    .json::<T>()
                    .await
                    .map_err(|e| ClientError::Protocol(e.to_string()));
            }
            let body: Option<ErrorBody> = response.json().await.ok();
            let (code, reason, retry_after) = match body {
                Some(b) => (b.error, b.reason, b.retry_after),
                None => (status.as_str().to_string(), status.to_string(), None),
            };
            return Err(
                if status == StatusCode::UNAUTHORIZED && code == "bad_credentials" {
                    ClientError::BadCredentials(reason)
                } else {
                    ClientError::Refused {
                        code,
                        reason,
                        retry_after,
                    }
                },
            );
        }
        Err(ClientError::Unreachable(last))
    }

    /// The public parameters: from the server, else from the cache when the server is down.
    pub async fn params(&self) -> Result<PublicParams, ClientError> {
        let fetched: Result<ParamsResponse, ClientError> =
            self.call::<(), _>("/params", None, true).await;
        let bytes = match fetched {
            Ok(p) => {
                let bytes = STANDARD
                    .decode(&p.params)
                    .map_err(|e| ClientError::Protocol(format!("params: {e}")))?;
                if let Some(cache) = &self.cache {
                    cache.put_params(&bytes).await?;
                }
                bytes
            }
            Err(e) if e.is_unreachable() => match &self.cache {
                Some(cache) => cache.params().await?.ok_or(e)?,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let params = PublicParams::from_bytes(&bytes)
            .map_err(|e| ClientError::Protocol(format!("params: {e}")))?;
        if let Ok(mut newest) = self.newest.lock() {
            *newest = Some(params.newest().id());
        }
        Ok(params)
    }

    /// True when the server answers now (one request, no retries, no cache): how a gateway
    /// notices that a key server outage is over.
    pub async fn reachable(&self) -> bool {
        let r: Result<ParamsResponse, ClientError> =
            self.call::<(), _>("/params", None, false).await;
        r.is_ok()
    }

    /// A key's encoding from the newest master key (as of the last [`KeyClient::params`]): from
    /// the cache, else from the server (and then cached). The flag is true when it was fetched now.
    pub async fn key_bytes(
        &self,
        address: &Address,
        epoch: Epoch,
        kind: KeyKind,
    ) -> Result<(Zeroizing<Vec<u8>>, bool), ClientError> {
        let newest = self.newest.lock().ok().and_then(|n| *n);
        self.key_bytes_for(address, epoch, kind, newest).await
    }

    /// Like [`KeyClient::key_bytes`], for the master key `key_id` (a message sealed before a
    /// rotation names an older one).
    pub async fn key_bytes_for(
        &self,
        address: &Address,
        epoch: Epoch,
        kind: KeyKind,
        key_id: Option<KeyId>,
    ) -> Result<(Zeroizing<Vec<u8>>, bool), ClientError> {
        let epoch_s = epoch.to_string();
        let id_s = key_id.map(|k| k.to_string());
        if let Some(cache) = &self.cache {
            match cache
                .get(address.as_str(), &epoch_s, kind, id_s.as_deref())
                .await
            {
                Ok(Some(bytes)) => return Ok((bytes, false)),
                Ok(None) => {}
                // An unreadable row is a miss: the server can replace it.
                Err(CacheError::Corrupt) => {
                    tracing::warn!(address = %address, epoch = %epoch, "a cached key does not decrypt; fetching it again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let request = KeyRequest {
            email: address.to_string(),
            epoch: epoch_s.clone(),
            kind,
            key_id: id_s.clone(),
        };
        let response: KeyResponse = self.call("/key", Some(&request), true).await?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(&response.key)
                .map_err(|e| ClientError::Protocol(format!("key: {e}")))?,
        );
        let wrong_master = id_s.as_ref().is_some_and(|want| *want != response.key_id);
        if response.email != address.as_str()
            || response.epoch != epoch_s
            || response.kind != kind
            || wrong_master
        {
            return Err(ClientError::Protocol(
                "the key is not the one asked for".into(),
            ));
        }
        if let Some(cache) = &self.cache {
            cache
                .put(
                    address.as_str(),
                    &epoch_s,
                    kind,
                    &response.key_id,
                    &bytes,
                    self.clock.now(),
                )
                .await?;
        }
        Ok((bytes, true))
    }

    /// The decryption key of `address` for `epoch`.
    pub async fn decryption_key(
        &self,
        address: &Address,
        epoch: Epoch,
    ) -> Result<DecryptionKey, ClientError> {
        let (bytes, _) = self.key_bytes(address, epoch, KeyKind::Decrypt).await?;
        DecryptionKey::from_bytes(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// The signing key of `address` for `epoch`.
    pub async fn signing_key(
        &self,
        address: &Address,
        epoch: Epoch,
    ) -> Result<SigningKey, ClientError> {
        let (bytes, _) = self.key_bytes(address, epoch, KeyKind::Sign).await?;
        SigningKey::from_bytes(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Fetches `kinds` of keys for `addresses` for `epoch` into the cache (a gateway runs this
    /// for next month before the month turns).
    pub async fn prefetch(
        &self,
        epoch: Epoch,
        addresses: &[Address],
        kinds: &[KeyKind],
    ) -> PrefetchReport {
        let mut report = PrefetchReport::default();
        for address in addresses {
            for &kind in kinds {
                match self.key_bytes(address, epoch, kind).await {
                    Ok((_, true)) => report.fetched += 1,
                    Ok((_, false)) => report.cached += 1,
                    Err(e) => report.failed.push((address.clone(), kind, e)),
                }
            }
        }
        report
    }

    /// Asks the server to email a one-time code to `email`.
    pub async fn login_start(&self, email: &str) -> Result<LoginStarted, ClientError> {
        self.call(
            "/login/start",
            Some(&LoginStart {
                email: email.into(),
            }),
            false,
        )
        .await
    }

    /// Trades the code for a session; the client uses the session's token from then on.
    pub async fn login_verify(&self, email: &str, code: &str) -> Result<Session, ClientError> {
        let session: Session = self
            .call(
                "/login/verify",
                Some(&LoginVerify {
                    email: email.into(),
                    code: code.into(),
                }),
                false,
            )
            .await?;
        if let Ok(mut t) = self.token.lock() {
            *t = Some(Zeroizing::new(session.token.clone()));
        }
        Ok(session)
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.to_string()
    }
}
