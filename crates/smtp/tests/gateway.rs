//! The gateway's SMTP side with real peers on loopback: swaks and Python's smtplib send through
//! it to an SMTP listener acting as next hop; relay control, AUTH and every limit are exercised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use store::Source;
use tokio::process::Command;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_and_smtplib_send_through_the_gateway_with_starttls_and_auth() {
    let mut gw = start(|_| {}).await;

    let (ok, log) = swaks(
        gw.addr,
        &[
            "--from",
            "alice@corp.example",
            "--to",
            "bob@partner.example",
            "--header",
            "Message-ID: <plain@test>",
        ],
    )
    .await;
    assert!(ok, "{log}");
    assert!(gw.next_message().await.contains("Message-ID: <plain@test>"));

    let (ok, log) = swaks(
        gw.addr,
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "relay",
            "--auth-password",
            PASSWORD,
            "--from",
            "alice@corp.example",
            "--to",
            "carol@partner.example",
            "--header",
            "Message-ID: <tls-auth@test>",
        ],
    )
    .await;
    assert!(ok, "{log}");
    assert!(log.contains("TLS started"), "{log}");
    assert!(log.contains("235 2.7.0"), "{log}");
    let received = gw.next_message().await;
    assert!(received.contains("Message-ID: <tls-auth@test>"));
    assert!(received.contains("with ESMTPS"), "{received}");

    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port}, timeout=20)
