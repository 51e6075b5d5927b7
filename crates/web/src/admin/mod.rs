//! The administration console under `/admin`. Accounts are made with `postern admin create`
//! (Argon2id hashes in the queue database); a login starts a new session (Strict cookie, idle
//! timeout), every form carries the session's CSRF token, and every change is written to the
//! audit log with the administrator's name. The login page keeps nothing on the server (its
//! form token goes with a cookie, [`FormKey`]): only signed-in administrators have sessions,
//! so visits to it cannot push anyone out.
//!
//! One module per page; this one holds what they share: the console's state, the signed-in
//! [`Admin`] every page but the login takes, and the frame around each page.

mod audit;
mod error;
mod errored;
mod keyserver;
mod login;
mod policy;
mod quarantine;
mod rule;
mod settings;
mod status;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

pub use error::ConsoleError;

use crate::Gateway;
use crate::page::{render, render_with};
use crate::security::{self, CookieRules, FormKey, same_secret};
use crate::sessions::Sessions;

/// The console's session cookie.
pub const COOKIE: &str = "postern_admin";

/// The cookie the login form's token goes with.
pub const LOGIN_COOKIE: &str = "postern_admin_login";

/// Most administrators signed in at once; past it, a new login ends the least recently used.
const MAX_SIGNED_IN: usize = 1000;

/// Shortest password `postern admin create` takes.
pub const MIN_PASSWORD: usize = 12;

/// An Argon2id hash (PHC string) of `password`, as SMTP AUTH users have.
pub use store::accounts::hash_password;

struct AdminSession {
    name: String,
    csrf: String,
}

struct Console {
    gateway: Arc<Gateway>,
    sessions: Sessions<AdminSession>,
    /// The login form's tokens.
    login_key: FormKey,
    cookies: CookieRules,
    /// Failed logins in the last hour, per name and per name from one address.
    failures: store::RateLimit,
    /// Keys the failure counts by hash, with a key of this process's own.
    failure_hasher: std::collections::hash_map::RandomState,
}

/// Who is signed in, for a handler.
struct Admin {
    name: String,
    csrf: String,
}

impl Admin {
    /// A form post's CSRF token must be this session's.
    fn check(&self, csrf: &str) -> Result<(), ConsoleError> {
        if same_secret(csrf, &self.csrf) {
            Ok(())
        } else {
            Err(ConsoleError::Forgery { back: "/admin" })
        }
    }
}

/// Every console page but the login takes an [`Admin`]: without a signed-in session the
/// request is sent to the login page.
impl FromRequestParts<Arc<Console>> for Admin {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        console.admin(&parts.headers)
    }
}

impl Console {
    /// A short key for the failure counts: a keyed hash of the parts, each delimited.
    fn failure_key(&self, parts: &[&str]) -> String {
        use std::hash::BuildHasher;
        format!("{:016x}", self.failure_hasher.hash_one(parts))
    }

    fn now(&self) -> u64 {
        self.gateway.keys.now()
    }

    fn session(&self, headers: &HeaderMap) -> Option<Arc<Mutex<AdminSession>>> {
        self.sessions
            .get(security::cookie(headers, COOKIE)?, self.now())
    }

    /// The signed-in administrator.
    fn admin(&self, headers: &HeaderMap) -> Result<Admin, ConsoleError> {
        let session = self.session(headers).ok_or(ConsoleError::SignedOut)?;
        let s = session.lock().map_err(|_| ConsoleError::SignedOut)?;
        Ok(Admin {
            name: s.name.clone(),
            csrf: s.csrf.clone(),
        })
    }

    async fn audit(&self, admin: &Admin, action: &str, detail: &str) {
        let actor = format!("admin:{}", admin.name);
        if let Err(e) = self.gateway.queue.audit(&actor, action, detail).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        tracing::info!(actor = %actor, action, detail, "console change");
    }
}

/// The `/admin` routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let console = Arc::new(Console {
        sessions: Sessions::new(
            gateway.settings.admin_idle_secs,
            gateway.settings.admin_lifetime_secs,
            1,
            MAX_SIGNED_IN,
        ),
        login_key: FormKey::new(),
        cookies: CookieRules {
            secure: gateway.settings.secure_cookies,
        },
        gateway,
        failures: store::RateLimit::hourly(),
        failure_hasher: std::collections::hash_map::RandomState::new(),
    });
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/status") }))
        .route("/admin/login", get(login::form).post(login::sign_in))
        .route("/admin/logout", post(login::sign_out))
        .route("/admin/status", get(status::show))
        .route("/admin/policy", get(policy::show))
        .route("/admin/policy/rule", get(rule::show).post(rule::save_text))
        .route("/admin/policy/rule/form", post(rule::save_form))
        .route("/admin/policy/change", post(policy::change))
        .route("/admin/quarantine", get(quarantine::show))
        .route("/admin/quarantine/act", post(quarantine::act))
        .route("/admin/errored", get(errored::show).post(errored::resend))
        .route("/admin/settings", get(settings::show).post(settings::save))
        .route("/admin/keyserver", get(keyserver::show))
        .route("/admin/keyserver/token", post(keyserver::token))
        .route("/admin/audit", get(audit::show))
        .with_state(console)
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The context every console page shares.
#[derive(Serialize)]
struct Frame<'a, T: Serialize> {
    me: &'a str,
    csrf: &'a str,
    here: &'a str,
    notice: Option<String>,
    error: Option<String>,
    page: T,
}

/// Console page `template` (the menu at `here`), with a notice of what was just done.
fn page<T: Serialize>(
    admin: &Admin,
    here: &str,
    template: &str,
    notice: Option<String>,
    page: T,
) -> Response {
    render(
        template,
        Frame {
            me: &admin.name,
            csrf: &admin.csrf,
            here,
            notice,
            error: None,
            page,
        },
    )
}

/// A console page answered with `status` and `error` above it; `page` keeps what was typed.
fn page_refused<T: Serialize>(
    admin: &Admin,
    status: StatusCode,
    here: &str,
    template: &str,
    error: Option<String>,
    page: T,
) -> Response {
    render_with(
        status,
        template,
        Frame {
            me: &admin.name,
            csrf: &admin.csrf,
            here,
            notice: None,
            error,
            page,
        },
    )
}

/// What the page after a change says was done (`?done=...`).
#[derive(Deserialize, Default)]
struct Flash {
    #[serde(default)]
    done: Option<String>,
}

/// The value of field `name` in a form posted as pairs (empty when missing).
fn field(form: &[(String, String)], name: &str) -> String {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or(String::new(), |(_, v)| v.clone())
}

/// Unix seconds as `2026-11-24 10:00 UTC`.
pub fn when(t: u64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| d.format(format).ok())
        .unwrap_or_default()
}
