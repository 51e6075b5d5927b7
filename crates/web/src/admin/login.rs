//! Signing in and out. A failed login costs the same time whether the name exists or not,
//! and failures are counted per name, from one address and from anywhere.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{Admin, AdminSession, COOKIE, Console, ConsoleError, LOGIN_COOKIE, set_cookie};
use crate::page::{Posted, render, render_with};
use crate::security;
use crate::sessions::Standing;

/// Failed logins for one name from one address in an hour, after which that address is refused
/// for the name without the password being checked.
const FAILURES_PER_ADDRESS: u64 = 10;
/// Failed logins for one name from anywhere in an hour: a guesser spread over many addresses
/// is stopped too (at the price of the name waiting out the hour; `postern admin` still works).
const FAILURES_PER_NAME: u64 = 100;

#[derive(Serialize)]
struct LoginCtx<'a> {
    csrf: &'a str,
    error: Option<&'a str>,
    name: &'a str,
}

/// `GET /admin/login`: the form, with a token of its own in a cookie.
pub(super) async fn form(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.admin(&headers).is_ok() {
        return Redirect::to("/admin/status").into_response();
    }
    let (cookie, csrf) = c.login_key.issue();
    let mut r = render(
        "admin/login.html",
        LoginCtx {
            csrf: &csrf,
            error: None,
            name: "",
        },
    );
    set_cookie(
        &mut r,
        &c.cookies.session(LOGIN_COOKIE, &cookie, "/admin", true),
    );
    r
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    csrf: String,
    name: String,
    password: String,
}

/// `POST /admin/login`: a new session for a right name and password.
pub(super) async fn sign_in(
    State(c): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Posted(form): Posted<LoginForm>,
) -> Result<Response, ConsoleError> {
    let visitor = security::cookie(&headers, LOGIN_COOKIE);
    if !visitor.is_some_and(|v| c.login_key.check(v, &form.csrf)) {
        return Err(ConsoleError::Forgery {
            back: "/admin/login",
        });
    }
    // A failed login shows the form again, with the same token (the cookie stays).
    let csrf = form.csrf.clone();
    let name = form.name.trim().to_string();
    let wrong = |csrf: &str, name: &str| {
        render_with(
            StatusCode::UNAUTHORIZED,
            "admin/login.html",
            LoginCtx {
                csrf,
                error: Some("Wrong name or password."),
                name,
            },
        )
    };
    // No administrator has such a name: not worth a hash, nor a place in the counts.
    if name.is_empty() || name.len() > 254 || name.chars().any(char::is_control) {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        return Ok(wrong(&csrf, ""));
    }
    // Counted before the password is checked, and given back when it is right: only failures
    // stay counted, and a refused attempt learns nothing about the password. The counts hold
    // keyed hashes, not names: a guesser cycling through names costs little memory.
    let now = c.now();
    let key = name.to_lowercase();
    let from_here = c
        .failures
        .take(
            &c.failure_key(&["from", &store::client_key(peer.ip()), &key]),
            now,
            FAILURES_PER_ADDRESS,
            0,
        )
        .await;
    let anywhere = c
        .failures
        .take(&c.failure_key(&["name", &key]), now, FAILURES_PER_NAME, 0)
        .await;
    let (Ok(from_here), Ok(anywhere)) = (from_here, anywhere) else {
        tracing::warn!(name = %name, client = %peer.ip(), "console: a login refused: too many failed logins for this name in the last hour");
        return Ok(render_with(
            StatusCode::TOO_MANY_REQUESTS,
            "admin/login.html",
            LoginCtx {
                csrf: &csrf,
                error: Some(
                    "Too many failed logins for this name in the last hour. Try again later.",
                ),
                name: &name,
            },
        ));
    };
    let hash = c
        .gateway
        .queue
        .admin_hash(&name)
        .await
        .map_err(|e| ConsoleError::internal("cannot read the administrators", e))?;
    // An unknown name is checked against a decoy, so that it costs the same as a wrong password.
    let password = form.password.clone();
    let ok = tokio::task::spawn_blocking(move || {
        store::accounts::verify_password(hash.as_deref(), password.as_bytes())
    })
    .await
    .unwrap_or(false);
    if !ok {
        from_here.keep();
        anywhere.keep();
        tracing::warn!(name = %name, client = %peer.ip(), "console: a login failed");
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        return Ok(wrong(&csrf, &name));
    }
    // A new session on login: an id planted before it is worth nothing after.
    if let Some(old) = security::cookie(&headers, COOKIE) {
        c.sessions.end(old);
    }
    let id = c.sessions.start(
        AdminSession {
            name: name.clone(),
            csrf: security::random_token(),
        },
        Standing::SignedIn,
        c.now(),
    );
    let admin = Admin {
        name,
        csrf: String::new(),
    };
    c.audit(&admin, "login", "").await;
    let mut r = Redirect::to("/admin/status").into_response();
    set_cookie(&mut r, &c.cookies.session(COOKIE, &id, "/admin", true));
    set_cookie(&mut r, &c.cookies.clear(LOGIN_COOKIE, "/admin"));
    Ok(r)
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    csrf: String,
}

/// `POST /admin/logout`: ends the session.
pub(super) async fn sign_out(
    State(c): State<Arc<Console>>,
    admin: Admin,
    headers: HeaderMap,
    Posted(form): Posted<CsrfForm>,
) -> Result<Response, ConsoleError> {
    admin.check(&form.csrf)?;
    if let Some(id) = security::cookie(&headers, COOKIE) {
        c.sessions.end(id);
    }
    c.audit(&admin, "logout", "").await;
    let mut r = Redirect::to("/admin/login").into_response();
    set_cookie(&mut r, &c.cookies.clear(COOKIE, "/admin"));
    Ok(r)
}
