//! `POST /api/keys/v1/key`: who asks (a gateway's token, a person's session, nobody), which
//! months and kinds they may have, the key extracted for them, and the audit line.

use super::*;

pub(super) async fn key(
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
