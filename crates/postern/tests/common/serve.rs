//! The `postern` binary as the tests run it: one-shot CLI commands, and `postern serve`
//! processes that are stopped, started again and killed when a test ends.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A path as text.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `postern`, without the environment variables that would change what a test sees.
pub fn postern() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
    c.env_remove("POSTERN_PASSPHRASE")
        .env_remove("POSTERN_CONFIG")
        .env_remove("POSTERN_GATEWAY_TOKEN")
        .env_remove("POSTERN_FAKE_NOW");
    c
}

/// Runs `postern args`; fails the test with its standard error if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = postern().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "postern {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Standard output and standard error of a command, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until `check` holds; fails the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `postern serve` process: its log goes on in one file across restarts, and it is killed
/// when the test ends, passed or failed.
pub struct Serve {
    child: Option<Child>,
    pub config: PathBuf,
    pub log: PathBuf,
    /// `--components`, when not all.
    pub components: Option<&'static str>,
    /// `POSTERN_FAKE_NOW` (seconds since the epoch), read at each start.
    pub fake_now: Option<u64>,
    /// An open-file limit, soft and hard (util-linux's prlimit).
    pub files: Option<u64>,
    /// The loopback ports that answer once it is up.
    pub ports: Vec<u16>,
}

impl Serve {
    /// A process for `config`, not started yet; its log beside the configuration.
    pub fn new(config: PathBuf, components: Option<&'static str>, ports: Vec<u16>) -> Serve {
        Serve {
            child: None,
            log: config.with_extension("log"),
            config,
            components,
            fake_now: None,
            files: None,
            ports,
        }
    }

    /// Starts the process without waiting for it.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = match self.files {
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
            .args(["serve", "--config", s(&self.config)])
            .env_remove("POSTERN_PASSPHRASE")
            .env_remove("POSTERN_CONFIG")
            .env_remove("POSTERN_GATEWAY_TOKEN")
            .env_remove("POSTERN_FAKE_NOW")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(c) = self.components {
            command.args(["--components", c]);
        }
        if let Some(t) = self.fake_now {
            command.env("POSTERN_FAKE_NOW", t.to_string());
        }
        self.child = Some(command.spawn().unwrap());
    }

    /// Starts the process and waits until it is up.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_up();
    }

    /// Up when every port answers; a process that exits (a port taken) fails at once.
    pub fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("postern serve exited ({status}); log:\n{}", self.log());
            }
            let up = |port| TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_ok();
            if self.ports.iter().all(|&p| up(p)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postern serve did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the process with SIGTERM, as a service manager does, and waits for it.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "postern serve did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Serve::stop`], then [`Serve::start`] with the same configuration and data.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A key server alone (`postern serve --components keyserver`), on a port of its own.
pub struct KeyServer {
    pub proc: Serve,
    pub port: u16,
    pub data: PathBuf,
}

impl KeyServer {
    /// A key server keeping its state in `dir/keyserver`, its code emails sent to the SMTP
    /// relay on port `relay` when given. The configuration is checked first, as an operator
    /// would.
    pub fn start(dir: &Path, relay: Option<u16>, fake_now: Option<u64>) -> KeyServer {
        let port = testkit::free_port();
        let data = dir.join("keyserver");
        let config = dir.join("keyserver.toml");
        let mail = relay.map_or(String::new(), |p| {
            format!("[keyserver.mail]\nrelay_port = {p}\nstarttls = \"off\"\n")
        });
        fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[web]\nlisten = \"127.0.0.1:{port}\"\n{mail}",
                s(&data)
            ),
        )
        .unwrap();
        run(&["config", "check", s(&config)]);
        let mut proc = Serve::new(config, Some("keyserver"), vec![port]);
        proc.fake_now = fake_now;
        proc.start();
        KeyServer { proc, port, data }
    }

    /// Its configuration file.
    pub fn config(&self) -> &str {
        s(&self.proc.config)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new gateway token for `domain` (`postern keys token create`), saved in `dir`.
    pub fn token(&self, name: &str, domain: &str, dir: &Path) -> PathBuf {
        let out = run(&[
            "keys",
            "token",
            "create",
            "--name",
            name,
            "--domain",
            domain,
            "--config",
            self.config(),
        ]);
        let path = dir.join(format!("{name}.token"));
        fs::write(&path, out.stdout).unwrap();
        path
    }
}
