//! The gateway's SMTP side with real peers on loopback: swaks and Python's smtplib send through
//! it to an SMTP listener acting as next hop; relay control, AUTH and every limit are exercised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp::config::{DeliveryConfig, NextHop, SmtpConfig, SmtpUser};
use smtp::session::Shared;
use store::{Queue, Source};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

const PASSWORD: &str = "relay password 1";

struct Gateway {
    addr: SocketAddr,
    bypass: SocketAddr,
    queue: Queue,
    sink: mpsc::UnboundedReceiver<String>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn start(adjust: impl FnOnce(&mut SmtpConfig)) -> Gateway {
    start_with(adjust, |_| {}).await
}

async fn start_with(
    adjust: impl FnOnce(&mut SmtpConfig),
    adjust_delivery: impl FnOnce(&mut DeliveryConfig),
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let (sink_port, sink) = testkit::smtp_sink().await;
    let mut config = SmtpConfig {
        internal_domains: vec!["corp.example".into()],
        users: vec![SmtpUser {
            name: "relay".into(),
            password_hash: smtp::auth::hash_password(PASSWORD).unwrap(),
        }],
        ..SmtpConfig::default()
    };
    adjust(&mut config);
    let queue = Queue::open(dir.path()).await.unwrap();
    let hop = NextHop::Smtp {
        host: "127.0.0.1".into(),
        port: sink_port,
    };
    let hops: HashMap<String, NextHop> = [
        ("internal".to_string(), hop.clone()),
        ("external".to_string(), hop),
    ]
    .into();
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
        _stop: stop_tx,
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
            let batch: Vec<(String, Vec<(String, String)>)> = claimed
                .into_iter()
                .map(|(id, e, _)| {
                    let routes = e
                        .recipients
                        .iter()
                        .map(|r| {
                            let domain = r.rsplit_once('@').map_or("", |(_, d)| d);
                            let hop = if self.internal.iter().any(|d| d == domain) {
                                "internal"
                            } else {
                                "external"
                            };
                            (r.clone(), hop.to_string())
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
    async fn next_message(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.sink.recv())
            .await
            .expect("nothing arrived at the next hop")
            .unwrap()
    }
}

async fn swaks(gw: SocketAddr, args: &[&str]) -> (bool, String) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_and_smtplib_send_through_the_gateway_with_starttls_and_auth() {
    let mut gw = start(|_| {}).await;

    let (ok, log) = swaks(
        gw.addr,
        &[
            "--from",
            "alice@corp.example",
            "--to",
            "bob@partner.example",
            "--header",
            "Message-ID: <plain@test>",
        ],
    )
    .await;
    assert!(ok, "{log}");
    assert!(gw.next_message().await.contains("Message-ID: <plain@test>"));

    let (ok, log) = swaks(
        gw.addr,
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "relay",
            "--auth-password",
            PASSWORD,
            "--from",
            "alice@corp.example",
            "--to",
            "carol@partner.example",
            "--header",
            "Message-ID: <tls-auth@test>",
        ],
    )
    .await;
    assert!(ok, "{log}");
    assert!(log.contains("TLS started"), "{log}");
    assert!(log.contains("235 2.7.0"), "{log}");
    let received = gw.next_message().await;
    assert!(received.contains("Message-ID: <tls-auth@test>"));
    assert!(received.contains("with ESMTPS"), "{received}");

    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port}, timeout=20)
s.starttls(context=ctx)
s.login("relay", "{PASSWORD}")
msg = "From: a@corp.example\r\nTo: d@partner.example\r\nSubject: via smtplib\r\nMessage-ID: <smtplib@test>\r\n\r\n.leading dot\r\nbody\r\n"
refused = s.sendmail("a@corp.example", ["d@partner.example", "e@partner.example"], msg)
assert not refused, refused
s.quit()
"#,
        port = gw.addr.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received = gw.next_message().await;
    assert!(received.contains("Message-ID: <smtplib@test>"));
    assert!(
        received.contains("\n.leading dot\n"),
        "dot-stuffing must round-trip: {received}"
    );

    // The bypass port delivers too.
    let (ok, log) = swaks(
        gw.bypass,
        &[
            "--from",
            "alice@corp.example",
            "--to",
            "bob@partner.example",
            "--header",
            "Message-ID: <bypass@test>",
        ],
    )
    .await;
    assert!(ok, "{log}");
    assert!(gw.next_message().await.contains("<bypass@test>"));
    let listed = gw.queue.list(None, 10).await.unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().any(|m| m.source == Source::Bypass));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_not_an_open_relay() {
    // No trusted client networks: loopback is a stranger here.
    let mut gw = start(|c| c.client_networks.clear()).await;
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--from",
            "spammer@else.example",
            "--to",
            "victim@other.example",
        ],
    )
    .await;
    assert!(!ok);
    assert!(log.contains("554 5.7.1 relaying denied"), "{log}");
    // Mail for an internal domain is welcome from anyone.
    let (ok, log) = swaks(
        gw.addr,
        &["--from", "friend@else.example", "--to", "bob@corp.example"],
    )
    .await;
    assert!(ok, "{log}");
    gw.next_message().await;
    // An authenticated client may relay.
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "relay",
            "--auth-password",
            PASSWORD,
            "--from",
            "a@corp.example",
            "--to",
            "x@other.example",
        ],
    )
    .await;
    assert!(ok, "{log}");
    gw.next_message().await;
    // A wrong password is refused.
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "relay",
            "--auth-password",
            "wrong",
            "--from",
            "a@corp.example",
            "--to",
            "x@other.example",
        ],
    )
    .await;
    assert!(!ok);
    assert!(log.contains("535 5.7.8"), "{log}");
}

