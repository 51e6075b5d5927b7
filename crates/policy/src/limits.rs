//! Bounds on what the policy's view of one message may hold: parts, nesting and decoded text.
//! A message of 100,000 tiny parts would otherwise cost about 100 MB to parse, and a few of
//! them at once a gigabyte. The structure is walked first, cheaply and with the parser's own
//! rules, to find where a limit is reached; only what comes before that point is parsed.

use std::fmt;

use mail_parser::parsers::MessageStream;
use mail_parser::{GetHeader, HeaderName, HeaderValue, MessageParser};

/// How much of a message the policy's view may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// MIME parts read (every part counts: multiparts, leaves, attached messages and theirs).
    pub max_parts: usize,
    /// How deep parts may nest (the message itself is at depth 0).
    pub max_depth: usize,
    /// Decoded text kept for conditions (body and attachment text together), in bytes.
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_parts: 1000,
            max_depth: 20,
            max_text_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Why the scan of a message stopped before its end: what follows was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cut {
    /// Only the first this many bytes were read (`gateway.scan_limit_bytes`).
    Bytes(u64),
    /// The message has more parts than this (`gateway.scan_max_parts`).
    Parts(usize),
    /// Parts nest deeper than this (`gateway.scan_max_depth`).
    Depth(usize),
    /// The decoded text is longer than this many bytes (`gateway.scan_max_text_bytes`).
    Text(usize),
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::Bytes(n) => write!(f, "scan_limit_bytes: only the first {n} bytes read"),
            Cut::Parts(n) => write!(f, "scan_max_parts: more than {n} parts"),
            Cut::Depth(n) => write!(f, "scan_max_depth: parts nested deeper than {n}"),
            Cut::Text(n) => write!(f, "scan_max_text_bytes: more than {n} bytes of text"),
        }
    }
}

/// How many nested encoded messages the parser opens (mail-parser's `MAX_NESTED_ENCODED`).
const NESTED_ENCODED: usize = 3;

/// Where in `raw` a part or nesting limit is first reached, and which: the offset is the start
/// of the first part not to read. `None` when the whole message is within the limits.
pub fn first_cut(raw: &[u8], limits: &Limits) -> Option<(usize, Cut)> {
    let mut seen = 0;
    walk(raw, 0, NESTED_ENCODED, limits, &mut seen).err()
}

/// One open container while walking: a multipart (with its boundary) or a message.
struct Open {
    boundary: Option<Vec<u8>>,
    message: bool,
    digest: bool,
}

#[derive(PartialEq, Eq)]
enum Encoding {
    None,
    Base64,
    QuotedPrintable,
}

