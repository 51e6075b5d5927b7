//! Reading an encrypted email back: finding the sealed message in it, and restoring the
//! original with the decryption X-header, the signature verdict and, if set, the notice.

use std::io::{self, BufRead, Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_parser::{MessageParser, PartType};

use crate::build::{ATTACHMENT_NAME, BEGIN_MARKER, END_MARKER};
use crate::headers::{self, Field};
use crate::settings::{ENCRYPTED_MARKER, MimeSettings, SIGNATURE_HEADER, WARNING_HEADER};

/// Why no sealed message could be read from an email.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The email holds no `encrypted_message.htm` with a sealed message.
    #[error("no sealed message in the email (no {ATTACHMENT_NAME} with a sealed message)")]
    NotFound,
    /// The sealed message ends before its end marker.
    #[error("the sealed message in the email is cut short")]
    Truncated,
    /// The sealed message is not base64.
    #[error("the sealed message in the email is damaged: {0}")]
    Damaged(String),
    /// Reading failed.
    #[error("reading the email: {0}")]
    Io(#[from] io::Error),
}

/// True when the header section says the message is encrypted (`X-PP-ENCRYPTED: TRUE`).
pub fn is_encrypted(fields: &[Field<'_>]) -> bool {
    fields
        .iter()
        .any(|f| f.is(ENCRYPTED_MARKER) && f.value().eq_ignore_ascii_case("TRUE"))
}

/// Streams the sealed message out of an encrypted email as Postern writes it (the page's lines
/// in 7bit). An email whose attachment was re-encoded on the way gives
/// [`ReadError::NotFound`]; [`sealed_from_mime`] reads those.
#[derive(Debug)]
pub struct SealedReader<R: BufRead> {
    input: R,
    started: bool,
    done: bool,
    line: Vec<u8>,
    decoded: Vec<u8>,
    pos: usize,
}

impl<R: BufRead> SealedReader<R> {
    /// Reads from an email.
    pub fn new(input: R) -> Self {
        SealedReader {
            input,
            started: false,
            done: false,
            line: Vec::with_capacity(128),
            decoded: Vec::with_capacity(64 * 1024),
            pos: 0,
        }
    }

    fn next_line(&mut self) -> Result<bool, ReadError> {
        self.line.clear();
        Ok(self.input.read_until(b'\n', &mut self.line)? > 0)
    }

    fn refill(&mut self) -> Result<(), ReadError> {
        self.decoded.clear();
        self.pos = 0;
        if !self.started {
            loop {
                if !self.next_line()? {
                    return Err(ReadError::NotFound);
                }
                if self.line.trim_ascii() == BEGIN_MARKER.as_bytes() {
                    self.started = true;
                    break;
                }
            }
        }
        let mut text = Vec::with_capacity(64 * 1024);
        while text.len() < 48 * 1024 {
            if !self.next_line()? {
                return Err(ReadError::Truncated);
            }
            let line = self.line.trim_ascii();
            if line == END_MARKER.as_bytes() {
                self.done = true;
                break;
            }
            text.extend_from_slice(line);
        }
        self.decoded = STANDARD
            .decode(&text)
            .map_err(|e| ReadError::Damaged(e.to_string()))?;
        Ok(())
    }

    /// The sending gateway's mark that follows the sealed message ([`crate::mark_after`]), once
    /// the sealed message has been read to its end; `None` before, or when there is none.
    pub fn mark(&mut self) -> Option<String> {
        if !self.done {
            return None;
        }
        let mut after = Vec::with_capacity(512);
        for _ in 0..4 {
            match self.next_line() {
                Ok(true) => after.extend_from_slice(&self.line),
                _ => break,
            }
        }
        crate::build::mark_after(&after)
    }
}

impl<R: BufRead> Read for SealedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.decoded.len() {
            if self.done {
                return Ok(0);
            }
            self.refill().map_err(|e| match e {
                ReadError::Io(e) => e,
                other => io::Error::new(io::ErrorKind::InvalidData, other),
            })?;
        }
        let n = buf.len().min(self.decoded.len() - self.pos);
        buf[..n].copy_from_slice(&self.decoded[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The sealed message of an encrypted email read as MIME, whatever the attachment's transfer
/// encoding became on the way (an MTA may re-encode it as base64 or quoted-printable).
pub fn sealed_from_mime(email: &[u8]) -> Result<Vec<u8>, ReadError> {
    sealed_and_mark_from_mime(email).map(|(sealed, _)| sealed)
}

/// [`sealed_from_mime`], and the sending gateway's mark that follows the sealed message, if
/// there is one.
pub fn sealed_and_mark_from_mime(email: &[u8]) -> Result<(Vec<u8>, Option<String>), ReadError> {
    let message = MessageParser::default()
        .parse(email)
        .ok_or(ReadError::NotFound)?;
    sealed_in(&message, 0)
}

/// Texts and attachments nested deeper than this are not searched.
const MAX_NESTING: usize = 8;

/// The sealed message in `message`'s parts, or in a message attached to it (a forward).
fn sealed_in(
    message: &mail_parser::Message<'_>,
    depth: usize,
) -> Result<(Vec<u8>, Option<String>), ReadError> {
    for part in &message.parts {
        let text = match &part.body {
            PartType::Html(t) | PartType::Text(t) => t.as_bytes(),
            PartType::Binary(b) | PartType::InlineBinary(b) => b.as_ref(),
            PartType::Message(inner) if depth < MAX_NESTING => match sealed_in(inner, depth + 1) {
                Err(ReadError::NotFound) => continue,
                found => return found,
            },
            _ => continue,
        };
        let Some(start) = find(text, BEGIN_MARKER.as_bytes()) else {
            continue;
        };
        let rest = &text[start + BEGIN_MARKER.len()..];
        let end = find(rest, END_MARKER.as_bytes()).ok_or(ReadError::Truncated)?;
        let b64: Vec<u8> = rest[..end]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let mark = crate::build::mark_after(&rest[end + END_MARKER.len()..]);
        return STANDARD
            .decode(b64)
            .map(|sealed| (sealed, mark))
            .map_err(|e| ReadError::Damaged(e.to_string()));
    }
    Err(ReadError::NotFound)
}

/// The token of the first link to a kept sealed message (`…/kept/` and 64 hex digits) in an
/// email's texts and attachments, nested messages included: what `encrypted_message.htm` of a
/// large message carries.
pub fn kept_token(email: &[u8]) -> Option<String> {
    let message = MessageParser::default().parse(email)?;
    token_in(&message, 0)
}

fn token_in(message: &mail_parser::Message<'_>, depth: usize) -> Option<String> {
    const PATH: &[u8] = b"/kept/";
    for part in &message.parts {
        let text = match &part.body {
            PartType::Html(t) | PartType::Text(t) => t.as_bytes(),
            PartType::Binary(b) | PartType::InlineBinary(b) => b.as_ref(),
            PartType::Message(inner) if depth < MAX_NESTING => match token_in(inner, depth + 1) {
                Some(t) => return Some(t),
                None => continue,
            },
            _ => continue,
        };
        let mut at = 0;
        while let Some(i) = find(&text[at..], PATH) {
            let start = at + i + PATH.len();
            let Some(token) = text.get(start..start + 64) else {
                break;
            };
            let after = text.get(start + 64).copied();
            if token
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                && !after.is_some_and(|b| b.is_ascii_hexdigit())
            {
                return std::str::from_utf8(token).ok().map(str::to_string);
            }
            at = start;
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The signature verdict as a decrypted message records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// Signed by the sender.
    Sender(String),
    /// Signed by the sending gateway's default sender.
    DefaultSender(String),
    /// Does not verify; `claimed` is who the message says signed it.
    Invalid {
        /// The claimed signer.
        claimed: String,
        /// Why it fails.
        reason: String,
    },
}

impl Signature {
    /// The `X-Postern-Signature` value.
    pub fn header_value(&self) -> String {
        match self {
            Signature::Sender(a) => format!("valid; signer={a}"),
            Signature::DefaultSender(a) => format!("valid; signer={a}; default-sender"),
            Signature::Invalid { claimed, reason } => {
                format!("invalid; claimed-signer={claimed}; reason=\"{reason}\"")
            }
        }
    }
}

/// Header fields a decrypted message must not carry from its inside: only this gateway sets
/// them, so a sender cannot forge a verdict or a "decrypted" mark.
pub fn guarded_fields(settings: &MimeSettings) -> Vec<String> {
    vec![
        settings.decryption_header.clone(),
        SIGNATURE_HEADER.to_string(),
        WARNING_HEADER.to_string(),
    ]
}

/// The lines put in front of a restored original: the decryption X-header, the signature
/// verdict, a warning for a signature that does not verify, and the trace (`Received`) and
/// `Authentication-Results` fields the encrypted email gathered on its way (those of the sealed
/// message that name this gateway are removed by [`crate::Guard`]).
pub fn decryption_prefix(
    outer: &[u8],
    settings: &MimeSettings,
    hostname: &str,
    signature: &Signature,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    if settings.add_decryption_header {
        out.extend_from_slice(headers::line(&settings.decryption_header, hostname).as_bytes());
    }
    out.extend_from_slice(headers::line(SIGNATURE_HEADER, &signature.header_value()).as_bytes());
    if let Signature::Invalid { claimed, .. } = signature {
        out.extend_from_slice(
            headers::line(
                WARNING_HEADER,
                &format!("the signature does not verify; this message may not be from {claimed}"),
            )
            .as_bytes(),
        );
    }
    for f in headers::fields(outer) {
        if f.is("Received") || f.is("Authentication-Results") {
            out.extend_from_slice(f.raw);
        }
    }
    out
}

/// A writer that removes some top-level header fields from the message written through it,
/// and passes the rest, byte for byte.
#[derive(Debug)]
pub struct HeaderFilter<W: Write> {
    out: W,
    guard: crate::Guard,
    header: Option<Vec<u8>>,
    limit: usize,
}

impl<W: Write> HeaderFilter<W> {
    /// Filters `names` (case-insensitive) out of the header section written to `out`. A header
    /// section longer than `limit` bytes is an error: a field hidden past the limit could not be
    /// filtered.
    pub fn new(out: W, names: Vec<String>, limit: usize) -> Self {
        Self::guarding(out, crate::Guard::names(names), limit)
    }

    /// Filters the fields `guard` owns out of the header section written to `out`.
    pub fn guarding(out: W, guard: crate::Guard, limit: usize) -> Self {
        HeaderFilter {
            out,
            guard,
            header: Some(Vec::with_capacity(8 * 1024)),
            limit,
        }
    }

    fn release(&mut self) -> io::Result<()> {
        if let Some(header) = self.header.take() {
            if !header.windows(2).any(|w| w == b"\n\n")
                && !header.windows(4).any(|w| w == b"\r\n\r\n")
                && header.len() > self.limit
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the decrypted message's header section is too long",
                ));
            }
            let end = headers::body_start(&header);
            let filtered = self.guard.strip(&header[..end]);
            self.out.write_all(&filtered)?;
            self.out.write_all(&header[end..])?;
        }
        Ok(())
    }

    /// Writes what is held back and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.release()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for HeaderFilter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.header {
            Some(header) => {
                header.extend_from_slice(buf);
                let complete = header.windows(4).any(|w| w == b"\r\n\r\n")
                    || header.windows(2).any(|w| w == b"\n\n");
                if complete {
                    self.release()?;
                } else if header.len() > self.limit {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the decrypted message's header section is longer than {} bytes",
                            self.limit
                        ),
                    ));
                }
                Ok(buf.len())
            }
            None => self.out.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Puts `notice` at the top of the message's first text body: into its text/plain and its
/// text/html alternative when it has both. Parts keep their transfer encoding and the MIME
/// structure stays as it was. A body in a charset other than UTF-8 or ASCII gets no notice
/// (rewriting it would need converting back to its charset).
pub fn add_notice(message: &[u8], notice: &str) -> Vec<u8> {
    let Some(parsed) = MessageParser::default().parse(message) else {
        return message.to_vec();
    };
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut seen_plain = false;
    let mut seen_html = false;
    for part in &parsed.parts {
        let (html, text) = match &part.body {
            PartType::Text(t) => (false, t),
            PartType::Html(t) => (true, t),
            _ => continue,
        };
        if (html && seen_html) || (!html && seen_plain) {
            continue;
        }
        let attachment = part
            .headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case("Content-Disposition"))
            .and_then(|h| h.value.as_content_type())
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
        if attachment {
            continue;
        }
        let ct = part
            .headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case("Content-Type"))
            .and_then(|h| h.value.as_content_type());
        // text/* other than plain and html (a calendar) is not a body to write into.
        if let Some(ct) = ct
            && let Some(sub) = ct.subtype()
            && !sub.eq_ignore_ascii_case("plain")
            && !sub.eq_ignore_ascii_case("html")
        {
            continue;
        }
        let charset = ct
            .and_then(|c| c.attribute("charset"))
            .unwrap_or("us-ascii")
            .to_ascii_lowercase();
        // The parser gives the text as UTF-8; written back into a part in another charset it
        // would corrupt it. Such a part keeps its text and gets no notice.
        if !matches!(charset.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii") {
            continue;
        }
        let new_text = if html {
            seen_html = true;
            insert_html(text, notice)
        } else {
            seen_plain = true;
            format!("{}\r\n\r\n{text}", notice.replace('\n', "\r\n"))
        };
        let start = part.offset_body as usize;
        let end = (part.offset_end as usize).min(message.len());
        if start > end {
            continue;
        }
        let body = encode_like(part.encoding, &message[start..end], new_text.as_bytes());
        edits.push((start, end, body));
        if seen_plain && seen_html {
            break;
        }
        // A message with a single text body (no alternative) gets one notice.
        if parsed.parts.len() == 1 {
            break;
        }
    }
    if edits.is_empty() {
        return message.to_vec();
    }
    edits.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(message.len() + 1024);
    let mut cursor = 0;
    for (start, end, body) in edits {
        if start < cursor {
            continue;
        }
        out.extend_from_slice(&message[cursor..start]);
        out.extend_from_slice(&body);
        cursor = end;
    }
    out.extend_from_slice(&message[cursor..]);
    out
}

