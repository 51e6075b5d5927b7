//! Pages: the templates (in `templates/`, built into the binary), the style sheet, and error
//! pages that say what went wrong in words a person can act on.

use std::sync::OnceLock;

use axum::extract::{Form, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("error.html", include_str!("../templates/error.html")),
    (
        "reader/choose.html",
        include_str!("../templates/reader/choose.html"),
    ),
    (
        "reader/code.html",
        include_str!("../templates/reader/code.html"),
    ),
    (
        "reader/message.html",
        include_str!("../templates/reader/message.html"),
    ),
    (
        "reader/compose.html",
        include_str!("../templates/reader/compose.html"),
    ),
    (
        "reader/sent.html",
        include_str!("../templates/reader/sent.html"),
    ),
    (
        "reader/signout.html",
        include_str!("../templates/reader/signout.html"),
    ),
    (
        "admin/base.html",
        include_str!("../templates/admin/base.html"),
    ),
    (
        "admin/login.html",
        include_str!("../templates/admin/login.html"),
    ),
    (
        "admin/status.html",
        include_str!("../templates/admin/status.html"),
    ),
    (
        "admin/policy.html",
        include_str!("../templates/admin/policy.html"),
    ),
    (
        "admin/rule.html",
        include_str!("../templates/admin/rule.html"),
    ),
    (
        "admin/delete_rule.html",
        include_str!("../templates/admin/delete_rule.html"),
    ),
    (
        "admin/rule_form.html",
        include_str!("../templates/admin/rule_form.html"),
    ),
    (
        "admin/quarantine.html",
        include_str!("../templates/admin/quarantine.html"),
    ),
    (
        "admin/errored.html",
        include_str!("../templates/admin/errored.html"),
    ),
    (
        "admin/settings.html",
        include_str!("../templates/admin/settings.html"),
    ),
    (
        "admin/keyserver.html",
        include_str!("../templates/admin/keyserver.html"),
    ),
    (
        "admin/audit.html",
        include_str!("../templates/admin/audit.html"),
    ),
];

/// The style sheet of every page.
pub const STYLE: &str = include_str!("../static/postern.css");

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a built-in template does not parse");
            }
        }
        env
    })
}

/// Renders template `name` (HTML-escaped by default) as a 200 page.
pub fn render(name: &str, context: impl Serialize) -> Response {
    render_with(StatusCode::OK, name, context)
}

/// Renders template `name` with `status`.
pub fn render_with(status: StatusCode, name: &str, context: impl Serialize) -> Response {
    match environment()
        .get_template(name)
        .and_then(|t| t.render(context))
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "cannot render a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error: a page could not be made; see the gateway's log",
            )
                .into_response()
        }
    }
}

/// `GET /static/postern.css`.
pub async fn style() -> Response {
    let mut response = STYLE.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// An error shown as a page: the status, a title and what to do.
#[derive(Debug, Clone)]
pub struct PageError {
    /// The HTTP status.
    pub status: StatusCode,
    /// One line.
    pub title: String,
    /// What happened and what the person can do.
    pub detail: String,
    /// Where "Back" leads.
    pub back: Option<String>,
}

impl PageError {
    /// An error with `status`.
    pub fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        PageError {
            status,
            title: title.into(),
            detail: detail.into(),
            back: None,
        }
    }

    /// 400: the request was wrong.
    pub fn bad(title: impl Into<String>, detail: impl Into<String>) -> Self {
        PageError::new(StatusCode::BAD_REQUEST, title, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        PageError::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    /// 403: the form's CSRF token is missing or wrong.
    pub fn forgery() -> Self {
        PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "The form did not carry this session's security token, so it was not accepted. Go back, reload the page and try again.",
        )
    }

    /// 500: something on our side, logged.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{what}");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on the gateway",
            format!("{what}. The administrator can find the details in the gateway's log."),
        )
    }

    /// Adds a "Back" link.
    pub fn back(mut self, to: impl Into<String>) -> Self {
        self.back = Some(to.into());
        self
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Ctx<'a> {
            status: u16,
            reason: &'a str,
            title: &'a str,
            detail: &'a str,
            back: Option<&'a str>,
        }
        render_with(
            self.status,
            "error.html",
            Ctx {
                status: self.status.as_u16(),
                reason: self.status.canonical_reason().unwrap_or(""),
                title: &self.title,
                detail: &self.detail,
                back: self.back.as_deref(),
            },
        )
    }
}

/// A form body. One that does not parse (a missing field, a number that is not one) gets an
/// error page naming the problem, where axum's own answer is a bare line of text.
pub struct Posted<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &S) -> Result<Self, PageError> {
        match Form::<T>::from_request(request, state).await {
            Ok(Form(value)) => Ok(Posted(value)),
            Err(e) => Err(PageError::new(
                e.status(),
                "This form could not be read",
                format!(
                    "{}. Go back, reload the page and try again.",
                    e.body_text().trim_end_matches('.')
                ),
            )),
        }
    }
}

/// The fallback: a readable 404 page.
pub async fn not_found() -> PageError {
    PageError::not_found("There is no page at this address.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            if let Err(e) = environment().get_template(name) {
                panic!("{name}: {e:#}");
            }
        }
    }

    #[test]
    fn values_are_escaped() {
        let r = environment()
            .get_template("error.html")
            .and_then(|t| {
                t.render(minijinja::context! { status => 400, title => "<script>x</script>", detail => "a&b" })
            })
            .unwrap_or_default();
        assert!(r.contains("&lt;script&gt;x"), "{r}");
        assert!(!r.contains("<script>x"));
    }
}
