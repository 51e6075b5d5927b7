//! What `Queue::apply` records: transformed copies as messages of their own, recipients routed,
//! errored and retried; and what a crash or a deletion in the middle leaves.

use store::{Decision, Errored, ErroredFilter, MessageCopy, Queue, Source};

use super::common::{BACKOFF, file, state_of};

async fn accept(queue: &Queue, recipients: &[&str]) -> String {
    let text = b"Subject: hi\r\n\r\nbody\r\n";
    let id = Some("<m@corp.example>");
    super::common::accept(queue, "alice@corp.example", recipients, text, id).await
}

#[tokio::test]
async fn copies_routes_and_errored_recipients_are_recorded_together() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let id = accept(
        &queue,
        &[
            "in@corp.example",
            "out@partner.example",
            "later@partner.example",
        ],
    )
    .await;
    let claimed = queue.claim_received(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let decision = Decision {
        id: id.clone(),
        copies: vec![
            MessageCopy {
                file: None,
                routes: vec![("in@corp.example".into(), store::Route::Internal)],
                note: None,
                replaces: None,
                sender: None,
            },
            MessageCopy {
                file: Some(file(&queue, b"encrypted\r\n")),
                routes: vec![("out@partner.example".into(), store::Route::External)],
                note: Some("encrypted for out@partner.example".into()),
                replaces: None,
                sender: None,
            },
        ],
        errored: vec![Errored {
            address: "later@partner.example".into(),
            reason: "the key server is unreachable".into(),
        }],
        users: vec!["alice@corp.example".into()],
        ..Decision::default()
    };
    queue.apply(vec![decision], BACKOFF).await.unwrap();

    let parent = queue.show(&id).await.unwrap();
    assert_eq!(parent.state, "queued");
    assert_eq!(state_of(&parent, "in@corp.example"), "pending");
    assert_eq!(state_of(&parent, "out@partner.example"), "split");
    assert_eq!(state_of(&parent, "later@partner.example"), "errored");
    let later = parent
        .recipients
        .iter()
        .find(|r| r.address == "later@partner.example")
        .unwrap();
    assert!(
        later.next_attempt >= clock::Clock::now(&clock::SystemClock::new()) + 29,
        "the first retry waits the initial backoff"
    );

    let all = queue.list(None, 10).await.unwrap();
    let child = all
        .iter()
        .find(|m| m.parent.as_deref() == Some(&id))
        .unwrap();
    assert_eq!(child.source, Source::Derived);
    assert_eq!(
        child.note.as_deref(),
        Some("encrypted for out@partner.example")
    );
    assert_eq!(child.recipients.len(), 1);
    assert_eq!(child.recipients[0].state, "pending");
    let copy = queue.body(&child.id).await.unwrap();
    assert_eq!(copy.to_vec().unwrap(), b"encrypted\r\n");
    assert_eq!(queue.users_seen(0).await.unwrap(), ["alice@corp.example"]);
    assert_eq!(queue.depth().await.unwrap().errored, 1);

    // Not due yet: an automatic round leaves it; the administrator's resend takes it.
    let none = queue
        .requeue_errored(
            clock::Clock::now(&clock::SystemClock::new()),
            &ErroredFilter::default(),
        )
        .await
        .unwrap();
    assert_eq!(none, 0);
    let listed = queue.errored(&ErroredFilter::default(), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let one = ErroredFilter {
        id: Some(id.clone()),
        ..ErroredFilter::default()
    };
    assert_eq!(queue.requeue_errored(u64::MAX, &one).await.unwrap(), 1);
    let again = queue.claim_received(10).await.unwrap();
    assert_eq!(again.len(), 1);
    // Only the recipient still to decide comes back; the others keep their course.
    assert_eq!(again[0].1.recipients, ["later@partner.example"]);
}

#[tokio::test]
async fn a_message_deleted_while_it_was_processed_gets_no_copy() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let id = accept(&queue, &["out@partner.example"]).await;
    queue.claim_received(10).await.unwrap();
    queue.delete(&id).await.unwrap();
    let decision = Decision {
        id: id.clone(),
        copies: vec![MessageCopy {
            file: Some(file(&queue, b"encrypted\r\n")),
            routes: vec![("out@partner.example".into(), store::Route::External)],
            note: None,
            replaces: None,
            sender: None,
        }],
        ..Decision::default()
    };
    queue.apply(vec![decision], BACKOFF).await.unwrap();
    assert_eq!(queue.show(&id).await.unwrap().state, "deleted");
    // Deleted, it is no longer claimed: the decision is not recorded and no copy is made.
    let all = queue.list(None, 10).await.unwrap();
    assert!(
        all.iter().all(|m| m.parent.as_deref() != Some(&id)),
        "a copy was made"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool/messages"))
            .unwrap()
            .count(),
        0
    );
    assert!(
        queue
            .due(10, std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_copy_file_left_by_a_crash_before_its_commit_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let queue = Queue::open(dir.path()).await.unwrap();
        accept(&queue, &["out@partner.example"]).await;
    }
    let orphan = dir.path().join("spool/messages/0123456789abcdef");
    let minutes = std::time::Duration::from_secs(120);
    super::common::old_file(&orphan, b"decrypted text nobody owns", minutes);
    // A file written just now may be a commit under way (another handle's): it stays.
    let young = dir.path().join("spool/messages/00000000young");
    std::fs::write(&young, b"being committed").unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    assert!(!orphan.exists());
    assert!(young.exists(), "a young file was swept");
    // The maintenance loop's sweep takes it once it is old.
    assert_eq!(queue.sweep_orphans().await.unwrap(), 0);
    super::common::old_file(&young, b"being committed", minutes);
    assert_eq!(queue.sweep_orphans().await.unwrap(), 1);
    assert!(!young.exists());
    // The accepted message's file stays.
    let listed = queue.list(None, 10).await.unwrap();
    assert!(queue.body(&listed[0].id).await.is_ok());
}

#[tokio::test]
async fn a_next_hop_the_store_cannot_read_holds_up_only_its_own_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let id = accept(&queue, &["a@partner.example", "b@partner.example"]).await;
    queue.claim_received(10).await.unwrap();
    queue
        .route(
            &id,
            &[
                ("a@partner.example".into(), store::Route::External),
                ("b@partner.example".into(), store::Route::External),
            ],
        )
        .await
        .unwrap();
    // A row written by another Postern (or by hand) names a next hop this one does not know.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("queue.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE recipients SET hop = 'smarthost-2' WHERE address = 'b@partner.example'")
        .execute(&db)
        .await
        .unwrap();
    let due = queue
        .due(10, std::time::Duration::from_secs(60))
        .await
        .expect("the other recipients are still delivered");
    let routed: Vec<_> = due
        .iter()
        .map(|d| (d.hop.clone(), d.recipients[0].1.as_str()))
        .collect();
    assert!(
        routed.contains(&(Some(store::Route::External), "a@partner.example")),
        "{routed:?}"
    );
    assert!(routed.contains(&(None, "b@partner.example")), "{routed:?}");
}
