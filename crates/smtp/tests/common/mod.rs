//! The SMTP side's test harness: a gateway (both ports, a queue, a routing stand-in for the
//! pipeline, delivery) on loopback with an SMTP listener as its next hop, and a raw SMTP peer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp::config::{DeliveryConfig, NextHop, SmtpConfig, SmtpUser};
use smtp::session::Shared;
use store::{Queue, Source};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

pub const PASSWORD: &str = "relay password 1";

pub struct Gateway {
    pub addr: SocketAddr,
    pub bypass: SocketAddr,
    pub queue: Queue,
    pub sink: mpsc::UnboundedReceiver<String>,
    /// Set to true to stop the listeners, as SIGTERM does.
    pub stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

pub async fn start(adjust: impl FnOnce(&mut SmtpConfig)) -> Gateway {
    start_with(adjust, |_| {}).await
}

pub async fn start_with(
    adjust: impl FnOnce(&mut SmtpConfig),
    adjust_delivery: impl FnOnce(&mut DeliveryConfig),
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let (sink_port, sink) = testkit::smtp_sink().await;
    let mut config = SmtpConfig {
        internal_domains: vec!["corp.example".into()],
        users: vec![SmtpUser {
            name: "relay".into(),
            password_hash: store::accounts::hash_password(PASSWORD).unwrap(),
        }],
        ..SmtpConfig::default()
    };
    adjust(&mut config);
    let queue = Queue::open(dir.path()).await.unwrap();
    let hop = NextHop::Smtp {
        host: "127.0.0.1".into(),
        port: sink_port,
    };
    let hops = smtp::Hops {
        internal: hop.clone(),
        external: hop,
    };
    let metrics = Arc::new(smtp::metrics::Metrics::default());
    let mut delivery = DeliveryConfig {
        retry_initial_secs: 1,
        retry_max_secs: 2,
        ..DeliveryConfig::default()
    };
    adjust_delivery(&mut delivery);
    let deliverer =
        smtp::deliver::Deliverer::new(queue.clone(), delivery, hops, "gw.test".into(), metrics);
    let pipeline = PassThrough::new(
        queue.clone(),
        config.internal_domains.clone(),
        deliverer.wake.clone(),
    );
    let (stop_tx, stop) = watch::channel(false);
    let tls = smtp::server::tls_acceptor(None, None, "gw.test").unwrap();
    let mut addrs = Vec::new();
    for source in [Source::Policy, Source::Bypass] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let wake = pipeline.wake.clone();
        let shared = Arc::new(Shared {
            config: config.clone(),
            hostname: "gw.test".into(),
            queue: queue.clone(),
            tls: tls.clone(),
            source,
            guard: mime::Guard::new(&mime::MimeSettings::default(), "gw.test"),
            on_accept: Box::new(move |_, _| wake.notify_one()),
        });
        tokio::spawn(smtp::server::serve(
            listener,
            shared,
            stop.clone(),
            Duration::from_secs(5),
        ));
    }
    tokio::spawn(pipeline.run(stop.clone()));
    tokio::spawn(deliverer.run(stop.clone()));
    Gateway {
        addr: addrs[0],
        bypass: addrs[1],
        queue,
        sink,
        stop: stop_tx,
        _dir: dir,
    }
}

/// The decision step reduced to routing (the pipeline crate encrypts; these tests are about
/// the SMTP side): internal recipients to `internal`, the rest to `external`.
struct PassThrough {
    queue: Queue,
    internal: Vec<String>,
    wake: Arc<tokio::sync::Notify>,
    delivery: Arc<tokio::sync::Notify>,
}

impl PassThrough {
    fn new(queue: Queue, internal: Vec<String>, delivery: Arc<tokio::sync::Notify>) -> Arc<Self> {
        Arc::new(PassThrough {
            queue,
            internal,
            wake: Arc::new(tokio::sync::Notify::new()),
            delivery,
        })
    }

    async fn run(self: Arc<Self>, _stop: watch::Receiver<bool>) {
        loop {
            let claimed = self.queue.claim_received(256).await.unwrap();
            let batch: Vec<(String, Vec<(String, store::Route)>)> = claimed
                .into_iter()
                .map(|(id, e, _)| {
                    let routes = e
                        .recipients
                        .iter()
                        .map(|r| {
                            let domain = r.rsplit_once('@').map_or("", |(_, d)| d);
                            let hop = if self.internal.iter().any(|d| d == domain) {
                                store::Route::Internal
                            } else {
                                store::Route::External
                            };
                            (r.clone(), hop)
                        })
                        .collect();
                    (id, routes)
                })
                .collect();
            if batch.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
            self.queue.route_batch(&batch).await.unwrap();
            self.delivery.notify_one();
        }
    }
}

impl Gateway {
    pub async fn next_message(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.sink.recv())
            .await
            .expect("nothing arrived at the next hop")
            .unwrap()
    }
}

pub async fn swaks(gw: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .arg("--server")
        .arg(gw.to_string())
        .args(["--helo", "client.test", "--timeout", "20"])
        .args(args)
        .output()
        .await
        .expect("swaks is installed (apt-get install swaks)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A raw SMTP peer for exact control over what is sent.
pub struct Raw {
    pub r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pub w: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> (Raw, String) {
        Raw::connect_from(addr, [127, 0, 0, 1].into()).await
    }

    /// Connects from the loopback address `from` (127.0.0.2, ... stand for other hosts).
    pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> (Raw, String) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let (r, w) = socket.connect(addr).await.unwrap().into_split();
        let mut raw = Raw {
            r: BufReader::new(r),
            w,
        };
        let greeting = raw.reply().await;
        (raw, greeting)
    }

    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.r.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                return all + "<closed>";
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    pub async fn send(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    pub async fn data(&mut self, body: &str) -> String {
        assert!(self.send("DATA").await.starts_with("354"));
        self.w.write_all(body.as_bytes()).await.unwrap();
        self.w.write_all(b"\r\n.\r\n").await.unwrap();
        self.reply().await
    }
}
