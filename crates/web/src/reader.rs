//! The Zero Download reader under `/read`.
//!
//! 1. `POST /read` takes the sealed message posted by `encrypted_message.htm` (no CSRF token is
//!    possible there: the form comes from a file; the post only starts a session).
//! 2. The person picks one of the message's recipient addresses; the key server emails a
//!    one-time code to it (`POST .../code`).
//! 3. The code is traded for a key server session bound to that address (`POST .../open`); the
//!    gateway fetches the decryption key with it and opens the message on the server.
//! 4. The message is shown; attachments download; replies and forwards are sealed and signed
//!    with the person's key ([`crate::compose`]).
//!
//! A proven address stays proven for the session, so a second message to it opens at once.
//! The session's id changes when a code is accepted (an id planted before the proof sees
//! nothing after it), and "Sign out" ends it.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use envelope::{Address, Header, Opener};
use keys::{ClientError, KeyClient, KeyKind};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Gateway;
use crate::page::{PageError, Posted, render};
use crate::render::{View, view};
use crate::security::{self, CookieRules, same_secret};
use crate::sessions::{Sessions, Standing};

/// The reader's session cookie.
pub const COOKIE: &str = "postern_reader";

/// Most messages one session holds.
const MESSAGES_PER_SESSION: usize = 20;

/// Most sessions at once that have not proven an address (anyone can start one with a post),
/// and apart from them, most that have: a flood of posts never ends a proven session.
const MAX_ANONYMOUS: usize = 10_000;
const MAX_PROVEN: usize = 10_000;

/// Bytes the reader holds in memory across every session: the sealed messages posted to it
/// and the messages opened. Anyone can post, so without a bound a few large posts would take
/// the gateway's memory; past it, a post is refused with 503 until sessions end.
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

/// A share of the [`Budget`], given back when its letter or opened message is dropped (with its
/// session, when that ends).
pub(crate) struct Ticket {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    fn take(self: &Arc<Self>, bytes: usize) -> Option<Ticket> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .ok()
            .map(|_| Ticket {
                budget: self.clone(),
                bytes,
            })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

fn busy() -> PageError {
    PageError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The reader is busy",
        "The gateway is holding as many messages as it may just now. Try again in a few minutes.",
    )
}

/// An opened message.
pub(crate) struct Opened {
    /// The address it was opened as.
    pub(crate) address: Address,
    /// The original message.
    pub(crate) plain: Zeroizing<Vec<u8>>,
    /// The signature verdict.
    pub(crate) signature: mime::Signature,
    _held: Ticket,
}

/// Where a letter's sealed message is.
#[derive(Clone)]
enum Sealed {
    /// Posted from `encrypted_message.htm` (counted in the budget).
    Posted(Arc<Vec<u8>>),
    /// Kept on the gateway (a large message, a forward-to-decrypt link): read from its file.
    Kept { path: std::path::PathBuf, size: u64 },
}

impl Sealed {
    fn size(&self) -> usize {
        match self {
            Sealed::Posted(b) => b.len(),
            Sealed::Kept { size, .. } => usize::try_from(*size).unwrap_or(usize::MAX),
        }
    }
}

/// A message posted to the reader.
pub(crate) struct Letter {
    /// Its place in the session, to drop the oldest first.
    seq: u64,
    sealed: Sealed,
    _held: Ticket,
    header: Header,
    /// The address a code was last sent to.
    code_sent_to: Option<Address>,
    pub(crate) opened: Option<Arc<Opened>>,
}

/// One browser's reader session.
pub(crate) struct ReaderSession {
    pub(crate) csrf: String,
    pub(crate) letters: HashMap<String, Letter>,
    /// Letters posted so far.
    posted: u64,
    /// Addresses proven in this session, each with its key server login.
    pub(crate) proven: HashMap<Address, Arc<KeyClient>>,
}

/// The reader's state.
pub(crate) struct Reader {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) sessions: Sessions<ReaderSession>,
    pub(crate) cookies: CookieRules,
    budget: Arc<Budget>,
    /// Messages each person sent from the reader in the last hour.
    pub(crate) sent: store::RateLimit,
}

impl Reader {
    pub(crate) fn now(&self) -> u64 {
        self.gateway.keys.now()
    }

    /// The session of this request, if live.
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<Arc<Mutex<ReaderSession>>> {
        let id = security::cookie(headers, COOKIE)?;
        self.sessions.get(id, self.now())
    }
}

