//! The CLI beside a real gateway: commands that print lists stop quietly when their reader
//! goes away (`postern queue list | head`), and a quarantine operation on an id that names no
//! entry fails, naming the id, instead of reporting success.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Gateway, s};

fn postern(gw: &Gateway, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
    c.args(args)
        .args(["--config", s(&gw.config)])
        .env_remove("POSTERN_CONFIG")
        .env("NO_COLOR", "1");
    c
}

/// Runs a command whose standard output is a pipe its reader has already closed, as after
/// `| head` has read what it wanted.
fn into_closed_pipe(gw: &Gateway, args: &[&str]) -> Output {
    let mut child = postern(gw, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn listing_commands_stop_quietly_when_their_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens at the next hop: the messages stay in the queue.
    let nowhere = testkit::free_port();
    let gw = Gateway::start(dir.path(), nowhere);
    for i in 0..5 {
        gw.send(
            "alice@corp.example",
            &["bob@partner.example"],
            &format!(
                "From: alice@corp.example\nTo: bob@partner.example\nSubject: n{i}\n\nHello.\n"
            ),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = postern(&gw, &["queue", "list"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if String::from_utf8_lossy(&out.stdout).lines().count() >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the messages never showed in the queue"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    for args in [
        &["queue", "list"][..],
        &["policy", "list"],
        &["policy", "export"],
    ] {
        let out = into_closed_pipe(&gw, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "postern {args:?} panicked on a closed pipe:\n{stderr}"
        );
        assert!(
            out.status.success(),
            "postern {args:?} failed on a closed pipe: {:?}\n{stderr}",
            out.status
        );
        assert!(stderr.trim().is_empty(), "postern {args:?} said:\n{stderr}");
    }

    // The same in a shell pipeline, as a person types it.
    let line = format!(
        "{} queue list --config {} | head -1",
        env!("CARGO_BIN_EXE_postern"),
        s(&gw.config)
    );
    let out = Command::new("sh").args(["-c", &line]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_quarantine_id_that_names_nothing_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), testkit::free_port());
    for op in ["release", "reprocess", "delete"] {
        let out = postern(&gw, &["quarantine", op, "--id", "999999"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "quarantine {op} of an unknown id succeeded:\n{stderr}"
        );
        assert!(
            stderr.contains("999999") && stderr.contains("no quarantine entry"),
            "quarantine {op}: {stderr}"
        );
    }
}
