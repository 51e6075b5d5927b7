//! A key server on a loopback port with a settable clock, and a real SMTP listener that
//! captures the code emails it sends.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envelope::{Epoch, MasterKeys, MasterSecretKey};
use keys::mailer::{MailConfig, StartTls};
use keys::{ClientConfig, KeyClient, KeyServer, KeyServerConfig, ManualClock, Store};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const DAY: u64 = 86_400;

/// Mid-November 2026.
pub fn mid_november() -> u64 {
    Epoch::new(2026, 11).unwrap().start_unix() + 14 * DAY
}

pub fn november() -> Epoch {
    Epoch::new(2026, 11).unwrap()
}

/// A minimal SMTP receiver: enough of RFC 5321 for a client to deliver, keeping each message.
pub async fn smtp_sink() -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                        "DATA" => {
                            w.write_all(b"354 go on\r\n").await.unwrap();
                            let mut body = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                body.push_str(&l);
                                body.push('\n');
                            }
                            let _ = tx.send(body);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not here\r\n",
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, rx)
}

pub struct Harness {
    pub url: String,
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub store: Store,
    pub mail: mpsc::UnboundedReceiver<String>,
    pub task: JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut KeyServerConfig)) -> Harness {
        let (smtp_port, mail) = smtp_sink().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keyserver.db")).await.unwrap();
        let mut config = KeyServerConfig {
            mail: MailConfig {
                relay_host: "127.0.0.1".into(),
                relay_port: smtp_port,
                from: "Keys <keys@corp.example>".into(),
                starttls: StartTls::Off,
                timeout_secs: 10,
            },
            ..KeyServerConfig::default()
        };
        adjust(&mut config);
        let clock = ManualClock::at(mid_november());
        let master =
            MasterKeys::new(vec![MasterSecretKey::generate(&mut rand::rngs::OsRng, 1)]).unwrap();
        let server = KeyServer::new(master, store.clone(), config, clock.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = keys::router(server).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Harness {
            url: format!("http://{addr}"),
            addr,
            clock,
            store,
            mail,
            task,
            dir,
        }
    }

    pub fn client(&self, token: Option<&str>) -> KeyClient {
        let mut c = ClientConfig::new(self.url.clone());
        c.token = token.map(|t| zeroize::Zeroizing::new(t.to_string()));
        c.retries = 0;
        c.timeout = Duration::from_secs(10);
        KeyClient::new(c, None).unwrap()
    }

    /// The six-digit code from the next email the sink receives, and the email's recipient line.
    pub async fn next_code(&mut self) -> (String, String) {
        let mail = tokio::time::timeout(Duration::from_secs(10), self.mail.recv())
            .await
            .expect("no code email arrived")
            .unwrap();
        let to = mail
            .lines()
            .find(|l| l.starts_with("To:"))
            .unwrap_or("")
            .to_string();
        let code = mail
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
            .expect("no code in the email")
            .to_string();
        (code, to)
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