/// Walks the parts of `raw` as `MessageParser::parse` does (the same stream primitives, in the
/// same order), counting them into `seen`, without keeping them.
fn walk(
    raw: &[u8],
    base_depth: usize,
    encoded_left: usize,
    limits: &Limits,
    seen: &mut usize,
) -> Result<(), (usize, Cut)> {
    let parser = MessageParser::default();
    let mut stream = MessageStream::new(raw);
    let mut state = Open {
        boundary: None,
        message: true,
        digest: false,
    };
    let mut stack: Vec<Open> = Vec::new();
    let mut headers = Vec::new();
    loop {
        let offset_header = stream.offset();
        headers.clear();
        if !stream.parse_headers(&parser, &mut headers) {
            return Ok(());
        }
        let depth = base_depth + stack.len();
        if depth > limits.max_depth {
            return Err((offset_header, Cut::Depth(limits.max_depth)));
        }
        *seen += 1;
        if *seen > limits.max_parts {
            return Err((offset_header, Cut::Parts(limits.max_parts)));
        }
        let content_type = headers
            .header_value(&HeaderName::ContentType)
            .and_then(|c| c.as_content_type());
        let (multipart, mut message, digest) = match content_type {
            Some(ct) => match ct.ctype() {
                "multipart" => (true, false, ct.subtype() == Some("digest")),
                "message" => (
                    false,
                    matches!(ct.subtype(), Some("rfc822") | Some("global")),
                    false,
                ),
                _ => (false, false, false),
            },
            None => (false, state.digest, false),
        };
        let boundary: Option<Vec<u8>> = content_type
            .filter(|_| multipart)
            .and_then(|ct| ct.attribute("boundary"))
            .map(|b| b.as_bytes().to_vec());
        let encoding = match headers.header_value(&HeaderName::ContentTransferEncoding) {
            Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("base64") => Encoding::Base64,
            Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("quoted-printable") => {
                Encoding::QuotedPrintable
            }
            _ => Encoding::None,
        };
        if let Some(b) = boundary
            && stream.seek_next_part(&b)
        {
            let open = Open {
                boundary: Some(b),
                message: false,
                digest,
            };
            stack.push(std::mem::replace(&mut state, open));
            stream.skip_crlf();
            continue;
        }
        if message && encoding == Encoding::None {
            let open = Open {
                boundary: state.boundary.take(),
                message: true,
                digest: false,
            };
            stack.push(std::mem::replace(&mut state, open));
            continue;
        }
        let boundary = state.boundary.clone().unwrap_or_default();
        let (end, bytes) = match encoding {
            Encoding::Base64 => stream.decode_base64_mime(&boundary),
            Encoding::QuotedPrintable => stream.decode_quoted_printable_mime(&boundary),
            Encoding::None => stream.mime_part(&boundary),
        };
        if end == usize::MAX {
            // Read as text, as the parser does with a part it cannot decode.
            message = false;
            let (_, found) = stream.seek_part_end(state.boundary.as_deref());
            if !found {
                state.boundary = None;
            }
        }
        if message && encoded_left > 0 {
            walk(&bytes, depth + 1, encoded_left - 1, limits, seen)
                .map_err(|(_, cut)| (offset_header, cut))?;
        }
        drop(bytes);
        if state.boundary.is_some() {
            loop {
                if state.message {
                    // The end of an attached message: back to the multipart around it.
                    let Some(mut outer) = stack.pop() else {
                        return Ok(());
                    };
                    outer.boundary = state.boundary.take();
                    state = outer;
                }
                if !stream.is_multipart_end() {
                    break;
                }
                let Some(outer) = stack.pop() else {
                    return Ok(());
                };
                state = outer;
                match &state.boundary {
                    Some(b) if stream.seek_next_part_offset(b).is_some() => continue,
                    _ => return Ok(()),
                }
            }
        } else if stream.offset() >= raw.len() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn many(parts: usize) -> Vec<u8> {
        let mut m = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        for i in 0..parts {
            m.extend(format!("--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n").as_bytes());
        }
        m.extend(b"--b--\r\n");
        m
    }

    /// The walk counts what the parser makes: the same number of parts, up to the limit.
    #[test]
    fn counts_as_the_parser_does() {
        for n in [0, 1, 5, 999] {
            let raw = many(n);
            let parsed = MessageParser::default().parse(&raw).unwrap().parts.len();
            let limits = Limits {
                max_parts: parsed,
                ..Limits::default()
            };
            assert_eq!(first_cut(&raw, &limits), None, "{n} parts");
            let limits = Limits {
                max_parts: parsed - 1,
                ..Limits::default()
            };
            assert_eq!(
                first_cut(&raw, &limits).map(|c| c.1),
                Some(Cut::Parts(parsed - 1)),
                "{n} parts"
            );
        }
    }

    /// A prefix cut at the offset parses into exactly the parts allowed.
    #[test]
    fn the_cut_prefix_holds_the_allowed_parts() {
        let raw = many(5000);
        let (at, cut) = first_cut(&raw, &Limits::default()).unwrap();
        assert_eq!(cut, Cut::Parts(1000));
        let parsed = MessageParser::default().parse(&raw[..at]).unwrap();
        assert_eq!(parsed.parts.len(), 1000);
    }

    /// Parts inside a base64-encoded attached message count too (the parser opens it).
    #[test]
    fn encoded_attached_messages_count() {
        use base64::Engine;
        let inner = base64::engine::general_purpose::STANDARD.encode(many(2000));
        let mut raw = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n\
--o\r\nContent-Type: text/plain\r\n\r\nhello\r\n--o\r\nContent-Type: message/rfc822\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
            .to_vec();
        for line in inner.as_bytes().chunks(76) {
            raw.extend(line);
            raw.extend(b"\r\n");
        }
        raw.extend(b"--o--\r\n");
        let (at, cut) = first_cut(&raw, &Limits::default()).unwrap();
        assert_eq!(cut, Cut::Parts(1000));
        let parsed = MessageParser::default().parse(&raw[..at]).unwrap();
        assert_eq!(parsed.parts.len(), 2, "the root and the text part");
    }

    /// Nesting past the limit stops the walk at the first part too deep.
    #[test]
    fn nesting_is_cut() {
        let mut raw = b"Subject: x\r\n".to_vec();
        for d in 0..30 {
            raw.extend(
                format!("Content-Type: multipart/mixed; boundary=b{d}\r\n\r\n--b{d}\r\n")
                    .as_bytes(),
            );
        }
        raw.extend(b"Content-Type: text/plain\r\n\r\ndeep\r\n");
        let (at, cut) = first_cut(&raw, &Limits::default()).unwrap();
        assert_eq!(cut, Cut::Depth(20));
        let parsed = MessageParser::default().parse(&raw[..at]).unwrap();
        assert_eq!(parsed.parts.len(), 21);
    }
}