/// A raw SMTP peer for exact control over what is sent.
struct Raw {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> (Raw, String) {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut raw = Raw {
            r: BufReader::new(r),
            w,
        };
        let greeting = raw.reply().await;
        (raw, greeting)
    }

    async fn reply(&mut self) -> String {
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

    async fn send(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    async fn data(&mut self, body: &str) -> String {
        assert!(self.send("DATA").await.starts_with("354"));
        self.w.write_all(body.as_bytes()).await.unwrap();
        self.w.write_all(b"\r\n.\r\n").await.unwrap();
        self.reply().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_answers_with_its_code() {
    let gw = start(|c| {
        c.max_message_size = 4000;
        c.max_recipients = 2;
        c.max_header_size = 600;
        c.command_timeout_secs = 1;
        c.max_connections_per_client = 3;
    })
    .await;
    let (mut s, greeting) = Raw::connect(gw.addr).await;
    assert!(greeting.starts_with("220 gw.test ESMTP"), "{greeting}");
    let ehlo = s.send("EHLO client.test").await;
    for ext in [
        "PIPELINING",
        "SIZE 4000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing from {ehlo}");
    }
    assert!(
        !ehlo.contains("AUTH"),
        "AUTH must not be offered in clear: {ehlo}"
    );
    assert!(s.send("VRFY bob").await.starts_with("502 5.5.1"));
    assert!(
        s.send("RCPT TO:<bob@corp.example>")
            .await
            .starts_with("503 5.5.1")
    );
    assert!(
        s.send("MAIL FROM:<a@corp.example> SIZE=999999")
            .await
            .starts_with("552 5.3.4")
    );
    assert!(
        s.send("MAIL FROM:<a@corp.example>")
            .await
            .starts_with("250 2.1.0")
    );
    assert!(
        s.send("MAIL FROM:<a@corp.example>")
            .await
            .starts_with("503 5.5.1")
    );
    assert!(s.send("RCPT TO:<a@corp.example>").await.starts_with("250"));
    assert!(s.send("RCPT TO:<b@corp.example>").await.starts_with("250"));
    assert!(
        s.send("RCPT TO:<c@corp.example>")
            .await
            .starts_with("452 4.5.3")
    );
    // Too large.
    // 80 lines of 70 bytes: over the 4000-byte limit, every line within the line limit.
    let big = format!(
        "Subject: big\r\n\r\n{}",
        vec!["x".repeat(70); 80].join("\r\n")
    );
    assert!(s.data(&big).await.starts_with("552 5.3.4"));
    // A line over 1000 bytes.
    s.send("MAIL FROM:<a@corp.example>").await;
    s.send("RCPT TO:<a@corp.example>").await;
    let long_line = format!("Subject: long\r\n\r\n{}", "y".repeat(1500));
    let reply = s.data(&long_line).await;
    assert!(
        reply.starts_with("552 5.3.4") && reply.contains("line"),
        "{reply}"
    );
    // A header over the limit.
    s.send("MAIL FROM:<a@corp.example>").await;
    s.send("RCPT TO:<a@corp.example>").await;
    let header: String = (0..20)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "z".repeat(40)))
        .collect();
    let reply = s.data(&format!("{header}\r\nbody")).await;
    assert!(
        reply.starts_with("552 5.3.4") && reply.contains("header"),
        "{reply}"
    );
    // An unknown command, and a command line that is too long.
    assert!(s.send("FROB").await.starts_with("500 5.5.2"));
    assert!(
        s.send(&format!("NOOP {}", "n".repeat(5000)))
            .await
            .starts_with("500 5.5.6")
    );
    // Nothing sent for longer than the command timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = s.reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");

    // Connections per client.
    let mut open = Vec::new();
    for _ in 0..3 {
        let (c, g) = Raw::connect(gw.addr).await;
        assert!(g.starts_with("220"), "{g}");
        open.push(c);
    }
    let (_, g) = Raw::connect(gw.addr).await;
    assert!(g.starts_with("421 4.7.0"), "{g}");
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_connections_and_required_authentication() {
    let gw = start(|c| {
        c.max_connections = 1;
        c.require_auth = true;
    })
    .await;
    let (mut s, _) = Raw::connect(gw.addr).await;
    let (_, g) = Raw::connect(gw.addr).await;
    assert!(g.starts_with("421 4.7.0 too many connections"), "{g}");
    s.send("EHLO c.test").await;
    assert!(
        s.send("MAIL FROM:<a@corp.example>")
            .await
            .starts_with("530 5.7.0")
    );
    assert!(
        s.send("AUTH PLAIN AHJlbGF5AHg=")
            .await
            .starts_with("538 5.7.11")
    );
    assert!(s.send("QUIT").await.starts_with("221"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_bounces_with_a_notification_to_the_sender() {
    let mut gw = start(|_| {}).await;
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--from",
            "alice@corp.example",
            "--to",
            "reject-me@partner.example,bob@partner.example",
            "--header",
            "Message-ID: <dsn@test>",
        ],
    )
    .await;
    assert!(ok, "{log}");
    // Bob gets the message; Alice gets a notification naming the refused recipient and why.
    let mut got = [gw.next_message().await, gw.next_message().await];
    got.sort_by_key(|m| m.contains("Undelivered Mail"));
    assert!(got[0].contains("Message-ID: <dsn@test>"), "{}", got[0]);
    let dsn = &got[1];
    assert!(
        dsn.contains("Subject: Undelivered Mail Returned to Sender"),
        "{dsn}"
    );
    assert!(dsn.contains("To: <alice@corp.example>"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; reject-me@partner.example"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(
        dsn.contains("Message-ID: <dsn@test>"),
        "the original header is quoted: {dsn}"
    );
    assert!(
        !dsn.contains("bob@partner.example>: "),
        "Bob was delivered: {dsn}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_towards_a_hop_defers_rather_than_sending_in_clear() {
    let mut gw = start_with(
        |_| {},
        |d| d.external_starttls = Some(smtp::TlsMode::Required),
    )
    .await;
    let (ok, log) = swaks(
        gw.addr,
        &[
            "--from",
            "alice@corp.example",
            "--to",
            "bob@partner.example",
        ],
    )
    .await;
    assert!(ok, "{log}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        gw.sink.try_recv().is_err(),
        "sent in clear to a hop that must use TLS"
    );
    let m = &gw.queue.list(None, 1).await.unwrap()[0];
    let r = &m.recipients[0];
    assert_eq!(r.state, "deferred");
    assert!(
        r.last_reply
            .as_deref()
            .unwrap_or("")
            .contains("does not offer STARTTLS"),
        "{r:?}"
    );
}
