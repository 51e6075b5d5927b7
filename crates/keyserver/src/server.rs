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

async fn key(
    State(s): State<Arc<KeyServer>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<KeyResponse>, Refused> {
    let anonymous = Event {
        actor: "unknown",
        client,
        address: None,
        epoch: None,
        kind: None,
    };
    let now = s.clock.now();
    let who = s.requester(&headers).await?;
    // Unauthenticated and session requests are limited per network before anything is written.
    if !matches!(who, Some(Requester::Gateway { .. }))
        && let Err(wait) = s
            .keys_per_ip
            .check(
                &client_key(client.ip()),
                now,
                u64::from(s.config.session_key_requests_per_ip_per_minute),
            )
            .await
    {
        return Err(Refused::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many key requests from this network address",
        )
        .retry_after(wait));
    }
    let req: KeyRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(refused) => {
            let actor = who
                .as_ref()
                .map_or_else(|| "unknown".to_string(), Requester::actor);
            let event = Event {
                actor: &actor,
                ..anonymous
            };
            return Err(s.refuse(&event, refused).await);
        }
    };
    let kind = req.kind.as_str();
    let Some(who) = who else {
        let event = Event {
            address: Some(&req.email),
            epoch: Some(&req.epoch),
            kind: Some(kind),
            ..anonymous
        };
        return Err(s
            .refuse(
                &event,
                Refused::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_credentials",
                    "the token is missing, unknown, revoked or expired",
                ),
            )
            .await);
    };
    let actor = who.actor();
    let event = Event {
        actor: &actor,
        client,
        address: Some(&req.email),
        epoch: Some(&req.epoch),
        kind: Some(kind),
    };
    let address = match Address::parse(&req.email) {
        Ok(a) => a,
        Err(e) => {
            let r = Refused::new(
                StatusCode::BAD_REQUEST,
                "invalid_address",
                format!("email: {e}"),
            );
            return Err(s.refuse(&event, r).await);
        }
    };
    let event = Event {
        address: Some(address.as_str()),
        ..event
    };
    let epoch: Epoch = match req.epoch.parse() {
        Ok(e) => e,
        Err(e) => {
            let r = Refused::new(
                StatusCode::BAD_REQUEST,
                "invalid_epoch",
                format!("epoch: {e}"),
            );
            return Err(s.refuse(&event, r).await);
        }
    };
    let master_id = match req.key_id.as_deref() {
        None => s.master.newest().public().id(),
        Some(text) => match text
            .parse::<KeyId>()
            .ok()
            .filter(|id| s.master.get(*id).is_ok())
        {
            Some(id) => id,
            None => {
                let r = Refused::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_key_id",
                    format!("key_id: no master key {text:?} on this key server"),
                );
                return Err(s.refuse(&event, r).await);
            }
        },
    };
    let window = u64::from(s.config.prefetch_window_days) * 86_400;
    if let Err(refusal) = grant::decide(&who, &address, epoch, now, window) {
        let r = Refused::new(StatusCode::FORBIDDEN, refusal.code(), refusal.reason());
        return Err(s.refuse(&event, r).await);
    }
    // Extraction takes milliseconds of CPU: keep it off the async workers.
    let master = s.master.clone();
    let identity = Identity::new(address.clone(), epoch);
    let extracted = tokio::task::spawn_blocking(move || {
        let msk = master.get(master_id).ok()?;
        let bytes = match req.kind {
            KeyKind::Decrypt => msk.extract_decryption_key(&identity, &mut OsRng).to_bytes(),
            KeyKind::Sign => msk.extract_signing_key(&identity, &mut OsRng).to_bytes(),
        };
        Some(zeroize::Zeroizing::new(STANDARD.encode(&bytes)))
    })
    .await;
    let Ok(Some(encoded)) = extracted else {
        let r = Refused::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "key extraction failed",
        );
        return Err(s.refuse(&event, r).await);
    };
    // No key leaves without its audit row.
    if let Err(e) = s.store.audit(&event.entry(now, "issued")).await {
        tracing::error!(error = %e, "cannot write the audit log; key withheld");
        return Err(Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the key server cannot write its audit log; retry later",
        ));
    }
    tracing::info!(actor, address = %address, %epoch, kind, "key issued");
    Ok(Json(KeyResponse {
        email: address.to_string(),
        epoch: epoch.to_string(),
        kind: req.kind,
        key_id: master_id.to_string(),
        key: encoded.to_string(),
    }))
}

