//! Forward to decrypt and large messages, end to end: a real gateway process, real SMTP in and
//! out, the reader over HTTP.
//!
//! - A recipient forwards the encrypted email to decrypt@corp.example, as a phone does (the
//!   email attached as `message/rfc822`, base64): the answer, from `<>`, carries a link that
//!   leads to the address choice, opens only with the one-time code, and shows the message.
//!   A stranger forwarding the same email gets nothing at all.
//! - A message above `mime.keep_above_bytes` leaves with a link instead of its sealed message;
//!   the link opens it after the code, its attachment downloads whole, and forwarding that
//!   email to decrypt@ gives a link of its own; past the hourly limit, a forward gets nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::{Browser, Gateway, field, outside_world, wait_for};
use testkit::Recorded;

/// `email` forwarded to decrypt@ by `from`, attached as a phone attaches it.
fn forward(email: &[u8], from: &str) -> String {
    forward_after(email, from, "")
}

/// [`forward`], with `preamble` before the first part (where mail readers show nothing).
fn forward_after(email: &[u8], from: &str, preamble: &str) -> String {
    format!(
        "From: <{from}>\n\
         To: decrypt@corp.example\n\
         Subject: Fwd: for my phone\n\
         Message-ID: <fwd.{}@phone.example>\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"fw\"\n\n\
         {preamble}\
         --fw\n\
         Content-Type: text/plain\n\n\
         Sent from my phone\n\
         --fw\n\
         Content-Type: message/rfc822\n\
         Content-Transfer-Encoding: base64\n\n\
         {}\n\
         --fw--\n",
        rand_tag(),
        testkit::base64_lines(email)
    )
}

fn rand_tag() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The reader link in a mail.
fn link_in(mail: &Recorded) -> String {
    let text = String::from_utf8_lossy(&mail.data).replace("=\r\n", "");
    let start = text.find("http://127.0.0.1:").expect("a link");
    let end = start
        + text[start..]
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap();
    let link = text[start..end].to_string();
    assert!(link.contains("/read/kept/"), "{link}");
    link
}

/// Follows a link as `address`: the address choice, the code from the mail, the message.
/// Returns the message page and its path.
fn open_as(
    person: &mut Browser,
    link: &str,
    address: &str,
    rx: &Receiver<Recorded>,
    secret: &str,
) -> (String, String) {
    let (status, path, page) = person.get(link);
    assert_eq!(status, 200, "{page}");
    assert!(path.starts_with("/read/m/"), "{path}");
    assert!(
        page.contains(address),
        "the address choice offers {address}"
    );
    assert!(
        !page.contains(secret),
        "nothing of the message shows before the code"
    );
    let csrf = field(&page, "csrf");
    let (status, _, page) = person.post(
        &format!("{path}/code"),
        &[("csrf", &csrf), ("address", address)],
    );
    assert_eq!(status, 200, "{page}");
    let mail = wait_for(rx, address, "Your Postern sign-in code");
    let code = testkit::code_in(&String::from_utf8_lossy(&mail.data)).expect("a code");
    let (status, _, page) =
        person.post(&format!("{path}/open"), &[("csrf", &csrf), ("code", &code)]);
    assert_eq!(status, 200, "{page}");
    (page, path)
}

/// Nothing more arrives for `rcpt` within a while.
fn nothing_for(rx: &Receiver<Recorded>, rcpt: &str) {
    while let Ok(m) = rx.recv_timeout(Duration::from_secs(3)) {
        assert!(
            !m.to.iter().any(|t| t == rcpt),
            "{rcpt} got a message:\n{}",
            String::from_utf8_lossy(&m.data)
        );
    }
}