/// The `/read` routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let limit = gateway.settings.max_post_bytes;
    let reader = Arc::new(Reader {
        sessions: Sessions::new(
            gateway.settings.reader_idle_secs,
            gateway.settings.reader_lifetime_secs,
            MAX_ANONYMOUS,
            MAX_PROVEN,
        ),
        cookies: CookieRules {
            secure: gateway.settings.secure_cookies,
        },
        budget: Arc::new(Budget {
            used: AtomicUsize::new(0),
            limit: gateway.settings.reader_memory_bytes,
        }),
        sent: store::RateLimit::hourly(),
        gateway,
    });
    Router::new()
        .route("/read", get(landing).post(receive))
        .route("/read/kept/{token}", get(kept))
        .route("/read/m/{mid}", get(show))
        .route("/read/m/{mid}/code", get(code_page).post(send_code))
        .route("/read/m/{mid}/open", post(open))
        .route("/read/m/{mid}/part/{n}", get(download))
        .route("/read/m/{mid}/compose", get(crate::compose::form))
        .route("/read/m/{mid}/send", post(crate::compose::send))
        .route("/read/signout", post(sign_out))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(reader)
}

/// Locks a session's state, turning a poisoned lock into an error page.
pub(crate) fn lock(
    s: &Mutex<ReaderSession>,
) -> Result<std::sync::MutexGuard<'_, ReaderSession>, PageError> {
    s.lock()
        .map_err(|_| PageError::internal("a reader session is damaged", "poisoned lock"))
}

fn expired() -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "This reading session has ended",
        "Sessions end after a while without use, and when the gateway restarts. Open the attachment encrypted_message.htm again and click \"Open my email\".",
    )
}

/// `GET /read`: what to do to get here properly.
async fn landing() -> Response {
    PageError::new(
        StatusCode::OK,
        "Open an encrypted message",
        "To read an encrypted message, open its attachment encrypted_message.htm and click \"Open my email\". The message is sent here and opened after you prove your address.",
    )
    .into_response()
}

#[derive(Deserialize)]
struct SealedForm {
    #[serde(default)]
    format: Option<String>,
    sealed: String,
}

/// `POST /read`: the sealed message from `encrypted_message.htm`.
async fn receive(
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
async fn kept(
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
    let path = found.path.clone();
    let header = tokio::task::spawn_blocking(move || {
        std::fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                envelope::read_header(std::io::BufReader::new(f)).map_err(|e| e.to_string())
            })
    })
    .await
    .map_err(|e| PageError::internal("cannot read the message", e))?
    // Removed as it expired, between the look-up and now.
    .map_err(|_| gone())?;
    reader.sessions.sweep(reader.now());
    // The sealed message stays in its file; the header (a key capsule per recipient) is held.
    let held = reader
        .budget
        .take(4096 + 512 * header.recipients.len())
        .ok_or_else(busy)?;
    let sealed = Sealed::Kept {
        path: found.path,
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

#[derive(Serialize)]
struct ChooseCtx {
    mid: String,
    csrf: String,
    sender: String,
    recipients: Vec<String>,
    proven: Vec<String>,
    /// Some address is proven in this session (it has something to sign out of).
    signed_in: bool,
    notice: Option<String>,
}

#[derive(Serialize)]
struct MessageCtx<'a> {
    mid: &'a str,
    csrf: &'a str,
    me: String,
    view: &'a View,
    signature: Signature,
    remote_shown: bool,
}

