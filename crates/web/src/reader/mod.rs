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
//!
//! One module per step: [`receive`] takes the sealed message, [`prove`] proves an address and
//! opens it, [`view`] shows it; [`budget`] bounds the memory all sessions hold.

mod budget;
mod prove;
mod receive;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use envelope::{Address, Header};
use keys::KeyClient;
use zeroize::Zeroizing;

use self::budget::{Budget, Ticket};
use crate::Gateway;
use crate::page::PageError;
use crate::security::{self, CookieRules};
use crate::sessions::Sessions;

/// The reader's session cookie.
pub const COOKIE: &str = "postern_reader";

/// Most sessions at once that have not proven an address (anyone can start one with a post),
/// and apart from them, most that have: a flood of posts never ends a proven session.
const MAX_ANONYMOUS: usize = 10_000;
const MAX_PROVEN: usize = 10_000;

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
    /// Kept on the gateway (a large message, a forward-to-decrypt link).
    Kept { body: store::Body, size: u64 },
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
        budget: Budget::new(gateway.settings.reader_memory_bytes),
        sent: store::RateLimit::hourly(),
        gateway,
    });
    Router::new()
        .route("/read", get(receive::landing).post(receive::receive))
        .route("/read/kept/{token}", get(receive::kept))
        .route("/read/m/{mid}", get(view::show))
        .route(
            "/read/m/{mid}/code",
            get(prove::code_page).post(prove::send_code),
        )
        .route("/read/m/{mid}/open", post(prove::open))
        .route("/read/m/{mid}/part/{n}", get(view::download))
        .route("/read/m/{mid}/compose", get(crate::compose::form))
        .route("/read/m/{mid}/send", post(crate::compose::send))
        .route("/read/signout", post(prove::sign_out))
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

/// The answer when the session, or the letter in it, is gone.
fn expired() -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "This reading session has ended",
        "Sessions end after a while without use, and when the gateway restarts. Open the attachment encrypted_message.htm again and click \"Open my email\".",
    )
}
