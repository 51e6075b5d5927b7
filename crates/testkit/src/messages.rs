//! A deterministic generator of varied RFC 5322 messages, standing in for a corpus of real mail
//! so that the round-trip tests need nothing outside the repository: nested multiparts, the
//! charsets and transfer encodings mail really uses, attachments of many sizes, a calendar
//! invitation, HTML with inline images, and the odd but legal shapes (folded headers, 998-byte
//! lines, no body, no final line end, a lone CR at the end, preambles and epilogues).

mod encoding;

pub use encoding::Charset;
use encoding::{base64, encoded_words, quoted_printable};

/// One message for the tests: a name that says its shape (or its file), and its exact bytes.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `generated/NN-shape`, or the path of a file read from `POSTERN_CORPUS`.
    pub name: String,
    /// The message, byte for byte.
    pub bytes: Vec<u8>,
}

/// A Content-Transfer-Encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cte {
    SevenBit,
    EightBit,
    QuotedPrintable,
    Base64,
    Binary,
}

impl Cte {
    fn name(self) -> &'static str {
        match self {
            Cte::SevenBit => "7bit",
            Cte::EightBit => "8bit",
            Cte::QuotedPrintable => "quoted-printable",
            Cte::Base64 => "base64",
            Cte::Binary => "binary",
        }
    }

    fn encode(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Cte::SevenBit | Cte::EightBit | Cte::Binary => bytes.to_vec(),
            Cte::QuotedPrintable => quoted_printable(bytes),
            Cte::Base64 => base64(bytes),
        }
    }
}

/// A MIME entity: its header lines (a `\n` inside one folds it) and its body, where `\n` stands
/// for the message's line end.
struct Part {
    headers: Vec<Vec<u8>>,
    body: Body,
}

enum Body {
    Leaf(Vec<u8>),
    Multi {
        boundary: String,
        preamble: Option<String>,
        parts: Vec<Part>,
        epilogue: Option<String>,
    },
}

impl Part {
    fn leaf(headers: &[&str], body: Vec<u8>) -> Part {
        Part {
            headers: headers.iter().map(|h| h.as_bytes().to_vec()).collect(),
            body: Body::Leaf(body),
        }
    }

    /// A text part: `text` in `charset`, then in `cte`.
    fn text(subtype: &str, charset: Charset, cte: Cte, text: &str) -> Part {
        let body = cte.encode(&charset.encode(text));
        Part::leaf(
            &[
                &format!(
                    "Content-Type: text/{subtype}; charset=\"{}\"",
                    charset.name()
                ),
                &format!("Content-Transfer-Encoding: {}", cte.name()),
            ],
            body,
        )
    }

    /// An attachment of `bytes`; base64 unless `cte` says otherwise.
    fn attachment(mime: &str, filename: &str, cte: Cte, bytes: &[u8]) -> Part {
        Part::leaf(
            &[
                &format!("Content-Type: {mime}; name=\"{filename}\""),
                &format!("Content-Disposition: attachment;\n filename=\"{filename}\""),
                &format!("Content-Transfer-Encoding: {}", cte.name()),
            ],
            cte.encode(bytes),
        )
    }

    fn multi(subtype: &str, boundary: &str, parts: Vec<Part>) -> Part {
        Part {
            headers: vec![
                format!("Content-Type: multipart/{subtype};\n\tboundary=\"{boundary}\"")
                    .into_bytes(),
            ],
            body: Body::Multi {
                boundary: boundary.to_string(),
                preamble: None,
                parts,
                epilogue: None,
            },
        }
    }

    fn header(mut self, line: &str) -> Part {
        self.headers.push(line.as_bytes().to_vec());
        self
    }

    fn raw_header(mut self, line: &[u8]) -> Part {
        self.headers.push(line.to_vec());
        self
    }

