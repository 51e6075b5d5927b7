//! The CLI as an operator uses it: make keys, issue user keys, seal and open real messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PASS: &str = "cli test passphrase, long enough";
const EPOCH: &str = "2026-11";

fn postern(args: &[&str]) -> Output {
    postern_in(args, None)
}

fn postern_in(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(args)
        .env("POSTERN_PASSPHRASE", PASS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // postern may stop reading early (a foreign message fails at its header): a broken pipe
        // here is part of the behaviour under test, not a failure.
        let _ = pipe.write_all(bytes);
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = postern(args);
    assert!(
        out.status.success(),
        "postern {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kd = dir.path().join("keys");
        ok(&["keys", "init", "--dir", s(&kd)]);
        let keys = Keys { dir };
        keys.issue("alice@corp.example", "sign", "alice.sign");
        for who in ["bob", "carol", "dave"] {
            keys.issue(
                &format!("{who}@partner.example"),
                "decrypt",
                &format!("{who}.dec"),
            );
        }
        keys
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn issue(&self, email: &str, kind: &str, out: &str) {
        ok(&[
            "keys",
            "issue",
            "--dir",
            s(&self.path("keys")),
            "--email",
            email,
            "--epoch",
            EPOCH,
            "--kind",
            kind,
            "--out",
            s(&self.path(out)),
        ]);
    }

    fn params(&self) -> PathBuf {
        self.path("keys/params.pub")
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_corpus_message_seals_and_opens_byte_for_byte_for_one_and_three_recipients() {
    let keys = Keys::new();
    let params = keys.params();
    let sign = keys.path("alice.sign");
    let sealed = keys.path("m.sealed");
    let opened = keys.path("m.opened");
    let recipient_sets: [&[&str]; 2] = [&["bob"], &["bob", "carol", "dave"]];
    let eml = keys.path("m.eml");
    for sample in testkit::corpus() {
        fs::write(&eml, &sample.bytes).unwrap();
        let original = sample.bytes;
        for set in recipient_sets {
            let mut args = vec!["seal", "--params", s(&params), "--sign-key", s(&sign)];
            let addrs: Vec<String> = set.iter().map(|w| format!("{w}@partner.example")).collect();
            for a in &addrs {
                args.extend(["--to", a]);
            }
            args.extend(["--epoch", EPOCH, "--in", s(&eml), "--out", s(&sealed)]);
            ok(&args);
            for who in set {
                let key = keys.path(&format!("{who}.dec"));
                let _ = fs::remove_file(&opened);
                let out = ok(&[
                    "open",
                    "--key",
                    s(&key),
                    "--params",
                    s(&params),
                    "--in",
                    s(&sealed),
                    "--out",
                    s(&opened),
                ]);
                assert_eq!(
                    fs::read(&opened).unwrap(),
                    original,
                    "{} for {who} of {set:?}",
                    sample.name
                );
                assert_eq!(stderr(&out), "postern: signed by alice@corp.example\n");
            }
        }
    }
}

#[test]
fn stdin_and_stdout_work_as_a_pipe() {
    let keys = Keys::new();
    let message = b"Subject: piped\r\n\r\nthrough a pipe\r\n";
    let sealed = postern_in(
        &[
            "seal",
            "--params",
            s(&keys.params()),
            "--sign-key",
            s(&keys.path("alice.sign")),
            "--to",
            "bob@partner.example",
            "--epoch",
            EPOCH,
        ],
        Some(message),
    );
    assert!(sealed.status.success(), "{}", stderr(&sealed));
    let opened = postern_in(
        &[
            "open",
            "--key",
            s(&keys.path("bob.dec")),
            "--params",
            s(&keys.params()),
        ],
        Some(&sealed.stdout),
    );
    assert!(opened.status.success(), "{}", stderr(&opened));
    assert_eq!(opened.stdout, message);
}

#[test]
fn a_tampered_or_foreign_message_fails_with_one_line_and_writes_nothing() {
    let keys = Keys::new();
    let msg = keys.path("m.eml");
    fs::write(&msg, vec![b'x'; 200_000]).unwrap();
    let sealed = keys.path("m.sealed");
    ok(&[
        "seal",
        "--params",
        s(&keys.params()),
        "--sign-key",
        s(&keys.path("alice.sign")),
        "--to",
        "bob@partner.example",
        "--epoch",
        EPOCH,
        "--in",
        s(&msg),
        "--out",
        s(&sealed),
    ]);
    let good = fs::read(&sealed).unwrap();

    let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
    let mut flipped = good.clone();
    flipped[good.len() - 300] ^= 0x10; // inside the last data segment
    cases.push(("flipped".into(), flipped, "bob.dec"));
    cases.push((
        "truncated".into(),
        good[..good.len() - 50].to_vec(),
        "bob.dec",
    ));
    cases.push(("not a recipient".into(), good.clone(), "carol.dec"));
    cases.push((
        "not sealed".into(),
        b"Subject: plain\r\n\r\nhi\r\n".to_vec(),
        "bob.dec",
    ));

    for (what, bytes, key) in cases {
        let bad = keys.path("bad.sealed");
        fs::write(&bad, &bytes).unwrap();
        let out_path = keys.path("must-not-exist.eml");
        let out = postern(&[
            "open",
            "--key",
            s(&keys.path(key)),
            "--params",
            s(&keys.params()),
            "--in",
            s(&bad),
            "--out",
            s(&out_path),
        ]);
        assert!(!out.status.success(), "{what} opened");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.starts_with("postern: "), "{what}: {err}");
        assert!(!out_path.exists(), "{what}: plaintext was written to --out");
        // With standard output, nothing at all reaches it.
        let out = postern_in(
            &[
                "open",
                "--key",
                s(&keys.path(key)),
                "--params",
                s(&keys.params()),
            ],
            Some(&bytes),
        );
        assert!(!out.status.success());
        assert!(
            out.stdout.is_empty(),
            "{what}: plaintext reached standard output"
        );
    }
}

#[test]
fn key_commands_name_the_bad_field_and_never_overwrite() {
    let keys = Keys::new();
    let kd = keys.path("keys");
    let out = postern(&["keys", "init", "--dir", s(&kd)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refusing to overwrite existing keys"));

    let cases: [(&[&str], &str); 3] = [
        (
            &["--email", "not-an-address", "--epoch", EPOCH],
            "--email: the address has no '@'",
        ),
        (
            &["--email", "a@corp.example", "--epoch", "2026-13"],
            "--epoch: month 13",
        ),
        (
            &["--email", "a@corp.example", "--epoch", "Nov 2026"],
            "--epoch: \"Nov 2026\" is not a month",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["keys", "issue", "--dir", s(&kd), "--kind", "sign"];
        full.extend_from_slice(args);
        let target = keys.path("x.key");
        full.extend(["--out", s(&target)]);
        let out = postern(&full);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
        assert!(!target.exists());
    }

    // An existing key file is kept unless --force.
    let before = fs::read(keys.path("bob.dec")).unwrap();
    let out = postern(&[
        "keys",
        "issue",
        "--dir",
        s(&kd),
        "--email",
        "eve@partner.example",
        "--kind",
        "decrypt",
        "--out",
        s(&keys.path("bob.dec")),
    ]);
    assert!(!out.status.success());
    assert_eq!(fs::read(keys.path("bob.dec")).unwrap(), before);

    // The wrong passphrase is named as such.
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args([
            "keys",
            "issue",
            "--dir",
            s(&kd),
            "--email",
            "a@corp.example",
            "--kind",
            "sign",
        ])
        .args(["--out", s(&keys.path("y.key"))])
        .env("POSTERN_PASSPHRASE", "not the passphrase at all")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the passphrase is wrong"),
        "{}",
        stderr(&out)
    );

    // Key files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["keys/master.sealed", "alice.sign", "bob.dec"] {
        let mode = fs::metadata(keys.path(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

#[test]
fn rotation_keeps_old_messages_readable() {
    let keys = Keys::new();
    let kd = keys.path("keys");
    let msg = keys.path("m.eml");
    fs::write(&msg, b"Subject: before\r\n\r\nold\r\n").unwrap();
    let old_sealed = keys.path("old.sealed");
    ok(&[
        "seal",
        "--params",
        s(&keys.params()),
        "--sign-key",
        s(&keys.path("alice.sign")),
        "--to",
        "bob@partner.example",
        "--epoch",
        EPOCH,
        "--in",
        s(&msg),
        "--out",
        s(&old_sealed),
    ]);
    ok(&["keys", "rotate", "--dir", s(&kd)]);
    let listing = String::from_utf8(ok(&["keys", "list", "--dir", s(&kd)]).stdout).unwrap();
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(listing.lines().nth(1).unwrap().ends_with("(newest)"));
    let out = keys.path("old.eml");
    ok(&[
        "open",
        "--key",
        s(&keys.path("bob.dec")),
        "--params",
        s(&keys.params()),
        "--in",
        s(&old_sealed),
        "--out",
        s(&out),
    ]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&msg).unwrap());
}

#[test]
fn every_command_has_help() {
    for cmd in [
        &["--help"][..],
        &["keys", "--help"],
        &["keys", "init", "--help"],
        &["keys", "issue", "--help"],
        &["keys", "rotate", "--help"],
        &["keys", "list", "--help"],
        &["seal", "--help"],
        &["open", "--help"],
        &["inspect", "--help"],
    ] {
        let out = ok(cmd);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage: postern"), "{cmd:?}: {text}");
    }
}
