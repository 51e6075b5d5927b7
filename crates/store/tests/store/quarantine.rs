//! Quarantine areas in the store: a hold keeps the message for its held recipients; a query
//! finds it by every filter; release brings it back skipping the rule, reprocess without;
//! delete and retention end it and remove the file once nothing else needs it.

use store::{Decision, Errored, Hold, MessageCopy, QuarantineFilter, Queue, QueueError};

use super::common::{BACKOFF, state_of};

async fn accept(queue: &Queue, recipients: &[&str]) -> String {
    let text = b"Subject: Q3 numbers\r\n\r\nbody\r\n";
    super::common::accept(queue, "alice@corp.example", recipients, text, None).await
}

async fn hold(queue: &Queue, id: &str, held: &[&str], passed: &[&str], deleted: &[&str]) {
    queue.claim_received(10).await.unwrap();
    let decision = Decision {
        id: id.to_string(),
        copies: vec![MessageCopy {
            file: None,
            routes: passed
                .iter()
                .map(|a| (a.to_string(), store::Route::External))
                .collect(),
            note: None,
            replaces: None,
            sender: None,
        }],
        held: vec![Hold {
            recipients: held.iter().map(|a| a.to_string()).collect(),
            area: "Finance".into(),
            rule: "Card numbers".into(),
            reason: "body: card_number".into(),
            subject: "Q3 numbers".into(),
        }],
        deleted: deleted
            .iter()
            .map(|a| Errored {
                address: a.to_string(),
                reason: "deleted by rule".into(),
            })
            .collect(),
        ..Decision::default()
    };
    queue.apply(vec![decision], BACKOFF).await.unwrap();
}

#[tokio::test]
async fn held_messages_are_found_released_and_reprocessed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let id = accept(
        &queue,
        &[
            "bob@partner.example",
            "carol@partner.example",
            "dan@partner.example",
        ],
    )
    .await;
    hold(
        &queue,
        &id,
        &["bob@partner.example"],
        &["carol@partner.example"],
        &["dan@partner.example"],
    )
    .await;

    let m = queue.show(&id).await.unwrap();
    assert_eq!(state_of(&m, "bob@partner.example"), "quarantined");
    assert_eq!(state_of(&m, "carol@partner.example"), "pending");
    assert_eq!(state_of(&m, "dan@partner.example"), "deleted");
    assert_eq!(queue.quarantine_depth().await.unwrap(), 1);
    // The area was made on the fly, with the default retention.
    let areas = queue.areas().await.unwrap();
    assert_eq!(
        (
            areas[0].name.as_str(),
            areas[0].held,
            areas[0].retention_secs
        ),
        ("Finance", 1, 30 * 86_400)
    );

    // Every filter finds it; a wrong value of each does not.
    let hits = |f: QuarantineFilter| {
        let queue = queue.clone();
        async move { queue.quarantined(&f, 10).await.unwrap().len() }
    };
    let now = clock::Clock::now(&clock::SystemClock::new());
    for (f, want) in [
        (
            QuarantineFilter {
                area: Some("Finance".into()),
                ..Default::default()
            },
            1,
        ),
        (
            QuarantineFilter {
                area: Some("Spam".into()),
                ..Default::default()
            },
            0,
        ),
        (
            QuarantineFilter {
                sender: Some("ALICE@".into()),
                ..Default::default()
            },
            1,
        ),
        (
            QuarantineFilter {
                sender: Some("mallory".into()),
                ..Default::default()
            },
            0,
        ),
        (
            QuarantineFilter {
                recipient: Some("bob@".into()),
                ..Default::default()
            },
            1,
        ),
        (
            QuarantineFilter {
                recipient: Some("carol@".into()),
                ..Default::default()
            },
            0,
        ),
        (
            QuarantineFilter {
                subject: Some("q3".into()),
                ..Default::default()
            },
            1,
        ),
        (
            QuarantineFilter {
                rule: Some("card".into()),
                ..Default::default()
            },
            1,
        ),
        (
            QuarantineFilter {
                reason: Some("iban".into()),
                ..Default::default()
            },
            0,
        ),
        (
            QuarantineFilter {
                since: Some(now - 60),
                until: Some(now + 60),
                ..Default::default()
            },
            1,
        ),
        (
            QuarantineFilter {
                until: Some(now - 60),
                ..Default::default()
            },
            0,
        ),
    ] {
        assert_eq!(hits(f.clone()).await, want, "{f:?}");
    }
    let entry = queue
        .quarantined(&QuarantineFilter::default(), 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(entry.recipients, vec!["bob@partner.example".to_string()]);
    assert_eq!(entry.message, id);

    // An area holding messages cannot be deleted by a slip.
    assert!(matches!(
        queue.delete_area("Finance").await,
        Err(QueueError::Refused(_))
    ));

    // Release: processed again for the held recipient only, skipping the rule.
    assert_eq!(queue.release_quarantined(&[entry.id]).await.unwrap(), 1);
    assert_eq!(
        queue.release_quarantined(&[entry.id]).await.unwrap(),
        0,
        "released once"
    );
    let claimed = queue.claim_received(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].1.recipients,
        vec!["bob@partner.example".to_string()]
    );
    assert_eq!(claimed[0].2.as_deref(), Some("Card numbers"));
    assert_eq!(queue.quarantine_depth().await.unwrap(), 0);

    // Held again, then reprocessed: no rule skipped.
    hold(&queue, &id, &["bob@partner.example"], &[], &[]).await;
    let entry = queue
        .quarantined(&QuarantineFilter::default(), 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(queue.reprocess_quarantined(&[entry.id]).await.unwrap(), 1);
    let claimed = queue.claim_received(10).await.unwrap();
    assert_eq!(claimed[0].2, None);
}

