//! Browser tests: a real gateway process, real SMTP in and out, and Debian's chromium driven
//! by playwright-core (the scripts in `web-tests/`). `scripts/test` installs both; without them this
//! test fails and says how to install them.
//!
//! - The reader: a recipient opens the gateway's `encrypted_message.htm` from a file, proves an
//!   address with the code from this test's SMTP listener, reads the message, downloads the
//!   attachment (same bytes), replies with a file, and the reply arrives at the sender's side
//!   sealed, opened there by the gateway with a valid signature.
//! - Hostile HTML: no script runs, no dialog opens, nothing remote loads until asked.
//!
//! The scripts save screenshots into `screenshots/` of the target directory, so that a test run
//! leaves the work tree as it was; `POSTERN_SHOTS` names another directory (`scripts/screenshots`
//! sets it to `docs/screenshots/` to refresh the README's pictures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Gateway, make_admin, outside_world, repo, s, save_attachment_page, wait_for};

/// One browser test at a time: each starts a gateway (master keys, Argon2) and a chromium, and
/// the machines these run on have two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The node and chromium the scripts need, or a failure that says how to get them.
fn browser_ready() -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let node_modules = repo().join("web-tests/node_modules/playwright-core");
    let chromium = std::env::var("POSTERN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        node_modules.exists() && Path::new(&chromium).exists(),
        "the browser tests need Debian's chromium ({chromium}) and playwright-core \
         (`apt-get install chromium` and `npm ci --prefix web-tests`); scripts/test installs both"
    );
    guard
}

/// Where the scripts save their screenshots: `POSTERN_SHOTS`, or `screenshots/` beside this
/// test's scratch directory in the target directory (which follows `CARGO_TARGET_DIR`).
fn shots() -> PathBuf {
    std::env::var_os("POSTERN_SHOTS").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("../screenshots"),
        PathBuf::from,
    )
}