#[test]
fn a_recipient_who_forwards_to_decrypt_gets_a_link_and_a_stranger_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (port, rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start(dir.path(), port);
    let secret = "The launch moves to the ninth of December.";
    gw.send(
        "alice@corp.example",
        &["bob@partner.example"],
        &format!(
            "From: alice@corp.example\nTo: bob@partner.example\nSubject: Launch\n\
             Message-ID: <launch@corp.example>\n\n{secret}\n"
        ),
    );
    let encrypted = wait_for(&rx, "bob@partner.example", "encrypted_message.htm");
    assert!(!String::from_utf8_lossy(&encrypted.data).contains(secret));

    // Monitoring sees each of the gateway's tasks running, as reported by the tasks.
    let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", gw.web))
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "SMTP receiver, policy",
        "SMTP receiver, bypass (no policy)",
        "Policy and encryption",
        "Maintenance",
        "Delivery",
    ] {
        let line = format!("postern_component_up{{component=\"{name}\"}} 1");
        assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    }

    // A stranger forwards it first: no answer, only a record of why.
    gw.send(
        "mallory@evil.example",
        &["decrypt@corp.example"],
        &forward(&encrypted.data, "mallory@evil.example"),
    );
    gw.wait_log("forward to decrypt: no answer: the sender is not one of the message's recipients");
    nothing_for(&rx, "mallory@evil.example");

    // The header that names the recipients is not authenticated until a recipient opens the
    // message, so anyone could write one naming bob: the gateway answers only for encrypted
    // email it made itself. Without its mark (a sealed message from elsewhere), with a mark
    // taken from another message, or with a forgery put where it is found first, bob's
    // forwards get nothing.
    let original = String::from_utf8(encrypted.data.clone()).unwrap();
    let unmarked: String = original
        .lines()
        .filter(|l| !l.contains("name=\"mark\""))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(unmarked.len(), original.len(), "the page carries a mark");
    let end = original
        .find("-----END POSTERN SEALED MESSAGE-----")
        .unwrap();
    let last_line = original[..end].trim_end().rfind('\n').unwrap() + 1;
    let mut other = original.clone().into_bytes();
    other[last_line] = if other[last_line] == b'A' { b'B' } else { b'A' };
    // A forged sealed message in the preamble, where the streaming reader finds it first, and
    // the genuine email attached: the mark found is the genuine one's, not the forgery's.
    let other_text = String::from_utf8(other.clone()).unwrap();
    let begin = other_text
        .find("-----BEGIN POSTERN SEALED MESSAGE-----")
        .unwrap();
    let end_line = end + "-----END POSTERN SEALED MESSAGE-----".len();
    let preamble = format!("{}\n", other_text[begin..end_line].replace("\r\n", "\n"));
    let forgeries = [
        forward(unmarked.as_bytes(), "bob@partner.example"),
        forward(&other, "bob@partner.example"),
        forward_after(&encrypted.data, "bob@partner.example", &preamble),
    ];
    for (n, forged) in forgeries.iter().enumerate() {
        gw.send("bob@partner.example", &["decrypt@corp.example"], forged);
        gw.wait_log_count(
            "forward to decrypt: no answer: the encrypted message was not made by this gateway",
            n + 1,
        );
    }
    nothing_for(&rx, "bob@partner.example");

    // The recipient forwards it from the phone.
    gw.send(
        "bob@partner.example",
        &["decrypt@corp.example"],
        &forward(&encrypted.data, "bob@partner.example"),
    );
    let answer = wait_for(&rx, "bob@partner.example", "/read/kept/");
    assert_eq!(
        answer.from, "",
        "an automatic answer comes from the null sender"
    );
    let text = String::from_utf8_lossy(&answer.data);
    assert!(text.contains("Auto-Submitted: auto-replied"));
    assert!(
        text.contains("In-Reply-To: <fwd."),
        "threaded under the forward"
    );
    assert!(text.contains("from alice@corp.example"));
    assert!(!text.contains(secret));
    let link = link_in(&answer);

    // The link leads to the address choice, and the message opens only with the code.
    let mut bob = Browser::new(gw.web);
    let (page, _) = open_as(&mut bob, &link, "bob@partner.example", &rx, secret);
    assert!(page.contains(secret), "{page}");
    assert!(page.contains("Signed by alice@corp.example"));

    // Another browser with the same link still needs a code: a wrong one is refused.
    let mut other = Browser::new(gw.web);
    let (status, path, page) = other.get(&link);
    assert_eq!(status, 200);
    let csrf = field(&page, "csrf");
    other.post(
        &format!("{path}/code"),
        &[("csrf", &csrf), ("address", "bob@partner.example")],
    );
    let (status, _, page) = other.post(
        &format!("{path}/open"),
        &[("csrf", &csrf), ("code", "000000")],
    );
    assert_eq!(status, 422, "{page}");
    assert!(!page.contains(secret));

    // A link that does not exist (or expired) says so.
    let (status, _, page) = other.get(&format!(
        "http://127.0.0.1:{}/read/kept/{}",
        gw.web,
        "0".repeat(64)
    ));
    assert_eq!(status, 404);
    assert!(page.contains("This link no longer works"));

    assert!(gw.log().contains("forward to decrypt: a link was sent"));
    nothing_for(&rx, "mallory@evil.example");
    // decrypt@ is an address of the gateway, not a mailbox: nothing was delivered to it.
    let delivered: Vec<String> = std::fs::read_dir(gw.maildir.join("new"))
        .map(|d| {
            d.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !delivered.iter().any(|m| m.contains("Sent from my phone")),
        "a forward was delivered"
    );
}

