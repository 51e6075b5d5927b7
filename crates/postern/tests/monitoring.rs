//! What monitoring sees, end to end: a real gateway process, real SMTP, `/metrics` and the
//! console's status page over HTTP, and the queue's real SQLite database.
//!
//! - After one message, `/metrics` counts it where an administrator's dashboard looks
//!   (received, encrypted, delivered, its latency), in the OpenMetrics text format.
//! - When the database cannot be read, `/metrics` answers 503 instead of zeros, and the status
//!   page says "unknown" and why; both recover when the database does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Gateway, outside_world, wait_for, wait_until};

/// `/metrics`: its status, media type and text.
fn scrape(gw: &Gateway) -> (u16, String, String) {
    let answer = reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", gw.web)).unwrap();
    let status = answer.status().as_u16();
    let kind = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, answer.text().unwrap())
}

/// The value of sample `name` (with its labels, as written), if the text has it.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Checks the exposition as a scraper would: every sample belongs to a family declared with
/// `# TYPE` and `# HELP` before it, and the text ends with `# EOF`.
fn assert_well_formed(text: &str) {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut helped: HashSet<&str> = HashSet::new();
    for line in text.lines() {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        match words.as_slice() {
            ["#", "HELP", name, _] => {
                helped.insert(name);
            }
            ["#", "TYPE", name, kind] => {
                types.insert(name, kind);
            }
            ["#", "UNIT", ..] | ["#", "EOF"] => {}
            _ => {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = types
                    .iter()
                    .find(|(f, kind)| {
                        let suffixes: &[&str] = match **kind {
                            "counter" => &["_total"],
                            "histogram" => &["_bucket", "_sum", "_count"],
                            _ => &[""],
                        };
                        suffixes.iter().any(|s| name == format!("{f}{s}"))
                    })
                    .map(|(f, _)| *f)
                    .unwrap_or_else(|| panic!("{line:?} has no # TYPE before it:\n{text}"));
                assert!(helped.contains(family), "{family} has no # HELP");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line:?}: not a number");
            }
        }
    }
}

#[test]
fn a_message_is_counted_where_a_dashboard_looks_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (port, rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start(dir.path(), port);

    let (status, kind, before) = scrape(&gw);
    assert_eq!(status, 200, "{before}");
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert_well_formed(&before);
    assert_eq!(
        sample(&before, "postern_messages_received_total"),
        Some(0.0)
    );

    gw.send(
        "alice@corp.example",
        &["bob@partner.example"],
        "From: alice@corp.example\nTo: bob@partner.example\nSubject: Plans\n\
         Message-ID: <plans@corp.example>\n\nThe plans for next year.\n",
    );
    wait_for(&rx, "bob@partner.example", "encrypted_message.htm");
    // The delivery is counted once the next hop's answer is recorded, just after it arrives.
    wait_until(Duration::from_secs(30), "the delivery counted", || {
        sample(&scrape(&gw).2, "postern_deliveries_total") == Some(1.0)
    });

    let (status, _, after) = scrape(&gw);
    assert_eq!(status, 200, "{after}");
    assert_well_formed(&after);
    for (name, value) in [
        ("postern_messages_received_total", 1.0),
        ("postern_encrypted_total", 1.0),
        ("postern_deliveries_total", 1.0),
        ("postern_bounces_total", 0.0),
        ("postern_delivery_latency_seconds_count", 1.0),
        ("postern_delivery_latency_seconds_bucket{le=\"+Inf\"}", 1.0),
        ("postern_queue_depth{state=\"received\"}", 0.0),
        ("postern_queue_depth{state=\"pending\"}", 0.0),
        ("postern_quarantined", 0.0),
        ("postern_keyserver_up", 1.0),
        ("postern_component_up{component=\"Delivery\"}", 1.0),
    ] {
        assert_eq!(sample(&after, name), Some(value), "{name} in\n{after}");
    }
    let bytes = sample(&after, "postern_received_bytes_total").unwrap();
    assert!(bytes > 50.0, "{bytes} bytes received:\n{after}");
}

/// Runs one SQL statement on the gateway's queue database with Python's sqlite3, as a second
/// process would.
fn sql(data: &Path, statement: &str) {
    let db = data.join("queue").join("queue.db");
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], timeout=30)\n\
             c.execute(sys.argv[2])\n\
             c.commit()",
        ])
        .arg(&db)
        .arg(statement)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value shown for stat `name` on the status page.
fn stat(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("<div class=\"name\">{name}</div>"))
        .unwrap_or_else(|| panic!("no stat {name:?}:\n{page}"));
    let value = &page[..at];
    let start = value.rfind("<div class=\"value\">").unwrap() + "<div class=\"value\">".len();
    value[start..].trim_end_matches("</div>").to_string()
}

#[test]
fn a_database_that_cannot_be_read_is_said_so_not_shown_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (port, _rx) = outside_world(&dir.path().join("outside"));
    let gw = Gateway::start(dir.path(), port);
    let (mut admin, page) = common::signed_in_admin(&gw);
    assert_eq!(stat(&page, "Quarantined"), "0");
    assert!(!page.contains("id=\"unreadable\""), "{page}");

    // The quarantine's table goes away under the running gateway: its count cannot be read.
    sql(&gw.data, "ALTER TABLE quarantine RENAME TO quarantine_away");

    let (status, _, text) = scrape(&gw);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("queue database could not be read"), "{text}");
    assert!(
        !text.contains("postern_quarantined"),
        "no number is given: {text}"
    );
    let warning = gw
        .log()
        .lines()
        .find(|l| l.contains("WARN") && l.contains("/metrics"))
        .map(str::to_string);
    assert!(
        warning.is_some_and(|w| w.contains("quarantine")),
        "the log says why:\n{}",
        gw.log()
    );

    let (status, _, page) = admin.get("/admin/status");
    assert_eq!(status, 200, "{page}");
    assert_eq!(stat(&page, "Quarantined"), "unknown");
    // What could be read is still shown.
    assert_eq!(stat(&page, "Waiting to be sent"), "0");
    assert!(page.contains("id=\"unreadable\""), "{page}");
    assert!(page.contains("the quarantine&#x27;s count"), "{page}");
    assert!(page.contains("no such table: quarantine"), "{page}");

    // The database is whole again: so are the answers.
    sql(&gw.data, "ALTER TABLE quarantine_away RENAME TO quarantine");
    let (status, _, text) = scrape(&gw);
    assert_eq!(status, 200, "{text}");
    assert_eq!(sample(&text, "postern_quarantined"), Some(0.0), "{text}");
    let (_, _, page) = admin.get("/admin/status");
    assert_eq!(stat(&page, "Quarantined"), "0");
    assert!(!page.contains("id=\"unreadable\""), "{page}");
}
