//! `postern serve` as a key server process, driven by the CLI as an operator and a person would:
//! tokens, the code login of `keys fetch`, and `open` from the local cache with the server down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{KeyServer, postern, run, s};

#[test]
fn fetch_by_code_then_open_offline_and_administer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp_port, mail) = testkit::smtp_sink_thread();
    let mut server = KeyServer::start(dir.path(), Some(smtp_port), None);
    let (web_port, data, config) = (server.port, server.data.clone(), server.proc.config.clone());
    let serve_log = server.proc.log();
    assert!(
        serve_log.contains("generated a random master key passphrase"),
        "{serve_log}"
    );
    let passphrase_file = data.join("keys/passphrase");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(&passphrase_file).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);

    // The operator makes a gateway token; it is printed once and listed by name only.
    let created = run(&[
        "keys",
        "token",
        "create",
        "--name",
        "corp-gw",
        "--domain",
        "Corp.Example",
        "--config",
        s(&config),
    ]);
    let token = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("pgw_"), "{token}");
    let listed =
        String::from_utf8(run(&["keys", "token", "list", "--config", s(&config)]).stdout).unwrap();
    assert!(listed.starts_with("corp-gw\tcorp.example\t"), "{listed}");
    assert!(!listed.contains(&token));

    // Bob proves his address with the emailed code.
    let cache = dir.path().join("bob-cache");
    let url = format!("http://127.0.0.1:{web_port}");
    let mut fetch = postern()
        .args([
            "keys",
            "fetch",
            "--server",
            &url,
            "--email",
            "bob@partner.example",
            "--cache",
            s(&cache),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let email = mail
        .recv_timeout(Duration::from_secs(20))
        .expect("no code email");
    let code = testkit::code_in(&email).expect("no code in the email");
    writeln!(fetch.stdin.take().unwrap(), "{code}").unwrap();
    let fetched = fetch.wait_with_output().unwrap();
    let fetch_err = String::from_utf8_lossy(&fetched.stderr);
    assert!(fetched.status.success(), "{fetch_err}");
    assert!(
        fetch_err.contains("stored 3 keys of bob@partner.example"),
        "{fetch_err}"
    );

    // Alice's message to Bob, sealed with the operator's offline tools.
    let keys_dir = data.join("keys");
    let alice = dir.path().join("alice.sign");
    run(&[
        "keys",
        "issue",
        "--dir",
        s(&keys_dir),
        "--passphrase-file",
        s(&passphrase_file),
        "--email",
        "alice@corp.example",
        "--kind",
        "sign",
        "--out",
        s(&alice),
    ]);
    let message = dir.path().join("m.eml");
    fs::write(
        &message,
        b"From: alice@corp.example\r\nSubject: offline\r\n\r\nreadable offline\r\n",
    )
    .unwrap();
    let sealed = dir.path().join("m.sealed");
    run(&[
        "seal",
        "--params",
        s(&keys_dir.join("params.pub")),
        "--sign-key",
        s(&alice),
        "--to",
        "bob@partner.example",
        "--in",
        s(&message),
        "--out",
        s(&sealed),
    ]);

    // The key server goes away (cleanly, on SIGTERM); Bob still opens it from his cache.
    assert!(server.proc.stop().success());
    let opened = run(&["open", "--in", s(&sealed), "--cache", s(&cache)]);
    assert_eq!(opened.stdout, fs::read(&message).unwrap());
    assert_eq!(
        String::from_utf8_lossy(&opened.stderr),
        "postern: signed by alice@corp.example\n"
    );

    // A message for someone whose key is not cached says what to do.
    let carol_sealed = dir.path().join("c.sealed");
    run(&[
        "seal",
        "--params",
        s(&keys_dir.join("params.pub")),
        "--sign-key",
        s(&alice),
        "--to",
        "carol@partner.example",
        "--in",
        s(&message),
        "--out",
        s(&carol_sealed),
    ]);
    let out = postern()
        .args(["open", "--in", s(&carol_sealed), "--cache", s(&cache)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no cached key for carol@partner.example"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The audit log shows Bob's login and his three keys.
    let audit = String::from_utf8(
        run(&[
            "keys",
            "audit",
            "--config",
            s(&config),
            "--email",
            "bob@partner.example",
        ])
        .stdout,
    )
    .unwrap();
    let outcomes: Vec<&str> = audit
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["code_sent", "login", "issued", "issued", "issued"],
        "{audit}"
    );

    // Revocation.
    run(&[
        "keys",
        "token",
        "revoke",
        "--name",
        "corp-gw",
        "--config",
        s(&config),
    ]);
    let listed =
        String::from_utf8(run(&["keys", "token", "list", "--config", s(&config)]).stdout).unwrap();
    assert!(listed.contains("revoked"), "{listed}");
    let out = postern()
        .args([
            "keys",
            "token",
            "revoke",
            "--name",
            "corp-gw",
            "--config",
            s(&config),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn serve_refuses_without_the_passphrase_once_keys_exist() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let keys = data.join("keys");
    let out = postern()
        .args(["keys", "init", "--dir", s(&keys)])
        .env("POSTERN_PASSPHRASE", "operator passphrase here")
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = postern()
        .args(["serve", "--data-dir", s(&data), "--components", "keyserver"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs the master key passphrase"), "{err}");

    let out = postern()
        .args([
            "serve",
            "--data-dir",
            s(&data),
            "--components",
            "ftp,keyserver",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown component \"ftp\""));
}

#[test]
fn config_check_reads_the_consoles_changes_over_the_file_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("postern.toml");
    fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[mime]\nencryption_header = \"X-Corp-Encrypted\"\n",
            s(&data)
        ),
    )
    .unwrap();
    // A change saved in the console is listed.
    fs::write(data.join("console.toml"), "[mime]\nkept_days = 7\n").unwrap();
    let out = run(&["config", "check", s(&config)]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("console.toml sets mime.kept_days"), "{said}");
    assert!(said.contains(": ok"), "{said}");

    let refused = || {
        let out = postern()
            .args(["config", "check", s(&config)])
            .output()
            .unwrap();
        assert!(!out.status.success(), "the check passed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // One that clashes with the file fails the check, as it would fail the start.
    fs::write(
        data.join("console.toml"),
        "[mime]\ndecryption_header = \"X-Corp-Encrypted\"\n",
    )
    .unwrap();
    let err = refused();
    assert!(
        err.contains("console.toml") && err.contains("mime.decryption_header"),
        "{err}"
    );

    // A key the console does not edit is named.
    fs::write(data.join("console.toml"), "[smtp]\nusers = []\n").unwrap();
    let err = refused();
    assert!(
        err.contains("smtp.users is not set from the console"),
        "{err}"
    );
}
