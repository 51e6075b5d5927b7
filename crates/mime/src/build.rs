//! Building the encrypted email: the outer headers, the notice, and `encrypted_message.htm`
//! around the sealed message.
//!
//! The sealed message is streamed: [`Wrapper::head`] is written, then the sealed bytes through
//! [`Base64Lines`], then [`Wrapper::tail`]. So a message of any size is wrapped in bounded
//! memory, and the sealed message appears once, as 7bit base64 lines inside the page: the
//! attachment itself is `7bit`, never base64-encoded a second time.

use std::io::{self, BufRead, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

use crate::headers::{self, Field};
use crate::settings::{ENCRYPTED_MARKER, MimeSettings};

/// The first line of the sealed message inside `encrypted_message.htm`.
pub const BEGIN_MARKER: &str = "-----BEGIN POSTERN SEALED MESSAGE-----";
/// The last line of the sealed message inside `encrypted_message.htm`.
pub const END_MARKER: &str = "-----END POSTERN SEALED MESSAGE-----";
/// The attachment's file name.
pub const ATTACHMENT_NAME: &str = "encrypted_message.htm";

/// Original header fields copied to the outer message (the subject is handled apart).
const KEPT: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
];

/// The encrypted email without its sealed message: write `head`, the sealed message as
/// [`Base64Lines`], then [`Wrapper::tail`].
#[derive(Debug, Clone)]
pub struct Wrapper {
    /// Headers, the notice parts and the page up to the sealed message.
    pub head: Vec<u8>,
    outer: String,
}

impl Wrapper {
    /// The rest of the page and the closing boundaries. `mark` (hex) is the sending gateway's
    /// mark on the sealed message, carried as a hidden field after it; see [`mark_after`].
    pub fn tail(&self, mark: Option<&str>) -> Vec<u8> {
        let mark = mark
            .filter(|m| m.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|m| format!("<input type=\"hidden\" name=\"{MARK_FIELD}\" value=\"{m}\">\r\n"))
            .unwrap_or_default();
        format!(
            "{END_MARKER}\r\n</textarea>\r\n{mark}\
             <p><button type=\"submit\">Open my email</button></p>\r\n\
             </form>\r\n</main>\r\n</body>\r\n</html>\r\n\r\n--{}--\r\n",
            self.outer
        )
        .into_bytes()
    }
}

/// The hidden field of `encrypted_message.htm` that carries the sending gateway's mark.
pub const MARK_FIELD: &str = "mark";

/// The mark in the page text that follows a sealed message's end marker (a few lines at most),
/// if there is one: the value of the hidden `mark` field, hex digits only.
pub fn mark_after(text: &[u8]) -> Option<String> {
    const LOOK: usize = 512;
    let text = &text[..text.len().min(LOOK)];
    let start = format!("name=\"{MARK_FIELD}\" value=\"");
    let at = text
        .windows(start.len())
        .position(|w| w == start.as_bytes())?
        + start.len();
    let rest = &text[at..];
    let end = rest.iter().position(|b| *b == b'"')?;
    let value = &rest[..end];
    (!value.is_empty() && value.len() <= 128 && value.iter().all(u8::is_ascii_hexdigit))
        .then(|| String::from_utf8_lossy(value).into_owned())
}

