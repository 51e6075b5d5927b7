//! Delivery status notifications (RFC 3464): a multipart/report telling the sender which
//! recipients failed and why, with the original message's header.

use std::io::Read;

use store::{Delivery, Envelope, Queue, QueueError, Source, Spool};

/// Most of the original header that is quoted back.
const MAX_QUOTED_HEADER: usize = 32 * 1024;

/// The notification's full text.
pub fn build(hostname: &str, d: &Delivery, failed: &[(String, String)], spool: &Spool) -> String {
    let boundary = format!("postern-dsn-{}", d.id);
    let date = crate::session::rfc2822_now();
    let mut original = Vec::new();
    // A transformed copy's header is not quoted: a decrypted copy's inner header would cross
    // the network in clear.
    if !d.derived
        && let Ok(f) = std::fs::File::open(spool.path(&d.id))
    {
        let _ = f.take(MAX_QUOTED_HEADER as u64).read_to_end(&mut original);
    }
    let header_end = find_header_end(&original).unwrap_or(original.len());
    let original_header = if d.derived {
        format!(
            "Message-ID: {}\r\n",
            d.message_id.as_deref().unwrap_or("(none)")
        )
    } else {
        String::from_utf8_lossy(&original[..header_end]).into_owned()
    };
    let mut list = String::new();
    for (rcpt, reply) in failed {
        list.push_str(&format!("  <{rcpt}>: {}\r\n", one_line(reply)));
    }
    let mut per_recipient = String::new();
    for (rcpt, reply) in failed {
        let status = status_of(reply);
        per_recipient.push_str(&format!(
            "Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {}\r\n\r\n",
            one_line(reply)
        ));
    }
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
To: <{sender}>\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Date: {date}\r\n\
Message-ID: <dsn.{id}@{hostname}>\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\
\r\n\
--{boundary}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
This is the mail system at {hostname}.\r\n\
\r\n\
Your message could not be delivered to one or more recipients:\r\n\
\r\n\
{list}\r\n\
--{boundary}\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; {hostname}\r\n\
X-Postern-Queue-ID: {id}\r\n\
\r\n\
{per_recipient}\
--{boundary}\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
{original_header}\r\n\
--{boundary}--\r\n",
        sender = d.sender,
        id = d.id,
    )
}

/// Builds the notification for `failed` recipients of `d` and accepts it into the queue, from
/// the null sender to `d`'s sender; returns its queue id.
pub async fn queue(
    queue: &Queue,
    hostname: &str,
    d: &Delivery,
    failed: &[(String, String)],
) -> Result<String, QueueError> {
    let text = build(hostname, d, failed, queue.spool());
    accept_local(queue, hostname, vec![d.sender.clone()], text.as_bytes()).await
}

/// Accepts a message Postern made (a notification) into the queue, from the null sender, so
/// that a failure to deliver it cannot bounce back and loop; it is delivered as it is. Returns
/// its queue id.
pub async fn accept_local(
    queue: &Queue,
    hostname: &str,
    recipients: Vec<String>,
    text: &[u8],
) -> Result<String, QueueError> {
    let mut file = queue.spool().create()?;
    file.append(text)?;
    let finished = tokio::task::spawn_blocking(move || file.finish())
        .await
        .map_err(|e| QueueError::Io(std::io::Error::other(e)))??;
    let envelope = Envelope {
        sender: String::new(),
        recipients,
        client: "127.0.0.1".into(),
        helo: hostname.to_string(),
        source: Source::Local,
        message_id: None,
    };
    queue.accept(envelope, finished).await
}

fn find_header_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 1))
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect()
}

/// The enhanced status code in a reply, or a generic one.
fn status_of(reply: &str) -> String {
    reply
        .split_whitespace()
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "4" | "5")
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        // A temporary failure that outlived the queue is final now: report it as 5.x.x.
        .map_or_else(|| "5.0.0".to_string(), |s| format!("5{}", &s[1..]))
}
