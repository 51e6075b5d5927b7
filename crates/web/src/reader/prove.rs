//! Proving an address: a one-time code from the key server to one of the letter's recipient
//! addresses, traded for a key server login bound to it, with which the gateway fetches the
//! key and opens the letter. A proven address stays proven for the session; "Sign out" ends it.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use envelope::{Address, Opener};
use keys::{ClientError, KeyClient, KeyKind};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::budget::busy;
use super::{COOKIE, Opened, Reader, ReaderSession, Sealed, expired, lock};
use crate::page::{PageError, Posted, render};
use crate::security::{self, same_secret};

#[derive(Deserialize)]
pub(super) struct CodeForm {
    csrf: String,
    address: String,
}

/// `POST /read/m/{mid}/code`: send a one-time code to the chosen address, or open at once when
/// it is already proven in this session.
pub(super) async fn send_code(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(mid): Path<String>,
    Posted(form): Posted<CodeForm>,
) -> Result<Response, PageError> {
    let session = reader.session(&headers).ok_or_else(expired)?;
    let back = format!("/read/m/{mid}");
    let (address, proven) = {
        let s = lock(&session)?;
        if !same_secret(&form.csrf, &s.csrf) {
            return Err(PageError::forgery().back(back));
        }
        let letter = s.letters.get(&mid).ok_or_else(expired)?;
        let address = letter
            .header
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .find(|a| a.as_str() == form.address.trim())
            .ok_or_else(|| {
                PageError::bad(
                    "Choose one of the listed addresses",
                    "The message was not sent to that address, so it cannot be opened with it.",
                )
                .back(back.clone())
            })?;
        let proven = s.proven.get(&address).cloned();
        (address, proven)
    };
    if let Some(client) = proven {
        let opened = open_with(&reader, &session, &mid, &address, &client).await;
        if let Err(e) = opened {
            // The key server login may have ended: the next try sends a new code.
            lock(&session)?.proven.remove(&address);
            return Err(e.back(back));
        }
        return Ok(Redirect::to(&back).into_response());
    }
    let client = reader.gateway.keys.client().for_person();
    match client.login_start(address.as_str()).await {
        Ok(_) => {}
        Err(e) => return Err(key_server_error(e, "send a code").back(back)),
    }
    {
        let mut s = lock(&session)?;
        if let Some(l) = s.letters.get_mut(&mid) {
            l.code_sent_to = Some(address.clone());
        }
    }
    tracing::info!(address = %address, "reader: a one-time code was sent");
    Ok(Redirect::to(&format!("/read/m/{mid}/code")).into_response())
}

/// A key server failure in words for the person.
fn key_server_error(e: ClientError, doing: &str) -> PageError {
    match e {
        ClientError::Refused {
            reason,
            retry_after,
            ..
        } => {
            let wait = retry_after
                .map(|s| format!(" Try again in {} minute(s).", s.div_ceil(60)))
                .unwrap_or_default();
            PageError::new(
                if retry_after.is_some() {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::FORBIDDEN
                },
                "The key server said no",
                format!("{reason}.{wait}"),
            )
        }
        // The gateway's own mail is down: nothing to do with the address, which must not be
        // doubted, and nothing of the gateway's insides to show.
        ClientError::MailUnavailable(_) => PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Your code could not be sent",
            "The gateway cannot send email just now because of a problem on its side. No code was sent. Please try again later; if this goes on, tell the person who sent you the message.",
        ),
        ClientError::BadCredentials(_) => PageError::new(
            StatusCode::FORBIDDEN,
            "Your sign-in has ended",
            "Choose your address again to get a new code.",
        ),
        ClientError::Unreachable(_) => PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The key server cannot be reached",
            format!(
                "The gateway could not {doing} because the key server does not answer. Try again in a few minutes."
            ),
        ),
        other => PageError::internal(&format!("cannot {doing}"), other),
    }
}

#[derive(Serialize)]
struct CodeCtx {
    mid: String,
    csrf: String,
    address: String,
    error: Option<String>,
}

/// `GET /read/m/{mid}/code`: the code form.
pub(super) async fn code_page(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(mid): Path<String>,
) -> Result<Response, PageError> {
    let session = reader.session(&headers).ok_or_else(expired)?;
    let s = lock(&session)?;
    let letter = s.letters.get(&mid).ok_or_else(expired)?;
    let Some(address) = &letter.code_sent_to else {
        return Ok(Redirect::to(&format!("/read/m/{mid}")).into_response());
    };
    Ok(render(
        "reader/code.html",
        CodeCtx {
            mid: mid.clone(),
            csrf: s.csrf.clone(),
            address: address.to_string(),
            error: None,
        },
    ))
}

#[derive(Deserialize)]
pub(super) struct OpenForm {
    csrf: String,
    code: String,
}

