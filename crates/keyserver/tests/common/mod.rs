//! A key server on a loopback port with a settable clock, and a real SMTP listener that
//! captures the code emails it sends.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clock::ManualClock;
use envelope::{Epoch, MasterKeys, MasterSecretKey};
use keys::{ClientConfig, KeyClient};
use keyserver::mailer::{MailConfig, StartTls};
use keyserver::{KeyServer, KeyServerConfig};
use store::keyserver::Store;
use testkit::smtp_sink;
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

pub struct Harness {
    pub url: String,
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub store: Store,
    pub relay: Arc<keyserver::relay::RelayHealth>,
    pub mail: mpsc::UnboundedReceiver<String>,
    pub task: JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut KeyServerConfig)) -> Harness {
        let master =
            MasterKeys::new(vec![MasterSecretKey::generate(&mut rand::rngs::OsRng, 1)]).unwrap();
        Harness::start_with_master(master, adjust).await
    }

    pub async fn start_with_master(
        master: MasterKeys,
        adjust: impl FnOnce(&mut KeyServerConfig),
    ) -> Harness {
        let (smtp_port, mail) = smtp_sink().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keyserver.db")).await.unwrap();
        let mut config = KeyServerConfig {
            mail: MailConfig {
                relay_host: "127.0.0.1".into(),
                relay_port: smtp_port,
                from: Some("Keys <keys@corp.example>".into()),
                starttls: StartTls::Off,
                timeout_secs: 10,
            },
            ..KeyServerConfig::default()
        };
        adjust(&mut config);
        let clock = ManualClock::at(mid_november());
        let server = KeyServer::new(
            master,
            store.clone(),
            config,
            clock.clone(),
            "keys.corp.example",
        )
        .unwrap();
        let relay = server.relay();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = keyserver::router(server).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Harness {
            url: format!("http://{addr}"),
            addr,
            clock,
            store,
            relay,
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
        let code = testkit::code_in(&mail).expect("no code in the email");
        (code, to)
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
