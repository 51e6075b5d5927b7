//! What the generated set promises the tests that use it.

use super::generated;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_same_messages_on_every_run() {
    let a = generated();
    let b = generated();
    assert!(a.len() > 50, "{}", a.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert!(x.bytes == y.bytes, "{} differs between runs", x.name);
    }
    let mut names: Vec<&str> = a.iter().map(|s| s.name.as_str()).collect();
    names.dedup();
    assert_eq!(names.len(), a.len());
}

#[test]
fn every_shape_the_tests_rely_on_is_there() {
    let all = generated();
    let any = |needle: &[u8]| all.iter().any(|s| contains(&s.bytes, needle));
    for cte in ["7bit", "8bit", "quoted-printable", "base64", "binary"] {
        assert!(
            any(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes()),
            "{cte}"
        );
    }
    for charset in [
        "utf-8",
        "iso-8859-1",
        "windows-1252",
        "koi8-r",
        "iso-2022-jp",
        "shift_jis",
    ] {
        assert!(
            any(format!("charset=\"{charset}\"").as_bytes()),
            "{charset}"
        );
        assert!(
            any(format!("=?{charset}?").as_bytes()),
            "encoded word in {charset}"
        );
    }
    for needle in [
        &b"multipart/mixed"[..],
        b"multipart/alternative",
        b"multipart/related",
        b"Content-Type: text/calendar; charset=\"utf-8\"; method=REQUEST",
        b"METHOD:REQUEST",
        b"Content-Type: text/html",
        b"src=\"cid:",
        b"Content-ID: <",
        b"Content-Type: message/rfc822",
        b"\r\n\tboundary=",
        b"filename*=utf-8''",
    ] {
        assert!(any(needle), "{}", String::from_utf8_lossy(needle));
    }
    assert!(any(b"\r\n.\r\n"), "a line of one dot");
    assert!(
        all.iter().any(|s| s.bytes.ends_with(b"\n\r")),
        "a lone CR at the end"
    );
    assert!(
        all.iter().any(|s| !s.bytes.ends_with(b"\n")),
        "no final line end"
    );
    assert!(
        all.iter().any(|s| !s.bytes.contains(&b'\r')),
        "LF line ends"
    );
    assert!(
        all.iter()
            .any(|s| s.bytes.split(|&b| b == b'\n').any(|l| l.len() == 999)),
        "a line of 998 octets and its CR"
    );
    assert!(all.iter().any(|s| s.bytes.len() > 400_000));
}

#[test]
fn three_levels_of_multipart_and_more() {
    let depth = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .matches("Content-Type: multipart/")
            .count()
    };
    assert!(generated().iter().any(|s| depth(&s.bytes) >= 4));
}

#[test]
fn smtp_can_carry_every_message() {
    // No line over 998 octets, no bare CR but a final one, and no bare LF in a CRLF message.
    for s in generated() {
        let body = s.bytes.strip_suffix(b"\r").unwrap_or(&s.bytes);
        let crlf = body.contains(&b'\r');
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let text = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(
                text.len() <= 998,
                "{}: line {i} is {} long",
                s.name,
                text.len()
            );
            assert!(!text.contains(&b'\r'), "{}: a bare CR on line {i}", s.name);
            let last = i == body.split(|&b| b == b'\n').count() - 1;
            assert!(
                !crlf || last || line.ends_with(b"\r"),
                "{}: a bare LF on line {i}",
                s.name
            );
        }
    }
}
