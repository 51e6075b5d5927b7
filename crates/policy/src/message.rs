//! What conditions look at, read once per message: header fields, subject, the decoded body
//! text (every text part, transfer encoding and charset undone, HTML turned into text) and the
//! attachments' names, types and text. What a view holds is bounded ([`Limits`]); a view
//! of a message a limit cut says so ([`MessageView::cut`]).

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::limits::{Cut, Limits, first_cut};

/// One attachment as conditions see it.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    /// File name, if given.
    pub name: String,
    /// `type/subtype`, lower case.
    pub content_type: String,
    /// The decoded text, for text attachments (and HTML as text).
    pub text: Option<String>,
}

/// A parsed message.
#[derive(Debug, Clone, Default)]
pub struct MessageView {
    /// (lower-case name, decoded value), in order.
    pub headers: Vec<(String, String)>,
    /// The decoded subject.
    pub subject: String,
    /// Every body text part, joined by blank lines.
    pub body: String,
    /// The attachments.
    pub attachments: Vec<Attachment>,
    /// Bytes.
    pub size: u64,
    /// Set when a limit stopped the scan before the end of the message: what follows was not
    /// read, and conditions on the content cannot tell that it is not there.
    pub cut: Option<Cut>,
}

impl MessageView {
    /// Reads `raw` within the default [`Limits`].
    pub fn parse(raw: &[u8]) -> MessageView {
        MessageView::parse_with(raw, &Limits::default())
    }

    /// Reads `raw` up to the first part past `limits`, keeping at most `limits.max_text_bytes`
    /// of text. A message no parser understands still gets a view: its bytes as body text, so
    /// a keyword can never hide behind broken MIME.
    pub fn parse_with(raw: &[u8], limits: &Limits) -> MessageView {
        let size = raw.len() as u64;
        let (read, mut cut) = match first_cut(raw, limits) {
            Some((at, why)) => (raw.get(..at).unwrap_or(raw), Some(why)),
            None => (raw, None),
        };
        let mut budget = TextBudget {
            left: limits.max_text_bytes,
            limit: limits.max_text_bytes,
            cut: &mut cut,
        };
        let Some(m) = MessageParser::default().parse(read) else {
            let mut body = String::from_utf8_lossy(read).into_owned();
            budget.take(&mut body);
            return MessageView {
                body,
                size,
                cut,
                ..MessageView::default()
            };
        };
        let headers = m
            .headers()
            .iter()
            .map(|h| {
                let name = h.name().to_ascii_lowercase();
                let raw_value = raw
                    .get(h.offset_start() as usize..h.offset_end() as usize)
                    .unwrap_or_default();
                (name, decode_header(raw_value))
            })
            .collect();
        let subject = m.subject().unwrap_or_default().to_string();
        let mut body = String::new();
        // One rendering of each body: the plain alternative, or the HTML one as text where
        // there is no plain one (the parser lists it among the text bodies then). Reading
        // both alternatives would count every number twice against a threshold.
        let mut ids: Vec<u32> = m.text_body.clone();
        ids.dedup();
        for id in ids {
            let Some(part) = m.parts.get(id as usize) else {
                continue;
            };
            let mut text = match &part.body {
                PartType::Text(t) => t.to_string(),
                PartType::Html(h) => mail_parser::decoders::html::html_to_text(h),
                _ => continue,
            };
            budget.take(&mut text);
            if !body.is_empty() {
                body.push_str("\n\n");
            }
            body.push_str(&text);
        }
        let attachments = m
            .attachments()
            .map(|a| {
                let content_type = a
                    .content_type()
                    .map(|ct| match ct.subtype() {
                        Some(sub) => format!("{}/{}", ct.ctype(), sub),
                        None => ct.ctype().to_string(),
                    })
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let mut text = match &a.body {
                    PartType::Text(t) => Some(t.to_string()),
                    PartType::Html(h) => Some(mail_parser::decoders::html::html_to_text(h)),
                    PartType::Message(inner) => Some(
                        inner
                            .text_bodies()
                            .filter_map(|p| p.text_contents())
                            .collect::<Vec<_>>()
                            .join("\n\n"),
                    ),
                    _ => None,
                };
                if let Some(t) = &mut text {
                    budget.take(t);
                }
                Attachment {
                    name: a.attachment_name().unwrap_or_default().to_string(),
                    content_type,
                    text,
                }
            })
            .collect();
        MessageView {
            headers,
            subject,
            body,
            attachments,
            size,
            cut,
        }
    }

    /// Every value of the header field `name` (any case).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The decoded text a view may still keep; a text cut short records [`Cut::Text`] (unless an
/// earlier limit already cut the scan).
struct TextBudget<'c> {
    left: usize,
    limit: usize,
    cut: &'c mut Option<Cut>,
}

impl TextBudget<'_> {
    fn take(&mut self, text: &mut String) {
        if text.len() > self.left {
            let mut end = self.left;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.shrink_to_fit();
            self.cut.get_or_insert(Cut::Text(self.limit));
        }
        self.left -= text.len();
    }
}

/// A raw header value unfolded, with encoded words decoded.
fn decode_header(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let unfolded: String = text
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !unfolded.contains("=?") {
        return unfolded;
    }
    // Parse a one-field message to reuse the parser's RFC 2047 decoding.
    let wrapped = format!("Subject: {unfolded}\r\n\r\n");
    MessageParser::default()
        .parse_headers(wrapped.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or(unfolded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bodies_are_decoded_and_attachments_listed() {
        let raw = b"From: a@corp.example\r\nTo: b@x.example\r\nSubject: =?utf-8?q?Caf=C3=A9?=\r\n\
X-Custom: one\r\n two\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
Gr=FC=DFe aus K=F6ln\r\n--b\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <b>there</b></p>\r\n--b\r\n\
Content-Type: text/csv; name=cards.csv\r\nContent-Disposition: attachment; filename=cards.csv\r\n\
Content-Transfer-Encoding: base64\r\n\r\nbmFtZSxjYXJkCmEsNDExMSAxMTExIDExMTEgMTExMQo=\r\n--b--\r\n";
        let v = MessageView::parse(raw);
        assert_eq!(v.subject, "Café");
        assert_eq!(v.header_values("x-custom").next(), Some("one two"));
        assert!(v.body.contains("Grüße aus Köln"), "{}", v.body);
        assert!(v.body.contains("Hello there"), "{}", v.body);
        assert_eq!(v.attachments.len(), 1);
        assert_eq!(v.attachments[0].name, "cards.csv");
        assert_eq!(v.attachments[0].content_type, "text/csv");
        assert!(
            v.attachments[0]
                .text
                .as_deref()
                .unwrap()
                .contains("4111 1111")
        );
        assert!(!v.body.contains("4111"));
    }
}
