//! What a 250 promises: the gateway is killed with SIGKILL during a load and every message it
//! accepted still reaches the next hop, and a kill repeats only the deliveries in flight; a next
//! hop that is down for a while gets everything once it is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Gateway {
    child: Option<Child>,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    smtp: SocketAddr,
}

impl Gateway {
    fn new(dir: &Path, next_hop_port: u16) -> Gateway {
        let smtp_port = testkit::free_port();
        let config = dir.join("postern.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[web]\nlisten = \"127.0.0.1:{web}\"\n[smtp]\nlisten = \"127.0.0.1:{smtp_port}\"\nbypass_listen = \"127.0.0.1:{bypass}\"\n[delivery]\ninternal = \"127.0.0.1:{next_hop_port}\"\nexternal = \"127.0.0.1:{next_hop_port}\"\nretry_initial_secs = 1\nretry_max_secs = 2\ntimeout_secs = 10\n",
                data = dir.join("data").to_str().unwrap(),
                web = testkit::free_port(),
                bypass = testkit::free_port(),
            ),
        )
        .unwrap();
        let mut g = Gateway {
            child: None,
            config,
            log: dir.join("serve.log"),
            smtp: SocketAddr::from(([127, 0, 0, 1], smtp_port)),
        };
        g.start();
        g
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // POSTERN_BIN runs another build (an older one, to compare repeats in one sitting).
        let bin = std::env::var("POSTERN_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_postern").to_string());
        let child = Command::new(bin)
            .args([
                "serve",
                "--components",
                "smtp,keyserver",
                "--config",
                self.config.to_str().unwrap(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        assert!(
            testkit::wait_for_port(self.smtp, Duration::from_secs(30)),
            "the gateway did not start"
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

fn message(id: &str, size: usize) -> Vec<u8> {
    let mut m = format!("From: load@corp.example\r\nTo: sink@partner.example\r\nSubject: load {id}\r\nMessage-ID: <{id}>\r\n\r\n").into_bytes();
    while m.len() < size {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    m
}

/// Collects Message-IDs (with counts) from the sink on a thread.
fn collect(rx: std::sync::mpsc::Receiver<String>) -> Arc<Mutex<HashMap<String, usize>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        while let Ok(m) = rx.recv() {
            if let Some(id) = testkit::message_id(&m) {
                // Mail leaves encrypted: one that arrives in clear is kept apart, and
                // `assert_all_encrypted` fails the test on it.
                let encrypted =
                    m.contains("X-PP-ENCRYPTED: TRUE") && !m.contains("quick brown fox");
                let key = if encrypted {
                    id
                } else {
                    format!("{CLEAR}{id}")
                };
                *s.lock().unwrap().entry(key).or_insert(0) += 1;
            }
        }
    });
    seen
}

/// Marks a message that reached the next hop in clear.
const CLEAR: &str = "in clear: ";

fn assert_all_encrypted(seen: &Mutex<HashMap<String, usize>>) {
    let clear: Vec<String> = seen
        .lock()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with(CLEAR))
        .cloned()
        .collect();
    assert!(
        clear.is_empty(),
        "messages left the gateway unencrypted: {clear:?}"
    );
}

fn wait_for_all(
    seen: &Mutex<HashMap<String, usize>>,
    wanted: &HashSet<String>,
    limit: Duration,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let missing: Vec<String> = {
            let s = seen.lock().unwrap();
            wanted
                .iter()
                .filter(|id| !s.contains_key(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() || start.elapsed() > limit {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Messages being sent to the gateway by several clients, each retried until it is answered
/// 250 (the gateway may be dead or restarting).
struct Load {
    senders: Vec<std::thread::JoinHandle<()>>,
    /// The Message-IDs answered 250.
    acked: Arc<Mutex<HashSet<String>>>,
    /// How many were answered 250.
    count: Arc<AtomicUsize>,
}

impl Load {
    fn finish(self) {
        for s in self.senders {
            s.join().unwrap();
        }
    }
}

fn start_load(smtp: SocketAddr, senders: usize, per_sender: usize, name: &str) -> Load {
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let senders = (0..senders)
        .map(|t| {
            let (acked, count, name) = (acked.clone(), count.clone(), name.to_string());
            std::thread::spawn(move || {
                let mut conn: Option<testkit::SmtpConn> = None;
                for i in 0..per_sender {
                    let id = format!("{name}-{t}-{i}@load.test");
                    let body = message(&id, 2048);
                    let deadline = Instant::now() + Duration::from_secs(120);
                    loop {
                        assert!(Instant::now() < deadline, "message {id} never accepted");
                        if conn.is_none() {
                            conn = testkit::SmtpConn::open(smtp).ok();
                        }
                        let Some(c) = conn.as_mut() else {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        };
                        match c.send("load@corp.example", &["sink@partner.example"], &body) {
                            Ok(_) => {
                                acked.lock().unwrap().insert(format!("<{id}>"));
                                count.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Err(_) => {
                                conn = None;
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    Load {
        senders,
        acked,
        count,
    }
}

#[test]
fn every_accepted_message_arrives_although_the_gateway_is_killed_during_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let (sink_port, rx) = testkit::smtp_sink_thread();
    let seen = collect(rx);
    let gateway = Arc::new(Mutex::new(Gateway::new(dir.path(), sink_port)));
    let smtp = gateway.lock().unwrap().smtp;

    const SENDERS: usize = 4;
    const PER_SENDER: usize = 500;
    let load = start_load(smtp, SENDERS, PER_SENDER, "crash");
    let (acked, count) = (load.acked.clone(), load.count.clone());

    // Kill the gateway three times during the load, and start it again each time.
    let mut kills = 0;
    for threshold in [300, 900, 1500] {
        while count.load(Ordering::SeqCst) < threshold {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut g = gateway.lock().unwrap();
        g.kill();
        kills += 1;
        std::thread::sleep(Duration::from_millis(200));
        g.start();
    }
    load.finish();
    assert_eq!(kills, 3);
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), SENDERS * PER_SENDER);
    let missing = wait_for_all(&seen, &acked, Duration::from_secs(120));
    assert_all_encrypted(&seen);
    assert!(
        missing.is_empty(),
        "{} accepted message(s) never arrived, e.g. {:?}; log:\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
    );
}

/// Deliveries a SIGKILL may repeat: those the next hop had taken whose outcome was not yet
/// recorded. A delivery holds one of its hop's `concurrency_per_hop` places (20) until its
/// outcome is committed, so one kill repeats at most that many.
const REPEATS_PER_KILL: usize = 20;

#[test]
fn a_kill_repeats_only_the_deliveries_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (sink_port, rx) = testkit::smtp_sink_thread();
    let seen = collect(rx);
    let gateway = Arc::new(Mutex::new(Gateway::new(dir.path(), sink_port)));
    let smtp = gateway.lock().unwrap().smtp;
    let load = start_load(smtp, 20, 100, "repeat");
    let arrived =
        |seen: &Mutex<HashMap<String, usize>>| -> usize { seen.lock().unwrap().values().sum() };

    // Killed (SIGKILL) every 250 deliveries, and started again.
    let mut kills = 0;
    for threshold in [250, 500, 750, 1000, 1250] {
        let deadline = Instant::now() + Duration::from_secs(120);
        while arrived(&seen) < threshold {
            assert!(
                Instant::now() < deadline,
                "deliveries stopped at {}",
                arrived(&seen)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut g = gateway.lock().unwrap();
        g.kill();
        kills += 1;
        g.start();
    }
    let acked = load.acked.clone();
    load.finish();
    let acked = acked.lock().unwrap().clone();
    let missing = wait_for_all(&seen, &acked, Duration::from_secs(120));
    assert!(missing.is_empty(), "{} never arrived", missing.len());
    assert_all_encrypted(&seen);
    let repeats: usize = seen
        .lock()
        .unwrap()
        .values()
        .map(|n| n.saturating_sub(1))
        .sum();
    eprintln!(
        "{repeats} deliveries repeated over {kills} kills of a {} message load",
        acked.len()
    );
    assert!(
        repeats <= kills * REPEATS_PER_KILL,
        "{repeats} deliveries repeated over {kills} kills (at most {REPEATS_PER_KILL} a kill)"
    );
}

#[test]
fn a_next_hop_outage_delays_mail_but_loses_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let hop_port = testkit::free_port(); // nothing listens here yet
    let gateway = Gateway::new(dir.path(), hop_port);
    let mut conn = testkit::SmtpConn::open(gateway.smtp).unwrap();
    let mut wanted = HashSet::new();
    for i in 0..30 {
        let id = format!("outage-{i}@load.test");
        conn.send(
            "load@corp.example",
            &["sink@partner.example"],
            &message(&id, 1024),
        )
        .unwrap();
        wanted.insert(format!("<{id}>"));
    }
    // The next hop refuses connections: everything is deferred, nothing is lost.
    std::thread::sleep(Duration::from_secs(3));
    let listing = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args([
            "queue",
            "list",
            "--config",
            gateway.config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(
        listing.lines().filter(|l| l.contains("  queued  ")).count(),
        30,
        "{listing}"
    );

    // The next hop comes back.
    let (_, rx) = testkit::smtp_sink_thread_on(hop_port);
    let seen = collect(rx);
    let missing = wait_for_all(&seen, &wanted, Duration::from_secs(60));
    assert_all_encrypted(&seen);
    assert!(missing.is_empty(), "never arrived: {missing:?}");
    std::thread::sleep(Duration::from_secs(3));
    let seen = seen.lock().unwrap();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), 30);
}
