//! The key server on a real loopback port, its code emails caught by a real SMTP listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DAY, Harness, november};
use envelope::{Address, Opener, SealOptions, Sealer};
use keys::{ClientConfig, ClientError, KeyCache, KeyClient, KeyKind};

fn addr(a: &str) -> Address {
    Address::parse(a).unwrap()
}

fn refused_code(e: &ClientError) -> &str {
    match e {
        ClientError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other}"),
    }
}

/// Counts the audit rows about keys (issuances and refusals), not logins.
async fn key_audit(h: &Harness) -> Vec<String> {
    h.store
        .audit_log(None, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_deref() != Some("login"))
        .map(|e| {
            format!(
                "{} {} {} {}",
                e.actor,
                e.address.unwrap_or_default(),
                e.epoch.unwrap_or_default(),
                e.outcome
            )
        })
        .collect()
}

#[tokio::test]
async fn a_person_logs_in_with_the_emailed_code_and_gets_only_their_keys() {
    let mut h = Harness::start().await;
    let bob = h.client(None);
    let started = bob.login_start("Bob@Partner.example").await.unwrap();
    assert_eq!(started.expires_in, 600);
    let (code, to) = h.next_code().await;
    assert!(to.contains("bob@partner.example"), "{to}");
    let session = bob
        .login_verify("bob@partner.example", &code)
        .await
        .unwrap();
    assert_eq!(session.email, "bob@partner.example");

    // The key opens a message sealed to Bob this month.
    let params = bob.params().await.unwrap();
    let key = bob
        .decryption_key(&addr("bob@partner.example"), november())
        .await
        .unwrap();
    let gateway = {
        let token = h
            .store
            .create_token("gw", &["corp.example".into()], 0)
            .await
            .unwrap();
        h.client(Some(&token))
    };
    let alice = gateway
        .signing_key(&addr("alice@corp.example"), november())
        .await
        .unwrap();
    let mut sealed = Vec::new();
    Sealer::new(&params)
        .seal(
            &alice,
            &SealOptions {
                recipients: vec![addr("bob@partner.example")],
                epoch: november(),
                sender: None,
            },
            &b"Subject: hi\r\n\r\nfor Bob\r\n"[..],
            &mut sealed,
        )
        .unwrap();
    let mut out = Vec::new();
    let opened = Opener::new(&params)
        .open(&key, &sealed[..], &mut out)
        .unwrap();
    assert_eq!(out, b"Subject: hi\r\n\r\nfor Bob\r\n");
    assert!(opened.verdict.is_valid());

    // Not Carol's key, not next month's, and a used code does not work twice.
    let e = bob
        .decryption_key(&addr("carol@partner.example"), november())
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "address_mismatch");
    let e = bob
        .decryption_key(&addr("bob@partner.example"), november().next())
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "future_epoch");
    let e = h
        .client(None)
        .login_verify("bob@partner.example", &code)
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "no_code");

    assert_eq!(
        key_audit(&h).await,
        vec![
            "person:bob@partner.example bob@partner.example 2026-11 issued",
            "token:gw alice@corp.example 2026-11 issued",
            "person:bob@partner.example carol@partner.example 2026-11 refused:address_mismatch",
            "person:bob@partner.example bob@partner.example 2026-12 refused:future_epoch",
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn five_wrong_codes_lock_the_address_and_say_until_when() {
    let mut h = Harness::start().await;
    let c = h.client(None);
    c.login_start("bob@partner.example").await.unwrap();
    let (code, _) = h.next_code().await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for left in (1..5).rev() {
        match c
            .login_verify("bob@partner.example", wrong)
            .await
            .unwrap_err()
        {
            ClientError::Refused { code, reason, .. } => {
                assert_eq!(code, "wrong_code");
                assert!(
                    reason.contains(&format!("{left} attempt(s) left")),
                    "{reason}"
                );
            }
            other => panic!("{other}"),
        }
    }
    match c
        .login_verify("bob@partner.example", wrong)
        .await
        .unwrap_err()
    {
        ClientError::Refused {
            code,
            reason,
            retry_after,
        } => {
            assert_eq!(code, "locked");
            assert!(reason.contains("try again in 15 minute(s)"), "{reason}");
            assert_eq!(retry_after, Some(900));
        }
        other => panic!("{other}"),
    }
    // Locked: even the right code and a new code are refused, with the time left.
    h.clock.advance(300);
    let e = c
        .login_verify("bob@partner.example", &code)
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "locked");
    match c.login_start("bob@partner.example").await.unwrap_err() {
        ClientError::Refused { retry_after, .. } => assert_eq!(retry_after, Some(600)),
        other => panic!("{other}"),
    }
    // Another address is not affected.
    c.login_start("carol@partner.example").await.unwrap();
    h.next_code().await;

    // After the lock, a new code works.
    h.clock.advance(601);
    c.login_start("bob@partner.example").await.unwrap();
    let (code, _) = h.next_code().await;
    c.login_verify("bob@partner.example", &code).await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn a_code_that_cannot_be_sent_is_refused_at_once_as_the_servers_fault() {
    // Nothing listens on the relay's port.
    let closed = testkit::free_port();
    let h = Harness::start_with(|c| c.mail.relay_port = closed).await;
    let c = h.client(None);
    for _ in 0..6 {
        match c.login_start("bob@partner.example").await.unwrap_err() {
            ClientError::MailUnavailable(reason) => {
                assert!(reason.contains("try again later"), "{reason}");
            }
            other => panic!("expected the mail to be unavailable, got {other:?}"),
        }
    }
    // Nothing was stored or counted: no code is pending, and the hourly allowance is whole.
    let e = c
        .login_verify("bob@partner.example", "123456")
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "no_code");
    let last = h.relay.last();
    assert!(
        matches!(last.state, keyserver::relay::RelayState::Unreachable(_)),
        "{last:?}"
    );
    assert!(last.at.is_some());
    assert_eq!(h.relay.failed_sends(), 6);
    assert_eq!(h.relay.address(), format!("127.0.0.1:{closed}"));
    let audit = h.store.audit_log(None, None).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.outcome == "refused:mail_unavailable"),
        "{audit:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn codes_expire_and_cannot_be_requested_in_a_burst() {
    let mut h = Harness::start().await;
    let c = h.client(None);
    c.login_start("bob@partner.example").await.unwrap();
    let (code, _) = h.next_code().await;
    let e = c.login_start("bob@partner.example").await.unwrap_err();
    assert_eq!(refused_code(&e), "resend_cooldown");
    h.clock.advance(601);
    let e = c
        .login_verify("bob@partner.example", &code)
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "code_expired");
    // Five codes an hour per address, then a wait.
    for _ in 0..4 {
        c.login_start("bob@partner.example").await.unwrap();
        h.next_code().await;
        h.clock.advance(61);
    }
    let e = c.login_start("bob@partner.example").await.unwrap_err();
    assert_eq!(refused_code(&e), "rate_limited");
    h.stop().await;
}

