//! Encryption in the mail path, with real processes: a key server, gateway A for
//! `corp.example` and gateway B for `partner.example`. What leaves A goes to a recording SMTP
//! receiver (so the test sees exactly what crossed the network) and is passed on to B.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Gateway, KeyServer, Setup, postern, run, s, wait_until};
use testkit::Recorded;

/// A gateway for `domain` with the key server at URL `keyserver`: internal mail to a Maildir,
/// external mail to `external`.
#[allow(clippy::too_many_arguments)]
fn gateway(
    dir: &Path,
    name: &str,
    domain: &str,
    keyserver: &str,
    token: &Path,
    external: &str,
    extra: &str,
    fake_now: Option<u64>,
) -> Gateway {
    Gateway::start_setup(
        &dir.join(name),
        Setup {
            domain: domain.into(),
            external: external.into(),
            relay: None,
            mime: String::new(),
            gateway: format!(
                "keyserver_url = \"{keyserver}\"\ntoken_file = {:?}\n{extra}",
                s(token)
            ),
            components: Some("smtp"),
            files: None,
            fake_now,
        },
    )
}

/// A message as SMTP carries it: CRLF line ends, a final line end, no bare CR.
fn crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 1024);
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    // A file that ends in a lone CR (one of the corpus does) ends its last line there.
    if out.ends_with(b"\r") {
        out.push(b'\n');
    } else if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut start_of_line = true;
    for &b in message {
        if start_of_line && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        start_of_line = b == b'\n';
    }
    out
}

fn send(to: SocketAddr, from: &str, rcpts: &[&str], message: &[u8]) {
    let mut conn = testkit::SmtpConn::open(to).unwrap();
    conn.send(from, rcpts, &dot_stuff(message)).unwrap();
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn header_end(m: &[u8]) -> usize {
    m.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(m.len(), |i| i + 4)
}

/// Collects `n` messages from the recorder.
fn collect(rx: &Receiver<Recorded>, n: usize, limit: Duration) -> Vec<Recorded> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) => out.push(m),
            Err(_) => panic!("only {} of {n} messages left the gateway", out.len()),
        }
    }
    out
}

