//! Reply, reply all and forward from the reader: the person writes in the browser, the gateway
//! builds the message, seals it to the chosen recipients, signs it with the person's own key
//! (fetched with their login), wraps it like any encrypted email and accepts it into the queue
//! on the policy path, so the original sender's gateway opens it as it opens any sealed mail.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use envelope::{Address, EncapsCache, Epoch};
use keys::KeyKind;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as MailAddress;
use serde::{Deserialize, Serialize};
use store::{Envelope, Source};
use zeroize::Zeroizing;

use crate::page::{PageError, render, render_with};
use crate::reader::{Reader, lock};
use crate::render::view;
use crate::security::same_secret;

/// What the person is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// To the sender.
    Reply,
    /// To the sender and every other recipient.
    All,
    /// To whoever the person names, with the attachments.
    Forward,
}

#[derive(Deserialize)]
pub(crate) struct ComposeQuery {
    mode: Mode,
}

#[derive(Serialize)]
struct ComposeCtx {
    mid: String,
    csrf: String,
    mode: Mode,
    me: String,
    to: String,
    cc: String,
    subject: String,
    body: String,
    attachments: Vec<String>,
    error: Option<String>,
}

fn prefixed(prefix: &str, subject: &str) -> String {
    if subject
        .get(..prefix.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(prefix))
    {
        subject.to_string()
    } else {
        format!("{prefix}{subject}")
    }
}

