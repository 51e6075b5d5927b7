//! The mail Postern writes itself: delivery status notifications (RFC 3464), the notifications
//! of policy actions, and the answer to a forward to decrypt. All of them are built here with
//! `mail-builder`, so that their headers are encoded one way (RFC 2047 for text that is not
//! ASCII) and their structure is right by construction. No I/O: the caller reads what is quoted
//! and queues what is made.

use mail_builder::MessageBuilder;
use mail_builder::headers::Header;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;

/// Most of a reply quoted in a notification, in characters.
const MAX_REPLY: usize = 500;

/// A header value as RFC 5322 wants it: unchanged when ASCII, else RFC 2047 encoded words
/// (folded, each line within 76 characters). `name_len` is the length of the field name, so that
/// the first line is folded in the right place.
pub fn encoded_words(value: &str, name_len: usize) -> String {
    let mut out = Vec::new();
    if Text::new(value)
        .write_header(&mut out, name_len + 2)
        .is_err()
    {
        return value.to_string();
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    // The writer ends the field; the callers add their own line end.
    text.strip_suffix("\r\n")
        .map(str::to_string)
        .unwrap_or(text)
}

/// What a delivery status notification tells.
#[derive(Debug, Clone)]
pub struct DeliveryReport<'a> {
    /// The gateway's host name (the reporting MTA).
    pub hostname: &'a str,
    /// The original sender, to whom the report goes.
    pub sender: &'a str,
    /// The original message's queue id.
    pub queue_id: &'a str,
    /// The header section to quote. The caller passes only the Message-ID for a transformed
    /// copy: a decrypted copy's inner header must not cross the network in clear.
    pub original_header: &'a [u8],
    /// The recipients that failed: the address, and the next hop's last reply (or Postern's
    /// reason).
    pub failed: &'a [(String, String)],
    /// When (Unix seconds).
    pub date: u64,
}

/// A delivery status notification (RFC 3464): a multipart/report with a text for people, the
/// machine-readable status of each failed recipient, and the original header.
pub fn delivery_report(r: &DeliveryReport<'_>) -> Vec<u8> {
    let hostname = r.hostname;
    let mut list = String::new();
    let mut per_recipient = String::new();
    for (address, reply) in r.failed {
        let reply = one_line(reply);
        list.push_str(&format!("  <{address}>: {reply}\r\n"));
        per_recipient.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\nDiagnostic-Code: smtp; {reply}\r\n",
            address,
            status_of(&reply)
        ));
    }
    let text = format!(
        "This is the mail system at {hostname}.\r\n\r\n\
         Your message could not be delivered to one or more recipients:\r\n\r\n{list}"
    );
    let status = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Postern-Queue-ID: {}\r\n{per_recipient}",
        r.queue_id
    );
    let header = String::from_utf8_lossy(r.original_header).into_owned();
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            plain_part("text/plain", text),
            plain_part("message/delivery-status", status),
            plain_part("text/rfc822-headers", header),
        ],
    );
    finish(
        MessageBuilder::new()
            .from(Address::new_address(
                Some("Mail Delivery System"),
                format!("MAILER-DAEMON@{hostname}"),
            ))
            .to(r.sender)
            .subject("Undelivered Mail Returned to Sender")
            .date(date(r.date))
            .message_id(format!("dsn.{}@{hostname}", r.queue_id))
            .header("Auto-Submitted", Raw::new("auto-replied"))
            .body(report),
    )
}

/// A notification of a policy action, rendered from its template.
#[derive(Debug, Clone)]
pub struct Notification<'a> {
    /// The gateway's host name (the From is `postmaster@` it).
    pub hostname: &'a str,
    /// The addresses it goes to.
    pub to: &'a [String],
    /// The rendered subject.
    pub subject: &'a str,
    /// The rendered text.
    pub body: &'a str,
    /// When (Unix seconds).
    pub date: u64,
}

