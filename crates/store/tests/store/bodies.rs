//! Where a message's bytes live: a small one in the database, written with its row, so that
//! accepting, transforming and delivering it creates and removes no file; a large one in a
//! spool file. Either way the queue gives it back byte for byte, and once the message is
//! finished its bytes are gone.

use std::time::Duration;

use store::{Backoff, Decision, MessageCopy, Outcome, Queue, Route};

use super::common::{accept, file};

const BACKOFF: Backoff = Backoff { initial: 1, max: 2 };

fn files_in(dir: &std::path::Path, sub: &str) -> usize {
    std::fs::read_dir(dir.join("spool").join(sub))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Accepts `text`, makes one transformed copy of it (`copy`) for out@partner.example, delivers
/// the copy, and checks what the queue gives back and keeps at each step.
async fn through_the_queue(queue: &Queue, dir: &std::path::Path, text: &[u8], copy: &[u8]) {
    let id = accept(
        queue,
        "alice@corp.example",
        &["out@partner.example"],
        text,
        None,
    )
    .await;
    let body = queue.body(&id).await.unwrap();
    assert_eq!(body.len(), text.len() as u64);
    assert_eq!(body.to_vec().unwrap(), text);

    let claimed = queue.claim_received(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let decision = Decision {
        id: id.clone(),
        copies: vec![MessageCopy {
            file: Some(file(queue, copy)),
            routes: vec![("out@partner.example".into(), Route::External)],
            note: Some("encrypted".into()),
            replaces: None,
            sender: None,
        }],
        ..Decision::default()
    };
    queue.apply(vec![decision], BACKOFF).await.unwrap();
    // The message as received is finished: it went into its copy.
    assert!(
        queue.body(&id).await.is_err(),
        "the original's bytes stayed"
    );

    let due = queue.due(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(due.len(), 1);
    let child = &due[0];
    let body = queue.body(&child.id).await.unwrap();
    assert_eq!(body.to_vec().unwrap(), copy);
    let mut sent = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut body.open_async().await.unwrap(), &mut sent)
        .await
        .unwrap();
    assert_eq!(sent, copy, "the SMTP client reads the same bytes");

    let outcome: Vec<(i64, Outcome)> = child
        .recipients
        .iter()
        .map(|(rid, _)| (*rid, Outcome::Delivered("250 ok".into())))
        .collect();
    queue.record(&child.id, &outcome).await.unwrap();
    assert!(
        queue.body(&child.id).await.is_err(),
        "the copy's bytes stayed"
    );
    assert_eq!(files_in(dir, "messages"), 0, "a message file stayed");
    assert_eq!(files_in(dir, "incoming"), 0, "an incoming file stayed");
}

#[tokio::test]
async fn a_small_message_lives_in_the_database_and_makes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).await.unwrap();
    let text = b"Subject: small\r\n\r\nfits in a row\r\n";
    let id = accept(
        &queue,
        "alice@corp.example",
        &["x@partner.example"],
        text,
        None,
    )
    .await;
    assert_eq!(
        files_in(dir.path(), "messages"),
        0,
        "a small message made a file"
    );
    assert!(queue.body(&id).await.unwrap().in_memory());
    // Still there after a restart: it was stored with its row.
    drop(queue);
    let queue = Queue::open(dir.path()).await.unwrap();
    assert_eq!(queue.body(&id).await.unwrap().to_vec().unwrap(), text);
    queue.delete(&id).await.unwrap();
    assert!(
        queue.body(&id).await.is_err(),
        "a deleted message kept its bytes"
    );

    through_the_queue(
        &queue,
        dir.path(),
        text,
        b"Subject: sealed\r\n\r\nsealed\r\n",
    )
    .await;
}

#[tokio::test]
async fn a_large_message_lives_in_a_file_and_its_file_goes_when_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path())
        .await
        .unwrap()
        .with_inline_limit(1024);
    let mut text = b"Subject: large\r\n\r\n".to_vec();
    text.extend(b"0123456789abcdef\r\n".repeat(100));
    let mut copy = b"Subject: sealed\r\n\r\n".to_vec();
    copy.extend(b"fedcba9876543210\r\n".repeat(100));
    let id = accept(
        &queue,
        "alice@corp.example",
        &["x@partner.example"],
        &text,
        None,
    )
    .await;
    assert_eq!(files_in(dir.path(), "messages"), 1);
    assert!(!queue.body(&id).await.unwrap().in_memory());
    queue.delete(&id).await.unwrap();
    assert_eq!(
        files_in(dir.path(), "messages"),
        0,
        "a deleted message kept its file"
    );

    through_the_queue(&queue, dir.path(), &text, &copy).await;
}
