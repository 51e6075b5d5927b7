//! What the gateway tests share: real `postern serve` processes (a gateway, by default for
//! corp.example, and a key server alone), the CLI, and an SMTP listener standing for the
//! outside world.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod serve;

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use serve::{KeyServer, Serve, postern, repo, run, s, text, wait_until};

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// How a test gateway is set up; [`Setup::corp`] is the usual one.
pub struct Setup {
    /// Its internal domain (and `gw.<domain>` its host name).
    pub domain: String,
    /// `delivery.external`: where outside mail goes.
    pub external: String,
    /// The SMTP relay for the code emails of the key server in the same process, if any.
    pub relay: Option<u16>,
    /// More `[mime]` settings (TOML lines).
    pub mime: String,
    /// More `[gateway]` settings (TOML lines).
    pub gateway: String,
    /// `--components`, when not all.
    pub components: Option<&'static str>,
    /// An open-file limit for the process.
    pub files: Option<u64>,
    /// `POSTERN_FAKE_NOW`.
    pub fake_now: Option<u64>,
}

impl Setup {
    /// A gateway for corp.example with its key server in the same process, outside mail and
    /// the code emails going to port `external`.
    pub fn corp(external: u16) -> Setup {
        Setup {
            domain: "corp.example".into(),
            external: format!("127.0.0.1:{external}"),
            relay: Some(external),
            mime: String::new(),
            gateway: String::new(),
            components: None,
            files: None,
            fake_now: None,
        }
    }
}

/// A `postern serve` gateway with its own ports, data and Maildir for internal mail.
pub struct Gateway {
    pub proc: Serve,
    pub smtp: SocketAddr,
    pub web: u16,
    pub maildir: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
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
        Gateway::start_setup(
            dir,
            Setup {
                relay: Some(relay),
                ..Setup::corp(external)
            },
        )
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
        gateway.proc.wait_up();
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
        Gateway::launch_setup(
            dir,
            Setup {
                mime: mime.into(),
                gateway: gateway.into(),
                files,
                ..Setup::corp(external)
            },
        )
    }

    /// A gateway as `setup` says, up when it returns.
    pub fn start_setup(dir: &Path, setup: Setup) -> Gateway {
        let mut gateway = Gateway::launch_setup(dir, setup);
        gateway.proc.wait_up();
        gateway
    }

    /// A gateway as `setup` says, keeping its files in `dir`; its configuration is checked
    /// first, and it is started without waiting for its listeners.
    pub fn launch_setup(dir: &Path, setup: Setup) -> Gateway {
        let smtp = testkit::free_port();
        let web = testkit::free_port();
        let bypass = testkit::free_port();
        let data = dir.join("data");
        let maildir = dir.join("maildir");
        let config = dir.join("postern.toml");
        let Setup {
            domain,
            external,
            relay,
            mime,
            gateway,
            ..
        } = &setup;
        let mail = relay.map_or(String::new(), |p| {
            format!("[keyserver.mail]\nrelay_port = {p}\nstarttls = \"off\"\n")
        });
        fs::create_dir_all(dir).unwrap();
        fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n\
                 [web]\nlisten = \"127.0.0.1:{web}\"\n\
                 [smtp]\nlisten = \"127.0.0.1:{smtp}\"\nbypass_listen = \"127.0.0.1:{bypass}\"\nhostname = \"gw.{domain}\"\ninternal_domains = [\"{domain}\"]\n\
                 [delivery]\ninternal = \"maildir:{maildir}\"\nexternal = \"{external}\"\nretry_initial_secs = 1\nretry_max_secs = 2\n\
                 [mime]\nreader_url = \"http://127.0.0.1:{web}/read\"\n{mime}\n\
                 [gateway]\n{gateway}\n\
                 {mail}",
                data = s(&data),
                maildir = s(&maildir),
            ),
        )
        .unwrap();
        run(&["config", "check", s(&config)]);
        let mut proc = Serve::new(config.clone(), setup.components, vec![smtp, web]);
        proc.log = dir.join("gateway.log");
        proc.files = setup.files;
        proc.fake_now = setup.fake_now;
        proc.spawn();
        Gateway {
            proc,
            smtp: SocketAddr::from(([127, 0, 0, 1], smtp)),
            web,
            maildir,
            config,
            data,
        }
    }

    /// Stops the gateway (SIGTERM, as a service manager does) and starts it again with the
    /// same configuration and data; the log goes on in the same file.
    pub fn restart(&mut self) {
        self.proc.restart();
    }

    /// Runs `postern args --config <this gateway's>`; fails the test if it fails.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", s(&self.config)]);
        run(&all)
    }

    pub fn send(&self, from: &str, rcpts: &[&str], message: &str) {
        let mut conn = testkit::SmtpConn::open(self.smtp).unwrap();
        conn.send(from, rcpts, message.replace('\n', "\r\n").as_bytes())
            .unwrap();
    }

    pub fn log(&self) -> String {
        self.proc.log()
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

    /// The messages delivered to the internal Maildir so far, in the order of their names.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        let mut paths: Vec<PathBuf> = fs::read_dir(self.maildir.join("new"))
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        paths.sort();
        paths.into_iter().map(|p| fs::read(p).unwrap()).collect()
    }

    /// [`Gateway::delivered`] as text.
    pub fn delivered_text(&self) -> Vec<String> {
        self.delivered()
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    }

    /// Waits for a message in the internal Maildir containing `needle`.
    pub fn wait_delivered(&self, needle: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Some(m) = self
                .delivered_text()
                .into_iter()
                .find(|m| m.contains(needle))
            {
                return m;
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
    let mut create = postern()
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

/// A browser signed in to the console as `root`, made with [`make_admin`]; and the page the
/// login led to (the status page).
pub fn signed_in_admin(gw: &Gateway) -> (Browser, String) {
    make_admin(gw);
    let mut admin = Browser::new(gw.web);
    let (_, _, page) = admin.get("/admin/login");
    let csrf = field(&page, "csrf");
    let (status, path, page) = admin.post(
        "/admin/login",
        &[
            ("csrf", &csrf),
            ("name", "root"),
            ("password", ADMIN_PASSWORD),
        ],
    );
    assert_eq!((status, path.as_str()), (200, "/admin/status"), "{page}");
    (admin, page)
}
