//! The shapes of the generated messages, one each, and the random trees.

use super::{Body, Charset, Cte, Ending, Part, Rng, encoded_words, image, message, prose};

/// Collects shapes, numbering them as they come.
struct Shapes(Vec<(String, Vec<u8>)>);

impl Shapes {
    fn add(&mut self, shape: &str, subject: &str, part: Part, crlf: bool, end: Ending) {
        let n = self.0.len();
        self.0
            .push((shape.to_string(), message(n, subject, part, crlf, end)));
    }

    fn crlf(&mut self, shape: &str, subject: &str, part: Part) {
        self.add(shape, subject, part, true, Ending::LineEnd);
    }
}

/// Every fixed shape.
pub(super) fn all(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut s = Shapes(Vec::new());
    let plain = |text: &str| Part::text("plain", Charset::UsAscii, Cte::SevenBit, text);

    s.crlf("plain-7bit", "Plain text", plain(&prose(rng, 12)));
    s.add(
        "plain-lf-only",
        "Plain text with LF line ends",
        plain(&prose(rng, 8)),
        false,
        Ending::LineEnd,
    );

    // Every charset in a text part, each with its header words encoded in the same charset.
    for (i, charset) in Charset::ALL.into_iter().enumerate() {
        let cte = if charset.is_7bit() {
            [Cte::SevenBit, Cte::QuotedPrintable, Cte::Base64][i % 3]
        } else {
            [
                Cte::EightBit,
                Cte::QuotedPrintable,
                Cte::Base64,
                Cte::Binary,
            ][i % 4]
        };
        let text = format!("{}\n\n{}\n", charset.sample(), charset.sample());
        let subject = encoded_words(charset.sample(), charset, i % 2 == 0);
        let from = encoded_words("Zoë Ünal", charset_or_utf8(charset), i % 2 == 1);
        let part = Part::text("plain", charset, cte, &text)
            .header(&format!("Reply-To: {from} <zoe@corp.example>"));
        s.crlf(
            &format!("charset-{}-{}", charset.name(), cte.name()),
            &subject,
            part,
        );
    }

    // A header of raw 8-bit Latin-1, as old mailers wrote it, over an 8bit body with no MIME.
    let raw = Part::leaf(
        &[],
        b"Die Hasen und die Fr\xf6sche, \xfcber alle Ma\xdfen.\n".to_vec(),
    )
    .raw_header(b"X-Original-To: Heinz M\xfcller <mueller@partner.example>");
    s.crlf("raw-8bit-header-no-mime", "Die Hasen", raw);

    s.crlf(
        "alternative-text-html",
        "Text and HTML",
        alternative(rng, "alt-1"),
    );
    s.crlf(
        "mixed-related-alternative-cid",
        "Newsletter with pictures",
        newsletter(rng),
    );
    s.crlf("four-levels", "Four levels deep", four_levels(rng));
    s.crlf("calendar-request", "Invitation: planning", calendar(rng));

    // Binary attachments: empty, around base64's 57-byte line, and larger.
    let small: Vec<Part> = [0, 1, 2, 3, 56, 57, 58, 1000]
        .iter()
        .map(|&n| {
            Part::attachment(
                "application/octet-stream",
                &format!("{n}.bin"),
                Cte::Base64,
                &rng.bytes(n),
            )
        })
        .collect();
    let mut parts = vec![plain("Eight small files.")];
    parts.extend(small);
    s.crlf(
        "attachments-small",
        "Small files",
        Part::multi("mixed", "small-files", parts),
    );
    for size in [4096, 65_537, 400_000] {
        let parts = vec![
            plain(&format!("A file of {size} bytes.")),
            Part::attachment("image/png", "picture.png", Cte::Base64, &image(rng, size)),
        ];
        s.crlf(
            &format!("attachment-{size}"),
            "A picture",
            Part::multi("mixed", "=_size", parts),
        );
    }
    let parts = vec![
        Part::text(
            "plain",
            Charset::Utf8,
            Cte::EightBit,
            "Ein Blob, roh übertragen.\n",
        ),
        Part::attachment(
            "application/octet-stream",
            "raw.dat",
            Cte::Binary,
            &rng.binary_lines(20_000),
        ),
    ];
    s.crlf(
        "binary-transfer-encoding",
        "Binary part",
        Part::multi("mixed", "b1n", parts),
    );

    let mut odd = odd_shapes(rng);
    for (shape, subject, part, crlf, end) in odd.drain(..) {
        s.add(shape, subject, part, crlf, end);
    }
    s.0
}

/// Charsets that cannot spell "Zoë Ünal" fall back to UTF-8 for it.
fn charset_or_utf8(c: Charset) -> Charset {
    match c {
        Charset::Latin1 | Charset::Windows1252 => c,
        _ => Charset::Utf8,
    }
}