fn code_hash(salt: &[u8], address: &str, code: &str) -> Vec<u8> {
    Sha256::new()
        .chain_update(b"postern/v1/login-code")
        .chain_update(salt)
        .chain_update(address.as_bytes())
        .chain_update([0])
        .chain_update(code.as_bytes())
        .finalize()
        .to_vec()
}

/// Wrong codes are counted per address over this window, whatever the number of codes sent.
const ATTEMPT_WINDOW: u64 = 3600;

impl KeyServer {
    fn locked(&self, remaining: u64) -> Refused {
        let minutes = remaining.div_ceil(60);
        Refused::new(
            StatusCode::LOCKED,
            "locked",
            format!(
                "too many wrong codes: this address is locked; try again in {minutes} minute(s)"
            ),
        )
        .retry_after(remaining)
    }

    /// The per-network limit on login requests, checked before anything is parsed or written,
    /// so that a flood cannot grow the audit log.
    async fn login_flood_check(&self, client: SocketAddr) -> Result<(), Refused> {
        self.login_per_ip
            .check(
                &client_key(client.ip()),
                self.clock.now(),
                u64::from(self.config.login_requests_per_ip_per_minute),
            )
            .await
            .map_err(|wait| {
                Refused::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many login requests from this network address",
                )
                .retry_after(wait)
            })
    }

    async fn check_login_limits(&self, event: &Event<'_>, now: u64) -> Result<(), Refused> {
        if let Some(address) = event.address
            && let Some(until) = self.store.locked_until(address, now).await?
        {
            return Err(self.refuse(event, self.locked(until - now)).await);
        }
        Ok(())
    }

    async fn lock(&self, address: &str, now: u64) -> Result<(), StoreError> {
        self.store.delete_code(address).await?;
        self.store
            .lock(address, now + self.config.lockout_secs)
            .await?;
        self.store.clear_attempts(address).await
    }
}

fn login_event(client: SocketAddr, address: Option<&str>) -> Event<'_> {
    Event {
        actor: "anonymous",
        client,
        address,
        epoch: None,
        kind: Some("login"),
    }
}

async fn login_start(
    State(s): State<Arc<KeyServer>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<LoginStarted>), Refused> {
    s.login_flood_check(client).await?;
    let req: LoginStart = match parse_body(&body) {
        Ok(r) => r,
        Err(r) => return Err(s.refuse(&login_event(client, None), r).await),
    };
    let address = match Address::parse(&req.email) {
        Ok(a) => a,
        Err(e) => {
            let r = Refused::new(
                StatusCode::BAD_REQUEST,
                "invalid_address",
                format!("email: {e}"),
            );
            return Err(s.refuse(&login_event(client, Some(&req.email)), r).await);
        }
    };
    let addr = address.as_str();
    let event = login_event(client, Some(addr));
    let now = s.clock.now();
    s.check_login_limits(&event, now).await?;
    if let Some(pending) = s.store.get_code(addr).await? {
        let ready = pending.sent_at + s.config.resend_cooldown_secs;
        if ready > now && pending.expires > now {
            let r = Refused::new(
                StatusCode::TOO_MANY_REQUESTS,
                "resend_cooldown",
                "a code was sent moments ago; wait before asking for another",
            )
            .retry_after(ready - now);
            return Err(s.refuse(&event, r).await);
        }
    }
    // Checked before anything is stored or counted: a relay that does not answer is said at
    // once (503, not 202 and a code that never comes). The check does not involve the address,
    // so the answer still tells nothing about it.
    if let Err(e) = s.mailer.check().await {
        tracing::warn!(address = %addr, error = %e, "cannot send a login code: the relay for code emails does not answer");
        s.mailer.count_unsent();
        let r = Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            MAIL_UNAVAILABLE,
            "the code email cannot be sent just now (the server's mail relay does not answer); try again later",
        );
        return Err(s.refuse(&event, r).await);
    }
    if let Err(wait) = s
        .codes_per_address
        .check(addr, now, u64::from(s.config.codes_per_address_per_hour))
        .await
    {
        let r = Refused::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many codes were sent to this address",
        )
        .retry_after(wait);
        return Err(s.refuse(&event, r).await);
    }
    let code = zeroize::Zeroizing::new(format!("{:06}", OsRng.gen_range(0..1_000_000u32)));
    let mut salt = vec![0u8; 16];
    OsRng.fill(&mut salt[..]);
    let row = CodeRow {
        hash: code_hash(&salt, addr, &code),
        salt,
        sent_at: now,
        expires: now + s.config.code_ttl_secs,
        attempts_left: s.config.code_attempts,
    };
    s.store.put_code(addr, &row).await?;
    // Sent in its own task, so that the answer does not tell (by status or by time) whether the
    // relay took the address, and a client that hangs up does not cut the send short.
    let sender = s.clone();
    let to = addr.to_string();
    tokio::spawn(async move {
        let event = login_event(client, Some(&to));
        match sender
            .mailer
            .send_code(&to, &code, sender.config.code_ttl_secs / 60)
            .await
        {
            Ok(()) => sender.audit(&event, "code_sent").await,
            Err(e) => {
                tracing::warn!(address = %to, error = %e, "cannot send a login code");
                let _ = sender.store.consume_code(&to, &row.hash).await;
                sender
                    .audit(&event, &format!("refused:{MAIL_UNAVAILABLE}"))
                    .await;
            }
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(LoginStarted {
            expires_in: s.config.code_ttl_secs,
            resend_after: s.config.resend_cooldown_secs,
        }),
    ))
}

