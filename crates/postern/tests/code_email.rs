//! Sign-in code emails, end to end: a real gateway process, real SMTP, the reader over HTTP.
//!
//! - With nothing listening where `keyserver.mail` points, the gateway warns at start naming
//!   the relay, the reader says plainly (503) that no code could be sent because of a problem on
//!   the gateway's side, and the status page and `/metrics` show the relay down.
//! - With a real relay, the code email carries what spam filters look for: a Message-ID at the
//!   gateway's host name, MIME-Version, Date, a From at that host name, and EHLO with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Browser, Gateway, field, outside_world, wait_for};
use mail_parser::MimeHeaders;

/// Alice at corp.example writes to Bob outside; Bob opens `encrypted_message.htm` and clicks
/// "Open my email", then asks for a code. Returns the answer to that request.
fn bob_asks_for_a_code(
    gw: &Gateway,
    rx: &std::sync::mpsc::Receiver<testkit::Recorded>,
) -> (u16, String) {
    gw.send(
        "alice@corp.example",
        &["bob@partner.example"],
        "From: alice@corp.example\nTo: bob@partner.example\nSubject: Figures\n\
         Message-ID: <figures@corp.example>\n\nThe figures are in.\n",
    );
    let encrypted = wait_for(rx, "bob@partner.example", "encrypted_message.htm");
    let text = String::from_utf8_lossy(&encrypted.data).into_owned();
    let start = text
        .find("<textarea name=\"sealed\" hidden readonly>")
        .unwrap();
    let start = start + text[start..].find('>').unwrap() + 1;
    let end = start + text[start..].find("</textarea>").unwrap();
    let mut bob = Browser::new(gw.web);
    let (status, path, page) = bob.post(
        "/read",
        &[
            ("format", "postern-sealed-1"),
            ("sealed", &text[start..end]),
        ],
    );
    assert_eq!(status, 200, "{page}");
    assert!(path.starts_with("/read/m/"), "{path}");
    let csrf = field(&page, "csrf");
    let (status, _, page) = bob.post(
        &format!("{path}/code"),
        &[("csrf", &csrf), ("address", "bob@partner.example")],
    );
    (status, page)
}

fn metrics(gw: &Gateway) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", gw.web))
        .unwrap()
        .text()
        .unwrap()
}

/// The console's status page, as an administrator made with `postern admin create` sees it.
fn status_page(gw: &Gateway) -> String {
    common::signed_in_admin(gw).1
}

#[test]
fn a_code_that_cannot_be_sent_is_said_plainly_and_the_relay_shows_as_down() {
    let dir = tempfile::tempdir().unwrap();
    let (port, rx) = outside_world(&dir.path().join("outside"));
    // Nothing listens where the code emails are to go.
    let closed = testkit::free_port();
    let relay = format!("127.0.0.1:{closed}");
    let gw = Gateway::start_with_relay(dir.path(), port, closed);

    // The start-up log warns, naming the relay and the setting.
    let warning = gw
        .log()
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&relay))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no start-up warning about {relay}:\n{}", gw.log()));
    assert!(warning.contains("keyserver.mail"), "{warning}");

    let (status, page) = bob_asks_for_a_code(&gw, &rx);
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("Your code could not be sent"), "{page}");
    assert!(page.contains("problem on its side"), "{page}");
    assert!(page.contains("try again later"), "{page}");
    assert!(!page.contains("We sent"), "no code is promised:\n{page}");
    // Neither the address is doubted nor the gateway's insides shown.
    for word in ["address", "relay", &closed.to_string()] {
        assert!(!page.contains(word), "the page says {word:?}:\n{page}");
    }

    let m = metrics(&gw);
    assert!(m.contains("\npostern_code_relay_up 0\n"), "{m}");
    assert!(m.contains("\npostern_code_sends_failed_total 1\n"), "{m}");
    assert!(
        m.contains("postern_component_up{component=\"Code email relay\"} 0"),
        "{m}"
    );

    let status = status_page(&gw);
    let row = status
        .split("<tr>")
        .find(|r| r.contains("Code email relay"))
        .unwrap_or_else(|| panic!("no relay on the status page:\n{status}"));
    assert!(row.contains(">down<"), "{row}");
    assert!(row.contains(&relay), "{row}");
    assert!(row.contains("unreachable"), "{row}");
    assert!(row.contains("last checked"), "{row}");
}

#[test]
fn the_code_email_is_one_a_spam_filter_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (port, rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start(dir.path(), port);
    assert!(
        gw.log()
            .contains(&format!("sign-in code emails go through 127.0.0.1:{port}")),
        "{}",
        gw.log()
    );

    let (status, page) = bob_asks_for_a_code(&gw, &rx);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("We sent a six-digit code"), "{page}");
    let mail = wait_for(&rx, "bob@partner.example", "Your Postern sign-in code");
    assert_eq!(mail.helo, "gw.corp.example", "EHLO with smtp.hostname");

    let parsed = mail_parser::MessageParser::default()
        .parse(&mail.data)
        .expect("an RFC 5322 message");
    let id = parsed.message_id().expect("a Message-ID");
    assert_eq!(
        id.rsplit_once('@').map(|(_, h)| h),
        Some("gw.corp.example"),
        "{id}"
    );
    assert_eq!(
        parsed.header_raw("MIME-Version").map(str::trim),
        Some("1.0")
    );
    let date = parsed.date().expect("a Date").to_timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (date - now).abs() < 3600,
        "Date {date} is far from now {now}"
    );
    let from = parsed
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .expect("a From address");
    assert_eq!(from, "keys@gw.corp.example");
    assert_eq!(
        parsed.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    let ctype = parsed.content_type().expect("a Content-Type");
    assert_eq!((ctype.ctype(), ctype.subtype()), ("text", Some("plain")));
    assert_eq!(
        ctype
            .attribute("charset")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("utf-8")
    );
    let code = testkit::code_in(&String::from_utf8_lossy(&mail.data)).expect("a code");
    assert!(parsed.body_text(0).unwrap().contains(&code));

    let m = metrics(&gw);
    assert!(m.contains("\npostern_code_relay_up 1\n"), "{m}");
    assert!(m.contains("\npostern_code_sends_failed_total 0\n"), "{m}");
}
