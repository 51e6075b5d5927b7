//! Viewing: the address choice for a letter not opened yet, the opened message (remote
//! images only when asked), and its attachments.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use envelope::Address;
use serde::{Deserialize, Serialize};

use super::{Reader, expired, lock};
use crate::page::{PageError, render};
use crate::render::{View, view};
use crate::security;

#[derive(Serialize)]
struct ChooseCtx {
    mid: String,
    csrf: String,
    sender: String,
    recipients: Vec<String>,
    proven: Vec<String>,
    /// Some address is proven in this session (it has something to sign out of).
    signed_in: bool,
    notice: Option<String>,
}

#[derive(Serialize)]
struct MessageCtx<'a> {
    mid: &'a str,
    csrf: &'a str,
    me: String,
    view: &'a View,
    signature: Signature,
    remote_shown: bool,
}

/// The signature verdict for people.
#[derive(Serialize)]
pub(crate) struct Signature {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

pub(crate) fn signature_text(s: &mime::Signature, sender: &Address) -> Signature {
    match s {
        mime::Signature::Sender(a) => Signature {
            ok: true,
            text: format!("Signed by {a}"),
        },
        mime::Signature::DefaultSender(a) => Signature {
            ok: true,
            text: format!(
                "Signed by {a}, the organization's default sender, on behalf of {sender}"
            ),
        },
        mime::Signature::Invalid { claimed, reason } => Signature {
            ok: false,
            text: format!(
                "Warning: the signature does not verify ({reason}). This message may not come from {claimed}."
            ),
        },
    }
}

#[derive(Deserialize)]
pub(super) struct ShowQuery {
    #[serde(default)]
    remote: Option<u8>,
}

/// `GET /read/m/{mid}`: the address choice, or the opened message.
pub(super) async fn show(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(mid): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, PageError> {
    let session = reader.session(&headers).ok_or_else(expired)?;
    let (opened, sender, csrf) = {
        let s = lock(&session)?;
        let letter = s.letters.get(&mid).ok_or_else(expired)?;
        let Some(opened) = letter.opened.clone() else {
            let recipients: Vec<String> = letter
                .header
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect();
            let proven = recipients
                .iter()
                .filter(|r| s.proven.keys().any(|p| p.as_str() == r.as_str()))
                .cloned()
                .collect();
            return Ok(render(
                "reader/choose.html",
                ChooseCtx {
                    mid: mid.clone(),
                    csrf: s.csrf.clone(),
                    sender: letter.header.sender.to_string(),
                    recipients,
                    proven,
                    signed_in: !s.proven.is_empty(),
                    notice: None,
                },
            ));
        };
        (opened, letter.header.sender.clone(), s.csrf.clone())
    };
    let remote = q.remote == Some(1);
    let base = format!("/read/m/{mid}");
    let shown = opened.clone();
    let v = tokio::task::spawn_blocking(move || view(&shown.plain, &base, remote))
        .await
        .map_err(|e| PageError::internal("cannot show the message", e))?
        .map_err(|e| PageError::internal("cannot show the message", e))?;
    let mut response = render(
        "reader/message.html",
        MessageCtx {
            mid: &mid,
            csrf: &csrf,
            me: opened.address.to_string(),
            view: &v,
            signature: signature_text(&opened.signature, &sender),
            remote_shown: remote,
        },
    );
    if remote {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(security::csp_with_remote_images()),
        );
    }
    Ok(response)
}

#[derive(Deserialize)]
pub(super) struct PartQuery {
    #[serde(default)]
    inline: Option<u8>,
}

/// Image types shown inline (an inline image in the HTML body). SVG is not among them: it can
/// carry scripts.
const INLINE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// `GET /read/m/{mid}/part/{n}`: an attachment, always as a download.
pub(super) async fn download(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    Path((mid, n)): Path<(String, usize)>,
    Query(q): Query<PartQuery>,
) -> Result<Response, PageError> {
    let session = reader.session(&headers).ok_or_else(expired)?;
    let opened = {
        let s = lock(&session)?;
        s.letters
            .get(&mid)
            .and_then(|l| l.opened.clone())
            .ok_or_else(expired)?
    };
    let (name, ctype, bytes) =
        tokio::task::spawn_blocking(move || crate::render::attachment(&opened.plain, n))
            .await
            .map_err(|e| PageError::internal("cannot read the attachment", e))?
            .ok_or_else(|| PageError::not_found("The message has no such attachment."))?;
    let inline = q.inline == Some(1) && INLINE_TYPES.contains(&ctype.as_str());
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    let (ctype, disposition) = if inline {
        (ctype, "inline".to_string())
    } else {
        (
            "application/octet-stream".to_string(),
            format!(
                "attachment; filename=\"{}\"; filename*=UTF-8''{}",
                name.replace(|c: char| !c.is_ascii() || c == '\\', "_"),
                security::percent_encode(&name)
            ),
        )
    };
    if let Ok(v) = HeaderValue::from_str(&ctype) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(response)
}
