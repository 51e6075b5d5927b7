//! An opened message as the reader shows it: the header fields, the body (plain text, or HTML
//! made safe by ammonia with remote content held back until the person asks), attachments.
//! Pure: bytes in, a view out.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mail_parser::{Address, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::Serialize;

/// One attachment.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    /// Its position, as used in download links.
    pub index: usize,
    /// Its file name (made safe for a download).
    pub name: String,
    /// Its declared type.
    pub content_type: String,
    /// Bytes.
    pub size: usize,
    /// Size for people.
    pub size_text: String,
}

/// What the reader shows of a message.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// From, as written.
    pub from: String,
    /// The From address alone (where a reply goes).
    pub reply_to: Vec<String>,
    /// To addresses.
    pub to: Vec<String>,
    /// Cc addresses.
    pub cc: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The Date field.
    pub date: String,
    /// Safe HTML for the body, when the message has an HTML body.
    pub html: Option<String>,
    /// The plain-text body (also the quoted text of a reply).
    pub text: String,
    /// Remote images left out (or shown, when the person asked).
    pub remote: usize,
    /// Attachments.
    pub attachments: Vec<Attachment>,
}

/// Why a message cannot be shown.
#[derive(Debug, thiserror::Error)]
#[error("the message is not a readable email")]
pub struct Unreadable;

fn addresses(a: Option<&Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address().map(str::to_string))
            .collect()
    })
    .unwrap_or_default()
}

