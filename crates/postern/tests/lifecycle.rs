//! A real `postern serve` starting and stopping under mail: the first message of a fresh
//! all-in-one gateway finds its keys at once, and after SIGTERM no transaction starts while
//! what was accepted is kept and delivered after the restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Gateway;

#[test]
fn the_first_message_of_a_fresh_gateway_is_encrypted_without_waiting_for_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (external, outside) = common::outside_world(&dir.path().join("outside"));
    let gw = Gateway::launch(dir.path(), external, "", "", None);
    // Send as soon as SMTP greets: nothing else is waited for.
    let started = Instant::now();
    let mut conn = loop {
        if let Ok(c) = testkit::SmtpConn::open(gw.smtp) {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "SMTP never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    conn.send(
        "alice@corp.example",
        &["bob@partner.example"],
        b"Subject: first\r\n\r\nthe very first message\r\n",
    )
    .unwrap();
    let sent = Instant::now();
    // The errored queue retries after 30 s: arriving well before means no wait for keys.
    let m = outside
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("not delivered within 20 s; log:\n{}", gw.log()));
    assert!(
        String::from_utf8_lossy(&m.data).contains("X-PP-ENCRYPTED: TRUE"),
        "{}",
        String::from_utf8_lossy(&m.data)
    );
    assert!(
        !gw.log().contains("errored"),
        "the first message waited in the errored queue ({:?}):\n{}",
        sent.elapsed(),
        gw.log()
    );
}

/// One client's transactions: when each MAIL was sent, and whether the message was accepted.
type Tries = Arc<Mutex<Vec<(Instant, bool, String)>>>;

#[test]
fn after_sigterm_no_transaction_starts_and_nothing_accepted_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (external, _outside) = common::outside_world(&dir.path().join("outside"));
    let mut gw = Gateway::start(dir.path(), external);
    let tries: Tries = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (tries, done, smtp) = (tries.clone(), done.clone(), gw.smtp);
        clients.push(std::thread::spawn(move || {
            let Ok(mut conn) = testkit::SmtpConn::open(smtp) else {
                return;
            };
            for n in 0.. {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                let id = format!("load-{c}-{n}");
                let at = Instant::now();
                let body = format!("Subject: {id}\r\nX-Load-Id: {id}\r\n\r\nhello\r\n");
                let ok = conn
                    .send("alice@corp.example", &["bob@corp.example"], body.as_bytes())
                    .is_ok();
                tries.lock().unwrap().push((at, ok, id));
                if !ok {
                    return;
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    let signalled = Instant::now();
    Command::new("kill")
        .args(["-TERM", &gw.proc.id().to_string()])
        .status()
        .unwrap();
    for c in clients {
        c.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let tries = tries.lock().unwrap().clone();
    let accepted: Vec<&String> = tries.iter().filter(|t| t.1).map(|t| &t.2).collect();
    assert!(
        accepted.len() > 20,
        "the load did not run: {} accepted",
        accepted.len()
    );
    // A transaction begun more than 200 ms after the signal (time for it to arrive) is refused.
    let late: Vec<_> = tries
        .iter()
        .filter(|(at, ok, _)| {
            *ok && at.saturating_duration_since(signalled) > Duration::from_millis(200)
        })
        .collect();
    assert!(
        late.is_empty(),
        "{} transactions began after SIGTERM and were accepted",
        late.len()
    );

    // Everything accepted is delivered once the gateway is back.
    gw.restart();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut delivered = std::collections::HashSet::new();
        for e in std::fs::read_dir(gw.maildir.join("new"))
            .into_iter()
            .flatten()
        {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            for line in text.lines() {
                if let Some(id) = line.strip_prefix("X-Load-Id: ") {
                    delivered.insert(id.trim().to_string());
                }
            }
        }
        let missing = accepted
            .iter()
            .filter(|id| !delivered.contains(**id))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted messages were not delivered; log:\n{}",
            accepted.len(),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
