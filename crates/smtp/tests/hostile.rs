//! Hostile SMTP clients against the gateway's SMTP side on loopback: smuggling with every line
//! ending around the final dot, arbitrary command bytes, clients that trickle, and a stop while
//! sessions are open. Loopback addresses 127.0.0.2, ... stand for other hosts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Everything the server says until it closes the connection (or 10 s pass).
async fn replies_until_closed(raw: &mut Raw) -> String {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.r.read_to_end(&mut all)).await;
    String::from_utf8_lossy(&all).into_owned()
}

/// The line endings a smuggler can put around the dot: CRLF, LF, CR, or none.
const ENDINGS: [&str; 4] = ["\r\n", "\n", "\r", ""];

fn smuggling_attempt(before: &str, after: &str) -> String {
    format!(
        "From: a@corp.example\r\nSubject: carrier\r\n\r\nhello{before}.{after}\
         MAIL FROM:<ceo@corp.example>\r\nRCPT TO:<victim@corp.example>\r\nDATA\r\n\
         From: ceo@corp.example\r\nSubject: smuggled\r\n\r\nwire the money\r\n.\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_ending_around_the_dot_smuggles_a_second_transaction() {
    // Refused (the default), and normalized for a named network (127.0.0.2 here).
    let gw = start(|c| {
        c.normalize_bare_newlines_from = vec!["127.0.0.2/32".parse().unwrap()];
    })
    .await;
    let mut accepted = 0;
    for from in [IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2])] {
        for before in ENDINGS {
            for after in ENDINGS {
                if before == "\r\n" && after == "\r\n" {
                    continue;
                }
                let (mut s, _) = Raw::connect_from(gw.addr, from).await;
                s.send("EHLO client.test").await;
                // Pipelined, as a smuggler sends it: the whole transaction, the real end, QUIT.
                let attempt = format!(
                    "MAIL FROM:<a@corp.example>\r\nRCPT TO:<b@corp.example>\r\nDATA\r\n{}\r\n.\r\nQUIT\r\n",
                    smuggling_attempt(before, after)
                );
                s.w.write_all(attempt.as_bytes()).await.unwrap();
                let said = replies_until_closed(&mut s).await;
                let queued = said.matches(" queued as ").count();
                assert!(
                    queued <= 1,
                    "{before:?}.{after:?} from {from}: a second transaction: {said}"
                );
                let bare = [before, after].iter().any(|e| *e == "\n" || *e == "\r");
                if from == IpAddr::from([127, 0, 0, 1]) && bare {
                    assert!(
                        said.contains("521 5.5.2 bare LF or CR"),
                        "{before:?}.{after:?}: not refused: {said}"
                    );
                    assert_eq!(queued, 0, "{said}");
                } else {
                    // Normalized, or nothing bare: one message holding all of it.
                    assert_eq!(queued, 1, "{before:?}.{after:?} from {from}: {said}");
                }
                accepted += queued;
            }
        }
    }
    // What was accepted arrives as one message each, with the would-be second transaction
    // inside its text and no bare CR (the sink shows CRLF as LF).
    let mut gw = gw;
    for _ in 0..accepted {
        let m = gw.next_message().await;
        let header = m.split("\n\n").next().unwrap();
        assert!(header.contains("Subject: carrier"), "{m}");
        assert!(!header.contains("Subject: smuggled"), "{m}");
        assert!(m.contains("wire the money"), "{m}");
        assert!(!m.contains('\r'), "a bare CR left: {m:?}");
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(2), gw.sink.recv())
            .await
            .is_err(),
        "more messages than transactions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_newline_in_a_command_is_refused_and_one_with_crlf_works() {
    let gw = start(|_| {}).await;
    let (mut s, _) = Raw::connect(gw.addr).await;
    s.w.write_all(b"EHLO client.test\n").await.unwrap();
    let reply = s.reply().await;
    assert!(reply.starts_with("500 5.5.2 bare LF"), "{reply}");
    s.w.write_all(b"EHLO client.test\rMAIL FROM:<a@corp.example>\r\n")
        .await
        .unwrap();
    let reply = s.reply().await;
    assert!(
        reply.starts_with("500 5.5.2 a control character"),
        "{reply}"
    );
    assert!(s.send("EHLO client.test").await.starts_with("250"));
}