/// The notification as an email: plain text, `Auto-Submitted: auto-generated`.
pub fn notification(n: &Notification<'_>) -> Vec<u8> {
    let to: Vec<Address<'_>> =
        n.to.iter()
            .map(|a| Address::new_address(None::<&str>, a.as_str()))
            .collect();
    finish(
        MessageBuilder::new()
            .from(Address::new_address(
                Some("Postern"),
                format!("postmaster@{}", n.hostname),
            ))
            .to(Address::new_list(to))
            .subject(n.subject)
            .date(date(n.date))
            .message_id(format!(
                "notice.{:016x}@{}",
                rand::random::<u64>(),
                n.hostname
            ))
            .header("Auto-Submitted", Raw::new("auto-generated"))
            .body(plain_part("text/plain", crlf(n.body))),
    )
}

/// The answer to a forward to decrypt: where the forwarded message can be read.
#[derive(Debug, Clone)]
pub struct DecryptAnswer<'a> {
    /// The gateway's host name.
    pub hostname: &'a str,
    /// The address that answers (`decrypt@` the domain).
    pub from: &'a str,
    /// The recipient who forwarded it.
    pub to: &'a str,
    /// Who sent the encrypted message.
    pub sender: &'a str,
    /// The forward's Message-ID, to thread the answer under it.
    pub in_reply_to: Option<&'a str>,
    /// The reader's link to the kept message.
    pub link: &'a str,
    /// Until when the link works, in words.
    pub until: &'a str,
    /// When (Unix seconds).
    pub date: u64,
}

/// The answer as an email: a short text with the link, threaded under the forward.
pub fn decrypt_answer(a: &DecryptAnswer<'_>) -> Vec<u8> {
    let body = format!(
        "You forwarded an encrypted message from {sender} to be read in a browser.\r\n\r\n\
         Open it here:\r\n\r\n{link}\r\n\r\n\
         The link works until {until}. Before the message opens, a one-time code is sent to\r\n\
         {to} to prove that it is you.\r\n\r\n\
         If you did not forward this message, ignore this email: nobody can read the message\r\n\
         without that code.\r\n",
        sender = a.sender,
        link = a.link,
        until = a.until,
        to = a.to,
    );
    let mut message = MessageBuilder::new()
        .from(("Postern", a.from))
        .to(a.to)
        .subject("Your encrypted message is ready to read")
        .date(date(a.date))
        .message_id(format!(
            "decrypt.{:016x}@{}",
            rand::random::<u64>(),
            a.hostname
        ))
        .header("Auto-Submitted", Raw::new("auto-replied"));
    if let Some(id) = a
        .in_reply_to
        .filter(|id| id.len() <= 250 && id.chars().all(|c| c.is_ascii_graphic()))
    {
        message = message
            .in_reply_to(MessageId::new(id.to_string()))
            .references(MessageId::new(id.to_string()));
    }
    finish(message.body(plain_part("text/plain", body)))
}

