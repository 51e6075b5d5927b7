//! What the gateway tests share: a real `postern serve` process for corp.example, and an SMTP
//! listener standing for the outside world.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A path as text.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub struct Gateway {
    pub child: Child,
    pub log: PathBuf,
    pub smtp: SocketAddr,
    pub web: u16,
    pub maildir: PathBuf,
    pub config: PathBuf,
    /// The open-file limit it runs under, when the test set one.
    pub files: Option<u64>,
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
    pub fn start(dir: &Path, external: u16) -> Gateway {
        Gateway::start_with(dir, external, "", "")
    }

    /// [`Gateway::start`] with more `[mime]` and `[gateway]` settings (TOML lines).
    pub fn start_with(dir: &Path, external: u16, mime: &str, gateway: &str) -> Gateway {
        Gateway::start_limited(dir, external, mime, gateway, None)
    }

    /// [`Gateway::start`] with the key server's code emails sent to the relay at `relay`.
    pub fn start_with_relay(dir: &Path, external: u16, relay: u16) -> Gateway {
        let mut gateway = Gateway::launch_full(dir, external, relay, "", "", None);
        gateway.wait_up();
        gateway
    }

    /// [`Gateway::start_with`], the process limited to `files` open files (soft and hard)
    /// when given.
    pub fn start_limited(
        dir: &Path,
        external: u16,
        mime: &str,
        gateway: &str,
        files: Option<u64>,
    ) -> Gateway {
        let mut gateway = Gateway::launch(dir, external, mime, gateway, files);
        gateway.wait_up();
        gateway
    }

    /// [`Gateway::start_limited`] without waiting for the listeners.
    pub fn launch(
        dir: &Path,
        external: u16,
        mime: &str,
        gateway: &str,
        files: Option<u64>,
    ) -> Gateway {
        Gateway::launch_full(dir, external, external, mime, gateway, files)
    }

    fn launch_full(
        dir: &Path,
        external: u16,
        relay: u16,
        mime: &str,
        gateway: &str,
        files: Option<u64>,
    ) -> Gateway {
        let smtp = testkit::free_port();
        let web = testkit::free_port();
        let bypass = testkit::free_port();
        let data = dir.join("data");
        let maildir = dir.join("maildir");
        let config = dir.join("postern.toml");
        fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n\
                 [web]\nlisten = \"127.0.0.1:{web}\"\n\
                 [smtp]\nlisten = \"127.0.0.1:{smtp}\"\nbypass_listen = \"127.0.0.1:{bypass}\"\nhostname = \"gw.corp.example\"\ninternal_domains = [\"corp.example\"]\n\
                 [delivery]\ninternal = \"maildir:{maildir}\"\nexternal = \"127.0.0.1:{external}\"\nretry_initial_secs = 1\nretry_max_secs = 2\n\
                 [mime]\nreader_url = \"http://127.0.0.1:{web}/read\"\n{mime}\n\
                 [gateway]\n{gateway}\n\
                 [keyserver.mail]\nrelay_port = {relay}\nstarttls = \"off\"\n",
                data = s(&data),
                maildir = s(&maildir),
            ),
        )
        .unwrap();
        let log = dir.join("gateway.log");
        let child = spawn(&config, &log, files);
        let addr = SocketAddr::from(([127, 0, 0, 1], smtp));
        Gateway {
            child,
            log,
            smtp: addr,
            web,
            maildir,
            config,
            files,
        }
    }

    /// Stops the gateway (SIGTERM, as a service manager does) and starts it again with the
    /// same configuration and data; the log goes on in the same file.
    pub fn restart(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the gateway did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = spawn(&self.config, &self.log, self.files);
        self.wait_up();
    }

    /// Up when both ports answer; a gateway that exits (a port taken) fails at once.
    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the gateway exited ({status}); log:\n{}", self.log());
            }
            let up = |port| {
                std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_ok()
            };
            if up(self.smtp.port()) && up(self.web) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn send(&self, from: &str, rcpts: &[&str], message: &str) {
        let mut conn = testkit::SmtpConn::open(self.smtp).unwrap();
        conn.send(from, rcpts, message.replace('\n', "\r\n").as_bytes())
            .unwrap();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log says `needle`.
    pub fn wait_log(&self, needle: &str) {
        self.wait_log_count(needle, 1);
    }

    /// Waits until the log says `needle` `times` times.
    pub fn wait_log_count(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "the log never said {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a message in the internal Maildir containing `needle`.
    pub fn wait_delivered(&self, needle: &str) -> String {
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

/// `postern serve` with `config`, its log added to `log`, under `files` open files if given
/// (util-linux's prlimit).
fn spawn(config: &Path, log: &Path, files: Option<u64>) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = match files {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_postern"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_postern")),
    };
    command
        .args(["serve", "--config", s(config)])
        .env_remove("POSTERN_PASSPHRASE")
        .env_remove("POSTERN_CONFIG")
        .env_remove("POSTERN_GATEWAY_TOKEN")
        .env_remove("POSTERN_FAKE_NOW")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// An SMTP listener standing for the outside world: every message is written into `dir` (one
/// file each, named by arrival), where the scripts look for their codes.
pub fn outside_world(dir: &Path) -> (u16, std::sync::mpsc::Receiver<testkit::Recorded>) {
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
pub fn wait_for(
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
pub fn save_attachment_page(mail: &[u8], to: &Path) {
    let text = String::from_utf8_lossy(mail);
    let at = text
        .find("filename=\"encrypted_message.htm\"")
        .expect("no encrypted_message.htm");
    let start = at + text[at..].find("<!DOCTYPE html>").unwrap();
    let end = start + text[start..].find("</html>").unwrap() + "</html>".len();
    fs::write(to, &text[start..end]).unwrap();
}

/// A browser's part for the web tests: one cookie, redirects followed by hand so that the
/// cookie is kept.
pub struct Browser {
    pub http: reqwest::blocking::Client,
    pub base: String,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(web: u16) -> Browser {
        Browser {
            http: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://127.0.0.1:{web}"),
            cookie: None,
        }
    }

    /// Sends `req`, keeps the session cookie, follows redirects; (status, final path, body).
    pub fn go(&mut self, mut req: reqwest::blocking::RequestBuilder) -> (u16, String, String) {
        let mut path = String::new();
        loop {
            if let Some(c) = &self.cookie {
                req = req.header("Cookie", c.clone());
            }
            let resp = req.send().unwrap();
            if let Some(c) = resp.headers().get("set-cookie") {
                self.cookie = Some(c.to_str().unwrap().split(';').next().unwrap().to_string());
            }
            let status = resp.status().as_u16();
            if (300..400).contains(&status) {
                path = resp.headers()["location"].to_str().unwrap().to_string();
                req = self.http.get(format!("{}{path}", self.base));
                continue;
            }
            return (status, path, resp.text().unwrap());
        }
    }

    /// GET of a path on the gateway, or of a whole URL.
    pub fn get(&mut self, path_or_url: &str) -> (u16, String, String) {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let req = self.http.get(url);
        self.go(req)
    }

    pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.go(req)
    }
}

/// The value of the hidden field `name` in a page.
pub fn field(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name} in:\n{page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The password of the administrator [`make_admin`] makes.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// Makes console administrator `root` (password [`ADMIN_PASSWORD`]) with `postern admin create`.
pub fn make_admin(gw: &Gateway) {
    use std::io::Write;
    let mut create = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["admin", "create", "root", "--config", s(&gw.config)])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = create.stdin.take().unwrap();
    stdin
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .unwrap();
    drop(stdin);
    let out = create.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