/// Command lines a hostile client might send: arbitrary bytes, often after a real verb.
fn command_bytes() -> impl Strategy<Value = Vec<u8>> {
    let verbs = prop::sample::select(vec![
        "",
        "MAIL FROM:",
        "MAIL FROM:<",
        "RCPT TO:<",
        "RCPT TO:",
        "EHLO ",
        "HELO ",
        "AUTH ",
        "NOOP ",
        "VRFY ",
        "MAIL ",
        "RCPT ",
        // Every cut of the verbs' prefixes, where a multi-byte character may begin.
        "MAIL F",
        "MAIL FR",
        "MAIL FRO",
        "MAIL FROM",
        "RCPT T",
        "RCPT TO",
        "mail from:<a@",
        "RCPT TO:<postmaster",
    ]);
    let bytes = prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            // Bytes of multi-byte UTF-8 characters, whole or cut.
            prop::sample::select(vec![0xc3u8, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f]),
            prop::sample::select(vec![b'<', b'>', b'@', b':', b' ', b'=']),
        ],
        0..80,
    );
    // Valid UTF-8 too, or the parser stops at "not UTF-8" before reading any further.
    let text = "[é€😀<>@: =a-zA-Z0-9]{0,40}".prop_map(String::into_bytes);
    let tail = prop_oneof![bytes, text];
    (verbs, tail).prop_map(|(v, t)| {
        let mut line = v.as_bytes().to_vec();
        line.extend(t.into_iter().filter(|b| *b != b'\r' && *b != b'\n'));
        line
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_command_parser_never_panics(line in command_bytes()) {
        let _ = smtp::command::parse(&line);
    }

    #[test]
    fn any_bytes_at_all_parse_or_fail(line in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Err(e) = smtp::command::parse(&line) {
            let (code, enhanced, _) = e.reply();
            prop_assert!((500..600).contains(&code));
            prop_assert!(enhanced.starts_with('5'));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_command_bytes_get_replies_never_a_dead_session() {
    // Errors are the point here: do not close the session for having too many.
    let gw = start(|c| c.max_errors = u32::MAX).await;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    let lines: Vec<Vec<u8>> = (0..300)
        .map(|_| command_bytes().new_tree(&mut runner).unwrap().current())
        .collect();
    let mut fixed: Vec<Vec<u8>> = [
        "MAIL FROM:é<a@corp.example>",
        "MAIL FROMé",
        "RCPT TOé",
        "RCPT TO:<é@corp.example>",
        "MAIL FROM:<\u{1F600}@corp.example> SMTPUTF8",
        "EHLO é",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fixed.extend(lines);
    let (mut s, _) = Raw::connect(gw.addr).await;
    s.send("EHLO client.test").await;
    for line in fixed {
        let mut bytes = line.clone();
        bytes.extend_from_slice(b"\r\n");
        s.w.write_all(&bytes).await.unwrap();
        let reply = s.reply().await;
        let code: u16 = reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        assert!(
            (200..600).contains(&code),
            "no reply to {:?}: {reply:?}",
            String::from_utf8_lossy(&line)
        );
        // Replies that end or change the session: start again.
        if matches!(code, 221 | 421 | 220 | 334) || reply.ends_with("<closed>") {
            s = Raw::connect(gw.addr).await.0;
            s.send("EHLO client.test").await;
            continue;
        }
        if code == 250 {
            // A transaction may have opened: close it so the next MAIL is judged alone.
            s.send("RSET").await;
        }
        let noop = s.send("NOOP").await;
        assert!(
            noop.starts_with("250"),
            "the session died after {:?}: {noop}",
            String::from_utf8_lossy(&line)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmaster_without_a_domain_is_accepted() {
    // 127.0.0.9 stands for a host on the internet: not a client network, so not a relay.
    let mut gw = start(|c| c.client_networks = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let (mut s, _) = Raw::connect_from(gw.addr, [127, 0, 0, 9].into()).await;
    s.send("EHLO outside.test").await;
    assert!(
        s.send("MAIL FROM:<someone@outside.test>")
            .await
            .starts_with("250")
    );
    let reply = s.send("RCPT TO:<Postmaster>").await;
    assert!(reply.starts_with("250 2.1.5"), "{reply}");
    assert!(
        s.data("Subject: hello postmaster\r\n\r\nhi")
            .await
            .starts_with("250")
    );
    let m = gw.next_message().await;
    assert!(m.contains("Subject: hello postmaster"), "{m}");
    let listed = gw.queue.list(None, 100).await.unwrap();
    assert!(
        listed.iter().any(|m| m
            .recipients
            .iter()
            .any(|r| r.address == "postmaster@corp.example")),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bypass_port_takes_mail_only_from_trusted_hops() {
    let gw = start(|_| {}).await;
    // 127.0.0.9 is outside the client networks (127.0.0.0/8 by default): narrow them.
    let gw2 = start(|c| c.client_networks = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let (mut s, _) = Raw::connect_from(gw2.bypass, [127, 0, 0, 9].into()).await;
    s.send("EHLO outside.test").await;
    let reply = s.send("MAIL FROM:<x@outside.test>").await;
    assert!(reply.starts_with("530 5.7.1"), "{reply}");
    assert!(reply.contains("trusted hops"), "{reply}");
    // From a client network it works.
    let (mut s, _) = Raw::connect(gw.bypass).await;
    s.send("EHLO inside.test").await;
    assert!(
        s.send("MAIL FROM:<x@corp.example>")
            .await
            .starts_with("250")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_trickled_a_byte_at_a_time_meets_its_deadline() {
    let gw = start(|c| c.command_timeout_secs = 2).await;
    let (mut s, _) = Raw::connect(gw.addr).await;
    let started = Instant::now();
    // One byte every 300 ms: each read is quick, the command never ends.
    let closed = loop {
        if s.w.write_all(b"N").await.is_err() || started.elapsed() > Duration::from_secs(15) {
            break false;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), s.r.read(&mut buf)).await
        {
            let said = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(said.starts_with("421 4.4.2"), "{said}");
            break true;
        }
    };
    assert!(closed, "the trickling session was never closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_trickling_sessions_leave_room_for_a_client_that_speaks() {
    let gw = start(|_| {}).await;
    // 1,000 sessions from ten addresses fill every slot (1,000) and each address's share (100).
    let mut tricklers = Vec::new();
    for i in 0..1000u32 {
        let from = IpAddr::from([127, 0, 0, 2 + (i % 10) as u8]);
        let (mut s, greeting) = Raw::connect_from(gw.addr, from).await;
        assert!(greeting.starts_with("220"), "{i}: {greeting}");
        s.w.write_all(b"EH").await.unwrap();
        tricklers.push(s);
    }
    // They go on trickling while the newcomer arrives.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for s in tricklers.iter_mut().take(50) {
        let _ = s.w.write_all(b"L").await;
    }
    let started = Instant::now();
    let (mut s, greeting) = Raw::connect_from(gw.addr, [127, 0, 0, 1].into()).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    s.send("EHLO client.test").await;
    assert!(
        s.send("MAIL FROM:<a@corp.example>")
            .await
            .starts_with("250")
    );
    assert!(s.send("RCPT TO:<b@corp.example>").await.starts_with("250"));
    let reply = s.data("Subject: through the crowd\r\n\r\nhi").await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served in {:?}",
        started.elapsed()
    );
    // One trickler made room: it was told why.
    let mut told = 0;
    for t in tricklers.iter_mut() {
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(2), t.r.read(&mut buf)).await
            && String::from_utf8_lossy(&buf[..n]).contains("421 4.4.2 too many connections")
        {
            told += 1;
        }
    }
    assert!(told >= 1, "no stalled session was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_the_transaction_finish_then_refuses_the_next() {
    let gw = start(|_| {}).await;
    let (mut busy, _) = Raw::connect(gw.addr).await;
    let (mut idle, _) = Raw::connect(gw.addr).await;
    busy.send("EHLO client.test").await;
    idle.send("EHLO client.test").await;
    assert!(
        busy.send("MAIL FROM:<a@corp.example>")
            .await
            .starts_with("250")
    );
    assert!(
        busy.send("RCPT TO:<b@corp.example>")
            .await
            .starts_with("250")
    );
    gw.stop.send(true).unwrap();
    // The idle session is told at once; the open transaction completes.
    let said = replies_until_closed(&mut idle).await;
    assert!(said.starts_with("421 4.3.2"), "{said}");
    let reply = busy.data("Subject: in flight\r\n\r\nhi").await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let reply = busy.send("MAIL FROM:<a@corp.example>").await;
    assert!(reply.starts_with("421 4.3.2"), "{reply}");
    assert!(replies_until_closed(&mut busy).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_and_authentication_results_naming_the_gateway_are_removed_on_the_way_in() {
    // The bypass port, from a trusted hop; and the policy port from a host on the internet.
    let mut gw = start(|c| c.client_networks = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let forged = "X-Postern-Signature: valid; signer=ceo@corp.example\r\n\
                  Authentication-Results: gw.test;\r\n dkim=pass header.d=corp.example\r\n\
                  Authentication-Results: mx.partner.example; spf=pass\r\n\
                  Subject: forged verdicts\r\n\r\nbody\r\n";
    for (port, from) in [(gw.bypass, [127, 0, 0, 1]), (gw.addr, [127, 0, 0, 9])] {
        let (mut s, _) = Raw::connect_from(port, from.into()).await;
        s.send("EHLO client.test").await;
        assert!(
            s.send("MAIL FROM:<x@partner.example>")
                .await
                .starts_with("250")
        );
        assert!(s.send("RCPT TO:<b@corp.example>").await.starts_with("250"));
        assert!(s.data(forged).await.starts_with("250"));
        let m = gw.next_message().await;
        assert!(m.contains("Subject: forged verdicts"), "{m}");
        assert!(!m.contains("X-Postern-Signature"), "{m}");
        assert!(!m.contains("gw.test;"), "{m}");
        assert!(
            m.contains("Authentication-Results: mx.partner.example; spf=pass"),
            "{m}"
        );
    }
}
