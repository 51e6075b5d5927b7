//! The administration console under `/admin`. Accounts are made with `postern admin create`
//! (Argon2id hashes in the queue database); a login starts a new session (Strict cookie, idle
//! timeout), every form carries the session's CSRF token, and every change is written to the
//! audit log with the administrator's name. The login page keeps nothing on the server (its
//! form token goes with a cookie, [`FormKey`]): only signed-in administrators have sessions,
//! so visits to it cannot push anyone out.

// Handlers answer with a `Response` either way; boxing the error side would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use policy::{Compiled, Policy, Rule};
use serde::{Deserialize, Serialize};
use store::{QuarantineFilter, QuarantineOp};

use crate::Gateway;
use crate::config_form::{SaveError, Section, refill};
use crate::page::{PageError, Posted, render, render_with};
use crate::rule_form::{self, RuleForm};
use crate::security::{self, CookieRules, FormKey, same_secret};
use crate::sessions::{Sessions, Standing};
use crate::status::{self, Report};

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

/// Failed logins for one name from one address in an hour, after which that address is refused
/// for the name without the password being checked.
const FAILURES_PER_ADDRESS: u64 = 10;
/// Failed logins for one name from anywhere in an hour: a guesser spread over many addresses
/// is stopped too (at the price of the name waiting out the hour; `postern admin` still works).
const FAILURES_PER_NAME: u64 = 100;

/// Who is signed in, for a handler.
struct Admin {
    name: String,
    csrf: String,
}

impl Admin {
    /// A form post's CSRF token must be this session's.
    fn check(&self, csrf: &str) -> Result<(), Response> {
        if same_secret(csrf, &self.csrf) {
            Ok(())
        } else {
            Err(PageError::forgery().back("/admin").into_response())
        }
    }
}

/// Every console page but the login takes an [`Admin`]: without a signed-in session the
/// request is sent to the login page.
impl FromRequestParts<Arc<Console>> for Admin {
    type Rejection = Response;

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