async fn login_verify(
    State(s): State<Arc<KeyServer>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Result<Json<Session>, Refused> {
    s.login_flood_check(client).await?;
    let req: LoginVerify = match parse_body(&body) {
        Ok(r) => r,
        Err(r) => return Err(s.refuse(&login_event(client, None), r).await),
    };
    let address = match Address::parse(&req.email) {
        Ok(a) => a,
        Err(e) => {
            let r = Refused::new(
                StatusCode::BAD_REQUEST,
                "invalid_address",
                format!("email: {e}"),
            );
            return Err(s.refuse(&login_event(client, Some(&req.email)), r).await);
        }
    };
    let addr = address.as_str();
    let event = login_event(client, Some(addr));
    let now = s.clock.now();
    s.check_login_limits(&event, now).await?;
    let Some(pending) = s.store.get_code(addr).await? else {
        let r = Refused::new(
            StatusCode::UNAUTHORIZED,
            "no_code",
            "no code is pending for this address; ask for a new one",
        );
        return Err(s.refuse(&event, r).await);
    };
    if pending.expires <= now {
        s.store.delete_code(addr).await?;
        let r = Refused::new(
            StatusCode::UNAUTHORIZED,
            "code_expired",
            "the code has expired; ask for a new one",
        );
        return Err(s.refuse(&event, r).await);
    }
    // Count the attempt before comparing: concurrent guesses are all counted, and once the
    // allowance is spent no further guess is even compared.
    let attempts = s.store.count_attempt(addr, now, ATTEMPT_WINDOW).await?;
    // A guess that raced with the one that locked the address must not start a new count.
    if let Some(until) = s.store.locked_until(addr, now).await? {
        return Err(s.refuse(&event, s.locked(until - now)).await);
    }
    let allowed = s.config.code_attempts;
    if attempts > allowed {
        s.lock(addr, now).await?;
        return Err(s.refuse(&event, s.locked(s.config.lockout_secs)).await);
    }
    let typed: String = req.code.chars().filter(|c| !c.is_whitespace()).collect();
    let matches: bool = code_hash(&pending.salt, addr, &typed)
        .ct_eq(&pending.hash)
        .into();
    if matches {
        // Exactly one request may use a code.
        if !s.store.consume_code(addr, &pending.hash).await? {
            let r = Refused::new(
                StatusCode::UNAUTHORIZED,
                "no_code",
                "no code is pending for this address; ask for a new one",
            );
            return Err(s.refuse(&event, r).await);
        }
        s.store.clear_attempts(addr).await?;
        let expires_at = now + s.config.session_ttl_secs;
        let token = s.store.create_session(addr, expires_at).await?;
        let actor = format!("person:{addr}");
        s.audit(
            &Event {
                actor: &actor,
                ..event
            },
            "login",
        )
        .await;
        return Ok(Json(Session {
            token: token.to_string(),
            email: addr.to_string(),
            expires_at,
        }));
    }
    if attempts >= allowed {
        s.lock(addr, now).await?;
        return Err(s.refuse(&event, s.locked(s.config.lockout_secs)).await);
    }
    let left = allowed - attempts;
    let mut refused = Refused::new(
        StatusCode::UNAUTHORIZED,
        "wrong_code",
        format!("the code is wrong; {left} attempt(s) left"),
    );
    refused.body.attempts_left = Some(left);
    Err(s.refuse(&event, refused).await)
}