/// True when a message's MIME parts include a calendar (`text/calendar`): a meeting request.
/// Reads `original` to its end, line by line.
pub fn is_meeting_request<R: BufRead>(mut original: R) -> io::Result<bool> {
    let mut line = Vec::with_capacity(256);
    let mut in_content_type = false;
    loop {
        line.clear();
        if original.read_until(b'\n', &mut line)? == 0 {
            return Ok(false);
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            in_content_type = line.len() >= 13 && line[..13].eq_ignore_ascii_case(b"content-type:");
        }
        if in_content_type && contains_ignore_case(&line, b"text/calendar") {
            return Ok(true);
        }
    }
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The wrapper for an original message whose header section is at the start of `original`
/// (only the header is read). `hostname` is the encryption X-header's value.
pub fn wrapper(original: &[u8], meeting: bool, settings: &MimeSettings, hostname: &str) -> Wrapper {
    let (mut head, outer, notice) = outer_head(original, meeting, settings, hostname);
    push(&mut head, &page_head(notice, &settings.reader_url));
    Wrapper { head, outer }
}

/// The encrypted email of a message too large to carry its sealed message: the sealed message
/// stays on the gateway, and `encrypted_message.htm` links to it at `url` (a link that works
/// until `until`, a date for people).
pub fn linked(
    original: &[u8],
    meeting: bool,
    settings: &MimeSettings,
    hostname: &str,
    url: &str,
    until: &str,
) -> Vec<u8> {
    let (mut head, outer, notice) = outer_head(original, meeting, settings, hostname);
    push(&mut head, &page_start(notice));
    push(
        &mut head,
        &format!(
            "<p>This message is large, so it is kept on the mail gateway until {}.</p>\r\n\
             <p><a class=\"button\" href=\"{}\">Open my email</a></p>\r\n\
             </main>\r\n</body>\r\n</html>\r\n\r\n--{outer}--\r\n",
            html_escape(until),
            html_escape(url),
        ),
    );
    head
}

/// The outer headers, the notice parts and the attachment's headers; the outer boundary; and
/// the notice.
fn outer_head<'s>(
    original: &[u8],
    meeting: bool,
    settings: &'s MimeSettings,
    hostname: &str,
) -> (Vec<u8>, String, &'s str) {
    let fields = headers::fields(original);
    let mut raw = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut raw);
    let tag: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let outer = format!("=_postern_{tag}");
    let inner = format!("=_postern_alt_{tag}");
    let notice = if meeting {
        &settings.meeting_request_notice
    } else {
        &settings.encrypted_notice
    };

    let mut head = Vec::with_capacity(4096);
    for f in &fields {
        if KEPT.iter().any(|k| f.is(k)) {
            head.extend_from_slice(f.raw);
            if !f.raw.ends_with(b"\n") {
                head.extend_from_slice(b"\r\n");
            }
        }
    }
    match &settings.replace_subject {
        Some(s) => {
            let clean: String = s
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let value = crate::report::encoded_words(&clean, "Subject".len());
            head.extend_from_slice(format!("Subject: {value}\r\n").as_bytes());
        }
        None => {
            if let Some(f) = fields.iter().find(|f: &&Field<'_>| f.is("Subject")) {
                head.extend_from_slice(f.raw);
            }
        }
    }
    head.extend_from_slice(b"MIME-Version: 1.0\r\n");
    head.extend_from_slice(headers::line(ENCRYPTED_MARKER, "TRUE").as_bytes());
    if settings.add_encryption_header {
        head.extend_from_slice(headers::line(&settings.encryption_header, hostname).as_bytes());
    }
    push(
        &mut head,
        &format!(
            "Content-Type: multipart/mixed; boundary=\"{outer}\"\r\n\r\n\
             This is an encrypted message in MIME format.\r\n\r\n\
             --{outer}\r\n\
             Content-Type: multipart/alternative; boundary=\"{inner}\"\r\n\r\n\
             --{inner}\r\n"
        ),
    );
    push(&mut head, &text_part(notice));
    push(&mut head, &format!("--{inner}\r\n"));
    push(&mut head, &html_part(notice));
    push(
        &mut head,
        &format!(
            "--{inner}--\r\n\r\n--{outer}\r\n\
             Content-Type: text/html; charset=us-ascii; name=\"{ATTACHMENT_NAME}\"\r\n\
             Content-Disposition: attachment; filename=\"{ATTACHMENT_NAME}\"\r\n\
             Content-Transfer-Encoding: 7bit\r\n\r\n"
        ),
    );
    (head, outer, notice)
}

fn push(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
}

/// A text/plain part: 7bit with wrapped lines when ASCII, else base64.
fn text_part(text: &str) -> String {
    if text.is_ascii() {
        let mut body = String::new();
        for paragraph in text.split('\n') {
            body.push_str(&wrap(paragraph, 76));
            body.push_str("\r\n");
        }
        format!(
            "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{body}\r\n"
        )
    } else {
        let text = text.replace('\n', "\r\n");
        format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64_lines(text.as_bytes())
        )
    }
}

fn html_part(text: &str) -> String {
    let paragraphs: String = text
        .split('\n')
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>\r\n", wrap(&html_escape(p), 76)))
        .collect();
    format!(
        "Content-Type: text/html; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
         <!DOCTYPE html>\r\n<html><body style=\"font-family:sans-serif\">\r\n{paragraphs}</body></html>\r\n\r\n"
    )
}

/// The page up to the sealed message. No scripts: the form works in any browser and under any
/// content security policy.
fn page_head(notice: &str, reader_url: &str) -> String {
    let action = html_escape(reader_url);
    format!(
        "{}<form method=\"post\" action=\"{action}\">\r\n\
<input type=\"hidden\" name=\"format\" value=\"postern-sealed-1\">\r\n\
<textarea name=\"sealed\" hidden readonly>\r\n{BEGIN_MARKER}\r\n",
        page_start(notice)
    )
}

/// The page's head, style and notice.
fn page_start(notice: &str) -> String {
    let notice = wrap(&html_escape(notice), 76);
    format!(
        "<!DOCTYPE html>\r\n<html lang=\"en\">\r\n<head>\r\n<meta charset=\"us-ascii\">\r\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\r\n\
<title>Encrypted message</title>\r\n\
<style>\r\n\
body{{font-family:system-ui,-apple-system,\"Segoe UI\",sans-serif;color:#1d2430;background:#f4f6f9;margin:0}}\r\n\
main{{max-width:36em;margin:4em auto;padding:2em;background:#fff;border-radius:10px;box-shadow:0 1px 4px rgba(0,0,0,.12)}}\r\n\
h1{{font-size:1.4em;margin-top:0}}\r\n\
button,.button{{display:inline-block;font-size:1.1em;padding:.7em 1.6em;border:0;border-radius:6px;background:#1f5fbf;color:#fff;cursor:pointer;text-decoration:none}}\r\n\
</style>\r\n</head>\r\n<body>\r\n<main>\r\n<h1>Encrypted message</h1>\r\n\
<p>{notice}</p>\r\n"
    )
}

