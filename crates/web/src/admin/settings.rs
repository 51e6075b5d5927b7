//! The settings page: the SMTP and MIMEBuilder settings the binary's editor describes, saved
//! for the next start. A save from a form made before another change is refused.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

use super::{Admin, Console, ConsoleError, Flash, field, page, page_refused};
use crate::config_form::{SaveError, Section, refill};
use crate::page::Posted;

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
async fn settings_page(c: &Console) -> Result<SettingsPage, ConsoleError> {
    let editor = c.gateway.config.clone();
    let read = tokio::task::spawn_blocking(move || {
        // The version first: a change between the two makes the form stale, not wrong.
        let version = editor.version();
        editor.sections().map(|s| (s, version, editor.location()))
    })
    .await;
    let (sections, version, location) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return Err(ConsoleError::internal("Cannot read the settings", e)),
        Err(e) => return Err(ConsoleError::internal("Cannot read the settings", e)),
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

/// `GET /admin/settings`.
pub(super) async fn show(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Result<Response, ConsoleError> {
    let p = settings_page(&c).await?;
    Ok(page(
        &admin,
        "settings",
        "admin/settings.html",
        flash.done,
        p,
    ))
}

/// `POST /admin/settings`: saved, or the form again with what was typed and why not.
pub(super) async fn save(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    admin.check(&field(&form, "csrf"))?;
    let editor = c.gateway.config.clone();
    let (posted, version) = (form.clone(), field(&form, "version"));
    let saved = tokio::task::spawn_blocking(move || editor.save(&posted, &version))
        .await
        .map_err(|e| ConsoleError::internal("Cannot save the settings", e))?;
    let (status, error, refill_form) = match saved {
        Ok(changes) if changes.is_empty() => {
            return Ok(Redirect::to("/admin/settings?done=Nothing+changed").into_response());
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
            return Ok(Redirect::to(&format!(
                "/admin/settings?done=Saved+{}+change(s);+they+take+effect+when+the+gateway+restarts",
                changes.len()
            ))
            .into_response());
        }
        Err(SaveError::Stale) => (
            StatusCode::CONFLICT,
            "The settings were changed since this page was loaded (by another administrator, or in the configuration file). Nothing was saved: here they are as they are now; make your change again.".to_string(),
            false,
        ),
        Err(SaveError::Invalid(why)) => (StatusCode::UNPROCESSABLE_ENTITY, why, true),
    };
    let mut shown = settings_page(&c).await?;
    if refill_form {
        // The values are the ones posted, so the version is too: a save made since then still
        // makes them stale.
        refill(&mut shown.sections, &form);
        shown.version = field(&form, "version");
    }
    Ok(page_refused(
        &admin,
        status,
        "settings",
        "admin/settings.html",
        Some(error),
        shown,
    ))
}
