//! Notifications from policy actions: a template rendered with the message's facts, sent from
//! the null sender (so that a failed notification cannot bounce back and loop) through the
//! normal delivery path.

use policy::templates::{Context, render};
use policy::{Policy, Recipient};
use store::{Queue, QueueError};

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
    let date = smtp::session::rfc2822_now();
    let id = format!("<notice.{:016x}@{hostname}>", rand::random::<u64>());
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
    smtp::dsn::accept_local(queue, hostname, notice.to.clone(), text.as_bytes())
        .await
        .map(Some)
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