/// Runs a script of `web-tests/` with `env`; fails the test with its output if it fails.
fn script(name: &str, env: &[(&str, String)]) {
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("web-tests").join(name))
        .env("SHOTS", s(&shots()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("node is needed by the browser tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "web-tests/{name} failed:\n{text}");
}

fn message_with_attachment(attachment: &[u8]) -> String {
    format!(
        "From: Alice Example <alice@corp.example>\n\
         To: bob@partner.example, carol@partner.example\n\
         Subject: Quarterly figures\n\
         Message-ID: <q3-figures@corp.example>\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\n\n\
         --b1\n\
         Content-Type: text/plain; charset=utf-8\n\n\
         Hello Bob,\n\nthe figures are attached. Please confirm you can read them.\n\nAlice\n\
         --b1\n\
         Content-Type: application/octet-stream; name=\"figures-q3.bin\"\n\
         Content-Disposition: attachment; filename=\"figures-q3.bin\"\n\
         Content-Transfer-Encoding: base64\n\n\
         {}\n\
         --b1--\n",
        testkit::base64_lines(attachment)
    )
}

#[test]
fn a_recipient_reads_downloads_and_replies_in_the_browser() {
    let _one = browser_ready();
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("outside");
    let (port, rx) = outside_world(&mail_dir);
    let gw = Gateway::start(dir.path(), port);

    let attachment: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let original = dir.path().join("figures-q3.bin");
    fs::write(&original, &attachment).unwrap();
    gw.send(
        "alice@corp.example",
        &["bob@partner.example", "carol@partner.example"],
        &message_with_attachment(&attachment),
    );
    let sealed = wait_for(&rx, "bob@partner.example", "encrypted_message.htm");
    assert!(
        !String::from_utf8_lossy(&sealed.data).contains("the figures are attached"),
        "the message left in clear"
    );
    let page = dir.path().join("encrypted_message.htm");
    save_attachment_page(&sealed.data, &page);
    let reply_file = dir.path().join("receipt.txt");
    fs::write(&reply_file, "received in good order\n").unwrap();

    script(
        "reader.mjs",
        &[
            ("PAGE", format!("file://{}", s(&page))),
            ("MAIL_DIR", s(&mail_dir).to_string()),
            ("ADDRESS", "bob@partner.example".into()),
            ("ATTACHMENT", s(&original).to_string()),
            ("REPLY_FILE", s(&reply_file).to_string()),
        ],
    );

    // The reply went into the gateway sealed and signed by Bob; the gateway opened it for
    // Alice, so it arrives decrypted, with the verdict, the text and Bob's file.
    let reply = gw.wait_delivered("Thanks Alice, I can read them.");
    assert!(
        reply.contains("X-Postern-Decrypted: gw.corp.example"),
        "{reply}"
    );
    assert!(
        reply.contains("X-Postern-Signature: valid; signer=bob@partner.example"),
        "{reply}"
    );
    assert!(
        reply.contains("In-Reply-To: <q3-figures@corp.example>"),
        "{reply}"
    );
    assert!(reply.contains("receipt.txt"), "{reply}");
    assert!(gw.log().contains("reader: a message was sealed and queued"));
}

#[test]
fn hostile_html_runs_nothing_and_loads_nothing_remote_until_asked() {
    let _one = browser_ready();
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("outside");
    let (port, rx) = outside_world(&mail_dir);
    let gw = Gateway::start(dir.path(), port);
    // A web server the script runs: every request to it is something the page loaded or ran.
    let tracker = testkit::free_port();
    let t = format!("http://127.0.0.1:{tracker}");
    let html = format!(
        "<p>Dear Bob, <b>important</b> news.</p>\n\
         <script>fetch('{t}/script');alert('script')</script>\n\
         <img src=\"x\" onerror=\"fetch('{t}/onerror');alert('onerror')\">\n\
         <p id=\"hover\" onmouseover=\"fetch('{t}/hover');alert('hover')\">Hover here</p>\n\
         <a id=\"jslink\" href=\"javascript:fetch('{t}/js');alert('js')\">Click for details</a>\n\
         <img id=\"pixel\" src=\"{t}/pixel.png\" alt=\"tracker\" width=\"1\" height=\"1\">\n\
         <svg><script>alert('svg')</script></svg>\n\
         <iframe src=\"{t}/frame\"></iframe>\n\
         <object data=\"{t}/object\"></object>\n\
         <style>body{{background:url({t}/css)}}</style>\n\
         <div style=\"background:url({t}/style)\">styled</div>\n"
    );
    gw.send(
        "alice@corp.example",
        &["bob@partner.example"],
        &format!(
            "From: alice@corp.example\nTo: bob@partner.example\nSubject: Newsletter\n\
             Message-ID: <news@corp.example>\nMIME-Version: 1.0\n\
             Content-Type: text/html; charset=utf-8\n\n{html}"
        ),
    );
    let sealed = wait_for(&rx, "bob@partner.example", "encrypted_message.htm");
    let page = dir.path().join("encrypted_message.htm");
    save_attachment_page(&sealed.data, &page);
    script(
        "hostile.mjs",
        &[
            ("PAGE", format!("file://{}", s(&page))),
            ("MAIL_DIR", s(&mail_dir).to_string()),
            ("ADDRESS", "bob@partner.example".into()),
            ("TRACKER_PORT", tracker.to_string()),
        ],
    );
}

#[test]
fn an_administrator_adds_a_rule_finds_the_held_message_and_releases_it() {
    let _one = browser_ready();
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("outside");
    let (port, rx) = outside_world(&mail_dir);
    let mut gw = Gateway::start(dir.path(), port);
    make_admin(&gw);

    script(
        "admin.mjs",
        &[
            ("BASE", format!("http://127.0.0.1:{}", gw.web)),
            ("SMTP_PORT", gw.smtp.port().to_string()),
            ("MAIL_DIR", s(&mail_dir).to_string()),
        ],
    );
    // Released, the message goes out (sealed by the default policy), with the encryption
    // header the gateway runs with: the one saved in the console waits for a restart.
    let m = wait_for(&rx, "dave@partner.example", "Payroll run for November");
    let text = String::from_utf8_lossy(&m.data).to_string();
    assert!(text.contains("encrypted_message.htm"));
    assert!(
        text.contains("X-Postern-Encrypted: gw.corp.example"),
        "{text}"
    );
    assert!(gw.log().contains("console change"));

    // After a restart the gateway runs with the header saved in the console, and says so.
    gw.restart();
    gw.wait_log("sets mime.encryption_header over the configuration file");
    gw.send(
        "alice@corp.example",
        &["erin@partner.example"],
        "From: alice@corp.example\nTo: erin@partner.example\nSubject: After the restart\n\nHello.\n",
    );
    let m = wait_for(&rx, "erin@partner.example", "encrypted_message.htm");
    let text = String::from_utf8_lossy(&m.data).to_string();
    assert!(text.contains("X-Acme-Encrypted: gw.corp.example"), "{text}");
    assert!(!text.contains("X-Postern-Encrypted"), "{text}");
}
