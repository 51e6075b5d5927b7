//! Postern's web side, on the gateway's web listener:
//!
//! - `/read`: the Zero Download reader. A recipient with no software posts the sealed message
//!   from `encrypted_message.htm`, proves an address with a one-time code from the key server,
//!   and reads, replies to and forwards the message in the browser. Keys stay on the server.
//! - `/admin`: the administration console (accounts hashed with Argon2, sessions, CSRF tokens,
//!   an audit log).
//! - `/api/v1`: the REST API, with a bearer token.
//!
//! No page runs a script: every page is HTML and one style sheet, under a Content-Security-Policy
//! that forbids scripts, so a message's HTML cannot run even if the sanitizer missed something.

pub mod admin;
pub mod api;
pub mod compose;
pub mod config_form;
pub mod listener;
pub mod page;
pub mod reader;
pub mod render;
pub mod rule_form;
pub mod security;
pub mod sessions;
pub mod status;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use mime::MimeSettings;
use store::Queue;
use transform::KeyRing;

/// Settings of the web pages.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Cookies get `Secure` (the listener has TLS).
    pub secure_cookies: bool,
    /// A reader session ends after this long without a request.
    pub reader_idle_secs: u64,
    /// ... and this long after it began, whatever happens.
    pub reader_lifetime_secs: u64,
    /// Largest form the reader takes (a sealed message, or a reply with attachments).
    pub max_post_bytes: usize,
    /// Most bytes of sealed and opened messages the reader holds in memory, all sessions
    /// together; past it, new posts get 503 until sessions end.
    pub reader_memory_bytes: usize,
    /// Most recipients of a reply or forward.
    pub max_recipients: usize,
    /// Most messages one person sends from the reader in an hour.
    pub replies_per_hour: usize,
    /// A console session ends after this long without a request.
    pub admin_idle_secs: u64,
    /// ... and this long after the login.
    pub admin_lifetime_secs: u64,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            secure_cookies: false,
            reader_idle_secs: 15 * 60,
            reader_lifetime_secs: 4 * 3600,
            max_post_bytes: 40 * 1024 * 1024,
            reader_memory_bytes: 512 * 1024 * 1024,
            max_recipients: 50,
            replies_per_hour: 30,
            admin_idle_secs: 30 * 60,
            admin_lifetime_secs: 12 * 3600,
        }
    }
}

/// What the pages work with: the gateway's queue, keys and MIMEBuilder settings.
pub struct Gateway {
    /// The queue (replies are accepted into it).
    pub queue: Queue,
    /// The gateway's key ring: public parameters, and the key server connection persons use.
    pub keys: Arc<KeyRing>,
    /// MIMEBuilder settings (replies are wrapped like any encrypted email).
    pub mime: Arc<MimeSettings>,
    /// The gateway's host name.
    pub hostname: String,
    /// Wakes the pipeline when a reply is queued.
    pub wake: Arc<tokio::sync::Notify>,
    /// The key server's store, when the key server runs in this process (tokens, audit log).
    pub keyserver: Option<store::keyserver::Store>,
    /// The SMTP and MIMEBuilder settings the console edits.
    pub config: Arc<dyn config_form::ConfigEditor>,
    /// Page settings.
    pub settings: WebSettings,
    /// The key of the gateway's mark on the encrypted email it makes (replies too).
    pub mark: Arc<transform::MarkKey>,
    /// The background tasks, as the status page shows them.
    pub components: Arc<dyn status::Status>,
}

/// The reader and the console, with the security headers on every answer.
pub fn router(gateway: Gateway) -> Router {
    let gateway = Arc::new(gateway);
    Router::new()
        .merge(reader::router(gateway.clone()))
        .merge(admin::router(gateway.clone()))
        .route("/static/postern.css", get(page::style))
        .fallback(page::not_found)
        .layer(axum::middleware::from_fn(security::headers))
}
