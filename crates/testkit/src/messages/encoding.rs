//! The encodings the generated messages are written in: charsets (by table, for the characters
//! the sample texts use), the transfer encodings and RFC 2047 encoded words.

use base64::Engine;

/// A charset a generated text part or header is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    UsAscii,
    Utf8,
    Latin1,
    Windows1252,
    Koi8R,
    Iso2022Jp,
    ShiftJis,
}

impl Charset {
    /// Every charset, for picking one.
    pub const ALL: [Charset; 7] = [
        Charset::UsAscii,
        Charset::Utf8,
        Charset::Latin1,
        Charset::Windows1252,
        Charset::Koi8R,
        Charset::Iso2022Jp,
        Charset::ShiftJis,
    ];

    /// The name in a `charset=` parameter or an encoded word.
    pub fn name(self) -> &'static str {
        match self {
            Charset::UsAscii => "us-ascii",
            Charset::Utf8 => "utf-8",
            Charset::Latin1 => "iso-8859-1",
            Charset::Windows1252 => "windows-1252",
            Charset::Koi8R => "koi8-r",
            Charset::Iso2022Jp => "iso-2022-jp",
            Charset::ShiftJis => "shift_jis",
        }
    }

    /// A sample text in this charset's language (Unicode), with characters it can encode.
    pub fn sample(self) -> &'static str {
        match self {
            Charset::UsAscii => "The quick brown fox jumps over the lazy dog.",
            Charset::Utf8 => "Grüße aus Zürich, привет, こんにちは, 😀 and € 20.",
            Charset::Latin1 => "Die Hasen und die Frösche: Angst ist ärger als der Tod, daß.",
            Charset::Windows1252 => "“Smart quotes” – an en dash, € 12 and … an ellipsis.",
            Charset::Koi8R => "Съешь же ещё этих мягких французских булок, да выпей чаю.",
            Charset::Iso2022Jp | Charset::ShiftJis => "こんにちは、さようなら。ありがとう。",
        }
    }

    /// `text` in this charset. Characters outside the tables below become `?`.
    pub fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Charset::Utf8 => text.as_bytes().to_vec(),
            Charset::UsAscii => text.chars().map(|c| ascii_or(c, None)).collect(),
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
            Charset::Windows1252 => text.chars().map(windows_1252).collect(),
            Charset::Koi8R => text.chars().map(koi8_r).collect(),
            Charset::ShiftJis => text.chars().flat_map(shift_jis).collect(),
            Charset::Iso2022Jp => iso_2022_jp(text),
        }
    }

    /// True when the encoded text has only 7-bit bytes.
    pub fn is_7bit(self) -> bool {
        matches!(self, Charset::UsAscii | Charset::Iso2022Jp)
    }
}

fn ascii_or(c: char, other: Option<u8>) -> u8 {
    if c.is_ascii() {
        c as u8
    } else {
        other.unwrap_or(b'?')
    }
}

fn windows_1252(c: char) -> u8 {
    let special = match c {
        '€' => Some(0x80),
        '…' => Some(0x85),
        '“' => Some(0x93),
        '”' => Some(0x94),
        '–' => Some(0x96),
        '—' => Some(0x97),
        _ => u8::try_from(u32::from(c)).ok().filter(|b| *b >= 0xa0),
    };
    ascii_or(c, special)
}

/// KOI8-R's Cyrillic letters from 0xC0 up: lower case, then upper case.
const KOI8_R: &str = "юабцдефгхийклмнопярстужвьызшэщчъЮАБЦДЕФГХИЙКЛМНОПЯРСТУЖВЬЫЗШЭЩЧЪ";

fn koi8_r(c: char) -> u8 {
    let cyrillic = match c {
        'ё' => Some(0xa3),
        'Ё' => Some(0xb3),
        _ => KOI8_R
            .chars()
            .position(|k| k == c)
            .and_then(|i| u8::try_from(0xc0 + i).ok()),
    };
    ascii_or(c, cyrillic)
}

/// Hiragana and the two punctuation marks the samples use, as JIS X 0208 (row, cell).
fn jis_x_0208(c: char) -> Option<(u8, u8)> {
    match c {
        '、' => Some((0x21, 0x22)),
        '。' => Some((0x21, 0x23)),
        'ぁ'..='ん' => u8::try_from(u32::from(c) - 0x3041)
            .ok()
            .map(|k| (0x24, 0x21 + k)),
        _ => None,
    }
}

