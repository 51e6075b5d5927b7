//! The key server: an axum router over `/api/keys/v1`. It holds the master keys in memory,
//! decides who gets what with [`crate::grant`], and writes every issuance and refusal to the
//! audit log.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use envelope::{Address, Epoch, Identity, KeyId, MasterKeys};
use rand::Rng;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::grant::{self, Requester};
use crate::mailer::{MailConfig, Mailer};
use clock::SharedClock;
use keys::api::{
    ErrorBody, KeyKind, KeyRequest, KeyResponse, LoginStart, LoginStarted, LoginVerify,
    MAIL_UNAVAILABLE, MasterKeyInfo, PREFIX, ParamsResponse, Session,
};
use store::keyserver::{
    AuditEntry, CodeRow, GATEWAY_TOKEN_PREFIX, SESSION_TOKEN_PREFIX, Store, StoreError,
};
use store::rate::{RateLimit, client_key};

mod issue;
mod login;

use issue::key;
use login::{login_start, login_verify};

/// The key server's settings (`[keyserver]` in `postern.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KeyServerConfig {
    /// Directory of `master.sealed` and `params.pub` (read by the binary that starts the server).
    pub key_dir: Option<std::path::PathBuf>,
    /// File holding the master key passphrase (read by the binary that starts the server).
    pub passphrase_file: Option<std::path::PathBuf>,
    /// Days before a month starts during which gateways may fetch its keys.
    pub prefetch_window_days: u32,
    /// Seconds a one-time code stays valid.
    pub code_ttl_secs: u64,
    /// Wrong codes allowed per address within an hour, across resent codes, before the address
    /// is locked.
    pub code_attempts: u32,
    /// Seconds an address stays locked after too many wrong guesses.
    pub lockout_secs: u64,
    /// Seconds between two codes to one address.
    pub resend_cooldown_secs: u64,
    /// Codes sent to one address per hour.
    pub codes_per_address_per_hour: u32,
    /// Login requests (start and verify) per client IP per minute.
    pub login_requests_per_ip_per_minute: u32,
    /// Key requests with a session token per client IP per minute (gateway tokens are not limited).
    pub session_key_requests_per_ip_per_minute: u32,
    /// Seconds a session from a code login lasts.
    pub session_ttl_secs: u64,
    /// The relay that carries code emails.
    pub mail: MailConfig,
}

impl Default for KeyServerConfig {
    fn default() -> Self {
        KeyServerConfig {
            key_dir: None,
            passphrase_file: None,
            prefetch_window_days: 7,
            code_ttl_secs: 600,
            code_attempts: 5,
            lockout_secs: 900,
            resend_cooldown_secs: 60,
            codes_per_address_per_hour: 5,
            login_requests_per_ip_per_minute: 30,
            session_key_requests_per_ip_per_minute: 120,
            session_ttl_secs: 1800,
            mail: MailConfig::default(),
        }
    }
}

/// Everything a request handler needs.
pub struct KeyServer {
    master: Arc<MasterKeys>,
    params: ParamsResponse,
    store: Store,
    clock: SharedClock,
    config: KeyServerConfig,
    mailer: Mailer,
    login_per_ip: RateLimit,
    codes_per_address: RateLimit,
    keys_per_ip: RateLimit,
}

impl std::fmt::Debug for KeyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyServer").finish_non_exhaustive()
    }
}

/// Why the key server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The mail settings are wrong.
    #[error(transparent)]
    Mail(#[from] crate::mailer::MailError),
}

impl KeyServer {
    /// A key server over opened master keys and its database. `hostname` is the gateway's
    /// (`smtp.hostname`): code emails greet the relay and name their Message-ID with it.
    pub fn new(
        master: MasterKeys,
        store: Store,
        config: KeyServerConfig,
        clock: SharedClock,
        hostname: &str,
    ) -> Result<Arc<Self>, StartError> {
        let public = master.public_params();
        let newest = public.newest().id();
        let params = ParamsResponse {
            keys: public
                .keys()
                .iter()
                .map(|k| MasterKeyInfo {
                    id: k.id().to_string(),
                    created: k.created(),
                    newest: k.id() == newest,
                })
                .collect(),
            params: STANDARD.encode(public.to_bytes()),
        };
        let mailer = Mailer::new(&config.mail, hostname, clock.clone())?;
        Ok(Arc::new(KeyServer {
            master: Arc::new(master),
            params,
            store,
            clock,
            mailer,
            login_per_ip: RateLimit::new(60),
            codes_per_address: RateLimit::hourly(),
            keys_per_ip: RateLimit::new(60),
            config,
        }))
    }