    fn render(&self, eol: &[u8], out: &mut Vec<u8>) {
        for h in &self.headers {
            lines(h, eol, out);
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(eol);
        match &self.body {
            Body::Leaf(body) => lines(body, eol, out),
            Body::Multi {
                boundary,
                preamble,
                parts,
                epilogue,
            } => {
                if let Some(p) = preamble {
                    lines(p.as_bytes(), eol, out);
                    out.extend_from_slice(eol);
                }
                for part in parts {
                    out.extend_from_slice(format!("--{boundary}").as_bytes());
                    out.extend_from_slice(eol);
                    part.render(eol, out);
                    out.extend_from_slice(eol);
                }
                out.extend_from_slice(format!("--{boundary}--").as_bytes());
                if let Some(e) = epilogue {
                    out.extend_from_slice(eol);
                    lines(e.as_bytes(), eol, out);
                }
            }
        }
    }
}

/// `text` with each `\n` made `eol`.
fn lines(text: &[u8], eol: &[u8], out: &mut Vec<u8>) {
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(line);
    }
}

/// How a generated message ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    LineEnd,
    Nothing,
    LoneCr,
}

/// A whole message: `part` with the addressing headers of message `n` before its own.
fn message(n: usize, subject: &str, part: Part, crlf: bool, end: Ending) -> Vec<u8> {
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut headers: Vec<Vec<u8>> = [
        "From: Alice Example <alice@corp.example>".to_string(),
        "To: Bob Partner <bob@partner.example>".to_string(),
        format!("Subject: {subject}"),
        format!("Date: {} Dec 2026 10:{:02}:00 +0000", 1 + n % 28, n % 60),
        format!("Message-ID: <generated-{n}@corp.example>"),
        "MIME-Version: 1.0".to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    headers.extend(part.headers);
    let whole = Part {
        headers,
        body: part.body,
    };
    let mut out = Vec::new();
    whole.render(eol, &mut out);
    match end {
        Ending::LineEnd => out.extend_from_slice(eol),
        Ending::Nothing => {}
        Ending::LoneCr => out.push(b'\r'),
    }
    out
}

/// SplitMix64: the same numbers on every machine, so the same messages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Arbitrary octets for a `binary` body: every byte but CR and LF, in lines of at most 998
    /// joined by `\n` (SMTP carries any octet but a bare line end).
    fn binary_lines(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + n / 400);
        let mut line = 0;
        while out.len() < n {
            let b = self.next() as u8;
            if b == b'\r' || b == b'\n' {
                continue;
            }
            if line == 998 || (line > 0 && self.below(300) == 0) {
                out.push(b'\n');
                line = 0;
            }
            out.push(b);
            line += 1;
        }
        out
    }
}

/// Plain text of `lines` lines, each different, none over 78 characters.
fn prose(rng: &mut Rng, lines: usize) -> String {
    const WORDS: [&str; 16] = [
        "quarterly",
        "numbers",
        "meeting",
        "invoice",
        "report",
        "draft",
        "budget",
        "review",
        "harbour",
        "lantern",
        "orchard",
        "compass",
        "granite",
        "meadow",
        "ribbon",
        "falcon",
    ];
    (0..lines)
        .map(|i| {
            let words: Vec<&str> = (0..4 + rng.below(8)).map(|_| rng.pick(&WORDS)).collect();
            format!("Line {i}: {}.", words.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const PNG_HEADER: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

/// An image whose first bytes are a PNG's, then `size` bytes in all.
fn image(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut bytes = PNG_HEADER.to_vec();
    bytes.extend(rng.bytes(size.saturating_sub(PNG_HEADER.len())));
    bytes.truncate(size);
    bytes
}

mod shapes;

/// The generated messages: the same bytes on every run and every machine.
pub fn generated() -> Vec<Sample> {
    let mut rng = Rng(0x5eed_0017);
    let mut out = shapes::all(&mut rng);
    // Random trees of multiparts, leaves of every kind, three levels down at most.
    for i in 0..24 {
        let n = out.len();
        let tree = shapes::random_tree(&mut rng, 0);
        let crlf = i % 4 != 3;
        let bytes = message(n, &format!("Random tree {i}"), tree, crlf, Ending::LineEnd);
        out.push((format!("random-tree-{i}"), bytes));
    }
    out.into_iter()
        .enumerate()
        .map(|(i, (shape, bytes))| Sample {
            name: format!("generated/{i:02}-{shape}"),
            bytes,
        })
        .collect()
}

#[cfg(test)]
mod tests;