#[test]
fn a_large_message_stays_on_the_gateway_and_its_link_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let (port, rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start_with(
        dir.path(),
        port,
        "keep_above_bytes = 100000",
        "decrypt_links_per_hour = 1",
    );
    let attachment: Vec<u8> = (0..300_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
    let secret = "Drawings for the new plant, all 300 KB of them.";
    gw.send(
        "alice@corp.example",
        &["bob@partner.example"],
        &format!(
            "From: alice@corp.example\nTo: bob@partner.example\nSubject: Drawings\n\
             MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n\
             --b\nContent-Type: text/plain\n\n{secret}\n\
             --b\nContent-Type: application/octet-stream; name=\"plant.dwg\"\n\
             Content-Disposition: attachment; filename=\"plant.dwg\"\n\
             Content-Transfer-Encoding: base64\n\n{}\n--b--\n",
            testkit::base64_lines(&attachment)
        ),
    );
    let encrypted = wait_for(&rx, "bob@partner.example", "encrypted_message.htm");
    let text = String::from_utf8_lossy(&encrypted.data).to_string();
    assert!(
        encrypted.data.len() < 20_000,
        "the email carries a link, not 300 KB ({} bytes)",
        encrypted.data.len()
    );
    assert!(!text.contains("BEGIN POSTERN SEALED MESSAGE"));
    assert!(text.contains("kept on the mail gateway until"));
    assert!(text.contains("X-PP-ENCRYPTED: TRUE"));
    let link = link_in(&encrypted);

    let mut bob = Browser::new(gw.web);
    let (page, path) = open_as(&mut bob, &link, "bob@partner.example", &rx, secret);
    assert!(page.contains(secret), "{page}");
    assert!(page.contains("Signed by alice@corp.example"));
    let part = page.replace("&#x2f;", "/");
    let at = part
        .find(&format!("{path}/part/"))
        .expect("the attachment's link");
    let href = &part[at..at + part[at..].find('"').unwrap()];
    let req = bob.http.get(format!("{}{href}", bob.base));
    let got = req
        .header("Cookie", bob.cookie.clone().unwrap())
        .send()
        .unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().unwrap().to_vec(), attachment, "the same bytes");

    // On the phone, the large message's email is forwarded to decrypt@: a link of its own.
    gw.send(
        "bob@partner.example",
        &["decrypt@corp.example"],
        &forward(&encrypted.data, "bob@partner.example"),
    );
    let answer = wait_for(
        &rx,
        "bob@partner.example",
        "Your encrypted message is ready",
    );
    let second = link_in(&answer);
    assert_ne!(second, link);
    let mut phone = Browser::new(gw.web);
    let (status, path, page) = phone.get(&second);
    assert_eq!(status, 200, "{page}");
    assert!(path.starts_with("/read/m/"));
    assert!(page.contains("bob@partner.example"));

    // One link an hour here: a second forward gets no answer.
    gw.send(
        "bob@partner.example",
        &["decrypt@corp.example"],
        &forward(&encrypted.data, "bob@partner.example"),
    );
    gw.wait_log("forward to decrypt: no answer: the sender had as many links as an hour allows");
    nothing_for(&rx, "bob@partner.example");
}