    /// The database, for the CLI's token and audit commands.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The health of the relay for code emails, for the status page and `/metrics`.
    pub fn relay(&self) -> Arc<crate::relay::RelayHealth> {
        self.mailer.health()
    }

    /// Checks the relay for code emails now (connect, EHLO, NOOP), recording the outcome.
    pub async fn check_relay(&self) -> Result<(), crate::mailer::MailError> {
        self.mailer.check().await
    }
}

/// The routes under `/api/keys/v1`. Serve with `into_make_service_with_connect_info::<SocketAddr>()`
/// so that rate limits and the audit log see the client's address.
pub fn router(server: Arc<KeyServer>) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/params"), get(params))
        .route(&format!("{PREFIX}/key"), post(key))
        .route(&format!("{PREFIX}/login/start"), post(login_start))
        .route(&format!("{PREFIX}/login/verify"), post(login_verify))
        .with_state(server)
}

/// A refusal as an HTTP response.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    body: ErrorBody,
}

impl Refused {
    fn new(status: StatusCode, error: &str, reason: impl Into<String>) -> Self {
        Refused {
            status,
            body: ErrorBody {
                error: error.into(),
                reason: reason.into(),
                retry_after: None,
                attempts_left: None,
            },
        }
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.body.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self.body)).into_response();
        if let Some(secs) = self.body.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "key server database error");
        Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the key server cannot reach its database; retry later",
        )
    }
}

async fn params(State(s): State<Arc<KeyServer>>) -> Response {
    let mut response = Json(&s.params).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Longest string from a request that goes into the audit log.
const AUDIT_FIELD_MAX: usize = 320;

fn clip(s: &str) -> String {
    s.chars().take(AUDIT_FIELD_MAX).collect()
}

/// What an audit row is about.
struct Event<'a> {
    actor: &'a str,
    client: SocketAddr,
    address: Option<&'a str>,
    epoch: Option<&'a str>,
    kind: Option<&'a str>,
}

impl Event<'_> {
    fn entry(&self, at: u64, outcome: &str) -> AuditEntry {
        AuditEntry {
            at,
            actor: clip(self.actor),
            client: self.client.ip().to_string(),
            address: self.address.map(clip),
            epoch: self.epoch.map(clip),
            kind: self.kind.map(str::to_string),
            outcome: outcome.to_string(),
        }
    }
}

impl KeyServer {
    /// Writes an audit row; a failure is logged (the request is being refused anyway).
    async fn audit(&self, event: &Event<'_>, outcome: &str) {
        if let Err(e) = self
            .store
            .audit(&event.entry(self.clock.now(), outcome))
            .await
        {
            tracing::error!(error = %e, outcome, "cannot write the audit log");
        }
    }

    /// Audits a refusal and returns it.
    async fn refuse(&self, event: &Event<'_>, refused: Refused) -> Refused {
        self.audit(event, &format!("refused:{}", refused.body.error))
            .await;
        refused
    }

    async fn requester(&self, headers: &HeaderMap) -> Result<Option<Requester>, StoreError> {
        let Some(token) = bearer(headers) else {
            return Ok(None);
        };
        if token.starts_with(GATEWAY_TOKEN_PREFIX) {
            return Ok(self
                .store
                .find_token(token)
                .await?
                .map(|t| Requester::Gateway {
                    name: t.name,
                    domains: t.domains,
                }));
        }
        if token.starts_with(SESSION_TOKEN_PREFIX) {
            let now = self.clock.now();
            return Ok(self
                .store
                .find_session(token, now)
                .await?
                .and_then(|a| Address::parse(&a).ok())
                .map(|address| Requester::Person { address }));
        }
        Ok(None)
    }
}

/// Parses a JSON body, answering 400 with the reason instead of axum's plain-text rejection.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refused> {
    serde_json::from_slice(body).map_err(|e| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the request body is not valid: {e}"),
        )
    })
}
