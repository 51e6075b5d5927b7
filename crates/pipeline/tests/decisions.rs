//! The pipeline's decisions, without processes: a temporary queue, the key server in this
//! process on a loopback port, one manual clock for both, and the pipeline's loops running on
//! the test's runtime. Each test sends a message into the queue as the SMTP server would and
//! reads what the pipeline recorded: the copies it made, the recipients it held, the errored
//! queue, the bounces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clock::{Clock, ManualClock, SharedClock};
use envelope::{Epoch, MasterKeys, MasterSecretKey};
use keys::{ClientConfig, KeyClient};
use keyserver::{KeyServer, KeyServerConfig};
use mime::MimeSettings;
use pipeline::{GatewayConfig, Maintenance, Pipeline, Settings};
use store::{Envelope, MessageInfo, QuarantineFilter, Queue, Route, Source};
use tokio::sync::watch;
use transform::{KeyRing, MarkKey};

const DAY: u64 = 86_400;

/// A key server in this process, on a loopback port.
struct Keys {
    url: String,
    store: store::keyserver::Store,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Keys {
    async fn start(clock: SharedClock) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let master =
            MasterKeys::new(vec![MasterSecretKey::generate(&mut rand::rngs::OsRng, 1)]).unwrap();
        let store = store::keyserver::Store::open(&dir.path().join("keyserver.db"))
            .await
            .unwrap();
        let server = KeyServer::new(
            master,
            store.clone(),
            KeyServerConfig::default(),
            clock,
            "keys.corp.example",
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = keyserver::router(server).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Keys {
            url,
            store,
            task,
            _dir: dir,
        }
    }

    /// Takes the key server down: connections are refused from now on.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One gateway: its queue, its pipeline and the maintenance beside it.
struct Gateway {
    queue: Queue,
    pipeline: Arc<Pipeline>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// A gateway for the users of `domain`, with keys from `keys` and time from `clock`.
    async fn start(keys: &Keys, clock: &Arc<ManualClock>, domain: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let shared: SharedClock = clock.clone();
        let queue = Queue::open_with_clock(dir.path(), shared.clone())
            .await
            .unwrap();
        let token = keys
            .store
            .create_token(&format!("gw-{domain}"), &[domain.to_string()], clock.now())
            .await
            .unwrap();
        let mut config = ClientConfig::new(keys.url.clone());
        config.token = Some(token);
        config.retries = 0;
        config.timeout = Duration::from_secs(5);
        let client = KeyClient::new(config, None)
            .unwrap()
            .with_clock(shared.clone());
        let ring = Arc::new(KeyRing::new(client, shared));
        let mark = Arc::new(MarkKey::new(
            queue.secret(transform::mark::SECRET_NAME).await.unwrap(),
        ));
        let settings = Settings {
            internal_domains: vec![domain.to_string()],
            gateway: GatewayConfig {
                // The maintenance loop probes a key server that is down at every pass.
                keyserver_probe_secs: 1,
                ..GatewayConfig::default()
            },
            mime: MimeSettings::default(),
            hostname: format!("gw.{domain}"),
        };
        let pipeline = Pipeline::new(
            queue.clone(),
            settings,
            ring,
            Arc::new(tokio::sync::Notify::new()),
            mark,
        )
        .unwrap();
        let (stop, rx) = watch::channel(false);
        tokio::spawn(pipeline.clone().run(rx.clone()));
        tokio::spawn(Maintenance::new(pipeline.clone()).run(rx));
        Gateway {
            queue,
            pipeline,
            stop,
            _dir: dir,
        }
    }

    /// Puts `text` in the queue as received on the policy port, and wakes the pipeline.
    async fn receive(&self, from: &str, to: &[&str], text: &[u8]) -> String {
        let mut file = self.queue.spool().create().unwrap();
        file.append(text).unwrap();
        let file = file.finish().unwrap();
        let envelope = Envelope {
            sender: from.to_string(),
            recipients: to.iter().map(|r| r.to_string()).collect(),
            client: "127.0.0.1".into(),
            helo: "client.test".into(),
            source: Source::Policy,
            message_id: None,
        };
        let id = self.queue.accept(envelope, file).await.unwrap();
        self.pipeline.wake.notify_one();
        id
    }

    /// The message once the pipeline has decided it.
    async fn decided(&self, id: &str) -> MessageInfo {
        self.until(|m| m.state != "received" && m.state != "processing", id)
            .await
    }

    /// The message once `done` holds for it (waits up to 20 s).
    async fn until(&self, done: impl Fn(&MessageInfo) -> bool, id: &str) -> MessageInfo {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let m = self.queue.show(id).await.unwrap();
            if done(&m) {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "message {id} still {}: {m:?}",
                m.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The copies the pipeline made of message `id`.
    async fn copies(&self, id: &str) -> Vec<MessageInfo> {
        let all = self.queue.list(None, 1000).await.unwrap();
        all.into_iter()
            .filter(|m| m.parent.as_deref() == Some(id))
            .collect()
    }

    async fn file(&self, id: &str) -> Vec<u8> {
        self.queue.body(id).await.unwrap().to_vec().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn mid_november() -> u64 {
    Epoch::new(2026, 11).unwrap().start_unix() + 14 * DAY
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn message(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_mail_is_sealed_for_its_recipient_and_opened_by_the_recipients_gateway() {
    let clock = ManualClock::at(mid_november());
    let keys = Keys::start(clock.clone()).await;
    let corp = Gateway::start(&keys, &clock, "corp.example").await;
    let partner = Gateway::start(&keys, &clock, "partner.example").await;
    let secret = "the Q3 figures are 42";

    let id = corp
        .receive(
            "alice@corp.example",
            &["bob@partner.example"],
            &message("alice@corp.example", "bob@partner.example", "q3", secret),
        )
        .await;
    let original = corp.decided(&id).await;
    assert_eq!(original.state, "transformed", "{original:?}");
    let copies = corp.copies(&id).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    let sealed = &copies[0];
    let note = sealed.note.clone().unwrap_or_default();
    assert!(
        note.contains("encrypted for bob@partner.example (2026-11)")
            && note.contains("signed as alice@corp.example"),
        "{note}"
    );
    assert_eq!(sealed.recipients[0].hop, Some(Route::External));
    let email = corp.file(&sealed.id).await;
    assert!(contains(&email, "X-PP-ENCRYPTED: TRUE"));
    assert!(!contains(&email, secret), "the text left in clear");

    // The partner's gateway receives the encrypted email and opens it for bob.
    let inbound = partner
        .receive("alice@corp.example", &["bob@partner.example"], &email)
        .await;
    assert_eq!(partner.decided(&inbound).await.state, "transformed");
    let opened = partner.copies(&inbound).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    let note = opened[0].note.clone().unwrap_or_default();
    assert!(note.starts_with("decrypted; signature valid"), "{note}");
    assert_eq!(opened[0].recipients[0].hop, Some(Route::Internal));
    assert!(contains(&partner.file(&opened[0].id).await, secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_rule_holds_its_recipients_and_lets_the_others_through() {
    let clock = ManualClock::at(mid_november());
    let keys = Keys::start(clock.clone()).await;
    let corp = Gateway::start(&keys, &clock, "corp.example").await;
    let policy = r#"
[[rule]]
order = 1
name = "Hold payroll"
direction = "outbound"
recipients = ["*@partner.example"]
conditions = [{ on = "subject", keywords = ["payroll"] }]
actions = [{ do = "quarantine", area = "HR" }]

[[rule]]
order = 2
name = "Encrypt outbound"
direction = "outbound"
actions = [{ do = "encrypt" }]
"#;
    policy::Policy::from_toml(policy).unwrap();
    corp.queue
        .save_policy(policy, "test", &["HR"])
        .await
        .unwrap();

    let id = corp
        .receive(
            "alice@corp.example",
            &["bob@partner.example", "carol@other.example"],
            &message(
                "alice@corp.example",
                "bob@partner.example, carol@other.example",
                "payroll",
                "March",
            ),
        )
        .await;
    let m = corp
        .until(|m| m.recipients.iter().all(|r| r.state != "new"), &id)
        .await;
    let bob = m
        .recipients
        .iter()
        .find(|r| r.address == "bob@partner.example")
        .unwrap();
    assert_eq!(bob.state, "quarantined", "{m:?}");
    let held = corp
        .queue
        .quarantined(
            &QuarantineFilter {
                area: Some("HR".into()),
                ..QuarantineFilter::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].rule, "Hold payroll");
    assert_eq!(held[0].recipients, vec!["bob@partner.example".to_string()]);
    // The first rule does not match carol: the second encrypts her copy.
    let copies = corp.copies(&id).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].recipients[0].address, "carol@other.example");
    assert!(contains(
        &corp.file(&copies[0].id).await,
        "X-PP-ENCRYPTED: TRUE"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_a_copy_waits_in_the_errored_queue_and_bounces_when_its_lifetime_ends() {
    let clock = ManualClock::at(mid_november());
    let keys = Keys::start(clock.clone()).await;
    let corp = Gateway::start(&keys, &clock, "corp.example").await;
    keys.stop().await;

    let id = corp
        .receive(
            "alice@corp.example",
            &["bob@partner.example"],
            &message("alice@corp.example", "bob@partner.example", "late", "hello"),
        )
        .await;
    let m = corp.decided(&id).await;
    let bob = &m.recipients[0];
    assert_eq!(bob.state, "errored", "{m:?}");
    let reason = bob.last_reply.clone().unwrap_or_default();
    assert!(reason.starts_with("cannot encrypt: "), "{reason}");
    assert!(corp.copies(&id).await.is_empty(), "nothing left in clear");

    // Three days on the gateway's clock (no real waiting): the lifetime ends, the recipient
    // bounces, and the sender gets a delivery status notification.
    clock.advance(3 * DAY + 60);
    let m = corp
        .until(|m| m.recipients[0].state == "bounced", &id)
        .await;
    assert!(
        m.recipients[0]
            .last_reply
            .as_deref()
            .unwrap_or_default()
            .contains("could not be encrypted or decrypted in time"),
        "{m:?}"
    );
    let all = corp.queue.list(None, 100).await.unwrap();
    let dsn = all
        .iter()
        .find(|m| m.sender.is_empty() && m.source == Source::Local)
        .expect("a notification to the sender");
    assert_eq!(dsn.recipients[0].address, "alice@corp.example");
    let text = corp.file(&dsn.id).await;
    assert!(contains(
        &text,
        "Subject: Undelivered Mail Returned to Sender"
    ));
    assert!(contains(
        &text,
        "Final-Recipient: rfc822; bob@partner.example"
    ));
    assert!(
        contains(&text, "Date: Wed, 18 Nov 2026"),
        "the report is dated by the gateway's clock"
    );
}
