//! The code login: a one-time code emailed to an address, checked with limits per network,
//! per address and per code, and a session token for the keys of that address.

use super::*;

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

pub(super) fn login_event(client: SocketAddr, address: Option<&str>) -> Event<'_> {
    Event {
        actor: "anonymous",
        client,
        address,
        epoch: None,
        kind: Some("login"),
    }
}

pub(super) async fn login_start(
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

pub(super) async fn login_verify(
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
