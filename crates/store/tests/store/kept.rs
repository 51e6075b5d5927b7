//! Sealed messages kept on the server: recorded with their decision, found by the token only,
//! gone when their time ends (file and row), and left-over files cleared at start.

use store::kept::{new_token, token_hash};
use store::{Decision, Errored, Keep, KeptKind, MessageCopy, Queue};

use super::common::{BACKOFF, file};

async fn accept(queue: &Queue, recipients: &[&str]) -> String {
    let text = b"Subject: fwd\r\n\r\nforwarded\r\n";
    super::common::accept(queue, "bob@partner.example", recipients, text, None).await
}

#[tokio::test]
async fn a_kept_message_is_found_by_its_token_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let id = accept(&queue, &["decrypt@corp.example"]).await;
    queue.claim_received(10).await.unwrap();
    let now = clock::Clock::now(&clock::SystemClock::new());
    let token = new_token();
    let decision = Decision {
        id: id.clone(),
        // The answer goes from the null sender, in place of the decrypt@ recipient.
        copies: vec![MessageCopy {
            file: Some(file(&queue, b"Subject: your link\r\n\r\nlink\r\n")),
            routes: vec![("bob@partner.example".into(), store::Route::External)],
            note: Some("forward to decrypt: link sent".into()),
            replaces: Some(vec!["decrypt@corp.example".into()]),
            sender: Some(String::new()),
        }],
        kept: vec![Keep {
            token_hash: token_hash(&token),
            file: file(&queue, b"sealed bytes"),
            kind: KeptKind::Forward,
            forwarder: Some("bob@partner.example".into()),
            expires_at: now + 3600,
        }],
        ..Decision::default()
    };
    queue.apply(vec![decision], BACKOFF).await.unwrap();

    let kept = queue.kept(&token, now).await.unwrap().expect("found");
    assert_eq!(kept.kind, KeptKind::Forward);
    assert_eq!(kept.size, 12);
    assert_eq!(kept.body.to_vec().unwrap(), b"sealed bytes");
    assert!(queue.kept(&new_token(), now).await.unwrap().is_none());
    assert!(
        queue
            .kept(&token_hash(&token), now)
            .await
            .unwrap()
            .is_none(),
        "the stored hash is not a token"
    );
    assert_eq!(
        queue
            .links_for("bob@partner.example", now - 10, now + 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        queue
            .links_for("bob@partner.example", now - 10, now - 5)
            .await
            .unwrap(),
        0,
        "made after the window"
    );
    assert_eq!(
        queue
            .links_for("eve@evil.example", 0, now + 10)
            .await
            .unwrap(),
        0
    );

    // The answer is a message of its own from the null sender, standing in for decrypt@.
    let parent = queue.show(&id).await.unwrap();
    assert_eq!(parent.recipients[0].state, "split");
    let all = queue.list(None, 10).await.unwrap();
    let answer = all
        .iter()
        .find(|m| m.parent.as_deref() == Some(&id))
        .unwrap();
    assert_eq!(answer.sender, "");
    assert_eq!(answer.recipients[0].address, "bob@partner.example");

    // Past its time the link finds nothing, and the sweep removes it.
    assert!(queue.kept(&token, now + 3600).await.unwrap().is_none());
    assert_eq!(queue.expire_kept(now + 10).await.unwrap(), 0);
    assert!(queue.kept(&token, now).await.unwrap().is_some());
    assert_eq!(queue.expire_kept(now + 3600).await.unwrap(), 1);
    assert!(queue.kept(&token, now).await.unwrap().is_none());
}

#[tokio::test]
async fn a_decision_that_is_not_recorded_keeps_nothing_and_leftovers_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    // Kept messages in files, as large ones are.
    let queue = Queue::open(dir.path()).await.unwrap().with_inline_limit(0);
    let id = accept(&queue, &["decrypt@corp.example"]).await;
    queue.claim_received(10).await.unwrap();
    let token = new_token();
    let k = |q: &Queue| Keep {
        token_hash: token_hash(&token),
        file: file(q, b"sealed"),
        kind: KeptKind::Large,
        forwarder: None,
        expires_at: clock::Clock::now(&clock::SystemClock::new()) + 60,
    };
    // Two rows with one token: the unique index refuses the transaction, and no file stays.
    let decision = Decision {
        id: id.clone(),
        kept: vec![k(&queue), k(&queue)],
        deleted: vec![Errored {
            address: "decrypt@corp.example".into(),
            reason: "test".into(),
        }],
        ..Decision::default()
    };
    let err = queue.apply(vec![decision], BACKOFF).await.unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    let kept_dir = dir.path().join("spool/kept");
    assert_eq!(std::fs::read_dir(&kept_dir).unwrap().count(), 0);
    assert!(
        queue
            .kept(&token, clock::Clock::now(&clock::SystemClock::new()))
            .await
            .unwrap()
            .is_none()
    );
    // The same decision with one row is recorded.
    let decision = Decision {
        id: id.clone(),
        kept: vec![k(&queue)],
        deleted: vec![Errored {
            address: "decrypt@corp.example".into(),
            reason: "test".into(),
        }],
        ..Decision::default()
    };
    queue.apply(vec![decision], BACKOFF).await.unwrap();
    assert!(
        queue
            .kept(&token, clock::Clock::now(&clock::SystemClock::new()))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(std::fs::read_dir(&kept_dir).unwrap().count(), 1);
    queue.expire_kept(u64::MAX / 4).await.unwrap();

    // A file left in kept/ by a crash (no row) is removed when the gateway starts again.
    super::common::old_file(
        &kept_dir.join("00000000000left"),
        b"sealed",
        std::time::Duration::from_secs(120),
    );
    drop(queue);
    let _queue = Queue::open(dir.path()).await.unwrap();
    assert_eq!(std::fs::read_dir(&kept_dir).unwrap().count(), 0);
}

/// The key of the gateway's mark is made once and survives a restart: encrypted email made
/// before it must still be recognised by forward to decrypt after it.
#[tokio::test]
async fn a_secret_is_made_once_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let queue = Queue::open(dir.path()).await.unwrap();
        let a = queue.secret("gateway-mark").await.unwrap();
        let b = queue.secret("gateway-mark").await.unwrap();
        assert_eq!(*a, *b);
        let other = queue.secret("something-else").await.unwrap();
        assert_ne!(*a, *other, "each name has its own");
        assert_ne!(*a, [0u8; 32]);
        *a
    };
    let queue = Queue::open(dir.path()).await.unwrap();
    assert_eq!(*queue.secret("gateway-mark").await.unwrap(), first);
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Queue::open(elsewhere.path()).await.unwrap();
    assert_ne!(
        *other.secret("gateway-mark").await.unwrap(),
        first,
        "another gateway has another"
    );
}
