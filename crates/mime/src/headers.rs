//! The header section of a message as raw fields, so that headers are copied byte for byte
//! (folding and encoded words kept) rather than re-encoded.

/// One header field: its name and its raw bytes, continuation lines and line end included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name as written.
    pub name: &'a str,
    /// The whole field, `Name: value` through its final line end.
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// True when the field is named `name` (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The unfolded value, trimmed.
    pub fn value(&self) -> String {
        let text = String::from_utf8_lossy(self.raw);
        let value = text.split_once(':').map_or("", |(_, v)| v);
        value
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Where the header section ends: the index of the first body byte (after the blank line), or
/// the message's length when there is no body.
pub fn body_start(message: &[u8]) -> usize {
    let mut i = 0;
    while i < message.len() {
        let end = message[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |p| i + p + 1);
        let line = &message[i..end];
        if line == b"\r\n" || line == b"\n" {
            return end;
        }
        i = end;
    }
    message.len()
}

/// The header fields of `message`, in order. Lines that are not fields (no colon) are skipped.
pub fn fields(message: &[u8]) -> Vec<Field<'_>> {
    let end = body_start(message);
    let section = &message[..end];
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut start: Option<(usize, usize)> = None; // (field start, name end)
    let mut i = 0;
    fn push<'a>(
        section: &'a [u8],
        from: usize,
        name_end: usize,
        to: usize,
        out: &mut Vec<Field<'a>>,
    ) {
        if let Ok(name) = std::str::from_utf8(&section[from..name_end]) {
            out.push(Field {
                name: name.trim_end(),
                raw: &section[from..to],
            });
        }
    }
    while i < section.len() {
        let line_end = section[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(section.len(), |p| i + p + 1);
        let line = &section[i..line_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some((from, name_end)) = start.take() {
                push(section, from, name_end, i, &mut out);
            }
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                start = Some((i, i + colon));
            }
        }
        i = line_end;
    }
    if let Some((from, name_end)) = start {
        push(section, from, name_end, i, &mut out);
    }
    out
}

/// `message` without the top-level header fields named in `names` (case-insensitive).
pub fn without_fields(message: &[u8], names: &[&str]) -> Vec<u8> {
    without(message, |f| names.iter().any(|n| f.is(n)))
}

/// `message` without the top-level header fields `drop` picks, the rest byte for byte.
pub fn without(message: &[u8], drop: impl Fn(&Field<'_>) -> bool) -> Vec<u8> {
    let fields = fields(message);
    if !fields.iter().any(&drop) {
        return message.to_vec();
    }
    let mut out = Vec::with_capacity(message.len());
    let mut cursor = 0;
    for f in &fields {
        let offset = f.raw.as_ptr() as usize - message.as_ptr() as usize;
        if drop(f) {
            out.extend_from_slice(&message[cursor..offset]);
            cursor = offset + f.raw.len();
        }
    }
    out.extend_from_slice(&message[cursor..]);
    out
}

/// A header line that is safe to emit: control characters removed, so a value can never start
/// a new field.
pub fn line(name: &str, value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{name}: {clean}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_fields_stay_whole() {
        let m = b"Subject: one\r\n two\r\nFrom: a@b\r\n\r\nbody\r\n";
        let f = fields(m);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].raw, b"Subject: one\r\n two\r\n");
        assert_eq!(f[0].value(), "one two");
        assert_eq!(body_start(m), m.len() - 6);
    }

    #[test]
    fn removing_fields_keeps_the_rest_byte_for_byte() {
        let m = b"A: 1\r\nX-Drop: 2\r\n more\r\nB: 3\r\n\r\nX-Drop: body\r\n";
        assert_eq!(
            without_fields(m, &["x-drop"]),
            b"A: 1\r\nB: 3\r\n\r\nX-Drop: body\r\n".to_vec()
        );
    }

    #[test]
    fn values_cannot_inject_fields() {
        assert_eq!(line("X-A", "v\r\nBcc: x"), "X-A: v  Bcc: x\r\n");
    }
}