    /// The signed-in administrator, or a redirect to the login page.
    fn admin(&self, headers: &HeaderMap) -> Result<Admin, Response> {
        let login = || Redirect::to("/admin/login").into_response();
        let session = self.session(headers).ok_or_else(login)?;
        let s = session.lock().map_err(|_| login())?;
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
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/status", get(status))
        .route("/admin/policy", get(policy_page))
        .route("/admin/policy/rule", get(rule_page).post(save_rule))
        .route("/admin/policy/rule/form", post(save_rule_form))
        .route("/admin/policy/change", post(change_rule))
        .route("/admin/quarantine", get(quarantine))
        .route("/admin/quarantine/act", post(quarantine_act))
        .route("/admin/errored", get(errored).post(resend))
        .route("/admin/settings", get(settings).post(save_settings))
        .route("/admin/keyserver", get(keyserver))
        .route("/admin/keyserver/token", post(token_act))
        .route("/admin/audit", get(audit))
        .with_state(console)
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[derive(Serialize)]
struct LoginCtx<'a> {
    csrf: &'a str,
    error: Option<&'a str>,
    name: &'a str,
}

async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
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
struct LoginForm {
    csrf: String,
    name: String,
    password: String,
}

async fn login(
    State(c): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Posted(form): Posted<LoginForm>,
) -> Response {
    let visitor = security::cookie(&headers, LOGIN_COOKIE);
    if !visitor.is_some_and(|v| c.login_key.check(v, &form.csrf)) {
        return PageError::forgery().back("/admin/login").into_response();
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
        return wrong(&csrf, "");
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
        return render_with(
            StatusCode::TOO_MANY_REQUESTS,
            "admin/login.html",
            LoginCtx {
                csrf: &csrf,
                error: Some(
                    "Too many failed logins for this name in the last hour. Try again later.",
                ),
                name: &name,
            },
        );
    };
    let hash = match c.gateway.queue.admin_hash(&name).await {
        Ok(h) => h,
        Err(e) => return PageError::internal("cannot read the administrators", e).into_response(),
    };
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
        return wrong(&csrf, &name);
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
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(c): State<Arc<Console>>,
    admin: Admin,
    headers: HeaderMap,
    Posted(form): Posted<CsrfForm>,
) -> Response {
    if let Err(r) = admin.check(&form.csrf) {
        return r;
    }
    if let Some(id) = security::cookie(&headers, COOKIE) {
        c.sessions.end(id);
    }
    c.audit(&admin, "logout", "").await;
    let mut r = Redirect::to("/admin/login").into_response();
    set_cookie(&mut r, &c.cookies.clear(COOKIE, "/admin"));
    r
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

#[derive(Deserialize, Default)]
struct Flash {
    #[serde(default)]
    done: Option<String>,
}

#[derive(Serialize)]
struct StatusPage {
    components: Vec<Report>,
    stats: Vec<(String, u64)>,
    chart: String,
    total_hour: u64,
}

async fn status(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Response {
    let q = &c.gateway.queue;
    let depth = q.depth().await.unwrap_or_default();
    let held = q.quarantine_depth().await.unwrap_or_default();
    let reachable = c.gateway.keys.client().reachable().await;
    let now = c.now();
    let per_minute = q.received_per_minute(now, 60).await.unwrap_or_default();
    // The tasks' own state, with what the queue says about each one's work.
    let mut components = c.gateway.components.reports(now);
    for r in &mut components {
        if r.state != status::State::Running {
            continue;
        }
        let work = match r.name.as_str() {
            status::POLICY => format!("{} message(s) waiting", depth.received),
            status::DELIVERY => {
                format!("{} to send, {} to retry", depth.pending, depth.deferred)
            }
            _ => continue,
        };
        r.detail = format!("{}; {work}", r.detail);
    }
    components.push(Report {
        name: "Key server".into(),
        state: if reachable {
            status::State::Running
        } else {
            status::State::Down
        },
        detail: if reachable {
            "reachable".into()
        } else {
            "not reachable: cached keys are used, other mail waits in the errored queue".into()
        },
    });
    components.push(Report {
        name: "Web reader and console".into(),
        state: status::State::Running,
        detail: "serving this page".into(),
    });
    let total_hour = per_minute.iter().sum();
    page(
        &admin,
        "status",
        "admin/status.html",
        flash.done,
        StatusPage {
            components,
            stats: vec![
                ("Waiting for policy".into(), depth.received),
                ("Waiting to be sent".into(), depth.pending),
                ("Deferred (retrying)".into(), depth.deferred),
                ("Errored (waiting for a key)".into(), depth.errored),
                ("Quarantined".into(), held),
            ],
            chart: chart(&per_minute),
            total_hour,
        },
    )
}

/// Messages per minute as an SVG bar chart (drawn here: the pages run no scripts).
fn chart(counts: &[u64]) -> String {
    let (w, h, left, bottom) = (720.0, 180.0, 36.0, 22.0);
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let n = counts.len().max(1) as f64;
    let slot = (w - left) / n;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Messages received per minute over the last hour\">"
    );
    svg.push_str(&format!(
        "<line class=\"axis\" x1=\"{left}\" y1=\"{y}\" x2=\"{w}\" y2=\"{y}\"/>",
        y = h - bottom
    ));
    svg.push_str(&format!(
        "<text x=\"0\" y=\"12\">{max}</text><text x=\"0\" y=\"{}\">0</text>",
        h - bottom
    ));
    for (i, &v) in counts.iter().enumerate() {
        let bh = (h - bottom - 8.0) * v as f64 / max as f64;
        let x = left + i as f64 * slot + 1.0;
        svg.push_str(&format!(
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"><title>{v}</title></rect>",
            h - bottom - bh,
            (slot - 2.0).max(1.0)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{}\">60 min ago</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">now</text></svg>",
        h - 4.0,
        w,
        h - 4.0
    ));
    svg
}

/// The stored policy, or the built-in default.
async fn current_policy(c: &Console) -> Result<(Policy, i64), PageError> {
    match c.gateway.queue.current_policy().await {
        Ok(Some(stored)) => Policy::from_toml(&stored.text)
            .map(|p| (p, stored.version))
            .map_err(|e| PageError::internal("the stored policy does not load", e)),
        Ok(None) => Policy::default_policy()
            .map(|p| (p, 0))
            .map_err(|e| PageError::internal("the built-in policy does not load", e)),
        Err(e) => Err(PageError::internal("cannot read the policy", e)),
    }
}

/// Whether a form made from policy version `posted` may change the policy now at `current`:
/// rules are named by order numbers, which another change may have moved.
fn stale_policy(posted: &str, current: i64) -> Option<Response> {
    if posted.trim().parse::<i64>().ok() == Some(current) {
        return None;
    }
    Some(
        PageError::new(
            StatusCode::CONFLICT,
            "The policy has changed",
            "The policy was changed since this page was loaded (by another administrator, or an import), so nothing was changed. Open the policy again and make your change there.",
        )
        .back("/admin/policy")
        .into_response(),
    )
}

#[derive(Serialize)]
struct RuleRow {
    order: u32,
    name: String,
    enabled: bool,
    direction: String,
    senders: String,
    recipients: String,
    conditions: usize,
    actions: String,
}

#[derive(Serialize)]
struct PolicyPage {
    version: i64,
    rules: Vec<RuleRow>,
    encryption_exception: String,
    decryption_exception: String,
}

fn describe(actions: &[policy::Action]) -> String {
    actions
        .iter()
        .map(policy::Action::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn policy_page(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Response {
    let (policy, version) = match current_policy(&c).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let rules = policy
        .rules
        .iter()
        .map(|r| RuleRow {
            order: r.order,
            name: r.name.clone(),
            enabled: r.enabled,
            direction: format!("{:?}", r.direction).to_lowercase(),
            senders: or_anyone(&r.senders),
            recipients: or_anyone(&r.recipients),
            conditions: r.conditions.len(),
            actions: describe(&r.actions),
        })
        .collect();
    page(
        &admin,
        "policy",
        "admin/policy.html",
        flash.done,
        PolicyPage {
            version,
            rules,
            encryption_exception: describe(&policy.exceptions.encryption),
            decryption_exception: describe(&policy.exceptions.decryption),
        },
    )
}

fn or_anyone(list: &[String]) -> String {
    if list.is_empty() {
        "anyone".into()
    } else {
        list.join(", ")
    }
}

/// One rule as the editor shows it: a policy file holding only that rule.
fn rule_toml(rule: &Rule) -> String {
    #[derive(Serialize)]
    struct One<'a> {
        rule: [&'a Rule; 1],
    }
    toml::to_string_pretty(&One { rule: [rule] }).unwrap_or_default()
}

const NEW_RULE: &str = r#"[[rule]]
order = 100
name = "New rule"
enabled = true
direction = "outbound"
senders = ["*@corp.example"]

[[rule.conditions]]
on = "subject"
keywords = ["confidential"]

[[rule.actions]]
do = "quarantine"
area = "Review"
"#;

#[derive(Deserialize)]
struct RuleQuery {
    order: Option<u32>,
    /// Show the policy file's text rather than the form.
    #[serde(default)]
    text: Option<String>,
}

/// The rule form page: the rule, and the names its fields may use.
#[derive(Serialize)]
struct RuleFormPage {
    original: Option<u32>,
    /// The policy version the page was made from.
    version: i64,
    form: RuleForm,
    targets: &'static [(&'static str, &'static str)],
    actions: &'static [(&'static str, &'static str)],
    builtins: Vec<&'static str>,
    lists: Vec<String>,
    templates: Vec<String>,
}

impl RuleFormPage {
    fn new(policy: &Policy, version: i64, original: Option<u32>, form: RuleForm) -> Self {
        RuleFormPage {
            original,
            version,
            form,
            targets: rule_form::TARGETS,
            actions: rule_form::ACTIONS,
            builtins: policy::detect::Builtin::ALL
                .iter()
                .map(|b| b.name())
                .collect(),
            lists: policy.lists.iter().map(|l| l.name.clone()).collect(),
            templates: policy::templates::NAMES
                .iter()
                .map(|n| (*n).to_string())
                .chain(policy.templates.keys().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct RulePage {
    original: Option<u32>,
    text: String,
    /// The policy version the page was made from.
    version: i64,
}

async fn rule_page(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(q): Query<RuleQuery>,
) -> Response {
    let (policy, version) = match current_policy(&c).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let rule = match q.order {
        Some(o) => match policy.rules.iter().find(|r| r.order == o) {
            Some(r) => r.clone(),
            None => {
                return PageError::not_found(format!("There is no rule {o}."))
                    .back("/admin/policy")
                    .into_response();
            }
        },
        None => match Policy::from_toml(NEW_RULE) {
            Ok(p) if !p.rules.is_empty() => p.rules[0].clone(),
            _ => {
                return PageError::internal("The new rule's model does not parse", "NEW_RULE")
                    .into_response();
            }
        },
    };
    if q.text.is_some() {
        return page(
            &admin,
            "policy",
            "admin/rule.html",
            None,
            RulePage {
                original: q.order,
                text: rule_toml(&rule),
                version,
            },
        );
    }
    let form = RuleForm::from_rule(&rule).with_blank_rows(1);
    page(
        &admin,
        "policy",
        "admin/rule_form.html",
        None,
        RuleFormPage::new(&policy, version, q.order, form),
    )
}

/// Checks `policy` as a whole (as an import would), stores it with the areas it names, and
/// writes the audit log.
async fn store_policy(
    c: &Console,
    admin: &Admin,
    policy: &Policy,
    what: &str,
) -> Result<i64, String> {
    let text = policy.to_toml();
    let checked = Policy::from_toml(&text).map_err(|e| e.to_string())?;
    Compiled::new(checked.clone()).map_err(|e| e.to_string())?;
    let version = c
        .gateway
        .queue
        .save_policy(&text, &format!("admin:{}", admin.name), &checked.areas())
        .await
        .map_err(|e| e.to_string())?;
    c.audit(admin, "policy.save", &format!("version {version}: {what}"))
        .await;
    Ok(version)
}

fn saved(version: i64) -> Response {
    Redirect::to(&format!(
        "/admin/policy?done=Saved+as+policy+version+{version}"
    ))
    .into_response()
}

#[derive(Deserialize)]
struct RuleText {
    csrf: String,
    #[serde(default)]
    original: Option<String>,
    text: String,
    #[serde(default)]
    version: String,
}

async fn save_rule(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<RuleText>,
) -> Response {
    if let Err(r) = admin.check(&form.csrf) {
        return r;
    }
    let original: Option<u32> = form.original.as_deref().and_then(|o| o.parse().ok());
    let (policy, version) = match current_policy(&c).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(stale) = stale_policy(&form.version, version) {
        return stale;
    }
    let again = |error: String| {
        page_refused(
            &admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy",
            "admin/rule.html",
            Some(error),
            RulePage {
                original,
                text: form.text.clone(),
                version,
            },
        )
    };
    // One [[rule]] and nothing else, checked in the policy in force (its lists, templates).
    let mut file: toml::Table = match toml::from_str(&form.text) {
        Ok(t) => t,
        Err(e) => {
            let why = e.to_string();
            return again(format!(
                "policy: syntax: {}",
                why.lines().last().unwrap_or_default()
            ));
        }
    };
    let rule = match (file.remove("rule"), file.is_empty()) {
        (Some(toml::Value::Array(mut rules)), true) if rules.len() == 1 => rules.remove(0),
        _ => return again("give exactly one [[rule]] and nothing else".into()),
    };
    let toml::Value::Table(rule) = rule else {
        return again("give exactly one [[rule]] and nothing else".into());
    };
    let edited = match rule_form::check_in(&policy, rule) {
        Ok(r) => r,
        Err(e) => return again(e),
    };
    match put_rule(&c, &admin, policy, original, edited).await {
        Ok(v) => saved(v),
        Err(e) => again(e),
    }
}

/// Puts `edited` in the policy in place of rule `original` (none: added), checks the whole
/// policy and stores it. The inner error is the administrator's to correct.
async fn put_rule(
    c: &Console,
    admin: &Admin,
    mut policy: Policy,
    original: Option<u32>,
    edited: Rule,
) -> Result<i64, String> {
    if let Some(o) = original {
        policy.rules.retain(|r| r.order != o);
    }
    if policy.rules.iter().any(|r| r.order == edited.order) {
        return Err(format!(
            "rule {}: order: another rule has order {}; choose a free number",
            edited.order, edited.order
        ));
    }
    let what = match original {
        Some(o) => format!("rule {o} edited as {} {:?}", edited.order, edited.name),
        None => format!("rule {} {:?} added", edited.order, edited.name),
    };
    policy.rules.push(edited);
    policy.rules.sort_by_key(|r| r.order);
    store_policy(c, admin, &policy, &what).await
}

/// The rule form posted: saved, or (`more`) shown again with more rows.
async fn save_rule_form(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(fields): Posted<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or(String::new(), |(_, v)| v.clone())
    };
    if let Err(r) = admin.check(&field("csrf")) {
        return r;
    }
    let original: Option<u32> = field("original").parse().ok();
    let (policy, version) = match current_policy(&c).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(stale) = stale_policy(&field("version"), version) {
        return stale;
    }
    let form = match RuleForm::from_posted(&fields) {
        Ok(f) => f,
        Err(e) => return PageError::bad("This rule is too large", e).into_response(),
    };
    let again = |status: StatusCode, error: Option<String>, form: RuleForm| {
        page_refused(
            &admin,
            status,
            "policy",
            "admin/rule_form.html",
            error,
            RuleFormPage::new(&policy, version, original, form.with_blank_rows(1)),
        )
    };
    if !field("more").is_empty() {
        return again(StatusCode::OK, None, form.with_blank_rows(1));
    }
    let edited = match form
        .to_table()
        .and_then(|rule| rule_form::check_in(&policy, rule))
    {
        Ok(r) => r,
        Err(e) => return again(StatusCode::UNPROCESSABLE_ENTITY, Some(e), form),
    };
    match put_rule(&c, &admin, policy.clone(), original, edited).await {
        Ok(v) => saved(v),
        Err(e) => again(StatusCode::UNPROCESSABLE_ENTITY, Some(e), form),
    }
}

#[derive(Deserialize)]
struct ChangeForm {
    csrf: String,
    order: u32,
    /// enable, disable, up, down, delete
    change: String,
    /// The policy version the page was made from.
    #[serde(default)]
    version: String,
}

async fn change_rule(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<ChangeForm>,
) -> Response {
    if let Err(r) = admin.check(&form.csrf) {
        return r;
    }
    let (mut policy, version) = match current_policy(&c).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(stale) = stale_policy(&form.version, version) {
        return stale;
    }
    let Some(i) = policy.rules.iter().position(|r| r.order == form.order) else {
        return PageError::not_found(format!("There is no rule {}.", form.order))
            .back("/admin/policy")
            .into_response();
    };
    let name = policy.rules[i].name.clone();
    match form.change.as_str() {
        "enable" => policy.rules[i].enabled = true,
        "disable" => policy.rules[i].enabled = false,
        "delete" => {
            policy.rules.remove(i);
        }
        // Moving swaps order numbers with the neighbour, so every other number stays.
        "up" | "down" => {
            let j = if form.change == "up" {
                i.checked_sub(1)
            } else {
                Some(i + 1).filter(|j| *j < policy.rules.len())
            };
            if let Some(j) = j {
                let (a, b) = (policy.rules[i].order, policy.rules[j].order);
                policy.rules[i].order = b;
                policy.rules[j].order = a;
                policy.rules.sort_by_key(|r| r.order);
            }
        }
        other => {
            return PageError::bad(
                "Unknown change",
                format!("{other:?} is not enable, disable, up, down or delete."),
            )
            .into_response();
        }
    }
    let what = format!("rule {} {name:?}: {}", form.order, form.change);
    match store_policy(&c, &admin, &policy, &what).await {
        Ok(v) => saved(v),
        Err(e) => PageError::bad("The policy was not changed", e)
            .back("/admin/policy")
            .into_response(),
    }
}

/// The quarantine query, as form fields (dates as `YYYY-MM-DD`).
#[derive(Deserialize, Serialize, Default, Clone)]
struct QuarantineQuery {
    #[serde(default)]
    area: String,
    #[serde(default)]
    sender: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    done: Option<String>,
}

fn some(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn day(field: &str, s: &str) -> Result<Option<u64>, String> {
    let Some(t) = some(s) else { return Ok(None) };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(&t, format)
        .map(|d| Some(d.midnight().assume_utc().unix_timestamp().max(0) as u64))
        .map_err(|_| format!("{field}: {t:?} is not a date like 2026-11-24"))
}

impl QuarantineQuery {
    fn filter(&self) -> Result<QuarantineFilter, String> {
        Ok(QuarantineFilter {
            id: None,
            area: some(&self.area),
            sender: some(&self.sender),
            recipient: some(&self.recipient),
            subject: some(&self.subject),
            rule: some(&self.rule),
            reason: some(&self.reason),
            since: day("since", &self.since)?,
            // "until" names a whole day.
            until: day("until", &self.until)?.map(|t| t + 86_400),
        })
    }
}

#[derive(Serialize)]
struct HeldRow {
    id: i64,
    area: String,
    rule: String,
    reason: String,
    sender: String,
    recipients: String,
    subject: String,
    at: String,
    size: String,
}

#[derive(Serialize)]
struct QuarantinePage {
    query: QuarantineQuery,
    areas: Vec<(String, u64, u64)>,
    rows: Vec<HeldRow>,
    shown: usize,
    error: Option<String>,
}

/// Unix seconds as `2026-11-24 10:00 UTC`.
pub fn when(t: u64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| d.format(format).ok())
        .unwrap_or_default()
}

async fn quarantine(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(query): Query<QuarantineQuery>,
) -> Response {
    let q = &c.gateway.queue;
    let areas = q
        .areas()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.name, a.retention_secs / 86_400, a.held))
        .collect();
    let (rows, error) = match query.filter() {
        Ok(f) => match q.quarantined(&f, 500).await {
            Ok(list) => (
                list.into_iter()
                    .map(|h| HeldRow {
                        id: h.id,
                        area: h.area,
                        rule: h.rule,
                        reason: h.reason,
                        sender: h.sender,
                        recipients: h.recipients.join(", "),
                        subject: h.subject,
                        at: when(h.at),
                        size: crate::render::size_text(h.size as usize),
                    })
                    .collect::<Vec<_>>(),
                None,
            ),
            Err(e) => return PageError::internal("cannot query the quarantine", e).into_response(),
        },
        Err(e) => (Vec::new(), Some(e)),
    };
    let done = query.done.clone();
    page(
        &admin,
        "quarantine",
        "admin/quarantine.html",
        done,
        QuarantinePage {
            shown: rows.len(),
            query,
            areas,
            rows,
            error,
        },
    )
}

#[derive(Deserialize)]
struct ActForm {
    csrf: String,
    op: String,
    /// One entry; without it, every entry the query fields find.
    #[serde(default)]
    id: Option<i64>,
    #[serde(flatten)]
    query: HashMap<String, String>,
}

async fn quarantine_act(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<ActForm>,
) -> Response {
    if let Err(r) = admin.check(&form.csrf) {
        return r;
    }
    let Some(op) = QuarantineOp::parse(&form.op) else {
        return PageError::bad("Unknown operation", "Use release, reprocess or delete.")
            .into_response();
    };
    let get = |k: &str| form.query.get(k).cloned().unwrap_or_default();
    let query = QuarantineQuery {
        area: get("area"),
        sender: get("sender"),
        recipient: get("recipient"),
        subject: get("subject"),
        rule: get("rule"),
        reason: get("reason"),
        since: get("since"),
        until: get("until"),
        done: None,
    };
    let q = &c.gateway.queue;
    let ids: Vec<i64> = match form.id {
        Some(id) => vec![id],
        None => match query.filter() {
            Ok(f) => match q.quarantined(&f, u32::MAX).await {
                Ok(list) => list.iter().map(|h| h.id).collect(),
                Err(e) => {
                    return PageError::internal("cannot query the quarantine", e).into_response();
                }
            },
            Err(e) => {
                return PageError::bad("The query is not valid", e)
                    .back("/admin/quarantine")
                    .into_response();
            }
        },
    };
    let n = match q.act_on_quarantined(op, &ids).await {
        Ok(n) => n,
        Err(e) => return PageError::internal("the operation failed", e).into_response(),
    };
    c.gateway.wake.notify_one();
    let detail = format!("{} on {} entr(ies): {:?}", form.op, n, ids);
    c.audit(&admin, &format!("quarantine.{}", form.op), &detail)
        .await;
    let back = query_string(&query, &format!("{} {n} message(s)", past(&form.op)));
    Redirect::to(&format!("/admin/quarantine?{back}")).into_response()
}

fn past(op: &str) -> &'static str {
    match op {
        "release" => "Released",
        "reprocess" => "Sent back for processing:",
        _ => "Deleted",
    }
}

/// The query as URL parameters, with a notice.
fn query_string(q: &QuarantineQuery, done: &str) -> String {
    let pairs = [
        ("area", &q.area),
        ("sender", &q.sender),
        ("recipient", &q.recipient),
        ("subject", &q.subject),
        ("rule", &q.rule),
        ("reason", &q.reason),
        ("since", &q.since),
        ("until", &q.until),
        ("done", &done.to_string()),
    ];
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", security::percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Serialize)]
struct ErroredRow {
    id: String,
    sender: String,
    recipients: String,
    received: String,
    reply: String,
}

async fn errored(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Response {
    let list = match c
        .gateway
        .queue
        .errored(&store::ErroredFilter::default(), 500)
        .await
    {
        Ok(l) => l,
        Err(e) => return PageError::internal("cannot read the errored queue", e).into_response(),
    };
    let rows: Vec<ErroredRow> = list
        .into_iter()
        .map(|m| {
            let errored: Vec<_> = m
                .recipients
                .iter()
                .filter(|r| r.state == store::RecipientState::Errored)
                .collect();
            ErroredRow {
                id: m.id,
                sender: m.sender,
                recipients: errored
                    .iter()
                    .map(|r| r.address.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                received: when(m.received_at),
                reply: errored
                    .iter()
                    .filter_map(|r| r.last_reply.clone())
                    .next()
                    .unwrap_or_default(),
            }
        })
        .collect();
    page(&admin, "errored", "admin/errored.html", flash.done, rows)
}

#[derive(Deserialize)]
struct ResendForm {
    csrf: String,
    #[serde(default)]
    id: Option<String>,
}

async fn resend(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<ResendForm>,
) -> Response {
    if let Err(r) = admin.check(&form.csrf) {
        return r;
    }
    let filter = store::ErroredFilter {
        id: form.id.clone().filter(|s| !s.is_empty()),
        ..Default::default()
    };
    let n = match c.gateway.queue.requeue_errored(u64::MAX, &filter).await {
        Ok(n) => n,
        Err(e) => return PageError::internal("cannot resend", e).into_response(),
    };
    c.gateway.wake.notify_one();
    let which = filter.id.clone().unwrap_or_else(|| "all".into());
    c.audit(
        &admin,
        "errored.resend",
        &format!("{which}: {n} recipient(s)"),
    )
    .await;
    Redirect::to(&format!(
        "/admin/errored?done=Sent+{n}+recipient(s)+back+for+processing"
    ))
    .into_response()
}

#[derive(Serialize)]
struct SettingsPage {
    sections: Vec<Section>,
    location: String,
    /// Saved changes the running gateway does not use yet.
    pending: usize,
    /// What the form was made from; a save from an older form is refused.
    version: String,
}

/// The settings form, read off the disk (blocking) with the version it is made from.
async fn settings_page(c: &Console) -> Result<SettingsPage, PageError> {
    let editor = c.gateway.config.clone();
    let read = tokio::task::spawn_blocking(move || {
        // The version first: a change between the two makes the form stale, not wrong.
        let version = editor.version();
        editor.sections().map(|s| (s, version, editor.location()))
    })
    .await;
    let (sections, version, location) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return Err(PageError::internal("Cannot read the settings", e)),
        Err(e) => return Err(PageError::internal("Cannot read the settings", e)),
    };
    let pending = sections
        .iter()
        .flat_map(|s| &s.fields)
        .filter(|f| f.running.is_some())
        .count();
    Ok(SettingsPage {
        sections,
        location,
        pending,
        version,
    })
}

async fn settings(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Response {
    match settings_page(&c).await {
        Ok(p) => page(&admin, "settings", "admin/settings.html", flash.done, p),
        Err(e) => e.into_response(),
    }
}

async fn save_settings(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map_or(String::new(), |(_, v)| v.clone())
    };
    if let Err(r) = admin.check(&field("csrf")) {
        return r;
    }
    let editor = c.gateway.config.clone();
    let (posted, version) = (form.clone(), field("version"));
    let saved = match tokio::task::spawn_blocking(move || editor.save(&posted, &version)).await {
        Ok(saved) => saved,
        Err(e) => return PageError::internal("Cannot save the settings", e).into_response(),
    };
    let (status, error, refill_form) = match saved {
        Ok(changes) if changes.is_empty() => {
            return Redirect::to("/admin/settings?done=Nothing+changed").into_response();
        }
        Ok(changes) => {
            let detail: Vec<String> = changes
                .iter()
                .map(|ch| {
                    let mut v: String = ch.value.chars().take(80).collect();
                    if v.len() < ch.value.len() {
                        v.push('…');
                    }
                    format!("{} = {v:?}", ch.key)
                })
                .collect();
            c.audit(&admin, "settings.save", &detail.join("; ")).await;
            return Redirect::to(&format!(
                "/admin/settings?done=Saved+{}+change(s);+they+take+effect+when+the+gateway+restarts",
                changes.len()
            ))
            .into_response();
        }
        Err(SaveError::Stale) => (
            StatusCode::CONFLICT,
            "The settings were changed since this page was loaded (by another administrator, or in the configuration file). Nothing was saved: here they are as they are now; make your change again.".to_string(),
            false,
        ),
        Err(SaveError::Invalid(why)) => (StatusCode::UNPROCESSABLE_ENTITY, why, true),
    };
    let mut shown = match settings_page(&c).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if refill_form {
        // The values are the ones posted, so the version is too: a save made since then still
        // makes them stale.
        refill(&mut shown.sections, &form);
        shown.version = field("version");
    }
    page_refused(
        &admin,
        status,
        "settings",
        "admin/settings.html",
        Some(error),
        shown,
    )
}

#[derive(Serialize, Default)]
struct KeyServerPage {
    local: bool,
    /// Name, domains, created, revoked (empty while live).
    tokens: Vec<(String, String, String, String)>,
    audit: Vec<(String, String, String, String, String)>,
    /// A token just made: shown on this one answer, never stored in clear.
    new_token: Option<(String, String)>,
    /// What was typed into the create form, shown again after an error.
    name: String,
    domains: String,
}

async fn keyserver_page(c: &Console) -> KeyServerPage {
    let Some(ks) = &c.gateway.keyserver else {
        return KeyServerPage::default();
    };
    let tokens = ks
        .list_tokens()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            (
                t.name,
                t.domains.join(", "),
                when(t.created),
                t.revoked.map(when).unwrap_or_default(),
            )
        })
        .collect();
    let since = c.now().saturating_sub(7 * 86_400);
    let mut audit: Vec<_> = ks
        .audit_log(None, Some(since))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            (
                when(e.at),
                e.actor,
                e.address.unwrap_or_default(),
                format!(
                    "{} {}",
                    e.kind.unwrap_or_default(),
                    e.epoch.unwrap_or_default()
                ),
                e.outcome,
            )
        })
        .collect();
    audit.reverse();
    audit.truncate(200);
    KeyServerPage {
        local: true,
        tokens,
        audit,
        ..KeyServerPage::default()
    }
}

async fn keyserver(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Response {
    page(
        &admin,
        "keyserver",
        "admin/keyserver.html",
        flash.done,
        keyserver_page(&c).await,
    )
}

#[derive(Deserialize)]
struct TokenForm {
    csrf: String,
    /// create or revoke
    op: String,
    name: String,
    #[serde(default)]
    domains: String,
}

/// The domains a token may fetch keys for, as typed (commas or spaces), checked as the CLI
/// checks them.
fn token_domains(text: &str) -> Result<Vec<String>, String> {
    let mut domains = Vec::new();
    for d in text
        .split([',', ' ', '\n', '\r', '\t'])
        .filter(|d| !d.is_empty())
    {
        let parsed = envelope::Address::parse(&format!("x@{d}"))
            .map_err(|e| format!("domains: {d:?} is not a domain: {e}"))?;
        domains.push(parsed.domain().to_string());
    }
    if domains.is_empty() {
        return Err("domains: give at least one domain the token may fetch keys for".into());
    }
    domains.sort();
    domains.dedup();
    Ok(domains)
}

async fn token_act(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<TokenForm>,
) -> Response {
    if let Err(r) = admin.check(&form.csrf) {
        return r;
    }
    let Some(ks) = &c.gateway.keyserver else {
        return PageError::not_found("The key server runs in another process.").into_response();
    };
    let name = form.name.trim().to_string();
    let again = |status: StatusCode, error: String, page: KeyServerPage| {
        page_refused(
            &admin,
            status,
            "keyserver",
            "admin/keyserver.html",
            Some(error),
            page,
        )
    };
    match form.op.as_str() {
        "create" => {
            let refill = KeyServerPage {
                name: name.clone(),
                domains: form.domains.clone(),
                ..keyserver_page(&c).await
            };
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                return again(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "name: give the token a name of 1 to 100 characters (the gateway it is for)"
                        .into(),
                    refill,
                );
            }
            let domains = match token_domains(&form.domains) {
                Ok(d) => d,
                Err(e) => return again(StatusCode::UNPROCESSABLE_ENTITY, e, refill),
            };
            let token = match ks.create_token(&name, &domains, c.now()).await {
                Ok(t) => t,
                Err(store::keyserver::StoreError::NameTaken(_)) => {
                    return again(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("name: a token named {name:?} exists; choose another name"),
                        refill,
                    );
                }
                Err(e) => {
                    return PageError::internal("Cannot create the token", e).into_response();
                }
            };
            c.audit(
                &admin,
                "token.create",
                &format!("{name:?} for {}", domains.join(", ")),
            )
            .await;
            let shown = KeyServerPage {
                new_token: Some((name, token.as_str().to_string())),
                ..keyserver_page(&c).await
            };
            page(&admin, "keyserver", "admin/keyserver.html", None, shown)
        }
        "revoke" => match ks.revoke_token(&name, c.now()).await {
            Ok(true) => {
                c.audit(&admin, "token.revoke", &format!("{name:?}")).await;
                Redirect::to(&format!(
                    "/admin/keyserver?done=Revoked+the+token+{};+it+no+longer+works",
                    security::percent_encode(&name)
                ))
                .into_response()
            }
            Ok(false) => again(
                StatusCode::NOT_FOUND,
                format!("No live token is named {name:?}."),
                keyserver_page(&c).await,
            ),
            Err(e) => PageError::internal("Cannot revoke the token", e).into_response(),
        },
        other => PageError::bad(
            "Unknown operation",
            format!("{other:?} is not create or revoke"),
        )
        .into_response(),
    }
}

async fn audit(State(c): State<Arc<Console>>, admin: Admin) -> Response {
    let rows: Vec<_> = c
        .gateway
        .queue
        .audit_log(500)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| (when(e.at), e.actor, e.action, e.detail))
        .collect();
    page(&admin, "audit", "admin/audit.html", None, rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn token_domains_are_checked_normalized_and_named_when_wrong() {
        assert_eq!(
            token_domains("Corp.Example, branch.example\ncorp.example").unwrap(),
            ["branch.example", "corp.example"]
        );
        let err = token_domains("corp.example, not a domain!").unwrap_err();
        assert!(err.starts_with("domains: \"domain!\""), "{err}");
        assert!(token_domains(" , ").unwrap_err().contains("at least one"));
    }
}
