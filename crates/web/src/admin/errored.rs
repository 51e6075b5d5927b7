//! The errored queue: mail waiting for a key the gateway could not have, and sending it back
//! for processing.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{Admin, Console, ConsoleError, Flash, page, when};
use crate::page::Posted;

#[derive(Serialize)]
struct ErroredRow {
    id: String,
    sender: String,
    recipients: String,
    received: String,
    reply: String,
}

/// `GET /admin/errored`.
pub(super) async fn show(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Result<Response, ConsoleError> {
    let list = c
        .gateway
        .queue
        .errored(&store::ErroredFilter::default(), 500)
        .await
        .map_err(|e| ConsoleError::internal("cannot read the errored queue", e))?;
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
    Ok(page(
        &admin,
        "errored",
        "admin/errored.html",
        flash.done,
        rows,
    ))
}

#[derive(Deserialize)]
pub(super) struct ResendForm {
    csrf: String,
    /// One message; without it, all of them.
    #[serde(default)]
    id: Option<String>,
}

/// `POST /admin/errored`: one message's errored recipients, or all, back for processing.
pub(super) async fn resend(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<ResendForm>,
) -> Result<Response, ConsoleError> {
    admin.check(&form.csrf)?;
    let filter = store::ErroredFilter {
        id: form.id.clone().filter(|s| !s.is_empty()),
        ..Default::default()
    };
    let n = c
        .gateway
        .queue
        .requeue_errored(u64::MAX, &filter)
        .await
        .map_err(|e| ConsoleError::internal("cannot resend", e))?;
    c.gateway.wake.notify_one();
    let which = filter.id.clone().unwrap_or_else(|| "all".into());
    c.audit(
        &admin,
        "errored.resend",
        &format!("{which}: {n} recipient(s)"),
    )
    .await;
    Ok(Redirect::to(&format!(
        "/admin/errored?done=Sent+{n}+recipient(s)+back+for+processing"
    ))
    .into_response())
}