/// The sealed message inside an encrypted email.
fn sealed_of(email: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(email);
    let start = text.find("-----BEGIN POSTERN SEALED MESSAGE-----").unwrap();
    let end = text.find("-----END POSTERN SEALED MESSAGE-----").unwrap();
    let b64: String = text[start + 38..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn meeting_request() -> Vec<u8> {
    crlf(
        b"From: alice@corp.example\n\
To: bob@partner.example\n\
Subject: Quarterly review\n\
Message-ID: <meeting-1@corp.example>\n\
MIME-Version: 1.0\n\
Content-Type: multipart/alternative; boundary=\"cal\"\n\
\n\
--cal\n\
Content-Type: text/plain; charset=utf-8\n\
\n\
Quarterly review in room 4.\n\
--cal\n\
Content-Type: text/calendar; charset=utf-8; method=REQUEST\n\
\n\
BEGIN:VCALENDAR\n\
METHOD:REQUEST\n\
BEGIN:VEVENT\n\
UID:review-2026-q4@corp.example\n\
SUMMARY:Quarterly review\n\
DTSTART:20261201T100000Z\n\
ORGANIZER:mailto:alice@corp.example\n\
ATTENDEE:mailto:bob@partner.example\n\
END:VEVENT\n\
END:VCALENDAR\n\
--cal--\n",
    )
}

#[test]
fn two_gateways_carry_the_corpus_encrypted_and_restore_it_byte_for_byte() {
    let Pair {
        dir: _dir,
        keyserver,
        a,
        b,
        wire,
    } = pair("", "", None);

    // Every corpus message, each tagged so that it can be found again, plus a meeting request.
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for (i, sample) in testkit::corpus().iter().enumerate() {
        let mut m = format!("X-Test-Id: corpus-{i}\r\n").into_bytes();
        m.extend_from_slice(&crlf(&sample.bytes));
        sent.push(m);
    }
    let mut meeting = b"X-Test-Id: meeting\r\n".to_vec();
    meeting.extend_from_slice(&meeting_request());
    sent.push(meeting);
    for m in &sent {
        send(a.smtp, "alice@corp.example", &["bob@partner.example"], m);
    }

    // What left A is encrypted: no body line of any original crosses the wire (the outer
    // header keeps the addressing, date and subject, by design).
    let crossed = collect(&wire, sent.len(), Duration::from_secs(120));
    for r in &crossed {
        let text = &r.data[header_end(&r.data)..];
        assert!(contains(&r.data, b"X-PP-ENCRYPTED: TRUE"));
        assert!(contains(&r.data, b"X-Postern-Encrypted: gw.corp.example"));
        assert!(contains(text, b"encrypted_message.htm"));
        assert!(
            !contains(&r.data, b"X-Test-Id"),
            "a header of the original leaked"
        );
        for original in &sent {
            let body = &original[header_end(original)..];
            for line in body.split(|&b| b == b'\n') {
                let line = line.trim_ascii();
                if line.len() >= 24
                    && !line.starts_with(b"--")
                    && !line.starts_with(b"Content-")
                    && !line
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
                {
                    assert!(
                        !contains(text, line),
                        "an original line crossed in clear: {}",
                        String::from_utf8_lossy(line)
                    );
                }
            }
        }
    }
    let meeting_out = crossed
        .iter()
        .find(|r| contains(&r.data, b"Subject: Quarterly review"))
        .unwrap();
    assert!(contains(&meeting_out.data, b"encrypted meeting request"));
    // So does every other message with a calendar (the generated invitation among them).
    let calendars = sent
        .iter()
        .filter(|m| contains(&m.to_ascii_lowercase(), b"content-type: text/calendar"))
        .count();
    let notices = crossed
        .iter()
        .filter(|r| contains(&r.data, b"encrypted meeting request"))
        .count();
    assert!(
        calendars >= 2,
        "only {calendars} meeting requests were sent"
    );
    assert_eq!(notices, calendars);

    // B opens each and delivers the original.
    for r in &crossed {
        let to: Vec<&str> = r.to.iter().map(String::as_str).collect();
        send(b.smtp, &r.from, &to, &r.data);
    }
    wait_until(Duration::from_secs(120), "B delivers everything", || {
        b.delivered().len() >= sent.len()
    });
    let delivered = b.delivered();
    for original in &sent {
        let tag_end = original.iter().position(|&c| c == b'\n').unwrap() + 1;
        let tag = &original[..tag_end];
        let got = delivered
            .iter()
            .find(|d| contains(d, tag))
            .unwrap_or_else(|| panic!("not delivered: {}", String::from_utf8_lossy(tag)));
        // The original follows the headers the gateways add, byte for byte.
        let at = got.windows(tag.len()).position(|w| w == tag).unwrap();
        assert_eq!(
            &got[at..],
            &original[..],
            "{}",
            String::from_utf8_lossy(tag)
        );
        let added = String::from_utf8_lossy(&got[..at]);
        assert!(
            added.contains("X-Postern-Decrypted: gw.partner.example"),
            "{added}"
        );
        assert!(
            added.contains("X-Postern-Signature: valid; signer=alice@corp.example\r\n"),
            "{added}"
        );
    }

    // The queue records the verdict.
    let shown = newest_copy(&b);
    assert!(
        shown.contains("decrypted; signature valid; signer=alice@corp.example"),
        "{shown}"
    );

    // A blind copy gets a sealed message of its own: the To recipient's does not name it.
    let bcc = crlf(
        b"From: alice@corp.example\nTo: bob@partner.example\nSubject: with a blind copy\n\nhello\n",
    );
    send(
        a.smtp,
        "alice@corp.example",
        &["bob@partner.example", "carol@partner.example"],
        &bcc,
    );
    let copies = collect(&wire, 2, Duration::from_secs(60));
    let for_bob = copies
        .iter()
        .find(|r| r.to == ["bob@partner.example"])
        .unwrap();
    let for_carol = copies
        .iter()
        .find(|r| r.to == ["carol@partner.example"])
        .unwrap();
    assert!(!contains(&sealed_of(&for_bob.data), b"carol"));
    assert!(contains(
        &sealed_of(&for_carol.data),
        b"carol@partner.example"
    ));

    // The marker alone is not trusted: a plain message claiming to be encrypted is encrypted
    // on its way out, and passes as the plain message it is on its way in.
    let forged = crlf(
        b"From: alice@corp.example\nTo: bob@partner.example\nSubject: forged marker\nX-PP-ENCRYPTED: TRUE\n\nThis plain text claims to be encrypted.\n",
    );
    send(
        a.smtp,
        "alice@corp.example",
        &["bob@partner.example"],
        &forged,
    );
    let out = collect(&wire, 1, Duration::from_secs(30));
    assert!(contains(&out[0].data, b"encrypted_message.htm"));
    assert!(!contains(&out[0].data, b"This plain text claims"));
    let before = b.delivered().len();
    send(
        b.smtp,
        "mallory@elsewhere.example",
        &["bob@partner.example"],
        &forged,
    );
    wait_until(Duration::from_secs(30), "the forged message passes", || {
        b.delivered().len() == before + 1
    });
    let passed = b
        .delivered()
        .into_iter()
        .find(|d| contains(d, b"This plain text claims"))
        .unwrap();
    assert!(!contains(&passed, b"X-Postern-Decrypted"));
    assert!(!contains(&passed, b"X-Postern-Signature"));
    drop(keyserver);
}

/// A key server, gateway A (`corp.example`, its external mail to the recorder `wire`) and
/// gateway B (`partner.example`), with `[gateway]` extras for each.
struct Pair {
    dir: tempfile::TempDir,
    keyserver: KeyServer,
    a: Gateway,
    b: Gateway,
    wire: Receiver<Recorded>,
}

fn pair(extra_a: &str, extra_b: &str, fake_now: Option<u64>) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let keyserver = KeyServer::start(dir.path(), None, fake_now);
    let token_a = keyserver.token("gw-a", "corp.example", dir.path());
    let token_b = keyserver.token("gw-b", "partner.example", dir.path());
    let (wire_port, wire) = testkit::smtp_recorder_thread();
    let a = gateway(
        dir.path(),
        "a",
        "corp.example",
        &keyserver.url(),
        &token_a,
        &format!("127.0.0.1:{wire_port}"),
        extra_a,
        fake_now,
    );
    let b = gateway(
        dir.path(),
        "b",
        "partner.example",
        &keyserver.url(),
        &token_b,
        "maildir:/nonexistent",
        extra_b,
        fake_now,
    );
    Pair {
        dir,
        keyserver,
        a,
        b,
        wire,
    }
}

/// `queue show` of the newest transformed copy at `g`.
fn newest_copy(g: &Gateway) -> String {
    let listed =
        String::from_utf8(run(&["queue", "list", "--config", s(&g.config)]).stdout).unwrap();
    let child = listed
        .lines()
        .find(|l| l.contains("Derived"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    String::from_utf8(run(&["queue", "show", &child, "--config", s(&g.config)]).stdout).unwrap()
}

fn errored_list(g: &Gateway) -> String {
    String::from_utf8(run(&["errored", "list", "--config", s(&g.config)]).stdout).unwrap()
}

#[test]
fn a_key_server_outage_errors_only_what_needs_an_uncached_key_and_it_flows_when_the_server_returns()
{
    // A signs only with the sender's own key, so that a sender without a cached key waits.
    let Pair {
        dir: _dir,
        mut keyserver,
        a,
        mut b,
        wire,
    } = pair("use_default_sender = false\n", "", None);
    let relay = |r: &Recorded, to: SocketAddr| {
        let rcpts: Vec<&str> = r.to.iter().map(String::as_str).collect();
        send(to, &r.from, &rcpts, &r.data);
    };
    let msg = |from: &str, to: &str, subject: &str| {
        crlf(
            format!("From: {from}\nTo: {to}\nSubject: {subject}\n\nThe body of {subject}.\n")
                .as_bytes(),
        )
    };

    // Warm the caches: alice's signing key at A, bob's decryption key at B.
    send(
        a.smtp,
        "alice@corp.example",
        &["bob@partner.example"],
        &msg("alice@corp.example", "bob@partner.example", "warm"),
    );
    let warm = collect(&wire, 1, Duration::from_secs(30));
    relay(&warm[0], b.smtp);
    wait_until(Duration::from_secs(30), "the first message", || {
        b.delivered().len() == 1
    });

    keyserver.proc.stop();

    // Cached keys keep mail moving.
    send(
        a.smtp,
        "alice@corp.example",
        &["bob@partner.example"],
        &msg("alice@corp.example", "bob@partner.example", "cached"),
    );
    let cached = collect(&wire, 1, Duration::from_secs(30));
    relay(&cached[0], b.smtp);
    wait_until(Duration::from_secs(30), "mail with cached keys", || {
        b.delivered().len() == 2
    });

    // Mail needing an uncached key waits: dave's signing key at A, carol's decryption key at B.
    send(
        a.smtp,
        "dave@corp.example",
        &["bob@partner.example"],
        &msg("dave@corp.example", "bob@partner.example", "from dave"),
    );
    send(
        a.smtp,
        "alice@corp.example",
        &["carol@partner.example"],
        &msg("alice@corp.example", "carol@partner.example", "to carol"),
    );
    let to_carol = collect(&wire, 1, Duration::from_secs(30));
    assert_eq!(to_carol[0].to, ["carol@partner.example"]);
    relay(&to_carol[0], b.smtp);
    wait_until(
        Duration::from_secs(30),
        "both in the errored queues",
        || {
            errored_list(&a).contains("dave@corp.example")
                && errored_list(&b).contains("carol@partner.example")
        },
    );
    let listed = errored_list(&b);
    assert!(listed.contains("unreachable"), "{listed}");
    // Nothing went out for them, in clear or otherwise.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        wire.try_recv().is_err(),
        "dave's message left A without its key"
    );
    assert_eq!(b.delivered().len(), 2);

    // The key server returns: both are delivered with no manual step, within a minute.
    keyserver.proc.start();
    let from_dave = collect(&wire, 1, Duration::from_secs(60));
    assert!(contains(&from_dave[0].data, b"X-PP-ENCRYPTED: TRUE"));
    assert!(!contains(&from_dave[0].data, b"The body of from dave"));
    wait_until(Duration::from_secs(60), "carol's message delivered", || {
        b.delivered()
            .iter()
            .any(|d| contains(d, b"The body of to carol."))
    });
    relay(&from_dave[0], b.smtp);
    wait_until(Duration::from_secs(30), "dave's message delivered", || {
        b.delivered()
            .iter()
            .any(|d| contains(d, b"X-Postern-Signature: valid; signer=dave@corp.example"))
    });
    assert!(!errored_list(&b).contains("carol"));

    // With automatic retries far apart, `errored resend` delivers by hand.
    b.proc.stop();
    let config = fs::read_to_string(&b.proc.config).unwrap().replace(
        "[gateway]\n",
        "[gateway]\nerrored_retry_initial_secs = 3600\nerrored_retry_max_secs = 3600\nkeyserver_probe_secs = 3600\n",
    );
    fs::write(&b.proc.config, config).unwrap();
    keyserver.proc.stop();
    b.proc.start();
    send(
        a.smtp,
        "alice@corp.example",
        &["erin@partner.example"],
        &msg("alice@corp.example", "erin@partner.example", "to erin"),
    );
    let to_erin = collect(&wire, 1, Duration::from_secs(30));
    relay(&to_erin[0], b.smtp);
    wait_until(Duration::from_secs(30), "erin's message errored", || {
        errored_list(&b).contains("erin@partner.example")
    });
    keyserver.proc.start();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        errored_list(&b).contains("erin@partner.example"),
        "retried before it was due"
    );
    let out = run(&["errored", "resend", "--all", "--config", s(&b.config)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 message(s), 1 recipient(s)"));
    wait_until(
        Duration::from_secs(30),
        "erin's message delivered after the resend",
        || {
            b.delivered()
                .iter()
                .any(|d| contains(d, b"The body of to erin."))
        },
    );
    let none = postern()
        .args([
            "errored",
            "resend",
            "--id",
            "nosuchid",
            "--config",
            s(&b.config),
        ])
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("not in the errored queue"));
}

/// 2027-01-28 12:00 UTC and 2027-02-01 12:00 UTC.
const JAN_28: u64 = 1_801_310_400;
const FEB_1: u64 = 1_801_656_000;

#[test]
fn keys_prefetched_on_the_28th_carry_mail_over_the_turn_of_the_month_with_the_key_server_down() {
    // Prefetch runs every second here; A signs only with the sender's own key.
    let Pair {
        dir: _dir,
        mut keyserver,
        mut a,
        mut b,
        wire,
    } = pair(
        "use_default_sender = false\nprefetch_interval_secs = 1\n",
        "prefetch_interval_secs = 1\n",
        Some(JAN_28),
    );
    let message = |subject: &str| {
        crlf(format!("From: alice@corp.example\nTo: bob@partner.example\nSubject: {subject}\n\nThe body of {subject}.\n").as_bytes())
    };
    // January mail makes alice and bob users their gateways know.
    send(
        a.smtp,
        "alice@corp.example",
        &["bob@partner.example"],
        &message("january"),
    );
    let jan = collect(&wire, 1, Duration::from_secs(30));
    send(b.smtp, &jan[0].from, &["bob@partner.example"], &jan[0].data);
    wait_until(Duration::from_secs(30), "January mail delivered", || {
        b.delivered().len() == 1
    });
    // Both gateways fetch February's keys for them inside the prefetch window.
    wait_until(Duration::from_secs(60), "February keys prefetched", || {
        let issued =
            String::from_utf8(run(&["keys", "audit", "--config", keyserver.config()]).stdout)
                .unwrap();
        issued.lines().any(|l| {
            l.contains("alice@corp.example")
                && l.contains("2027-02")
                && l.contains("\tsign\tissued")
        }) && issued.lines().any(|l| {
            l.contains("bob@partner.example")
                && l.contains("2027-02")
                && l.contains("\tdecrypt\tissued")
        })
    });

    // The 1st of February: the key server is down; mail still flows both ways.
    keyserver.proc.stop();
    a.proc.stop();
    b.proc.stop();
    a.proc.fake_now = Some(FEB_1);
    b.proc.fake_now = Some(FEB_1);
    a.proc.start();
    b.proc.start();
    send(
        a.smtp,
        "alice@corp.example",
        &["bob@partner.example"],
        &message("february"),
    );
    let feb = collect(&wire, 1, Duration::from_secs(30));
    assert!(contains(&feb[0].data, b"X-PP-ENCRYPTED: TRUE"));
    send(b.smtp, &feb[0].from, &["bob@partner.example"], &feb[0].data);
    wait_until(Duration::from_secs(30), "February mail delivered", || {
        b.delivered()
            .iter()
            .any(|d| contains(d, b"The body of february."))
    });
    let got = b
        .delivered()
        .into_iter()
        .find(|d| contains(d, b"The body of february."))
        .unwrap();
    assert!(contains(
        &got,
        b"X-Postern-Signature: valid; signer=alice@corp.example\r\n"
    ));
    let detail = newest_copy(&a);
    assert!(
        detail.contains("(2027-02); signed as alice@corp.example"),
        "{detail}"
    );
}

#[test]
fn mail_that_waits_past_the_errored_lifetime_is_bounced_to_its_sender_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // No key server ever answers, and nothing is cached.
    let dead = testkit::free_port();
    let token = dir.path().join("token");
    fs::write(&token, "pgw_not_a_real_token\n").unwrap();
    let (wire_port, wire) = testkit::smtp_recorder_thread();
    let a = gateway(
        dir.path(),
        "a",
        "corp.example",
        &format!("http://127.0.0.1:{dead}"),
        &token,
        &format!("127.0.0.1:{wire_port}"),
        "errored_retry_initial_secs = 1\nerrored_retry_max_secs = 1\nerrored_lifetime_secs = 3\n",
        None,
    );
    let m = crlf(b"From: alice@corp.example\nTo: bob@partner.example\nSubject: never sealed\n\nThe secret plan.\n");
    send(a.smtp, "alice@corp.example", &["bob@partner.example"], &m);
    wait_until(
        Duration::from_secs(30),
        "the message in the errored queue",
        || errored_list(&a).contains("bob@partner.example"),
    );
    // After the lifetime the sender is told why, and the message is gone from the queue.
    wait_until(Duration::from_secs(60), "the bounce to alice", || {
        a.delivered()
            .iter()
            .any(|d| contains(d, b"Undelivered Mail Returned to Sender"))
    });
    let bounce = a
        .delivered()
        .into_iter()
        .find(|d| contains(d, b"Undelivered Mail Returned to Sender"))
        .unwrap();
    let text = String::from_utf8_lossy(&bounce);
    assert!(text.contains("Delivered-To: alice@corp.example"), "{text}");
    assert!(
        text.contains("<bob@partner.example>: 5.7.0 could not be encrypted or decrypted in time"),
        "{text}"
    );
    assert!(text.contains("unreachable"), "{text}");
    assert!(
        !text.contains("The secret plan."),
        "the bounce quotes the body"
    );
    assert!(!errored_list(&a).contains("bob@partner.example"));
    // Nothing ever left for bob.
    assert!(wire.try_recv().is_err());
}

#[test]
fn decrypted_mail_can_be_encrypted_again_for_internal_delivery() {
    let Pair {
        dir: _dir,
        keyserver: _keyserver,
        a,
        b,
        wire,
    } = pair("", "reencrypt_inbound = true\n", None);
    let m = crlf(b"From: alice@corp.example\nTo: bob@partner.example\nSubject: scanned then sealed\n\nThe body stays sealed on the last hop.\n");
    send(a.smtp, "alice@corp.example", &["bob@partner.example"], &m);
    let crossed = collect(&wire, 1, Duration::from_secs(30));
    send(
        b.smtp,
        &crossed[0].from,
        &["bob@partner.example"],
        &crossed[0].data,
    );
    wait_until(Duration::from_secs(30), "B delivers", || {
        b.delivered().len() == 1
    });
    let got = &b.delivered()[0];
    assert!(contains(got, b"X-PP-ENCRYPTED: TRUE"));
    assert!(contains(got, b"X-Postern-Encrypted: gw.partner.example"));
    assert!(!contains(got, b"The body stays sealed"));
    // Sealed to bob, signed by B's default sender.
    let sealed = sealed_of(got);
    assert!(contains(&sealed, b"bob@partner.example"));
    assert!(contains(&sealed, b"postmaster@partner.example"));
    let shown = newest_copy(&b);
    assert!(
        shown.contains("signature valid; signer=alice@corp.example; encrypted again for delivery"),
        "{shown}"
    );
}

#[test]
fn decrypt_scan_reencrypt_holds_what_the_plain_text_trips_and_seals_the_rest_again() {
    let Pair {
        dir,
        keyserver: _keyserver,
        a,
        b,
        wire,
    } = pair("", "", None);
    // B opens inbound encrypted mail, scans the plain text, and seals it again; a rule on the
    // plain body (which cannot match the encrypted email itself) holds payroll mail.
    let policy = dir.path().join("b-policy.toml");
    fs::write(
        &policy,
        "[[rule]]\norder = 1\nname = \"Open, scan, seal\"\ndirection = \"inbound\"\n\
conditions = [{ on = \"encrypted\" }]\nactions = [{ do = \"decrypt_scan_reencrypt\" }]\n\n\
[[rule]]\norder = 2\nname = \"Hold payroll\"\nconditions = [{ on = \"body\", keywords = [\"payroll\"] }]\n\
actions = [{ do = \"quarantine\", area = \"HR\" }]\n\n\
[[rule]]\norder = 3\nname = \"Rest\"\nactions = [{ do = \"pass\" }]\n",
    )
    .unwrap();
    run(&["policy", "import", s(&policy), "--config", s(&b.config)]);
    for (subject, body) in [
        ("numbers", "The payroll for March is attached."),
        ("lunch", "Lunch at noon?"),
    ] {
        let m = crlf(
            format!(
                "From: alice@corp.example\nTo: bob@partner.example\nSubject: {subject}\n\n{body}\n"
            )
            .as_bytes(),
        );
        send(a.smtp, "alice@corp.example", &["bob@partner.example"], &m);
        let crossed = collect(&wire, 1, Duration::from_secs(30));
        assert!(
            !contains(&crossed[0].data, body.as_bytes()),
            "crossed in clear"
        );
        send(
            b.smtp,
            &crossed[0].from,
            &["bob@partner.example"],
            &crossed[0].data,
        );
    }
    wait_until(
        Duration::from_secs(30),
        "B holds the payroll message",
        || {
            let q = run(&[
                "quarantine",
                "query",
                "--area",
                "HR",
                "--config",
                s(&b.config),
            ]);
            let q = String::from_utf8_lossy(&q.stdout).to_string();
            q.contains("Hold payroll") && q.contains("in the decrypted message")
        },
    );
    wait_until(Duration::from_secs(30), "B delivers the other", || {
        b.delivered().len() == 1
    });
    let got = &b.delivered()[0];
    assert!(contains(got, b"X-PP-ENCRYPTED: TRUE"), "sealed again");
    assert!(!contains(got, b"Lunch at noon"));
    assert!(!contains(got, b"payroll"));
    // Nothing plain was kept: the quarantine holds the encrypted email as it arrived.
    let q = run(&[
        "quarantine",
        "query",
        "--area",
        "HR",
        "--config",
        s(&b.config),
    ]);
    let q = String::from_utf8_lossy(&q.stdout).to_string();
    assert!(q.contains("numbers"), "{q}");
    // Released, it is opened and sealed again without being held by the same rule twice.
    let id = q.split_whitespace().next().unwrap().to_string();
    run(&[
        "quarantine",
        "release",
        "--id",
        &id,
        "--config",
        s(&b.config),
    ]);
    wait_until(
        Duration::from_secs(30),
        "B delivers the released message",
        || b.delivered().len() == 2,
    );
    assert!(
        b.delivered()
            .iter()
            .all(|m| contains(m, b"X-PP-ENCRYPTED: TRUE"))
    );
}
