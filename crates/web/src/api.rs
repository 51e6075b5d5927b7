//! The administration REST API under `/api/v1`: quarantine areas and held messages. Every
//! request carries the administrator's API token (`Authorization: Bearer ...`, kept in
//! `DATA_DIR/admin.token`), compared in constant time. Every change is written to the audit
//! log the console shows, with the actor `api`.

// Handlers answer with a `Response` either way; boxing the error side would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;
use store::{QuarantineFilter, QuarantineOp, Queue};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Who the audit log names for a change made through the API: the token is the
/// administrator's, not a person's.
const ACTOR: &str = "api";

#[derive(Clone)]
struct Api {
    queue: Queue,
    token: Arc<Zeroizing<String>>,
}

/// The `/api/v1` routes.
pub fn router(queue: Queue, token: Zeroizing<String>) -> axum::Router {
    let api = Api {
        queue,
        token: Arc::new(token),
    };
    axum::Router::new()
        .route("/api/v1/quarantine", get(query))
        .route("/api/v1/quarantine/{op}", post(operate))
        .route("/api/v1/quarantine/areas", get(areas).post(create_area))
        .route("/api/v1/quarantine/areas/{name}", delete(delete_area))
        .with_state(api)
}

/// An error answer: a status and a JSON reason.
fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": reason.into() }))).into_response()
}

fn authorized(api: &Api, headers: &HeaderMap) -> Result<(), Response> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(api.token.as_bytes())) {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (Authorization: Bearer <DATA_DIR/admin.token>)",
        ))
    }
}

/// Writes the audit log line of a change made through the API. The change is done by then, so
/// a failure is logged rather than answered: an error would invite doing it again.
async fn audit(api: &Api, action: &str, detail: &str) {
    if let Err(e) = api.queue.audit(ACTOR, action, detail).await {
        tracing::error!(error = %e, action, "cannot write the audit log");
    }
    tracing::info!(actor = ACTOR, action, detail, "API change");
}

fn store_error(e: store::QueueError) -> Response {
    match e {
        store::QueueError::NotFound(what) => refuse(StatusCode::NOT_FOUND, format!("no {what}")),
        store::QueueError::Refused(why) => refuse(StatusCode::CONFLICT, why),
        other => {
            tracing::error!(error = %other, "API request failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the queue database failed; see the log",
            )
        }
    }
}

/// Query parameters (and the `filter` of a bulk operation).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filter {
    id: Option<i64>,
    area: Option<String>,
    sender: Option<String>,
    recipient: Option<String>,
    subject: Option<String>,
    rule: Option<String>,
    reason: Option<String>,
    /// Unix seconds.
    since: Option<u64>,
    until: Option<u64>,
    limit: Option<u32>,
}

impl Filter {
    fn to_store(&self) -> QuarantineFilter {
        QuarantineFilter {
            id: self.id,
            area: self.area.clone(),
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            subject: self.subject.clone(),
            rule: self.rule.clone(),
            reason: self.reason.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

async fn query(
    State(api): State<Api>,
    headers: HeaderMap,
    filter: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return r;
    }
    let Query(filter) = match filter {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = filter.limit.unwrap_or(100).min(10_000);
    match api.queue.quarantined(&filter.to_store(), limit).await {
        Ok(list) => Json(json!({
            "messages": list.iter().map(|q| json!({
                "id": q.id, "queue_id": q.message, "area": q.area, "rule": q.rule,
                "reason": q.reason, "sender": q.sender, "recipients": q.recipients,
                "subject": q.subject, "at": q.at, "size": q.size,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}

/// A bulk operation: the entries named, or every entry a filter finds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    ids: Option<Vec<i64>>,
    filter: Option<Filter>,
}

async fn selected(api: &Api, s: &Selection) -> Result<Vec<i64>, Response> {
    match (&s.ids, &s.filter) {
        (Some(ids), None) => Ok(ids.clone()),
        (None, Some(f)) => api
            .queue
            .quarantined(&f.to_store(), u32::MAX)
            .await
            .map(|list| list.iter().map(|q| q.id).collect())
            .map_err(store_error),
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            "give either \"ids\" (a list of entry ids) or \"filter\" (query fields), not both",
        )),
    }
}

/// `POST /api/v1/quarantine/{release|reprocess|delete}`.
async fn operate(
    State(api): State<Api>,
    UrlPath(op): UrlPath<String>,
    headers: HeaderMap,
    body: Result<Json<Selection>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return r;
    }
    let Some(op) = QuarantineOp::parse(&op) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no operation {op:?} (release, reprocess, delete)"),
        );
    };
    let Json(selection) = match body {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let ids = match selected(&api, &selection).await {
        Ok(ids) => ids,
        Err(r) => return r,
    };
    match api.queue.act_on_quarantined(op, &ids).await {
        Ok(n) => {
            let action = match op {
                QuarantineOp::Release => "quarantine.release",
                QuarantineOp::Reprocess => "quarantine.reprocess",
                QuarantineOp::Delete => "quarantine.delete",
            };
            let detail = format!("{n} message(s) of {} named", ids.len());
            audit(&api, action, &detail).await;
            Json(json!({ "count": n })).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn areas(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return r;
    }
    match api.queue.areas().await {
        Ok(list) => Json(json!({
            "areas": list.iter().map(|a| json!({
                "name": a.name, "retention_days": a.retention_secs / 86_400,
                "created_at": a.created_at, "held": a.held,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewArea {
    name: String,
    retention_days: Option<u64>,
}

async fn create_area(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<NewArea>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return r;
    }
    let Json(area) = match body {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if !policy::is_area_name(&area.name) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "name: an area name is 1 to 64 letters, digits, '_', '-' or '.'",
        );
    }
    let days = area.retention_days.unwrap_or(30);
    if days == 0 || days > 3650 {
        return refuse(StatusCode::BAD_REQUEST, "retention_days: must be 1 to 3650");
    }
    match api.queue.create_area(&area.name, days * 86_400).await {
        Ok(()) => {
            let detail = format!("{}, retention {days} days", area.name);
            audit(&api, "area.create", &detail).await;
            (
                StatusCode::CREATED,
                Json(json!({ "name": area.name, "retention_days": days })),
            )
                .into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn delete_area(
    State(api): State<Api>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return r;
    }
    match api.queue.delete_area(&name).await {
        Ok(()) => {
            audit(&api, "area.delete", &name).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => store_error(e),
    }
}
