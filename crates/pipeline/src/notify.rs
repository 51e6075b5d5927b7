//! Notifications from policy actions: a template rendered with the message's facts, sent from
//! the null sender (so that a failed notification cannot bounce back and loop) through the
//! normal delivery path.

use std::io::Write;

use policy::templates::{Context, render};
use policy::{Policy, Recipient};
use store::{Envelope, Queue, QueueError, Source};

/// A notification to send once the decision that caused it is recorded.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Addresses.
    pub to: Vec<String>,
    /// Template name.
    pub template: String,
    /// What it tells.
    pub context: Context,
}

/// The addresses `who` stands for.
pub fn addresses(who: &Recipient, sender: &str, recipients: &[String], admin: &str) -> Vec<String> {
    match who {
        Recipient::Sender if sender.is_empty() => Vec::new(),
        Recipient::Sender => vec![sender.to_string()],
        Recipient::Recipients => recipients.to_vec(),
        Recipient::Admin => vec![admin.to_string()],
        Recipient::Address(a) => vec![a.clone()],
    }
}

/// Renders and queues `notice`; returns its queue id.
pub async fn send(
    queue: &Queue,
    policy: &Policy,
    hostname: &str,
    notice: &Notice,
) -> Result<Option<String>, QueueError> {
    if notice.to.is_empty() {
        return Ok(None);
    }
    let Some(template) = policy.template(&notice.template) else {
        return Err(QueueError::Refused(format!(
            "no template {:?}",
            notice.template
        )));
    };
    let (subject, body) = render(&template, &notice.context).map_err(QueueError::Refused)?;
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let id = format!("<{:x}.{}@{hostname}>", rand_u64(), store::queue::now());
    let mut text = format!(
        "From: Postern <postmaster@{hostname}>\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\n\
Message-ID: {id}\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        notice.to.join(", "),
        encode_subject(&subject),
    );
    for line in body.lines() {
        text.push_str(line);
        text.push_str("\r\n");
    }
    let mut file = queue.spool().create()?;
    file.write_all(text.as_bytes())?;
    let finished = tokio::task::spawn_blocking(move || file.finish())
        .await
        .map_err(|e| QueueError::Io(std::io::Error::other(e)))??;
    let envelope = Envelope {
        sender: String::new(),
        recipients: notice.to.clone(),
        client: "127.0.0.1".into(),
        helo: hostname.to_string(),
        source: Source::Local,
        message_id: Some(id),
    };
    queue.accept(envelope, finished).await.map(Some)
}

/// A subject as an RFC 2047 encoded word when it is not ASCII.
fn encode_subject(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    use base64::Engine;
    format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    )
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(store::queue::now());
    h.finish()
}
