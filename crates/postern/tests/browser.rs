//! Browser tests: a real gateway process, real SMTP in and out, and Debian's chromium driven
//! by playwright-core (the scripts in `web-tests/`). `.ci/run` installs both; without them this
//! test fails and says how to install them.
//!
//! - The reader: a recipient opens the gateway's `encrypted_message.htm` from a file, proves an
//!   address with the code from this test's SMTP listener, reads the message, downloads the
//!   attachment (same bytes), replies with a file, and the reply arrives at the sender's side
//!   sealed, opened there by the gateway with a valid signature.
//! - Hostile HTML: no script runs, no dialog opens, nothing remote loads until asked.
//!
//! The scripts save screenshots into `docs/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

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
         (`apt-get install chromium` and `npm ci --prefix web-tests`); .ci/run installs both"
    );
    guard
}

struct Gateway {
    child: Child,
    log: PathBuf,
    smtp: SocketAddr,
    web: u16,
    maildir: PathBuf,
    config: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// A gateway for corp.example delivering outside mail (and the key server's code emails)
    /// to `external`, internal mail to a Maildir.
    fn start(dir: &Path, external: u16) -> Gateway {
        let smtp = testkit::free_port();
        let web = testkit::free_port();
        let data = dir.join("data");
        let maildir = dir.join("maildir");
        let config = dir.join("postern.toml");
        fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n\
                 [web]\nlisten = \"127.0.0.1:{web}\"\n\
                 [smtp]\nlisten = \"127.0.0.1:{smtp}\"\nhostname = \"gw.corp.example\"\ninternal_domains = [\"corp.example\"]\n\
                 [delivery]\ninternal = \"maildir:{maildir}\"\nexternal = \"127.0.0.1:{external}\"\nretry_initial_secs = 1\nretry_max_secs = 2\n\
                 [mime]\nreader_url = \"http://127.0.0.1:{web}/read\"\n\
                 [keyserver.mail]\nrelay_port = {external}\nstarttls = \"off\"\nfrom = \"keys@corp.example\"\n",
                data = s(&data),
                maildir = s(&maildir),
            ),
        )
        .unwrap();
        let log = dir.join("gateway.log");
        let child = Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["serve", "--config", s(&config)])
            .env_remove("POSTERN_PASSPHRASE")
            .env_remove("POSTERN_CONFIG")
            .env_remove("POSTERN_GATEWAY_TOKEN")
            .env_remove("POSTERN_FAKE_NOW")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], smtp));
        assert!(
            testkit::wait_for_port(addr, Duration::from_secs(120))
                && testkit::wait_for_port(
                    SocketAddr::from(([127, 0, 0, 1], web)),
                    Duration::from_secs(120)
                ),
            "the gateway did not start"
        );
        Gateway {
            child,
            log,
            smtp: addr,
            web,
            maildir,
            config,
        }
    }

    fn send(&self, from: &str, rcpts: &[&str], message: &str) {
        let mut conn = testkit::SmtpConn::open(self.smtp).unwrap();
        conn.send(from, rcpts, message.replace('\n', "\r\n").as_bytes())
            .unwrap();
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a message in the internal Maildir containing `needle`.
    fn wait_delivered(&self, needle: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(entries) = fs::read_dir(self.maildir.join("new")) {
                for e in entries {
                    let text = fs::read_to_string(e.unwrap().path()).unwrap_or_default();
                    if text.contains(needle) {
                        return text;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "nothing with {needle:?} was delivered; log:\n{}",
            self.log()
        );
    }
}

/// An SMTP listener standing for the outside world: every message is written into `dir` (one
/// file each, named by arrival), where the scripts look for their codes.
fn outside_world(dir: &Path) -> (u16, std::sync::mpsc::Receiver<testkit::Recorded>) {
    fs::create_dir_all(dir).unwrap();
    let (port, rx) = testkit::smtp_recorder_thread();
    let (tx, out) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for (n, m) in rx.into_iter().enumerate() {
            let tmp = dir.join(format!(".{n}.tmp"));
            fs::write(&tmp, &m.data).unwrap();
            fs::rename(&tmp, dir.join(format!("{n:04}.eml"))).unwrap();
            if tx.send(m).is_err() {
                return;
            }
        }
    });
    (port, out)
}

/// The first message for `rcpt` that contains `needle`.
fn wait_for(
    rx: &std::sync::mpsc::Receiver<testkit::Recorded>,
    rcpt: &str,
    needle: &str,
) -> testkit::Recorded {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no message for {rcpt} with {needle:?}"));
        if m.to.iter().any(|t| t == rcpt) && String::from_utf8_lossy(&m.data).contains(needle) {
            return m;
        }
    }
}

/// `encrypted_message.htm` out of an encrypted email, as a file a person would open.
fn save_attachment_page(mail: &[u8], to: &Path) {
    let text = String::from_utf8_lossy(mail);
    let at = text
        .find("filename=\"encrypted_message.htm\"")
        .expect("no encrypted_message.htm");
    let start = at + text[at..].find("<!DOCTYPE html>").unwrap();
    let end = start + text[start..].find("</html>").unwrap() + "</html>".len();
    fs::write(to, &text[start..end]).unwrap();
}

/// Runs a script of `web-tests/` with `env`; fails the test with its output if it fails.
fn script(name: &str, env: &[(&str, String)]) {
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("web-tests").join(name))
        .env("SHOTS", s(&repo().join("docs/screenshots")));
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
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(attachment);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
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
        lines.join("\n")
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
    let _ = &gw.config;
    let _ = gw.web;
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
    let gw = Gateway::start(dir.path(), port);
    let mut create = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["admin", "create", "root", "--config", s(&gw.config)])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        create
            .stdin
            .take()
            .unwrap()
            .write_all(b"correct horse battery staple\n")
            .unwrap();
    }
    let out = create.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    script(
        "admin.mjs",
        &[
            ("BASE", format!("http://127.0.0.1:{}", gw.web)),
            ("SMTP_PORT", gw.smtp.port().to_string()),
            ("MAIL_DIR", s(&mail_dir).to_string()),
        ],
    );
    // Released, the message goes out (sealed by the default policy).
    let m = wait_for(&rx, "dave@partner.example", "Payroll run for November");
    assert!(String::from_utf8_lossy(&m.data).contains("encrypted_message.htm"));
    assert!(gw.log().contains("console change"));
}