fn html(rng: &mut Rng, images: &[&str]) -> String {
    let mut page = String::from("<html><head><title>Generated page</title></head>\n<body>\n");
    for line in prose(rng, 6).lines() {
        page.push_str(&format!("<p>{line}</p>\n"));
    }
    for cid in images {
        page.push_str(&format!("<img src=\"cid:{cid}\" alt=\"picture {cid}\">\n"));
    }
    page.push_str("<table><tr><td>Total</td><td>&euro; 12,00</td></tr></table>\n</body></html>\n");
    page
}

fn alternative(rng: &mut Rng, boundary: &str) -> Part {
    let text = prose(rng, 5);
    let page = html(rng, &[]);
    Part::multi(
        "alternative",
        boundary,
        vec![
            Part::text("plain", Charset::Utf8, Cte::QuotedPrintable, &text),
            Part::text("html", Charset::Utf8, Cte::QuotedPrintable, &page),
        ],
    )
}

/// An inline image, found by `cid`.
fn inline(rng: &mut Rng, cid: &str, size: usize) -> Part {
    Part::leaf(
        &[
            "Content-Type: image/png",
            "Content-Transfer-Encoding: base64",
            &format!("Content-ID: <{cid}>"),
            "Content-Disposition: inline",
        ],
        super::base64(&image(rng, size)),
    )
}

/// multipart/mixed > related > alternative, with inline images by cid and an attachment.
fn newsletter(rng: &mut Rng) -> Part {
    let page = html(rng, &["logo@corp.example", "chart@corp.example"]);
    let alt = Part::multi(
        "alternative",
        "=_alt_3f2a",
        vec![
            Part::text(
                "plain",
                Charset::Latin1,
                Cte::QuotedPrintable,
                "Le café est prêt.\n",
            ),
            Part::text("html", Charset::Utf8, Cte::Base64, &page),
        ],
    );
    let related = Part::multi(
        "related",
        "=_rel_3f2a",
        vec![
            alt,
            inline(rng, "logo@corp.example", 700),
            inline(rng, "chart@corp.example", 3000),
        ],
    )
    .header("X-Related-Start: first part");
    let doc = Part::attachment(
        "application/pdf",
        "report.pdf",
        Cte::Base64,
        &rng.bytes(9000),
    );
    Part::multi("mixed", "=_mixed_3f2a", vec![related, doc])
}

/// multipart/mixed > mixed > alternative > related.
fn four_levels(rng: &mut Rng) -> Part {
    let page = html(rng, &["deep@corp.example"]);
    let related = Part::multi(
        "related",
        "level-4",
        vec![
            Part::text("html", Charset::Windows1252, Cte::EightBit, &page),
            inline(rng, "deep@corp.example", 1500),
        ],
    );
    let alt = Part::multi(
        "alternative",
        "level-3",
        vec![
            Part::text("plain", Charset::UsAscii, Cte::SevenBit, &prose(rng, 3)),
            related,
        ],
    );
    let inner = Part::multi(
        "mixed",
        "level-2",
        vec![
            alt,
            Part::attachment(
                "text/csv",
                "numbers.csv",
                Cte::QuotedPrintable,
                b"a,b\n1,2\n",
            ),
        ],
    );
    Part::multi(
        "mixed",
        "level-1",
        vec![
            Part::text("plain", Charset::UsAscii, Cte::SevenBit, "Top.\n"),
            inner,
        ],
    )
}

/// A meeting request: text and a calendar with METHOD:REQUEST, the invitation attached too.
fn calendar(rng: &mut Rng) -> Part {
    let ics = "BEGIN:VCALENDAR\nPRODID:-//Generated//Testkit//EN\nVERSION:2.0\nMETHOD:REQUEST\n\
BEGIN:VEVENT\nUID:planning-2026@corp.example\nDTSTAMP:20261201T090000Z\n\
DTSTART:20261210T140000Z\nDTEND:20261210T150000Z\nSUMMARY:Planning for next year\n\
ORGANIZER;CN=Alice:mailto:alice@corp.example\n\
ATTENDEE;ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:bob@partner.example\nEND:VEVENT\nEND:VCALENDAR";
    let mut invite = Part::text("calendar", Charset::Utf8, Cte::SevenBit, ics);
    invite.headers[0] = b"Content-Type: text/calendar; charset=\"utf-8\"; method=REQUEST".to_vec();
    let alt = Part::multi(
        "alternative",
        "cal-alt",
        vec![
            Part::text("plain", Charset::UsAscii, Cte::SevenBit, &prose(rng, 2)),
            invite,
        ],
    );
    let attached = Part::attachment("application/ics", "invite.ics", Cte::Base64, ics.as_bytes());
    Part::multi("mixed", "cal-mixed", vec![alt, attached])
}

