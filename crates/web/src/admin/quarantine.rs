//! The quarantine page: the areas, a query over held messages, and release, reprocess or
//! delete on one entry or on every entry a query finds.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use store::{QuarantineFilter, QuarantineOp};

use super::{Admin, Console, ConsoleError, page, when};
use crate::page::Posted;
use crate::security;

/// The quarantine query, as form fields (dates as `YYYY-MM-DD`).
#[derive(Deserialize, Serialize, Default, Clone)]
pub(super) struct QuarantineQuery {
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

    /// The query as URL parameters, with a notice.
    fn url(&self, done: &str) -> String {
        let pairs = [
            ("area", &self.area),
            ("sender", &self.sender),
            ("recipient", &self.recipient),
            ("subject", &self.subject),
            ("rule", &self.rule),
            ("reason", &self.reason),
            ("since", &self.since),
            ("until", &self.until),
            ("done", &done.to_string()),
        ];
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", security::percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
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

/// `GET /admin/quarantine`: the areas and what the query finds.
pub(super) async fn show(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(query): Query<QuarantineQuery>,
) -> Result<Response, ConsoleError> {
    let q = &c.gateway.queue;
    let areas = q
        .areas()
        .await
        .map_err(|e| ConsoleError::internal("cannot read the quarantine areas", e))?
        .into_iter()
        .map(|a| (a.name, a.retention_secs / 86_400, a.held))
        .collect();
    let (rows, error) = match query.filter() {
        Ok(f) => {
            let list = q
                .quarantined(&f, 500)
                .await
                .map_err(|e| ConsoleError::internal("cannot query the quarantine", e))?;
            let rows = list
                .into_iter()
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
                .collect::<Vec<_>>();
            (rows, None)
        }
        Err(e) => (Vec::new(), Some(e)),
    };
    let done = query.done.clone();
    Ok(page(
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
    ))
}

#[derive(Deserialize)]
pub(super) struct ActForm {
    csrf: String,
    op: String,
    /// One entry; without it, every entry the query fields find.
    #[serde(default)]
    id: Option<i64>,
    #[serde(flatten)]
    query: HashMap<String, String>,
}

/// What the page after an operation says was done.
fn past(op: QuarantineOp) -> &'static str {
    match op {
        QuarantineOp::Release => "Released",
        QuarantineOp::Reprocess => "Sent back for processing:",
        QuarantineOp::Delete => "Deleted",
    }
}

/// `POST /admin/quarantine/act`: release, reprocess or delete; back to the same query.
pub(super) async fn act(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<ActForm>,
) -> Result<Response, ConsoleError> {
    admin.check(&form.csrf)?;
    let op = QuarantineOp::parse(&form.op).ok_or_else(|| {
        ConsoleError::refused("Unknown operation", "Use release, reprocess or delete.")
    })?;
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
        None => {
            let filter = query.filter().map_err(|e| {
                ConsoleError::refused("The query is not valid", e).back("/admin/quarantine")
            })?;
            q.quarantined(&filter, u32::MAX)
                .await
                .map_err(|e| ConsoleError::internal("cannot query the quarantine", e))?
                .iter()
                .map(|h| h.id)
                .collect()
        }
    };
    let n = q
        .act_on_quarantined(op, &ids)
        .await
        .map_err(|e| ConsoleError::internal("the operation failed", e))?;
    c.gateway.wake.notify_one();
    let detail = format!("{} on {} entr(ies): {:?}", form.op, n, ids);
    c.audit(&admin, &format!("quarantine.{}", form.op), &detail)
        .await;
    let back = query.url(&format!("{} {n} message(s)", past(op)));
    Ok(Redirect::to(&format!("/admin/quarantine?{back}")).into_response())
}