#[tokio::test]
async fn a_gateway_token_covers_its_domains_only_and_revocation_is_immediate() {
    let h = Harness::start().await;
    let token = h
        .store
        .create_token("corp-gw", &["corp.example".into()], 0)
        .await
        .unwrap();
    let gw = h.client(Some(&token));
    gw.decryption_key(&addr("anyone@corp.example"), november())
        .await
        .unwrap();
    gw.signing_key(&addr("alice@corp.example"), november())
        .await
        .unwrap();
    let e = gw
        .decryption_key(&addr("x@other.example"), november())
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "domain_not_allowed");

    assert!(h.store.revoke_token("corp-gw", 5).await.unwrap());
    let e = gw
        .decryption_key(&addr("anyone@corp.example"), november())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::BadCredentials(_)), "{e}");
    let e = h
        .client(Some("pgw_not-a-real-token"))
        .decryption_key(&addr("anyone@corp.example"), november())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::BadCredentials(_)), "{e}");

    assert_eq!(
        key_audit(&h).await,
        vec![
            "token:corp-gw anyone@corp.example 2026-11 issued",
            "token:corp-gw alice@corp.example 2026-11 issued",
            "token:corp-gw x@other.example 2026-11 refused:domain_not_allowed",
            "unknown anyone@corp.example 2026-11 refused:bad_credentials",
            "unknown anyone@corp.example 2026-11 refused:bad_credentials",
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn next_month_is_granted_to_gateways_inside_the_prefetch_window_only() {
    let mut h = Harness::start().await;
    let token = h
        .store
        .create_token("gw", &["corp.example".into()], 0)
        .await
        .unwrap();
    let gw = h.client(Some(&token));
    let december = november().next();
    let alice = addr("alice@corp.example");

    // Mid-November: too early.
    let e = gw.decryption_key(&alice, december).await.unwrap_err();
    assert_eq!(refused_code(&e), "outside_prefetch_window");
    // Never two months ahead.
    let e = gw
        .decryption_key(&alice, december.next())
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "future_epoch");

    // Three days before December: inside the 7-day window.
    h.clock.set(december.start_unix() - 3 * DAY);
    let report = gw
        .prefetch(
            december,
            &[alice.clone(), addr("bob@corp.example")],
            &[KeyKind::Decrypt, KeyKind::Sign],
        )
        .await;
    assert_eq!(report.fetched, 4, "{:?}", report.failed);
    assert!(report.failed.is_empty());

    // A person is not given next month's key, even inside the window.
    let person = h.client(None);
    person.login_start("alice@corp.example").await.unwrap();
    let (code, _) = h.next_code().await;
    person
        .login_verify("alice@corp.example", &code)
        .await
        .unwrap();
    let e = person.decryption_key(&alice, december).await.unwrap_err();
    assert_eq!(refused_code(&e), "future_epoch");

    let audit = key_audit(&h).await;
    assert_eq!(audit.len(), 7, "{audit:#?}");
    assert_eq!(audit.iter().filter(|r| r.ends_with(" issued")).count(), 4);
    h.stop().await;
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_key_server_is_down() {
    let h = Harness::start().await;
    let token = h
        .store
        .create_token("gw", &["corp.example".into(), "partner.example".into()], 0)
        .await
        .unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let client = {
        let mut c = ClientConfig::new(h.url.clone());
        c.token = Some(zeroize::Zeroizing::new(token.to_string()));
        c.retries = 1;
        KeyClient::new(c, Some(KeyCache::open_dir(cache_dir.path()).await.unwrap())).unwrap()
    };
    let bob = addr("bob@partner.example");
    let params = client.params().await.unwrap();
    client.decryption_key(&bob, november()).await.unwrap();
    let alice = client
        .signing_key(&addr("alice@corp.example"), november())
        .await
        .unwrap();
    let mut sealed = Vec::new();
    Sealer::new(&params)
        .seal(
            &alice,
            &SealOptions {
                recipients: vec![bob.clone()],
                epoch: november(),
                sender: None,
            },
            &b"sealed before the outage"[..],
            &mut sealed,
        )
        .unwrap();

    h.stop().await;

    // The key server is gone: the cached month still opens, parameters come from the cache.
    let params = client.params().await.unwrap();
    let key = client.decryption_key(&bob, november()).await.unwrap();
    let mut out = Vec::new();
    Opener::new(&params)
        .open(&key, &sealed[..], &mut out)
        .unwrap();
    assert_eq!(out, b"sealed before the outage");

    // An uncached month is "unreachable, retry later", not a refusal.
    let e = client
        .decryption_key(&bob, november().previous())
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(e.to_string().contains("retry later"), "{e}");

    // The cache is encrypted at rest: the key's bytes are not in the database file.
    let db = std::fs::read(cache_dir.path().join("keys.db")).unwrap();
    let wal = std::fs::read(cache_dir.path().join("keys.db-wal")).unwrap_or_default();
    let raw = key.to_bytes();
    let needle = &raw[raw.len() - 64..];
    for file in [&db, &wal] {
        assert!(!file.windows(needle.len()).any(|w| w == needle));
    }
}

#[tokio::test]
async fn the_client_speaks_https_to_a_pinned_ca() {
    use std::net::SocketAddr;

    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();

    let store = store::keyserver::Store::open(&dir.path().join("ks.db"))
        .await
        .unwrap();
    let master = envelope::MasterKeys::new(vec![envelope::MasterSecretKey::generate(
        &mut rand::rngs::OsRng,
        1,
    )])
    .unwrap();
    let server = keyserver::KeyServer::new(
        master,
        store,
        keyserver::KeyServerConfig::default(),
        clock::ManualClock::at(common::mid_november()),
        "keys.corp.example",
    )
    .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let acceptor = keyserver::tls::acceptor(&cert_path, &key_path).unwrap();
    let listener = axum::serve::ListenerExt::tap_io(
        keyserver::tls::TlsListener::new(tcp, acceptor).unwrap(),
        |_| {},
    );
    let app = keyserver::router(server).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let url = format!("https://localhost:{port}");
    let mut pinned = ClientConfig::new(url.clone());
    pinned.ca_file = Some(cert_path.clone());
    let params = KeyClient::new(pinned, None)
        .unwrap()
        .params()
        .await
        .unwrap();
    assert_eq!(params.keys().len(), 1);

    // Without the CA the certificate is not trusted.
    let mut unpinned = ClientConfig::new(url);
    unpinned.retries = 0;
    assert!(
        KeyClient::new(unpinned, None)
            .unwrap()
            .params()
            .await
            .is_err()
    );
    task.abort();
}

#[tokio::test]
async fn a_new_code_does_not_buy_new_guesses_and_parallel_guesses_are_all_counted() {
    let mut h = Harness::start().await;
    let c = h.client(None);
    c.login_start("bob@partner.example").await.unwrap();
    let (code, _) = h.next_code().await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..3 {
        c.login_verify("bob@partner.example", wrong)
            .await
            .unwrap_err();
    }
    h.clock.advance(61);
    c.login_start("bob@partner.example").await.unwrap();
    let (code, _) = h.next_code().await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let e = c
        .login_verify("bob@partner.example", wrong)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1 attempt(s) left"), "{e}");

    // Twenty guesses at once on Carol's code: at most five are compared, and the address locks.
    let mut h2 = Harness::start_with(|c| c.login_requests_per_ip_per_minute = 100).await;
    let c2 = std::sync::Arc::new(h2.client(None));
    c2.login_start("carol@partner.example").await.unwrap();
    let (code, _) = h2.next_code().await;
    let guesses: Vec<_> = (0..20)
        .map(|i| {
            let c2 = c2.clone();
            let guess = format!("{:06}", (code.parse::<u32>().unwrap() + 1 + i) % 1_000_000);
            tokio::spawn(async move { c2.login_verify("carol@partner.example", &guess).await })
        })
        .collect();
    let mut wrong = 0;
    for g in guesses {
        match g.await.unwrap() {
            Err(ClientError::Refused { code, .. }) if code == "wrong_code" => wrong += 1,
            Err(ClientError::Refused { code, .. }) if code == "locked" || code == "no_code" => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        wrong <= 4,
        "{wrong} guesses were compared and answered wrong_code"
    );
    let e = c2
        .login_verify("carol@partner.example", &code)
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "locked");
    h.stop().await;
    h2.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_a_json_reason_and_an_audit_row() {
    let h = Harness::start().await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/api/keys/v1/login/start", h.url))
        .header("content-type", "application/json")
        .body("{\"mail\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: keys::api::ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, "invalid_request");
    let response = http
        .post(format!("{}/api/keys/v1/login/start", h.url))
        .json(&serde_json::json!({"email": "no-at-sign"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let audit = h.store.audit_log(None, None).await.unwrap();
    let outcomes: Vec<_> = audit.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["refused:invalid_request", "refused:invalid_address"]
    );
    h.stop().await;
}

#[tokio::test]
async fn plain_http_to_another_host_is_refused_by_the_client() {
    let e = KeyClient::new(ClientConfig::new("http://keys.corp.example:8080"), None).unwrap_err();
    assert!(e.to_string().contains("refusing plain HTTP"), "{e}");
    assert!(KeyClient::new(ClientConfig::new("http://127.0.0.1:8080"), None).is_ok());
    assert!(KeyClient::new(ClientConfig::new("https://keys.corp.example"), None).is_ok());
}

#[tokio::test]
async fn after_a_rotation_keys_of_the_older_master_key_can_still_be_had() {
    let mut rng = rand::rngs::OsRng;
    let old = envelope::MasterSecretKey::generate(&mut rng, 1);
    let mut master = envelope::MasterKeys::new(vec![old]).unwrap();
    let old_id = master.newest().public().id();
    let sign = master.newest().extract_signing_key(
        &envelope::Identity::new(addr("alice@corp.example"), november()),
        &mut rng,
    );
    let old_only = master.public_params();
    master.push(envelope::MasterSecretKey::generate(&mut rng, 2));
    let h = Harness::start_with_master(master, |_| {}).await;
    let token = h
        .store
        .create_token("gw", &["partner.example".into()], 0)
        .await
        .unwrap();
    let gw = h.client(Some(&token));

    // A message sealed before the rotation names the old master key.
    let mut sealed = Vec::new();
    Sealer::new(&old_only)
        .seal(
            &sign,
            &SealOptions {
                recipients: vec![addr("bob@partner.example")],
                epoch: november(),
                sender: None,
            },
            &b"before the rotation"[..],
            &mut sealed,
        )
        .unwrap();
    let header = envelope::read_header(&sealed[..]).unwrap();
    assert_eq!(header.kem_key_id, old_id);
    let (bytes, _) = gw
        .key_bytes_for(
            &addr("bob@partner.example"),
            november(),
            KeyKind::Decrypt,
            Some(old_id),
        )
        .await
        .unwrap();
    let key = envelope::DecryptionKey::from_bytes(&bytes).unwrap();
    let params = gw.params().await.unwrap();
    assert_ne!(params.newest().id(), old_id);
    let mut out = Vec::new();
    Opener::new(&params)
        .open(&key, &sealed[..], &mut out)
        .unwrap();
    assert_eq!(out, b"before the rotation");

    let e = gw
        .key_bytes_for(
            &addr("bob@partner.example"),
            november(),
            KeyKind::Decrypt,
            Some(envelope::KeyId([9; 8])),
        )
        .await
        .unwrap_err();
    assert_eq!(refused_code(&e), "unknown_key_id");
    h.stop().await;
}