type Odd = (&'static str, &'static str, Part, bool, Ending);

/// The shapes that are legal but trip careless parsers.
fn odd_shapes(rng: &mut Rng) -> Vec<Odd> {
    let plain = |text: &str| Part::text("plain", Charset::UsAscii, Cte::SevenBit, text);
    let mut out: Vec<Odd> = Vec::new();

    let folded = plain(&prose(rng, 3))
        .header("Received: from mx.partner.example (mx.partner.example [192.0.2.7])\n\tby gw.corp.example with ESMTPS id 4f2a\n\tfor <bob@partner.example>; 1 Dec 2026 10:00:00 +0000")
        .header("X-Folded: one\n  two\n\tthree\n four")
        .header(&format!("References: {}", (0..12).map(|i| format!("<ref-{i}@corp.example>")).collect::<Vec<_>>().join("\n ")));
    out.push((
        "folded-headers",
        "A subject that goes on and on and is folded\n over two lines",
        folded,
        true,
        Ending::LineEnd,
    ));

    // Lines of exactly 998 octets, in 7bit and in 8bit.
    let long7 = "x".repeat(998);
    let long8 = "é".repeat(499);
    let long = Part::multi(
        "mixed",
        "long-lines",
        vec![
            plain(&format!("{long7}\nshort\n{long7}")),
            Part::text("plain", Charset::Utf8, Cte::EightBit, &long8),
        ],
    );
    out.push(("lines-of-998", "Long lines", long, true, Ending::LineEnd));

    out.push((
        "empty-body",
        "Nothing to say",
        plain(""),
        true,
        Ending::Nothing,
    ));
    let headers_only = Part {
        headers: Vec::new(),
        body: Body::Leaf(Vec::new()),
    };
    out.push((
        "empty-body-lf",
        "Nothing at all",
        headers_only,
        false,
        Ending::Nothing,
    ));
    out.push((
        "no-final-line-end",
        "Cut short",
        plain(&prose(rng, 4)),
        true,
        Ending::Nothing,
    ));
    out.push((
        "no-final-line-end-lf",
        "Cut short",
        plain("last line without an end"),
        false,
        Ending::Nothing,
    ));
    // CRLF lines, then a last line ended by a CR alone.
    let uu = format!(
        "{}\n\nbegin 644 blob.bin\nM9V5N97)A=&5D(&)Y('1E<W1K:70@9F]R('1H92!R;W5N9\"UT<FEP('1E<W1S\n`\nend\n",
        prose(rng, 5)
    );
    out.push((
        "lone-cr-at-the-end",
        "Ends in a CR",
        plain(&uu),
        true,
        Ending::LoneCr,
    ));

    let mut framed = Part::multi(
        "mixed",
        "framed",
        vec![
            plain("Between the preamble and the epilogue.\n"),
            Part::text(
                "plain",
                Charset::Latin1,
                Cte::EightBit,
                "Caf\u{e9} cr\u{e8}me.",
            ),
        ],
    );
    if let Body::Multi {
        preamble, epilogue, ..
    } = &mut framed.body
    {
        *preamble = Some(
            "This is a multi-part message in MIME format.\nYour mailer does not read MIME."
                .to_string(),
        );
        *epilogue = Some("The epilogue, which nobody reads.\n".to_string());
    }
    out.push((
        "preamble-and-epilogue",
        "Framed",
        framed,
        true,
        Ending::LineEnd,
    ));

    let untyped = Part::multi(
        "mixed",
        "untyped",
        vec![
            Part::leaf(
                &[],
                b"A part without headers: text/plain in us-ascii.".to_vec(),
            ),
            Part::leaf(
                &["Content-Disposition: inline"],
                b"A part with no Content-Type.".to_vec(),
            ),
        ],
    );
    out.push((
        "part-without-content-type",
        "Untyped parts",
        untyped,
        true,
        Ending::LineEnd,
    ));

    // Embedded as it is, in the outer message's line ends; in base64, with its own CRLF.
    let inner = |rng: &mut Rng, crlf| {
        message(
            900,
            "The forwarded one",
            alternative(rng, "inner-alt"),
            crlf,
            Ending::LineEnd,
        )
    };
    let forward = Part::multi(
        "mixed",
        "fwd",
        vec![
            plain("Forwarding the message below.\n"),
            Part::leaf(
                &[
                    "Content-Type: message/rfc822",
                    "Content-Disposition: attachment; filename=\"fwd.eml\"",
                ],
                inner(rng, false),
            ),
        ],
    );
    out.push((
        "message-rfc822",
        "Fwd: The forwarded one",
        forward,
        true,
        Ending::LineEnd,
    ));
    let forward64 = Part::multi(
        "mixed",
        "fwd64",
        vec![
            plain("The same, in base64."),
            Part::attachment(
                "message/rfc822",
                "attached_email.eml",
                Cte::Base64,
                &inner(rng, true),
            ),
        ],
    );
    out.push((
        "message-rfc822-base64-lf",
        "Fwd: base64",
        forward64,
        false,
        Ending::Nothing,
    ));

    let digest = Part::multi(
        "digest",
        "digest",
        vec![
            Part::leaf(
                &[],
                message(
                    901,
                    "First in the digest",
                    plain("one"),
                    false,
                    Ending::Nothing,
                ),
            ),
            Part::leaf(
                &[],
                message(
                    902,
                    "Second in the digest",
                    plain("two"),
                    false,
                    Ending::Nothing,
                ),
            ),
        ],
    );
    let parallel = Part::multi(
        "parallel",
        "parallel",
        vec![plain("Left."), plain("Right.")],
    );
    out.push((
        "digest-and-parallel",
        "Digest",
        Part::multi("mixed", "outer", vec![digest, parallel]),
        false,
        Ending::LineEnd,
    ));

    let shouting = Part::leaf(
        &[
            "CONTENT-TYPE: TEXT/PLAIN; CHARSET=US-ASCII",
            "CONTENT-TRANSFER-ENCODING: 7BIT",
        ],
        b"Upper case names.".to_vec(),
    );
    let shouting = Part::multi("mixed", "UPPER", vec![shouting, plain("lower")]);
    let mut shouting = shouting;
    shouting.headers[0] = b"CONTENT-TYPE: MULTIPART/MIXED; BOUNDARY=UPPER".to_vec();
    out.push(("upper-case-names", "LOUD", shouting, true, Ending::LineEnd));

    let b = "'()+_,-./:=? 70-characters-of-boundary-0123456789-abcdefghijklmnopqrs";
    let odd_boundary = Part::multi("mixed", b, vec![plain("odd boundary"), plain("second")]);
    out.push((
        "boundary-with-odd-characters",
        "Odd boundary",
        odd_boundary,
        true,
        Ending::LineEnd,
    ));

    let rfc2231 = Part::leaf(
        &[
            "Content-Type: application/octet-stream",
            "Content-Disposition: attachment;\n filename*=utf-8''%C3%BCbersicht%20%E2%82%AC.txt",
            "Content-Transfer-Encoding: base64",
        ],
        super::base64(b"contents"),
    );
    out.push((
        "rfc2231-filename",
        "Parameters",
        Part::multi("mixed", "p", vec![plain("see attached"), rfc2231]),
        true,
        Ending::LineEnd,
    ));

    let dots = plain(".\n..\n.leading dot\nFrom the start of a line\n \n\t\ntrailing space \n.");
    out.push(("dots-and-from-lines", "Dots", dots, true, Ending::LineEnd));
    let empty_subject = plain("No subject.").header("X-Empty:");
    out.push((
        "empty-header-values",
        "",
        empty_subject,
        true,
        Ending::LineEnd,
    ));
    out
}

