//! The message text of DATA, one received line at a time: where it ends, dot-stuffing, and
//! what a line ending other than CRLF means. No I/O.
//!
//! Only `<CR><LF>.<CR><LF>` ends the text (RFC 5321 §4.1.1.4), as received: a `.` line after
//! or before a bare LF or a bare CR is never the end, so a client cannot hide a second
//! transaction in a message that another server would split there ("SMTP smuggling"). A bare
//! LF or bare CR in the text is refused ([`BareNewlines::Reject`], like Postfix's
//! `smtpd_forbid_bare_newline`), or, for clients named in the settings, turned into CRLF
//! ([`BareNewlines::Normalize`]), so that nothing stored, and so nothing relayed, carries one.

use std::borrow::Cow;

/// What to do with a line ending that is not CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNewlines {
    /// Refuse the message (the session answers and closes).
    Reject,
    /// Store CRLF instead.
    Normalize,
}

/// What one received line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// Message text to store, dot-stuffing removed, ending in CRLF (or nothing, for a last
    /// fragment without a line end).
    Text(Cow<'a, [u8]>),
    /// The end of the message text.
    End,
    /// A bare LF or bare CR, under [`BareNewlines::Reject`].
    BareNewline,
}

/// Follows the message text line by line.
#[derive(Debug, Clone)]
pub struct Decoder {
    mode: BareNewlines,
    /// The previous line ended with CRLF as received (the DATA command's own CRLF counts).
    after_crlf: bool,
}

impl Decoder {
    /// A decoder for the text after `354`.
    pub fn new(mode: BareNewlines) -> Self {
        Decoder {
            mode,
            after_crlf: true,
        }
    }

    /// Takes one line as received: up to and including its LF, or a last fragment without one.
    pub fn line<'a>(&mut self, raw: &'a [u8]) -> Line<'a> {
        let after_crlf = std::mem::replace(&mut self.after_crlf, raw.ends_with(b"\r\n"));
        if after_crlf && raw == b".\r\n" {
            return Line::End;
        }
        let (content, ending): (&[u8], &[u8]) = if let Some(c) = raw.strip_suffix(b"\r\n") {
            (c, b"\r\n")
        } else if let Some(c) = raw.strip_suffix(b"\n") {
            (c, b"\n")
        } else {
            (raw, b"")
        };
        let bare = ending == b"\n" || content.contains(&b'\r');
        let content = match content.strip_prefix(b".") {
            // A leading dot is stuffing only at the start of a line as received.
            Some(rest) if after_crlf => rest,
            _ => content,
        };
        if !bare {
            return Line::Text(Cow::Borrowed(
                &raw[raw.len() - content.len() - ending.len()..],
            ));
        }
        match self.mode {
            BareNewlines::Reject => Line::BareNewline,
            BareNewlines::Normalize => {
                let mut out = Vec::with_capacity(content.len() + 2);
                for &b in content {
                    if b == b'\r' {
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.push(b);
                    }
                }
                if !ending.is_empty() {
                    out.extend_from_slice(b"\r\n");
                }
                Line::Text(Cow::Owned(out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `input` into lines as the session reads them and decodes them.
    fn decode(mode: BareNewlines, input: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
        let mut d = Decoder::new(mode);
        let mut out = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let end = input[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(input.len(), |i| at + i + 1);
            match d.line(&input[at..end]) {
                Line::Text(t) => out.extend_from_slice(&t),
                Line::End => return (out, Some(end), false),
                Line::BareNewline => return (out, None, true),
            }
            at = end;
        }
        (out, None, false)
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_text() {
        let (text, end, bare) = decode(BareNewlines::Reject, b"a\r\n..b\r\n.\r\nMAIL");
        assert_eq!(text, b"a\r\n.b\r\n");
        assert_eq!(end, Some(11));
        assert!(!bare);
        assert_eq!(decode(BareNewlines::Reject, b".\r\n").1, Some(3));
    }

    #[test]
    fn every_other_dot_line_is_not_an_end() {
        // Every pair of line endings around the dot except CRLF, CRLF.
        let endings: [&[u8]; 4] = [b"\r\n", b"\n", b"\r", b""];
        for before in endings {
            for after in endings {
                if before == b"\r\n" && after == b"\r\n" {
                    continue;
                }
                let mut msg = b"Subject: x\r\n\r\nhello".to_vec();
                msg.extend_from_slice(before);
                msg.push(b'.');
                msg.extend_from_slice(after);
                msg.extend_from_slice(b"MAIL FROM:<a@b.example>\r\n");
                for mode in [BareNewlines::Reject, BareNewlines::Normalize] {
                    let (text, end, _) = decode(mode, &msg);
                    assert_eq!(
                        end, None,
                        "{before:?} . {after:?} ended the text ({mode:?})"
                    );
                    if mode == BareNewlines::Normalize {
                        // Nothing stored keeps a bare CR or a bare LF.
                        let t = String::from_utf8_lossy(&text).replace("\r\n", "");
                        assert!(!t.contains(['\r', '\n']), "{text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn bare_line_endings_are_refused_or_normalized() {
        assert!(decode(BareNewlines::Reject, b"a\nb\r\n").2);
        assert!(decode(BareNewlines::Reject, b"a\rb\r\n").2);
        let (text, _, _) = decode(BareNewlines::Normalize, b"a\nb\rc\r\n.\r\n");
        assert_eq!(text, b"a\r\nb\r\nc\r\n");
        // A dot line after a bare LF is text, not stuffing and not the end.
        let (text, end, _) = decode(BareNewlines::Normalize, b"a\n.\r\n.\r\n");
        assert_eq!(text, b"a\r\n.\r\n");
        assert_eq!(end, Some(8));
    }
}