/// `POST /read/m/{mid}/open`: trade the code for a login and open the message.
pub(super) async fn open(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mid): Path<String>,
    Posted(form): Posted<OpenForm>,
) -> Result<Response, PageError> {
    let session = reader.session(&headers).ok_or_else(expired)?;
    let (address, csrf) = {
        let s = lock(&session)?;
        if !same_secret(&form.csrf, &s.csrf) {
            return Err(PageError::forgery().back(format!("/read/m/{mid}/code")));
        }
        let letter = s.letters.get(&mid).ok_or_else(expired)?;
        let address = letter.code_sent_to.clone().ok_or_else(|| {
            PageError::bad("No code was sent", "Choose your address first.")
                .back(format!("/read/m/{mid}"))
        })?;
        (address, s.csrf.clone())
    };
    let code: String = form.code.chars().filter(|c| c.is_ascii_digit()).collect();
    let client = reader.gateway.keys.client().for_person();
    if let Err(e) = client.login_verify(address.as_str(), &code).await {
        tracing::info!(address = %address, peer = %peer.ip(), "reader: a code was refused");
        let error = match e {
            ClientError::Refused { reason, .. } | ClientError::BadCredentials(reason) => reason,
            ClientError::Unreachable(_) => {
                "The key server does not answer just now; try again in a few minutes.".into()
            }
            other => return Err(PageError::internal("cannot check the code", other)),
        };
        return Ok(crate::page::render_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reader/code.html",
            CodeCtx {
                mid,
                csrf,
                address: address.to_string(),
                error: Some(error),
            },
        ));
    }
    // A new id for the proven session: one planted in this browser before the proof (by a
    // page that posted a message of its own) must not see what the proof opens.
    let old = security::cookie(&headers, COOKIE).unwrap_or_default();
    let id = reader
        .sessions
        .sign_in(old, reader.now())
        .ok_or_else(expired)?;
    let client = Arc::new(client);
    lock(&session)?
        .proven
        .insert(address.clone(), client.clone());
    tracing::info!(address = %address, peer = %peer.ip(), "reader: an address was proven");
    let mut response = Redirect::to(&format!("/read/m/{mid}")).into_response();
    if let Ok(v) = HeaderValue::from_str(&reader.cookies.session(COOKIE, &id, "/read", false)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    // The cookie goes with the answer even when opening fails: the address stays proven.
    if let Err(e) = open_with(&reader, &session, &mid, &address, &client).await {
        let mut failed = e.into_response();
        if let Some(v) = response.headers_mut().remove(header::SET_COOKIE) {
            failed.headers_mut().insert(header::SET_COOKIE, v);
        }
        return Ok(failed);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub(super) struct SignOutForm {
    csrf: String,
}

/// `POST /read/signout`: ends the session and everything in it (messages, proven addresses).
pub(super) async fn sign_out(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    Posted(form): Posted<SignOutForm>,
) -> Result<Response, PageError> {
    if let Some(session) = reader.session(&headers) {
        if !same_secret(&form.csrf, &lock(&session)?.csrf) {
            return Err(PageError::forgery());
        }
        if let Some(id) = security::cookie(&headers, COOKIE) {
            reader.sessions.end(id);
        }
        tracing::info!("reader: a session was signed out");
    }
    let mut response = PageError::new(
        StatusCode::OK,
        "You are signed out",
        "Your messages were closed on the gateway. To read one again, open encrypted_message.htm from the email and click \"Open my email\"; you will need a new code.",
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&reader.cookies.clear(COOKIE, "/read")) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// Fetches `address`'s key with its login and opens letter `mid` on the server.
async fn open_with(
    reader: &Reader,
    session: &Mutex<ReaderSession>,
    mid: &str,
    address: &Address,
    client: &KeyClient,
) -> Result<(), PageError> {
    let (sealed, epoch, key_id, sender) = {
        let s = lock(session)?;
        let l = s.letters.get(mid).ok_or_else(expired)?;
        (
            l.sealed.clone(),
            l.header.epoch,
            l.header.kem_key_id,
            l.header.sender.clone(),
        )
    };
    let params = reader
        .gateway
        .keys
        .params()
        .await
        .map_err(|e| PageError::new(StatusCode::SERVICE_UNAVAILABLE, "The key server cannot be reached", format!("The gateway has no public parameters to open the message with ({e}). Try again in a few minutes.")))?;
    let (bytes, _) = client
        .key_bytes_for(address, epoch, KeyKind::Decrypt, Some(key_id))
        .await
        .map_err(|e| key_server_error(e, "fetch your key"))?;
    // The opened message is no larger than the sealed one: its share is taken before opening.
    let held = reader.budget.take(sealed.size()).ok_or_else(busy)?;
    let opened = tokio::task::spawn_blocking(move || {
        let key = envelope::DecryptionKey::from_bytes(&bytes).map_err(|e| e.to_string())?;
        let mut plain = Zeroizing::new(Vec::with_capacity(sealed.size()));
        let opener = Opener::new(&params);
        let opened = match &sealed {
            Sealed::Posted(b) => opener.open(&key, Cursor::new(&b[..]), &mut *plain),
            Sealed::Kept { body, .. } => {
                let file = body.open().map_err(|_| {
                    "it is no longer kept on the gateway (its link expired)".to_string()
                })?;
                opener.open(
                    &key,
                    std::io::BufReader::with_capacity(64 * 1024, file),
                    &mut *plain,
                )
            }
        }
        .map_err(|e| e.to_string())?;
        Ok::<_, String>((plain, opened))
    })
    .await
    .map_err(|e| PageError::internal("cannot open the message", e))?;
    let (plain, opened) = opened.map_err(|e| {
        PageError::bad(
            "This message cannot be opened",
            format!(
                "It is damaged or was not sealed to {address} ({e}). Ask {sender} to send it again."
            ),
        )
    })?;
    let signature = transform::signature(&opened.verdict);
    let mut s = lock(session)?;
    if let Some(l) = s.letters.get_mut(mid) {
        l.opened = Some(Arc::new(Opened {
            address: address.clone(),
            plain,
            signature,
            _held: held,
        }));
    }
    tracing::info!(address = %address, "reader: a message was opened");
    Ok(())
}