fn quoted(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                ">".into()
            } else {
                format!("> {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `GET /read/m/{mid}/compose?mode=reply|all|forward`: the form, filled in.
pub(crate) async fn form(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(mid): Path<String>,
    Query(q): Query<ComposeQuery>,
) -> Result<Response, PageError> {
    let session = reader
        .session(&headers)
        .ok_or_else(|| PageError::not_found("This reading session has ended."))?;
    let (opened, csrf) = {
        let s = lock(&session)?;
        let opened = s
            .letters
            .get(&mid)
            .and_then(|l| l.opened.clone())
            .ok_or_else(|| {
                PageError::not_found("Open the message first.").back(format!("/read/m/{mid}"))
            })?;
        (opened, s.csrf.clone())
    };
    let original = opened.clone();
    let v = tokio::task::spawn_blocking(move || view(&original.plain, "", false))
        .await
        .map_err(|e| PageError::internal("cannot read the message", e))?
        .map_err(|e| PageError::internal("cannot read the message", e))?;
    let me = opened.address.to_string();
    let others = |list: &[String]| -> Vec<String> {
        list.iter()
            .filter(|a| !a.eq_ignore_ascii_case(&me) && !v.reply_to.contains(a))
            .cloned()
            .collect()
    };
    let (to, cc, subject, body) = match q.mode {
        Mode::Reply | Mode::All => {
            let cc = if q.mode == Mode::All {
                let mut all = others(&v.to);
                all.extend(others(&v.cc));
                all.dedup();
                all.join(", ")
            } else {
                String::new()
            };
            (
                v.reply_to.join(", "),
                cc,
                prefixed("Re: ", &v.subject),
                format!(
                    "\n\nOn {}, {} wrote:\n{}\n",
                    v.date,
                    v.from,
                    quoted(&v.text)
                ),
            )
        }
        Mode::Forward => (
            String::new(),
            String::new(),
            prefixed("Fwd: ", &v.subject),
            format!(
                "\n\n---------- Forwarded message ----------\nFrom: {}\nDate: {}\nSubject: {}\nTo: {}\n\n{}\n",
                v.from,
                v.date,
                v.subject,
                v.to.join(", "),
                v.text
            ),
        ),
    };
    let attachments = if q.mode == Mode::Forward {
        v.attachments.iter().map(|a| a.name.clone()).collect()
    } else {
        Vec::new()
    };
    Ok(render(
        "reader/compose.html",
        ComposeCtx {
            mid,
            csrf,
            mode: q.mode,
            me,
            to,
            cc,
            subject,
            body,
            attachments,
            error: None,
        },
    ))
}

/// The fields of the compose form.
#[derive(Default)]
struct Written {
    csrf: String,
    mode: Option<Mode>,
    to: String,
    cc: String,
    subject: String,
    body: String,
    files: Vec<(String, String, Vec<u8>)>,
}

async fn read_form(mut multipart: Multipart) -> Result<Written, PageError> {
    let mut w = Written::default();
    let bad = |e: axum::extract::multipart::MultipartError| {
        PageError::bad(
            "The form could not be read",
            format!("{} Attachments may be too large.", e.body_text()),
        )
    };
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "attachment" {
            let file = field.file_name().map(crate::render::safe_file_name);
            let ctype = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_string();
            let bytes = field.bytes().await.map_err(bad)?;
            if let Some(file) = file
                && !bytes.is_empty()
            {
                w.files.push((file, ctype, bytes.to_vec()));
            }
            continue;
        }
        let value = field.text().await.map_err(bad)?;
        match name.as_str() {
            "csrf" => w.csrf = value,
            "mode" => {
                w.mode = match value.as_str() {
                    "reply" => Some(Mode::Reply),
                    "all" => Some(Mode::All),
                    "forward" => Some(Mode::Forward),
                    _ => None,
                }
            }
            "to" => w.to = value,
            "cc" => w.cc = value,
            "subject" => w.subject = value,
            "body" => w.body = value,
            _ => {}
        }
    }
    Ok(w)
}

/// Addresses in a To or Cc field: separated by commas, semicolons or spaces, each checked.
fn parse_list(field: &str, text: &str) -> Result<Vec<Address>, String> {
    text.split([',', ';', ' ', '\n', '\r', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let bare = s.trim_start_matches('<').trim_end_matches('>');
            Address::parse(bare)
                .map_err(|e| format!("{field}: {s:?} is not an email address ({e})"))
        })
        .collect()
}

/// `POST /read/m/{mid}/send`.
pub(crate) async fn send(
    State(reader): State<Arc<Reader>>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mid): Path<String>,
    multipart: Multipart,
) -> Result<Response, PageError> {
    let session = reader
        .session(&headers)
        .ok_or_else(|| PageError::not_found("This reading session has ended; nothing was sent."))?;
    let w = read_form(multipart).await?;
    let (opened, client, csrf) = {
        let s = lock(&session)?;
        if !same_secret(&w.csrf, &s.csrf) {
            return Err(PageError::forgery());
        }
        let opened = s
            .letters
            .get(&mid)
            .and_then(|l| l.opened.clone())
            .ok_or_else(|| PageError::not_found("Open the message first."))?;
        let client = s
            .proven
            .get(&opened.address)
            .cloned()
            .ok_or_else(|| PageError::not_found("Your sign-in has ended; nothing was sent."))?;
        (opened, client, s.csrf.clone())
    };
    let mode = w.mode.unwrap_or(Mode::Reply);
    // Nothing was sent: the form comes back as written, with what to fix. A browser cannot
    // fill in files again, so the person is told to.
    let reattach = if w.files.is_empty() {
        ""
    } else {
        " (attach your files again)"
    };
    let again = |error: String| {
        render_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reader/compose.html",
            ComposeCtx {
                mid: mid.clone(),
                csrf: csrf.clone(),
                mode,
                me: opened.address.to_string(),
                to: w.to.clone(),
                cc: w.cc.clone(),
                subject: w.subject.clone(),
                body: w.body.clone(),
                attachments: Vec::new(),
                error: Some(format!("{error}{reattach}")),
            },
        )
    };
    let (to, cc) = match (parse_list("To", &w.to), parse_list("Cc", &w.cc)) {
        (Ok(t), Ok(c)) => (t, c),
        (Err(e), _) | (_, Err(e)) => return Ok(again(e)),
    };
    let mut everyone: Vec<Address> = to.iter().chain(cc.iter()).cloned().collect();
    everyone.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    everyone.dedup();
    if everyone.is_empty() {
        return Ok(again("To: name at least one recipient".into()));
    }
    let max = reader.gateway.settings.max_recipients;
    if everyone.len() > max {
        return Ok(again(format!("To and Cc: at most {max} recipients")));
    }
    if w.subject.len() > 900 || w.subject.contains(['\r', '\n']) {
        return Ok(again("Subject: one line of at most 900 characters".into()));
    }
    // A proven address can send; the limit keeps a stolen session or a careless script from
    // sending without end.
    let limit = reader.gateway.settings.replies_per_hour as u64;
    let Ok(slot) = reader
        .sent
        .take(opened.address.as_str(), reader.now(), limit, 0)
        .await
    else {
        return Ok(again(format!(
            "{} has sent {limit} messages from the reader in the last hour, the most the gateway allows. Try again later",
            opened.address
        )));
    };

    // A reply threads under the original; a forward carries its attachments.
    let original = opened.clone();
    let (thread, forwarded) = tokio::task::spawn_blocking(move || match mode {
        Mode::Forward => (None, crate::render::attachments(&original.plain)),
        _ => (crate::render::thread(&original.plain), Vec::new()),
    })
    .await
    .map_err(|e| PageError::internal("cannot read the message", e))?;
    let me = opened.address.clone();
    let now = reader.now();
    let message_id = format!("{}@{}", &crate::security::random_token()[..32], me.domain());
    let mut builder = MessageBuilder::new()
        .from(MailAddress::new_address(None::<&str>, me.as_str()))
        .to(addresses(&to))
        .subject(w.subject.trim())
        .message_id(message_id.clone())
        .date(now as i64)
        .header(
            "X-Mailer",
            mail_builder::headers::raw::Raw::new("Postern reader"),
        )
        .text_body(w.body.replace("\r\n", "\n"));
    if !cc.is_empty() {
        builder = builder.cc(addresses(&cc));
    }
    if let Some((parent, mut refs)) = thread {
        refs.push(parent.clone());
        builder = builder.in_reply_to(parent).references(refs);
    }
    for (name, ctype, bytes) in forwarded.into_iter().chain(w.files) {
        builder = builder.attachment(ctype, name, bytes);
    }
    let bytes = Zeroizing::new(
        builder
            .write_to_vec()
            .map_err(|e| PageError::internal("cannot build the message", e))?,
    );

    // Seal, signed with the person's own key for this month.
    let gateway = &reader.gateway;
    let params = gateway.keys.params().await.map_err(|e| {
        PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The key server cannot be reached",
            format!("Nothing was sent ({e}). Try again in a few minutes."),
        )
    })?;
    let epoch = Epoch::from_unix(now);
    let (key, _) = client
        .key_bytes_for(&me, epoch, KeyKind::Sign, Some(params.newest().id()))
        .await
        .map_err(|e| {
            PageError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Your signing key could not be had",
                format!("Nothing was sent ({e})."),
            )
        })?;
    let queue = gateway.queue.clone();
    let mime = gateway.mime.clone();
    let hostname = gateway.hostname.clone();
    let mark = gateway.mark.clone();
    let recipients = everyone.clone();
    let sender = me.clone();
    let finished = tokio::task::spawn_blocking(move || -> Result<store::Finished, String> {
        let signer = envelope::SigningKey::from_bytes(&key).map_err(|e| e.to_string())?;
        let spool = queue.spool();
        let draft = store::Body::from_bytes(bytes.to_vec());
        let original = transform::Original::read(&draft).map_err(|e| e.to_string())?;
        {
            let job = transform::Encrypt {
                original: Arc::new(original),
                recipients,
                epoch,
                sender: Some(sender),
                signer: Arc::new(signer),
                mark,
                params,
                encaps: Arc::new(EncapsCache::new(64)),
                settings: mime,
                hostname,
                // A reply is recorded by `queue.accept`, which keeps no sealed message aside.
                keep_until: None,
            };
            transform::encrypt(&job, spool)
                .map(|made| made.email)
                .map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| PageError::internal("cannot seal the message", e))?
    .map_err(|e| PageError::internal("cannot seal the message", e))?;
    let envelope = Envelope {
        sender: me.to_string(),
        recipients: everyone.iter().map(|a| a.to_string()).collect(),
        client: peer.ip().to_string(),
        helo: "reader".into(),
        source: Source::Policy,
        message_id: Some(format!("<{message_id}>")),
    };
    // Counted from the hand-off on: a client that hangs up while the commit runs still sent it.
    slot.keep();
    let id = gateway
        .queue
        .accept(envelope, finished)
        .await
        .map_err(|e| PageError::internal("cannot queue the message", e))?;
    gateway.wake.notify_one();
    tracing::info!(queue_id = %id, sender = %me, recipients = everyone.len(), "reader: a message was sealed and queued");
    #[derive(Serialize)]
    struct Sent {
        mid: String,
        csrf: String,
        recipients: Vec<String>,
    }
    Ok(render(
        "reader/sent.html",
        Sent {
            mid,
            csrf,
            recipients: everyone.iter().map(|a| a.to_string()).collect(),
        },
    ))
}

fn addresses(list: &[Address]) -> MailAddress<'static> {
    MailAddress::new_list(
        list.iter()
            .map(|a| MailAddress::new_address(None::<&str>, a.to_string()))
            .collect(),
    )
}