#[tokio::test]
async fn deleted_and_expired_messages_end_and_lose_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let a = accept(&queue, &["bob@partner.example"]).await;
    hold(&queue, &a, &["bob@partner.example"], &[], &[]).await;
    let b = accept(&queue, &["bob@partner.example"]).await;
    hold(&queue, &b, &["bob@partner.example"], &[], &[]).await;
    assert!(
        queue.body(&a).await.is_ok(),
        "a held message keeps its content"
    );

    let first = queue
        .quarantined(&QuarantineFilter::default(), 10)
        .await
        .unwrap();
    let of_a = first.iter().find(|q| q.message == a).unwrap().id;
    assert_eq!(queue.delete_quarantined(&[of_a]).await.unwrap(), 1);
    let m = queue.show(&a).await.unwrap();
    assert_eq!(m.state, "deleted");
    assert_eq!(state_of(&m, "bob@partner.example"), "deleted");
    assert!(queue.body(&a).await.is_err());

    // Retention: one day in this area; nothing expires before, everything after.
    queue.create_area("Finance", 86_400).await.unwrap();
    let now = clock::Clock::now(&clock::SystemClock::new());
    assert_eq!(queue.expire_quarantine(now).await.unwrap(), 0);
    assert_eq!(queue.expire_quarantine(now + 86_400 + 1).await.unwrap(), 1);
    assert_eq!(queue.show(&b).await.unwrap().state, "deleted");
    assert!(queue.body(&b).await.is_err());
    queue.delete_area("Finance").await.unwrap();
    assert!(queue.areas().await.unwrap().is_empty());
}

#[tokio::test]
async fn policies_are_stored_in_versions() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    assert_eq!(queue.policy_version().await.unwrap(), 0);
    assert!(queue.current_policy().await.unwrap().is_none());
    queue.create_area("Finance", 7 * 86_400).await.unwrap();
    let v1 = queue.save_policy("# one", "ann", &[]).await.unwrap();
    let v2 = queue
        .save_policy("# two", "bob", &["Finance", "Payroll"])
        .await
        .unwrap();
    assert!(v2 > v1);
    // The areas a policy names are made with it; an existing one keeps its retention.
    let areas: Vec<(String, u64)> = queue
        .areas()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.name, a.retention_secs))
        .collect();
    assert_eq!(
        areas,
        vec![
            ("Finance".to_string(), 7 * 86_400),
            ("Payroll".to_string(), 30 * 86_400)
        ]
    );
    let current = queue.current_policy().await.unwrap().unwrap();
    assert_eq!(
        (
            current.version,
            current.text.as_str(),
            current.author.as_str()
        ),
        (v2, "# two", "bob")
    );
}