/// The signature verdict for people.
#[derive(Serialize)]
pub(crate) struct Signature {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

pub(crate) fn signature_text(s: &mime::Signature, sender: &Address) -> Signature {
    match s {
        mime::Signature::Sender(a) => Signature {
            ok: true,
            text: format!("Signed by {a}"),
        },
        mime::Signature::DefaultSender(a) => Signature {
            ok: true,
            text: format!(
                "Signed by {a}, the organization's default sender, on behalf of {sender}"
            ),
        },
        mime::Signature::Invalid { claimed, reason } => Signature {
            ok: false,
            text: format!(
                "Warning: the signature does not verify ({reason}). This message may not come from {claimed}."
            ),
        },
    }
}

#[derive(Deserialize)]
struct ShowQuery {
    #[serde(default)]
    remote: Option<u8>,
}

/// `GET /read/m/{mid}`: the address choice, or the opened message.
async fn show(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(mid): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, PageError> {
    let session = reader.session(&headers).ok_or_else(expired)?;
    let (opened, sender, csrf) = {
        let s = lock(&session)?;
        let letter = s.letters.get(&mid).ok_or_else(expired)?;
        let Some(opened) = letter.opened.clone() else {
            let recipients: Vec<String> = letter
                .header
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect();
            let proven = recipients
                .iter()
                .filter(|r| s.proven.keys().any(|p| p.as_str() == r.as_str()))
                .cloned()
                .collect();
            return Ok(render(
                "reader/choose.html",
                ChooseCtx {
                    mid: mid.clone(),
                    csrf: s.csrf.clone(),
                    sender: letter.header.sender.to_string(),
                    recipients,
                    proven,
                    signed_in: !s.proven.is_empty(),
                    notice: None,
                },
            ));
        };
        (opened, letter.header.sender.clone(), s.csrf.clone())
    };
    let remote = q.remote == Some(1);
    let base = format!("/read/m/{mid}");
    let shown = opened.clone();
    let v = tokio::task::spawn_blocking(move || view(&shown.plain, &base, remote))
        .await
        .map_err(|e| PageError::internal("cannot show the message", e))?
        .map_err(|e| PageError::internal("cannot show the message", e))?;
    let mut response = render(
        "reader/message.html",
        MessageCtx {
            mid: &mid,
            csrf: &csrf,
            me: opened.address.to_string(),
            view: &v,
            signature: signature_text(&opened.signature, &sender),
            remote_shown: remote,
        },
    );
    if remote {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(security::csp_with_remote_images()),
        );
    }
    Ok(response)
}

#[derive(Deserialize)]
struct CodeForm {
    csrf: String,
    address: String,
}

/// `POST /read/m/{mid}/code`: send a one-time code to the chosen address, or open at once when
/// it is already proven in this session.
async fn send_code(
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
async fn code_page(
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
struct OpenForm {
    csrf: String,
    code: String,
}

/// `POST /read/m/{mid}/open`: trade the code for a login and open the message.
async fn open(
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
struct SignOutForm {
    csrf: String,
}

/// `POST /read/signout`: ends the session and everything in it (messages, proven addresses).
async fn sign_out(
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
            Sealed::Kept { path, .. } => {
                let file = std::fs::File::open(path).map_err(|_| {
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

#[derive(Deserialize)]
struct PartQuery {
    #[serde(default)]
    inline: Option<u8>,
}

/// Image types shown inline (an inline image in the HTML body). SVG is not among them: it can
/// carry scripts.
const INLINE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// `GET /read/m/{mid}/part/{n}`: an attachment, always as a download.
async fn download(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    Path((mid, n)): Path<(String, usize)>,
    Query(q): Query<PartQuery>,
) -> Result<Response, PageError> {
    let session = reader.session(&headers).ok_or_else(expired)?;
    let opened = {
        let s = lock(&session)?;
        s.letters
            .get(&mid)
            .and_then(|l| l.opened.clone())
            .ok_or_else(expired)?
    };
    let (name, ctype, bytes) =
        tokio::task::spawn_blocking(move || crate::render::attachment(&opened.plain, n))
            .await
            .map_err(|e| PageError::internal("cannot read the attachment", e))?
            .ok_or_else(|| PageError::not_found("The message has no such attachment."))?;
    let inline = q.inline == Some(1) && INLINE_TYPES.contains(&ctype.as_str());
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    let (ctype, disposition) = if inline {
        (ctype, "inline".to_string())
    } else {
        (
            "application/octet-stream".to_string(),
            format!(
                "attachment; filename=\"{}\"; filename*=UTF-8''{}",
                name.replace(|c: char| !c.is_ascii() || c == '\\', "_"),
                security::percent_encode(&name)
            ),
        )
    };
    if let Ok(v) = HeaderValue::from_str(&ctype) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_budget_refuses_past_its_limit_and_takes_back_what_is_dropped() {
        let budget = Arc::new(Budget {
            used: AtomicUsize::new(0),
            limit: 100,
        });
        let a = budget.take(60);
        assert!(a.is_some());
        assert!(budget.take(41).is_none(), "over the limit");
        let b = budget.take(40);
        assert!(b.is_some(), "exactly at the limit");
        drop(a);
        assert!(budget.take(60).is_some(), "a dropped share is given back");
        drop(b);
        assert_eq!(budget.used.load(Ordering::SeqCst), 0);
    }
}
