//! A full disk under load: the data directory of a `postern serve` fills up while outbound mail
//! (encrypted on its way) pours in, stays nearly full for a while (room for a message, not for
//! its encrypted copy), then space comes back. Every message answered 250 is
//! delivered, once, and none is quarantined as an encryption failure; every message refused
//! with 451/452 meanwhile left no file in the spool.
//!
//! Needs root: the data directory is a small tmpfs mounted for the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Gateway, s};

/// How the gateway answered a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accepted,
    /// 451 or 452: try again later.
    Refused,
    /// Anything else (a connection lost): not counted either way.
    Other,
}

fn message(id: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: load@corp.example\r\nTo: sink@partner.example\r\nSubject: full disk {id}\r\nMessage-ID: <{id}>\r\n\r\n"
    )
    .into_bytes();
    let mut n = 0u64;
    while m.len() < size {
        n += 1;
        m.extend_from_slice(format!("{id} line {n}: the quick brown fox\r\n").as_bytes());
    }
    m
}

/// Marks a message that reached the outside in clear.
const CLEAR: &str = "in clear: ";

/// Message-IDs seen by the outside listener, with how many times each came.
fn collect(rx: std::sync::mpsc::Receiver<String>) -> Arc<Mutex<HashMap<String, usize>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        while let Ok(m) = rx.recv() {
            if let Some(id) = testkit::message_id(&m) {
                // One that arrives in clear is kept apart (and fails the test).
                let encrypted =
                    m.contains("X-PP-ENCRYPTED: TRUE") && !m.contains("quick brown fox");
                let key = if encrypted {
                    id
                } else {
                    format!("{CLEAR}{id}: {}", m.chars().take(400).collect::<String>())
                };
                *s.lock().unwrap().entry(key).or_insert(0) += 1;
            }
        }
    });
    seen
}

fn postern(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(args)
        .env_remove("POSTERN_CONFIG")
        .output()
        .unwrap()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_full_data_directory_delays_mail_but_quarantines_loses_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = testkit::SmallDisk::mount(&data, "48m");
    let (sink, rx) = testkit::smtp_sink_thread();
    let seen = collect(rx);
    let gateway = Gateway::start_with(
        dir.path(),
        sink,
        "",
        "errored_retry_initial_secs = 1\nerrored_retry_max_secs = 2",
    );
    let smtp = gateway.smtp;

    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(String, Answer)>>> = Arc::default();
    let accepted = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let (stop, answers, accepted) = (stop.clone(), answers.clone(), accepted.clone());
            std::thread::spawn(move || {
                let mut conn: Option<testkit::SmtpConn> = None;
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let id = format!("full-{t}-{i}@load.test");
                    // Large ones overflow the spool's write buffer while they are sealed.
                    let size = if i % 3 == 0 { 200 * 1024 } else { 3 * 1024 };
                    if conn.is_none() {
                        conn = testkit::SmtpConn::open(smtp).ok();
                    }
                    let Some(c) = conn.as_mut() else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let answer = match c.send(
                        "load@corp.example",
                        &["sink@partner.example"],
                        &message(&id, size),
                    ) {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            Answer::Accepted
                        }
                        Err(e) => {
                            let e = e.to_string();
                            conn = None;
                            if e.contains("got 451") || e.contains("got 452") {
                                Answer::Refused
                            } else {
                                Answer::Other
                            }
                        }
                    };
                    answers.lock().unwrap().push((format!("<{id}>"), answer));
                }
            })
        })
        .collect();

    // Mail flows; then the disk fills up for a while, and space comes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted.load(Ordering::SeqCst) < 150 {
        assert!(
            Instant::now() < deadline,
            "no load; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ballast = disk.fill();
    let full_from = answers.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(4));
    // Nearly full: a large message is still accepted, but its encrypted copy does not fit.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&ballast)
        .unwrap();
    f.set_len(f.metadata().unwrap().len().saturating_sub(320 * 1024))
        .unwrap();
    drop(f);
    std::thread::sleep(Duration::from_secs(5));
    std::fs::remove_file(&ballast).unwrap();
    let full_until = answers.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    let acked: HashSet<String> = answers
        .iter()
        .filter(|(_, a)| *a == Answer::Accepted)
        .map(|(id, _)| id.clone())
        .collect();
    let refused = answers
        .iter()
        .filter(|(_, a)| *a == Answer::Refused)
        .count();
    let refused_while_full = answers[full_from..full_until]
        .iter()
        .filter(|(_, a)| *a == Answer::Refused)
        .count();
    assert!(
        refused_while_full > 0,
        "the full disk refused nothing: the test did not fill it; log:\n{}",
        gateway.log()
    );

    // Every message answered 250 arrives, once.
    let limit = Instant::now() + Duration::from_secs(60);
    let missing: Vec<String> = loop {
        let missing: Vec<String> = {
            let seen = seen.lock().unwrap();
            acked
                .iter()
                .filter(|id| !seen.contains_key(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() || Instant::now() > limit {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let config = s(&gateway.config).to_string();
    let held = postern(&[
        "quarantine",
        "query",
        "--limit",
        "100000",
        "--config",
        &config,
    ]);
    let held_text = String::from_utf8_lossy(&held.stdout).to_string();
    let duplicates: Vec<(String, usize)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (id.clone(), *n))
        .collect();
    let log = gateway.log();
    eprintln!(
        "log: {} copies waited in the errored queue ({} of them for a failed seal), {} quarantined",
        log.matches("errored: ").count(),
        log.matches("errored: cannot encrypt: cannot seal").count(),
        log.matches("quarantined: ").count(),
    );
    eprintln!(
        "answers: {} accepted, {refused} refused with 451/452 ({refused_while_full} while full), {} other; duplicates seen: {}",
        acked.len(),
        answers.len() - acked.len() - refused,
        duplicates.len()
    );
    assert!(
        held_text.trim().is_empty(),
        "messages were quarantined:\n{held_text}\n{}",
        String::from_utf8_lossy(&held.stderr)
    );
    assert!(
        missing.is_empty(),
        "{} accepted message(s) never arrived, e.g. {:?}; log:\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        gateway.log()
    );
    assert!(
        duplicates.is_empty(),
        "delivered more than once: {duplicates:?}"
    );

    // Nothing of a refused message is left: the spool holds the files of queued messages only.
    let spool = data.join("queue").join("spool");
    assert_eq!(
        files_in(&spool.join("incoming")),
        0,
        "files of refused messages are still in {}",
        spool.join("incoming").display()
    );
    // A message small enough for the database has no file: every file must be a live one's.
    let live: std::collections::HashSet<String> = ["received", "processing", "queued"]
        .iter()
        .flat_map(|state| {
            let out = postern(&[
                "queue", "list", "--state", state, "--limit", "100000", "--config", &config,
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    let unneeded: Vec<String> = std::fs::read_dir(spool.join("messages"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| !live.contains(name))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        unneeded.is_empty(),
        "message files in the spool that no queued message needs: {unneeded:?}"
    );
}