s.starttls(context=ctx)
s.login("relay", "{PASSWORD}")
msg = "From: a@corp.example\r\nTo: d@partner.example\r\nSubject: via smtplib\r\nMessage-ID: <smtplib@test>\r\n\r\n.leading dot\r\nbody\r\n"
refused = s.sendmail("a@corp.example", ["d@partner.example", "e@partner.example"], msg)
assert not refused, refused
s.quit()
"#,
        port = gw.addr.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received = gw.next_message().await;
    assert!(received.contains("Message-ID: <smtplib@test>"));
    assert!(
        received.contains("\n.leading dot\n"),
        "dot-stuffing must round-trip: {received}"
    );

    // The bypass port delivers too.
    let (ok, log) = swaks(
        gw.bypass,
        &[
            "--from",
            "alice@corp.example",
            "--to",
            "bob@partner.example",
            "--header",
            "Message-ID: <bypass@test>",
        ],
    )
    .await;
    assert!(ok, "{log}");
    assert!(gw.next_message().await.contains("<bypass@test>"));
    let listed = gw.queue.list(None, 10).await.unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().any(|m| m.source == Source::Bypass));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_not_an_open_relay() {
    // No trusted client networks: loopback is a stranger here.
    let mut gw = start(|c| c.client_networks.clear()).await;
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--from",
            "spammer@else.example",
            "--to",
            "victim@other.example",
        ],
    )
    .await;
    assert!(!ok);
    assert!(log.contains("554 5.7.1 relaying denied"), "{log}");
    // Mail for an internal domain is welcome from anyone.
    let (ok, log) = swaks(
        gw.addr,
        &["--from", "friend@else.example", "--to", "bob@corp.example"],
    )
    .await;
    assert!(ok, "{log}");
    gw.next_message().await;
    // An authenticated client may relay.
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "relay",
            "--auth-password",
            PASSWORD,
            "--from",
            "a@corp.example",
            "--to",
            "x@other.example",
        ],
    )
    .await;
    assert!(ok, "{log}");
    gw.next_message().await;
    // A wrong password is refused.
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "relay",
            "--auth-password",
            "wrong",
            "--from",
            "a@corp.example",
            "--to",
            "x@other.example",
        ],
    )
    .await;
    assert!(!ok);
    assert!(log.contains("535 5.7.8"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_answers_with_its_code() {
    let gw = start(|c| {
        c.max_message_size = 4000;
        c.max_recipients = 2;
        c.max_header_size = 600;
        c.command_timeout_secs = 1;
        c.max_connections_per_client = 3;
    })
    .await;
    let (mut s, greeting) = Raw::connect(gw.addr).await;
    assert!(greeting.starts_with("220 gw.test ESMTP"), "{greeting}");
    let ehlo = s.send("EHLO client.test").await;
    for ext in [
        "PIPELINING",
        "SIZE 4000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing from {ehlo}");
    }
    assert!(
        !ehlo.contains("AUTH"),
        "AUTH must not be offered in clear: {ehlo}"
    );
    assert!(s.send("VRFY bob").await.starts_with("502 5.5.1"));
    assert!(
        s.send("RCPT TO:<bob@corp.example>")
            .await
            .starts_with("503 5.5.1")
    );
    assert!(
        s.send("MAIL FROM:<a@corp.example> SIZE=999999")
            .await
            .starts_with("552 5.3.4")
    );
    assert!(
        s.send("MAIL FROM:<a@corp.example>")
            .await
            .starts_with("250 2.1.0")
    );
    assert!(
        s.send("MAIL FROM:<a@corp.example>")
            .await
            .starts_with("503 5.5.1")
    );
    assert!(s.send("RCPT TO:<a@corp.example>").await.starts_with("250"));
    assert!(s.send("RCPT TO:<b@corp.example>").await.starts_with("250"));
    assert!(
        s.send("RCPT TO:<c@corp.example>")
            .await
            .starts_with("452 4.5.3")
    );
    // Too large.
    // 80 lines of 70 bytes: over the 4000-byte limit, every line within the line limit.
    let big = format!(
        "Subject: big\r\n\r\n{}",
        vec!["x".repeat(70); 80].join("\r\n")
    );
    assert!(s.data(&big).await.starts_with("552 5.3.4"));
    // A line over 1000 bytes.
    s.send("MAIL FROM:<a@corp.example>").await;
    s.send("RCPT TO:<a@corp.example>").await;
    let long_line = format!("Subject: long\r\n\r\n{}", "y".repeat(1500));
    let reply = s.data(&long_line).await;
    assert!(
        reply.starts_with("552 5.3.4") && reply.contains("line"),
        "{reply}"
    );
    // A header over the limit.
    s.send("MAIL FROM:<a@corp.example>").await;
    s.send("RCPT TO:<a@corp.example>").await;
    let header: String = (0..20)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "z".repeat(40)))
        .collect();
    let reply = s.data(&format!("{header}\r\nbody")).await;
    assert!(
        reply.starts_with("552 5.3.4") && reply.contains("header"),
        "{reply}"
    );
    // An unknown command, and a command line that is too long.
    assert!(s.send("FROB").await.starts_with("500 5.5.2"));
    assert!(
        s.send(&format!("NOOP {}", "n".repeat(5000)))
            .await
            .starts_with("500 5.5.6")
    );
    // Nothing sent for longer than the command timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = s.reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");

    // Connections per client.
    let mut open = Vec::new();
    for _ in 0..3 {
        let (c, g) = Raw::connect(gw.addr).await;
        assert!(g.starts_with("220"), "{g}");
        open.push(c);
    }
    let (_, g) = Raw::connect(gw.addr).await;
    assert!(g.starts_with("421 4.7.0"), "{g}");
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_connections_and_required_authentication() {
    let gw = start(|c| {
        c.max_connections = 1;
        c.require_auth = true;
    })
    .await;
    let (mut s, _) = Raw::connect(gw.addr).await;
    let (_, g) = Raw::connect(gw.addr).await;
    assert!(g.starts_with("421 4.7.0 too many connections"), "{g}");
    s.send("EHLO c.test").await;
    assert!(
        s.send("MAIL FROM:<a@corp.example>")
            .await
            .starts_with("530 5.7.0")
    );
    assert!(
        s.send("AUTH PLAIN AHJlbGF5AHg=")
            .await
            .starts_with("538 5.7.11")
    );
    assert!(s.send("QUIT").await.starts_with("221"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_bounces_with_a_notification_to_the_sender() {
    let mut gw = start(|_| {}).await;
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--from",
            "alice@corp.example",
            "--to",
            "reject-me@partner.example,bob@partner.example",
            "--header",
            "Message-ID: <dsn@test>",
        ],
    )
    .await;
    assert!(ok, "{log}");
    // Bob gets the message; Alice gets a notification naming the refused recipient and why.
    let mut got = [gw.next_message().await, gw.next_message().await];
    got.sort_by_key(|m| m.contains("Undelivered Mail"));
    assert!(got[0].contains("Message-ID: <dsn@test>"), "{}", got[0]);
    let dsn = &got[1];
    assert!(
        dsn.contains("Subject: Undelivered Mail Returned to Sender"),
        "{dsn}"
    );
    assert!(dsn.contains("To: <alice@corp.example>"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; reject-me@partner.example"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(
        dsn.contains("Message-ID: <dsn@test>"),
        "the original header is quoted: {dsn}"
    );
    assert!(
        !dsn.contains("bob@partner.example>: "),
        "Bob was delivered: {dsn}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_towards_a_hop_defers_rather_than_sending_in_clear() {
    let mut gw = start_with(
        |_| {},
        |d| d.external_starttls = Some(smtp::TlsMode::Required),
    )
    .await;
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--from",
            "alice@corp.example",
            "--to",
            "bob@partner.example",
        ],
    )
    .await;
    assert!(ok, "{log}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        gw.sink.try_recv().is_err(),
        "sent in clear to a hop that must use TLS"
    );
    let m = &gw.queue.list(None, 1).await.unwrap()[0];
    let r = &m.recipients[0];
    assert_eq!(r.state, "deferred");
    assert!(
        r.last_reply
            .as_deref()
            .unwrap_or("")
            .contains("does not offer STARTTLS"),
        "{r:?}"
    );
}
