//! The audit log page: every change made from the console, the command line and the REST
//! API, newest first.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::{Admin, Console, ConsoleError, page, when};

/// `GET /admin/audit`.
pub(super) async fn show(
    State(c): State<Arc<Console>>,
    admin: Admin,
) -> Result<Response, ConsoleError> {
    let rows: Vec<_> = c
        .gateway
        .queue
        .audit_log(500)
        .await
        .map_err(|e| ConsoleError::internal("cannot read the audit log", e))?
        .into_iter()
        .map(|e| (when(e.at), e.actor, e.action, e.detail))
        .collect();
    Ok(page(&admin, "audit", "admin/audit.html", None, rows))
}