/// A random part: a multipart three levels down at most, or a leaf of any kind.
pub(super) fn random_tree(rng: &mut Rng, depth: usize) -> Part {
    if depth < 3 && (depth == 0 || rng.below(3) == 0) {
        let subtype = rng.pick(&["mixed", "alternative", "related"]);
        let children = (0..1 + rng.below(3))
            .map(|_| random_tree(rng, depth + 1))
            .collect();
        let boundary = format!("=_{subtype}_{depth}_{:08x}", rng.next() as u32);
        return Part::multi(subtype, &boundary, children);
    }
    match rng.below(4) {
        0 | 1 => {
            let charset = rng.pick(&Charset::ALL);
            let cte = if charset.is_7bit() {
                rng.pick(&[Cte::SevenBit, Cte::QuotedPrintable, Cte::Base64])
            } else {
                rng.pick(&[
                    Cte::EightBit,
                    Cte::QuotedPrintable,
                    Cte::Base64,
                    Cte::Binary,
                ])
            };
            let lines = 1 + rng.below(6);
            let text = format!("{}\n{}", prose(rng, lines), charset.sample());
            Part::text(rng.pick(&["plain", "html"]), charset, cte, &text)
        }
        2 => {
            let size = rng.pick(&[0, 5, 300, 2048, 20_000]);
            Part::attachment(
                "application/octet-stream",
                "data.bin",
                Cte::Base64,
                &rng.bytes(size),
            )
        }
        _ => {
            let size = 100 + rng.below(5000);
            let cid = format!("img{:x}@corp.example", rng.next() as u16);
            inline(rng, &cid, size)
        }
    }
}
