//! What a console request answers when it is not done: a page saying why, or (signed out) the
//! way to the login page. A form refused with what was typed shown again is an answer, not one
//! of these.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use crate::page::PageError;

/// Why a console request was not done.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No signed-in session: the request goes to the login page.
    #[error("not signed in")]
    SignedOut,
    /// The form did not carry the session's (or the login form's) token: it may come from
    /// another site.
    #[error("the form's security token is not this session's")]
    Forgery {
        /// Where "Back" leads.
        back: &'static str,
    },
    /// A policy change from a page made before another change: rules are named by order
    /// numbers, which that change may have moved.
    #[error("the policy changed since the page was loaded")]
    StalePolicy,
    /// The request cannot be done as asked (an unknown operation, a query that does not parse).
    #[error("{title}: {detail}")]
    Refused {
        /// One line.
        title: &'static str,
        /// What was wrong, for the administrator to correct.
        detail: String,
        /// Where "Back" leads.
        back: Option<&'static str>,
    },
    /// What the request names is not there (a rule, the key server).
    #[error("not found: {detail}")]
    NotFound {
        /// What is missing.
        detail: String,
        /// Where "Back" leads.
        back: Option<&'static str>,
    },
    /// Something failed on the gateway's side: logged, and the page says where to look.
    #[error("{what}: {cause}")]
    Internal {
        /// What could not be done.
        what: &'static str,
        /// Why, for the log only.
        cause: String,
    },
}

impl ConsoleError {
    /// A refused request, without a "Back" link.
    pub(super) fn refused(title: &'static str, detail: impl Into<String>) -> Self {
        ConsoleError::Refused {
            title,
            detail: detail.into(),
            back: None,
        }
    }

    /// A missing thing, without a "Back" link.
    pub(super) fn not_found(detail: impl Into<String>) -> Self {
        ConsoleError::NotFound {
            detail: detail.into(),
            back: None,
        }
    }

    /// A failure on the gateway's side.
    pub(super) fn internal(what: &'static str, cause: impl std::fmt::Display) -> Self {
        ConsoleError::Internal {
            what,
            cause: cause.to_string(),
        }
    }

    /// Adds a "Back" link to a refusal or a missing thing.
    pub(super) fn back(mut self, to: &'static str) -> Self {
        if let ConsoleError::Refused { back, .. } | ConsoleError::NotFound { back, .. } = &mut self
        {
            *back = Some(to);
        }
        self
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let page = match self {
            ConsoleError::SignedOut => return Redirect::to("/admin/login").into_response(),
            ConsoleError::Forgery { back } => PageError::forgery().back(back),
            ConsoleError::StalePolicy => PageError::new(
                StatusCode::CONFLICT,
                "The policy has changed",
                "The policy was changed since this page was loaded (by another administrator, or an import), so nothing was changed. Open the policy again and make your change there.",
            )
            .back("/admin/policy"),
            ConsoleError::Refused {
                title,
                detail,
                back,
            } => with_back(PageError::bad(title, detail), back),
            ConsoleError::NotFound { detail, back } => {
                with_back(PageError::not_found(detail), back)
            }
            ConsoleError::Internal { what, cause } => PageError::internal(what, cause),
        };
        page.into_response()
    }
}

fn with_back(page: PageError, back: Option<&'static str>) -> PageError {
    match back {
        Some(to) => page.back(to),
        None => page,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header;

    use super::*;

    #[test]
    fn each_error_answers_with_its_status_and_a_signed_out_one_goes_to_the_login_page() {
        let signed_out = ConsoleError::SignedOut.into_response();
        assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            signed_out
                .headers()
                .get(header::LOCATION)
                .map(|v| v.as_bytes()),
            Some(&b"/admin/login"[..])
        );
        for (error, status) in [
            (
                ConsoleError::Forgery { back: "/admin" },
                StatusCode::FORBIDDEN,
            ),
            (ConsoleError::StalePolicy, StatusCode::CONFLICT),
            (
                ConsoleError::refused("Unknown operation", "Use release."),
                StatusCode::BAD_REQUEST,
            ),
            (
                ConsoleError::not_found("There is no rule 7."),
                StatusCode::NOT_FOUND,
            ),
            (
                ConsoleError::internal("cannot read the policy", "disk"),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ] {
            assert_eq!(error.into_response().status(), status);
        }
    }
}