/// Escapes text for HTML; characters beyond ASCII become numeric references, so the page stays
/// 7bit.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_ascii() && !c.is_control() => out.push(c),
            c => out.push_str(&format!("&#{};", u32::from(c))),
        }
    }
    out
}

/// Wraps ASCII text at spaces so that no line is longer than `width` (a word longer than that
/// stays whole).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut line_len = 0;
    for word in text.split(' ') {
        if line_len > 0 && line_len + 1 + word.len() > width {
            out.push_str("\r\n");
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out
}

fn base64_lines(bytes: &[u8]) -> String {
    let mut w = Base64Lines::new(Vec::new());
    let _ = w.write_all(bytes);
    let out = w.finish().unwrap_or_default();
    String::from_utf8(out).unwrap_or_default()
}

/// Base64 in lines of 76 characters with CRLF, streamed.
#[derive(Debug)]
pub struct Base64Lines<W: Write> {
    out: W,
    pending: Vec<u8>,
}

/// Input bytes per output line (76 base64 characters).
const LINE_INPUT: usize = 57;

impl<W: Write> Base64Lines<W> {
    /// Encodes into `out`.
    pub fn new(out: W) -> Self {
        Base64Lines {
            out,
            pending: Vec::with_capacity(LINE_INPUT * 64),
        }
    }

    fn drain_full_lines(&mut self) -> io::Result<()> {
        let full = self.pending.len() / LINE_INPUT * LINE_INPUT;
        if full == 0 {
            return Ok(());
        }
        let mut text = Vec::with_capacity(full / LINE_INPUT * 78);
        for chunk in self.pending[..full].chunks(LINE_INPUT) {
            let mut line = [0u8; 76];
            let n = STANDARD
                .encode_slice(chunk, &mut line)
                .map_err(io::Error::other)?;
            text.extend_from_slice(&line[..n]);
            text.extend_from_slice(b"\r\n");
        }
        self.out.write_all(&text)?;
        self.pending.drain(..full);
        Ok(())
    }

    /// Writes the last, partial line and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.drain_full_lines()?;
        if !self.pending.is_empty() {
            let line = STANDARD.encode(&self.pending);
            self.out.write_all(line.as_bytes())?;
            self.out.write_all(b"\r\n")?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Base64Lines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= LINE_INPUT * 64 {
            self.drain_full_lines()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lines_round_trip_and_stay_short() {
        for len in [0usize, 1, 56, 57, 58, 1000, 57 * 64, 57 * 64 + 1, 100_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let mut w = Base64Lines::new(Vec::new());
            for chunk in data.chunks(1000) {
                w.write_all(chunk).unwrap();
            }
            let text = w.finish().unwrap();
            let s = String::from_utf8(text).unwrap();
            assert!(s.split("\r\n").all(|l| l.len() <= 76));
            let joined: String = s.split("\r\n").collect();
            assert_eq!(STANDARD.decode(joined).unwrap(), data);
        }
    }

    #[test]
    fn meeting_requests_are_seen_in_any_part() {
        let m = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type:\r\n text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n--b--\r\n";
        assert!(is_meeting_request(&m[..]).unwrap());
        let plain = b"Subject: text/calendar\r\n\r\ntext/calendar in the body\r\n";
        assert!(!is_meeting_request(&plain[..]).unwrap());
    }

    #[test]
    fn a_large_message_carries_a_link_and_no_sealed_message() {
        let original =
            b"From: alice@corp.example\r\nTo: bob@partner.example\r\nSubject: Plans\r\n\r\n";
        let url = "https://gw.corp.example/read/kept/ab12?x=\"<";
        let email = linked(
            original,
            false,
            &MimeSettings::default(),
            "gw.corp.example",
            url,
            "2026-12-24",
        );
        let text = String::from_utf8(email.clone()).unwrap();
        assert!(text.contains("href=\"https://gw.corp.example/read/kept/ab12?x=&quot;&lt;\""));
        assert!(text.contains("kept on the mail gateway until 2026-12-24"));
        assert!(!text.contains(BEGIN_MARKER));
        assert!(text.contains("X-PP-ENCRYPTED: TRUE"));
        assert!(text.contains("Subject: Plans"));
        let parsed = mail_parser::MessageParser::default().parse(&email).unwrap();
        let page = parsed
            .attachments()
            .find(|a| mail_parser::MimeHeaders::attachment_name(*a) == Some(ATTACHMENT_NAME))
            .expect("the page is attached");
        assert!(String::from_utf8_lossy(page.contents()).contains("Open my email</a>"));
        assert!(matches!(
            crate::sealed_from_mime(&email),
            Err(crate::ReadError::NotFound)
        ));
    }

    #[test]
    fn wrapping_keeps_lines_short() {
        let w = wrap(&"word ".repeat(100), 76);
        assert!(w.split("\r\n").all(|l| l.len() <= 76));
    }
}
