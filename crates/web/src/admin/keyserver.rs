//! The key server page, when the key server runs in this process: the gateway API tokens
//! (made, shown once, revoked) and the last week of its audit log.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{Admin, Console, ConsoleError, Flash, page, page_refused, when};
use crate::page::Posted;
use crate::security;

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
    /// Lists that could not be read, and why.
    unreadable: Vec<String>,
}

async fn keyserver_page(c: &Console) -> KeyServerPage {
    let Some(ks) = &c.gateway.keyserver else {
        return KeyServerPage::default();
    };
    // A list that cannot be read is said so, not shown empty; the page still answers, so that
    // a token just made is shown.
    let mut unreadable = Vec::new();
    let mut read = |what: &str, e: store::keyserver::StoreError| {
        tracing::warn!("key server page: cannot read {what}: {e}");
        unreadable.push(format!("{what}: {e}"));
    };
    let tokens = ks
        .list_tokens()
        .await
        .unwrap_or_else(|e| {
            read("the gateway tokens", e);
            Vec::new()
        })
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
        .unwrap_or_else(|e| {
            read("the key issuance audit log", e);
            Vec::new()
        })
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
        unreadable,
        ..KeyServerPage::default()
    }
}

/// `GET /admin/keyserver`.
pub(super) async fn show(
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
pub(super) struct TokenForm {
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

/// `POST /admin/keyserver/token`: create a token (shown on this answer only) or revoke one.
pub(super) async fn token(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<TokenForm>,
) -> Result<Response, ConsoleError> {
    admin.check(&form.csrf)?;
    let Some(ks) = &c.gateway.keyserver else {
        return Err(ConsoleError::not_found(
            "The key server runs in another process.",
        ));
    };
    let name = form.name.trim().to_string();
    let again = |status: StatusCode, error: String, page: KeyServerPage| {
        Ok(page_refused(
            &admin,
            status,
            "keyserver",
            "admin/keyserver.html",
            Some(error),
            page,
        ))
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
                Err(e) => return Err(ConsoleError::internal("Cannot create the token", e)),
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
            Ok(page(
                &admin,
                "keyserver",
                "admin/keyserver.html",
                None,
                shown,
            ))
        }
        "revoke" => match ks.revoke_token(&name, c.now()).await {
            Ok(true) => {
                c.audit(&admin, "token.revoke", &format!("{name:?}")).await;
                Ok(Redirect::to(&format!(
                    "/admin/keyserver?done=Revoked+the+token+{};+it+no+longer+works",
                    security::percent_encode(&name)
                ))
                .into_response())
            }
            Ok(false) => again(
                StatusCode::NOT_FOUND,
                format!("No live token is named {name:?}."),
                keyserver_page(&c).await,
            ),
            Err(e) => Err(ConsoleError::internal("Cannot revoke the token", e)),
        },
        other => Err(ConsoleError::refused(
            "Unknown operation",
            format!("{other:?} is not create or revoke"),
        )),
    }
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
