//! Receiving a sealed message: posted from `encrypted_message.htm` (no CSRF token is possible
//! there: the form comes from a file; the post only starts a session), or kept on the gateway
//! and reached by a link. Either becomes a letter in the browser's session.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use envelope::Header;
use serde::Deserialize;

use super::budget::{Ticket, busy};
use super::{COOKIE, Letter, Reader, ReaderSession, Sealed, expired, lock};
use crate::page::PageError;
use crate::security;
use crate::sessions::Standing;

/// Most messages one session holds.
const MESSAGES_PER_SESSION: usize = 20;

/// `GET /read`: what to do to get here properly.
pub(super) async fn landing() -> Response {
    PageError::new(
        StatusCode::OK,
        "Open an encrypted message",
        "To read an encrypted message, open its attachment encrypted_message.htm and click \"Open my email\". The message is sent here and opened after you prove your address.",
    )
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct SealedForm {
    #[serde(default)]
    format: Option<String>,
    sealed: String,
}

/// `POST /read`: the sealed message from `encrypted_message.htm`.
pub(super) async fn receive(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    form: Result<Form<SealedForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    let Form(posted) = form.map_err(|e| {
        PageError::bad(
            "This is not an encrypted message",
            format!("The form did not carry a sealed message ({}). Open encrypted_message.htm from the email and click \"Open my email\".", e.body_text()),
        )
    })?;
    if let Some(f) = &posted.format
        && f != "postern-sealed-1"
    {
        return Err(PageError::bad(
            "Unknown message format",
            format!("This reader reads format postern-sealed-1, not {f:?}."),
        ));
    }
    let sealed = decode_posted(&posted.sealed)?;
    let header = envelope::read_header(Cursor::new(&sealed)).map_err(|e| {
        PageError::bad(
            "This encrypted message is damaged",
            format!("Its sealed part cannot be read ({e}). Ask the sender to send it again."),
        )
    })?;
    // Ended sessions give their share back first.
    reader.sessions.sweep(reader.now());
    let held = reader.budget.take(sealed.len()).ok_or_else(busy)?;
    add_letter(
        &reader,
        &headers,
        Sealed::Posted(Arc::new(sealed)),
        header,
        held,
    )
}

/// `GET /read/kept/{token}`: a sealed message kept on the gateway, from the link in a large
/// message's `encrypted_message.htm` or in a forward-to-decrypt answer.
pub(super) async fn kept(
    State(reader): State<Arc<Reader>>,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let gone = || {
        PageError::new(
            StatusCode::NOT_FOUND,
            "This link no longer works",
            "Links to encrypted messages work for a limited time. Open the attachment encrypted_message.htm of the original email again, or forward the email to the decrypt address once more for a new link.",
        )
    };
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(gone());
    }
    let found = reader
        .gateway
        .queue
        .kept(&token.to_ascii_lowercase(), reader.now())
        .await
        .map_err(|e| PageError::internal("cannot look up the message", e))?
        .ok_or_else(gone)?;
    let body = found.body.clone();
    let header = tokio::task::spawn_blocking(move || {
        body.open().map_err(|e| e.to_string()).and_then(|f| {
            envelope::read_header(std::io::BufReader::new(f)).map_err(|e| e.to_string())
        })
    })
    .await
    .map_err(|e| PageError::internal("cannot read the message", e))?
    // Removed as it expired, between the look-up and now.
    .map_err(|_| gone())?;
    reader.sessions.sweep(reader.now());
    // A large sealed message stays in its file; the header (a key capsule per recipient) is
    // held, and so is a small one read from the database.
    let in_memory = if found.body.in_memory() {
        usize::try_from(found.size).unwrap_or(usize::MAX)
    } else {
        0
    };
    let held = reader
        .budget
        .take((4096 + 512 * header.recipients.len()).saturating_add(in_memory))
        .ok_or_else(busy)?;
    let sealed = Sealed::Kept {
        body: found.body,
        size: found.size,
    };
    // A link is followed from anywhere, and the session cookie goes with a top-level GET from
    // another site: start a session of its own, so that a link cannot add letters to an
    // existing session or reach the addresses already proven in it.
    add_letter(&reader, &HeaderMap::new(), sealed, header, held)
}

/// Adds a letter to the request's session (starting one when there is none), dropping the
/// session's oldest when it is full; redirects to the letter.
fn add_letter(
    reader: &Reader,
    headers: &HeaderMap,
    sealed: Sealed,
    header: Header,
    held: Ticket,
) -> Result<Response, PageError> {
    let now = reader.now();
    let mid = security::random_token()[..24].to_string();
    let mut set_cookie = None;
    let session = match reader.session(headers) {
        Some(s) => s,
        None => {
            let id = reader.sessions.start(
                ReaderSession {
                    csrf: security::random_token(),
                    letters: HashMap::new(),
                    posted: 0,
                    proven: HashMap::new(),
                },
                Standing::Anonymous,
                now,
            );
            set_cookie = Some(reader.cookies.session(COOKIE, &id, "/read", false));
            reader.sessions.get(&id, now).ok_or_else(expired)?
        }
    };
    {
        let mut s = lock(&session)?;
        if s.letters.len() >= MESSAGES_PER_SESSION
            && let Some(oldest) = s
                .letters
                .iter()
                .min_by_key(|(_, l)| l.seq)
                .map(|(k, _)| k.clone())
        {
            s.letters.remove(&oldest);
        }
        s.posted += 1;
        let letter = Letter {
            seq: s.posted,
            sealed,
            _held: held,
            header,
            code_sent_to: None,
            opened: None,
        };
        s.letters.insert(mid.clone(), letter);
    }
    let mut response = Redirect::to(&format!("/read/m/{mid}")).into_response();
    if let Some(c) = set_cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// The sealed bytes in the posted text: the base64 lines between the markers.
fn decode_posted(text: &str) -> Result<Vec<u8>, PageError> {
    use std::io::Read;
    let mut reader = mime::SealedReader::new(Cursor::new(text.as_bytes()));
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| {
        PageError::bad(
            "This encrypted message is damaged",
            format!("The sealed message in the page cannot be read ({e}). Open encrypted_message.htm from the original email again."),
        )
    })?;
    Ok(out)
}