fn display(a: Option<&Address<'_>>) -> String {
    a.map(|a| {
        a.iter()
            .map(|x| match (x.name(), x.address()) {
                (Some(n), Some(addr)) => format!("{n} <{addr}>"),
                (None, Some(addr)) => addr.to_string(),
                (Some(n), None) => n.to_string(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_default()
}

/// A download name with no path, quotes or control characters.
pub fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | ';'))
        .take(120)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "attachment".into()
    } else {
        cleaned
    }
}

/// Bytes for people: 1.2 MB, 14 KB, 300 bytes.
pub fn size_text(n: usize) -> String {
    match n {
        0..1_000 => format!("{n} bytes"),
        1_000..1_000_000 => format!("{:.0} KB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// The view of `message`. `base` is the message's address in the reader (links to inline
/// images are made from it); `show_remote` lets remote images load.
pub fn view(message: &[u8], base: &str, show_remote: bool) -> Result<View, Unreadable> {
    let parsed = MessageParser::default().parse(message).ok_or(Unreadable)?;
    let mut attachments = Vec::new();
    let mut cids = HashMap::new();
    for (index, part) in parsed.attachments().enumerate() {
        if let Some(cid) = part.content_id() {
            cids.insert(cid.trim_matches(['<', '>']).to_string(), index);
        }
        attachments.push(describe(index, part));
    }
    let html_part = parsed
        .html_body
        .first()
        .and_then(|id| parsed.part(*id))
        .and_then(|p| match &p.body {
            PartType::Html(h) => Some(h.clone()),
            _ => None,
        });
    let remote = Arc::new(AtomicUsize::new(0));
    let html = html_part.map(|h| sanitize(&h, base, &cids, show_remote, remote.clone()));
    let text = parsed
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    Ok(View {
        from: display(parsed.from()),
        reply_to: match parsed.reply_to() {
            Some(r) if !addresses(Some(r)).is_empty() => addresses(Some(r)),
            _ => addresses(parsed.from()),
        },
        to: addresses(parsed.to()),
        cc: addresses(parsed.cc()),
        subject: parsed.subject().unwrap_or("(no subject)").to_string(),
        date: parsed.date().map(|d| d.to_rfc822()).unwrap_or_default(),
        html,
        text,
        remote: remote.load(Ordering::Relaxed),
        attachments,
    })
}

/// The Message-ID of `message` and its References: what a reply threads under.
pub fn thread(message: &[u8]) -> Option<(String, Vec<String>)> {
    let parsed = MessageParser::default().parse(message)?;
    let id = parsed.message_id()?.to_string();
    let references = parsed
        .references()
        .as_text_list()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    Some((id, references))
}

/// What the reader shows of attachment `index` of a parsed message.
fn describe(index: usize, part: &MessagePart<'_>) -> Attachment {
    let name = part
        .attachment_name()
        .map(safe_file_name)
        .unwrap_or_else(|| format!("attachment-{}", index + 1));
    let content_type = part
        .content_type()
        .map(|c| match c.subtype() {
            Some(s) => format!("{}/{}", c.ctype(), s),
            None => c.ctype().to_string(),
        })
        .unwrap_or_else(|| "application/octet-stream".into());
    let size = part.contents().len();
    Attachment {
        index,
        name,
        content_type,
        size,
        size_text: size_text(size),
    }
}

/// An attachment's name, type and bytes.
pub type File = (String, String, Vec<u8>);

fn file(index: usize, part: &MessagePart<'_>) -> File {
    let meta = describe(index, part);
    (meta.name, meta.content_type, part.contents().to_vec())
}

/// Attachment `index` of `message`.
pub fn attachment(message: &[u8], index: usize) -> Option<File> {
    let parsed = MessageParser::default().parse(message)?;
    let part = parsed.attachments().nth(index)?;
    Some(file(index, part))
}

/// Every attachment of `message` (a forward carries them), parsed once.
pub fn attachments(message: &[u8]) -> Vec<File> {
    MessageParser::default()
        .parse(message)
        .map(|parsed| {
            parsed
                .attachments()
                .enumerate()
                .map(|(i, part)| file(i, part))
                .collect()
        })
        .unwrap_or_default()
}

fn is_remote(url: &str) -> bool {
    let u = url.trim_start().to_ascii_lowercase();
    u.starts_with("http:") || u.starts_with("https:") || u.starts_with("//")
}

/// Safe HTML: ammonia's allow-list (no scripts, no event handlers, no `javascript:` URLs, no
/// styles), inline images pointed at their attachment, remote images dropped unless allowed.
fn sanitize(
    html: &str,
    base: &str,
    cids: &HashMap<String, usize>,
    show_remote: bool,
    remote: Arc<AtomicUsize>,
) -> String {
    let base = base.to_string();
    let cids = cids.clone();
    let schemes: HashSet<&str> = ["http", "https", "mailto", "cid", "data"]
        .into_iter()
        .collect();
    ammonia::Builder::default()
        .url_schemes(schemes)
        .link_rel(Some("noopener noreferrer nofollow"))
        .attribute_filter(move |element, attribute, value| {
            let loads = matches!((element, attribute), ("img", "src") | ("img", "srcset"));
            let data = value.trim_start().to_ascii_lowercase().starts_with("data:");
            if !loads {
                // data: URLs only as inline images, never as links.
                return (!data).then_some(Cow::Borrowed(value));
            }
            if let Some(cid) = value.trim().strip_prefix("cid:") {
                return cids
                    .get(cid.trim_matches(['<', '>']))
                    .map(|n| Cow::Owned(format!("{base}/part/{n}?inline=1")));
            }
            if is_remote(value) {
                remote.fetch_add(1, Ordering::Relaxed);
                return show_remote.then_some(Cow::Borrowed(value));
            }
            // Only data: and our own attachments load.
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("data:image/")
                .then_some(Cow::Borrowed(value))
        })
        .clean(html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "From: Mallory <m@evil.example>\r\nTo: bob@partner.example\r\n\
Subject: hi\r\nMessage-ID: <x1@evil.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n\
<p onclick=\"alert(1)\">Hello</p><script>alert(2)</script>\
<a href=\"javascript:alert(3)\">click</a><img src=\"https://tracker.example/p.png\" onerror=\"alert(4)\">\
<img src=\"data:image/png;base64,iVBORw0KGgo=\"><iframe src=\"https://evil.example\"></iframe>\
<div style=\"background:url(https://tracker.example/bg.png)\">styled</div>\r\n";

    #[test]
    fn scripts_handlers_and_remote_content_are_removed() {
        let v = view(HOSTILE.as_bytes(), "/read/m/1", false).unwrap_or_else(|_| panic!("parse"));
        let html = v.html.unwrap_or_default();
        for bad in [
            "<script",
            "onclick",
            "onerror",
            "javascript:",
            "tracker.example",
            "<iframe",
            "style=",
        ] {
            assert!(!html.contains(bad), "{bad} in {html}");
        }
        assert!(html.contains("Hello") && html.contains("styled"));
        assert!(html.contains("data:image/png"), "inline data images stay");
        assert_eq!(v.remote, 1);
        assert_eq!(v.from, "Mallory <m@evil.example>");
        assert_eq!(v.reply_to, vec!["m@evil.example".to_string()]);
    }

    #[test]
    fn remote_images_load_only_when_asked() {
        let v = view(HOSTILE.as_bytes(), "/read/m/1", true).unwrap_or_else(|_| panic!("parse"));
        let html = v.html.unwrap_or_default();
        assert!(html.contains("https://tracker.example/p.png"));
        assert!(!html.contains("onerror") && !html.contains("bg.png"));
    }

    #[test]
    fn file_names_cannot_climb_or_break_headers() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("a\"b;\r\nc.txt"), "abc.txt");
        assert_eq!(safe_file_name("..."), "attachment");
        assert_eq!(safe_file_name("C:\\x\\report.pdf"), "report.pdf");
    }
}