fn shift_jis(c: char) -> Vec<u8> {
    match jis_x_0208(c) {
        // Rows 0x21..=0x5E of JIS map to lead bytes 0x81..; odd rows take cells 0x40.., even 0x9F...
        Some((row, cell)) => {
            let lead = (row - 0x21) / 2 + 0x81;
            let trail = if row % 2 == 1 {
                cell + if cell < 0x60 { 0x1f } else { 0x20 }
            } else {
                cell + 0x7e
            };
            vec![lead, trail]
        }
        None => vec![ascii_or(c, None)],
    }
}

fn iso_2022_jp(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut wide = false;
    for c in text.chars() {
        match jis_x_0208(c) {
            Some((row, cell)) => {
                if !wide {
                    out.extend_from_slice(b"\x1b$B");
                    wide = true;
                }
                out.extend_from_slice(&[row, cell]);
            }
            None => {
                if wide {
                    out.extend_from_slice(b"\x1b(B");
                    wide = false;
                }
                out.push(ascii_or(c, None));
            }
        }
    }
    if wide {
        out.extend_from_slice(b"\x1b(B");
    }
    out
}

/// `bytes` in base64, in lines of 76 characters joined by `\n`.
pub fn base64(bytes: &[u8]) -> Vec<u8> {
    crate::base64_lines(bytes).into_bytes()
}

/// `bytes` in quoted-printable (RFC 2045 6.7): lines of at most 76 characters joined by `\n`,
/// a line break in `bytes` (`\n`) kept as a hard one.
pub fn quoted_printable(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3 / 2);
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        let mut width = 0;
        for (j, &b) in line.iter().enumerate() {
            let last = j + 1 == line.len();
            let plain =
                ((b == b' ' || b == b'\t') && !last) || ((33..=126).contains(&b) && b != b'=');
            let piece = if plain {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            if width + piece.len() > 75 {
                out.extend_from_slice(b"=\n");
                width = 0;
            }
            width += piece.len();
            out.extend_from_slice(&piece);
        }
    }
    out
}

/// `text` as RFC 2047 encoded words in `charset`, `B` or `Q` encoded, each word at most 75
/// characters, words joined by a folding line break (`\n `).
pub fn encoded_words(text: &str, charset: Charset, q: bool) -> String {
    let prefix = format!("=?{}?{}?", charset.name(), if q { "Q" } else { "B" });
    let room = 75 - prefix.len() - 2;
    let mut words = Vec::new();
    let mut current = String::new();
    let mut chars = String::new();
    for c in text.chars() {
        chars.push(c);
        let encoded = word_text(&charset.encode(&chars), q);
        if encoded.len() > room && !current.is_empty() {
            words.push(format!("{prefix}{current}?="));
            chars = c.to_string();
        }
        current = word_text(&charset.encode(&chars), q);
    }
    if !current.is_empty() {
        words.push(format!("{prefix}{current}?="));
    }
    words.join("\n ")
}

fn word_text(bytes: &[u8], q: bool) -> String {
    if !q {
        return base64::engine::general_purpose::STANDARD.encode(bytes);
    }
    bytes
        .iter()
        .map(|&b| match b {
            b' ' => "_".to_string(),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("={b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_match_known_encodings() {
        assert_eq!(
            Charset::ShiftJis.encode("こんにちは"),
            [0x82, 0xb1, 0x82, 0xf1, 0x82, 0xc9, 0x82, 0xbf, 0x82, 0xcd]
        );
        assert_eq!(Charset::ShiftJis.encode("。"), [0x81, 0x42]);
        assert_eq!(
            Charset::Iso2022Jp.encode("aこ"),
            b"a\x1b$B\x243\x1b(B".to_vec()
        );
        assert_eq!(
            Charset::Koi8R.encode("Привет"),
            [0xf0, 0xd2, 0xc9, 0xd7, 0xc5, 0xd4]
        );
        assert_eq!(Charset::Windows1252.encode("“€”"), [0x93, 0x80, 0x94]);
        assert_eq!(Charset::Latin1.encode("Grüße"), b"Gr\xfc\xdfe".to_vec());
    }

    #[test]
    fn quoted_printable_keeps_lines_short_and_escapes_what_it_must() {
        let text = "=".repeat(100) + " \nend\t";
        let qp = quoted_printable(text.as_bytes());
        let qp = String::from_utf8(qp).unwrap();
        assert!(qp.lines().all(|l| l.len() <= 76), "{qp}");
        assert!(qp.contains("=3D=3D"));
        assert!(qp.ends_with("end=09"), "{qp}");
        assert!(qp.contains("=20\nend"), "{qp}");
    }

    #[test]
    fn encoded_words_stay_within_75_characters() {
        for q in [true, false] {
            let words = encoded_words(Charset::Koi8R.sample(), Charset::Koi8R, q);
            assert!(words.split("\n ").count() > 1);
            assert!(words.split("\n ").all(|w| w.len() <= 75), "{words}");
        }
    }
}