fn date(secs: u64) -> Date {
    Date::new(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// A text part written as it is: 7bit when ASCII, else 8bit (Postern's lines are short, and
/// the quoted header keeps its own bytes). Text for people says its charset (UTF-8); the
/// report's machine parts (`message/delivery-status`, `text/rfc822-headers`) do not take one.
fn plain_part(content_type: &'static str, text: String) -> MimePart<'static> {
    let encoding = if text.is_ascii() { "7bit" } else { "8bit" };
    let part = if content_type == "text/plain" {
        MimePart::new(ContentType::new(content_type), text)
    } else {
        MimePart::new(ContentType::new(content_type), text.into_bytes())
    };
    part.transfer_encoding(encoding)
}

fn finish(message: MessageBuilder<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = message.write_to(&mut out);
    out
}

fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REPLY)
        .collect()
}

/// The enhanced status code in a reply, or a generic one; a temporary failure that outlived
/// the queue is final now, so it is reported as 5.x.x.
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
        .map_or_else(|| "5.0.0".to_string(), |s| format!("5{}", &s[1..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(bytes: &[u8]) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default().parse(bytes).unwrap()
    }

    #[test]
    fn a_delivery_report_is_a_multipart_report_with_one_status_per_recipient() {
        let failed = [
            (
                "bob@partner.example".to_string(),
                "550 5.1.1 <bob@partner.example>: no such user".to_string(),
            ),
            (
                "carol@partner.example".to_string(),
                "451 4.4.1 timed out\r\nagain".to_string(),
            ),
        ];
        let bytes = delivery_report(&DeliveryReport {
            hostname: "gw.corp.example",
            sender: "alice@corp.example",
            queue_id: "0001",
            original_header: b"Subject: Q3\r\nMessage-ID: <q3@corp.example>\r\n",
            failed: &failed,
            date: 1_796_681_863,
        });
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("Subject: Undelivered Mail Returned to Sender\r\n"));
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(
            text.contains("Date: Mon, 7 Dec 2026 22:17:43 +0000\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: multipart/report; report-type=\"delivery-status\""),
            "{text}"
        );
        assert!(text.contains("Content-Type: message/delivery-status\r\n"));
        assert!(text.contains("Content-Type: text/plain; charset=\"utf-8\"\r\n"));
        assert!(text.contains(
            "Final-Recipient: rfc822; bob@partner.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(
            text.contains("Status: 5.4.1\r\nDiagnostic-Code: smtp; 451 4.4.1 timed out  again\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/rfc822-headers"));
        assert!(text.contains("Message-ID: <q3@corp.example>"));
        let parsed = parse(&bytes);
        assert_eq!(parsed.parts.len(), 4, "the report and its three parts");
        assert_eq!(
            parsed.to().unwrap().first().unwrap().address().unwrap(),
            "alice@corp.example"
        );
    }

    #[test]
    fn a_notification_encodes_a_subject_that_is_not_ascii_and_keeps_its_text() {
        let to = [
            "alice@corp.example".to_string(),
            "postmaster@corp.example".to_string(),
        ];
        let bytes = notification(&Notification {
            hostname: "gw.corp.example",
            to: &to,
            subject: "Nachricht zurückgehalten",
            body: "Area:       HR\nRule: payroll",
            date: 0,
        });
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("Subject: =?utf-8?"), "{text}");
        assert!(
            text.contains("\r\n\r\nArea:       HR\r\nRule: payroll\r\n"),
            "{text}"
        );
        let parsed = parse(&bytes);
        assert_eq!(parsed.subject(), Some("Nachricht zurückgehalten"));
        assert_eq!(parsed.to().unwrap().iter().count(), 2);
        assert!(text.contains("Auto-Submitted: auto-generated"));
    }

    #[test]
    fn a_decrypt_answer_is_threaded_under_the_forward() {
        let bytes = decrypt_answer(&DecryptAnswer {
            hostname: "gw.corp.example",
            from: "decrypt@corp.example",
            to: "bob@partner.example",
            sender: "alice@corp.example",
            in_reply_to: Some("fwd.1@phone.example"),
            link: "http://127.0.0.1:8080/read/kept/abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop",
            until: "2026-12-24 10:00 UTC",
            date: 0,
        });
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains("In-Reply-To: <fwd.1@phone.example>"),
            "{text}"
        );
        assert!(text.contains("References: <fwd.1@phone.example>"));
        assert!(text.contains("\r\nhttp://127.0.0.1:8080/read/kept/abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop\r\n"), "the link is on one line: {text}");
    }

    #[test]
    fn encoded_words_leave_ascii_alone() {
        assert_eq!(encoded_words("Quarterly figures", 7), "Quarterly figures");
        let encoded = encoded_words("Vertraulich: Gehälter", 7);
        assert!(encoded.starts_with("=?utf-8?"), "{encoded}");
        assert!(encoded.is_ascii());
    }
}