fn insert_html(html: &str, notice: &str) -> String {
    let block = format!(
        "<p style=\"border:1px solid #c9d3e0;background:#eef3fa;padding:.5em\">{}</p>",
        crate::build::html_escape(notice)
    );
    let lower = html.to_ascii_lowercase();
    if let Some(body) = lower.find("<body")
        && let Some(close) = lower[body..].find('>')
    {
        let at = body + close + 1;
        return format!("{}{block}{}", &html[..at], &html[at..]);
    }
    format!("{block}{html}")
}

/// Encodes `text` in the part's transfer encoding, keeping the original body's line ends.
fn encode_like(encoding: mail_parser::Encoding, original: &[u8], text: &[u8]) -> Vec<u8> {
    let trailing: &[u8] = if original.ends_with(b"\r\n") {
        b"\r\n"
    } else if original.ends_with(b"\n") {
        b"\n"
    } else {
        b""
    };
    match encoding {
        mail_parser::Encoding::Base64 => {
            let mut w = crate::build::Base64Lines::new(Vec::new());
            let _ = w.write_all(text);
            w.finish().unwrap_or_default()
        }
        mail_parser::Encoding::QuotedPrintable => {
            let mut out = quoted_printable(text);
            out.extend_from_slice(trailing);
            out
        }
        mail_parser::Encoding::None => {
            let mut out = text.to_vec();
            if !out.ends_with(b"\n") {
                out.extend_from_slice(trailing);
            }
            out
        }
    }
}

/// Quoted-printable (RFC 2045 section 6.7) with CRLF line ends and soft breaks at 76.
fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 11 / 10);
    let text = String::from_utf8_lossy(text).replace("\r\n", "\n");
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        let mut len = 0;
        let bytes = line.as_bytes();
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let plain = (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece = if plain {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            if len + piece.len() > 75 {
                out.extend_from_slice(b"=\r\n");
                len = 0;
            }
            len += piece.len();
            out.extend_from_slice(&piece);
        }
    }
    out
}
