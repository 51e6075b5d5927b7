//! The queue database on a disk that fills up and empties again: writes fail while it is full
//! and work again once there is room; nothing stays locked.

use std::io::Write;

use store::{Backoff, Decision, Errored, Queue};

const BACKOFF: Backoff = Backoff { initial: 1, max: 2 };

async fn accept(queue: &Queue, n: usize) -> Result<String, store::QueueError> {
    // Empty while the disk is full: the file fits (an inode), the database rows may not.
    let text = if n < 1000 {
        format!("Subject: {n}\r\n\r\nbody\r\n")
    } else {
        String::new()
    };
    let to = format!("bob{n}@partner.example");
    let id = format!("<{n}@corp.example>");
    let sender = "alice@corp.example";
    super::common::try_accept(queue, sender, &[&to], text.as_bytes(), Some(&id)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_works_again_once_the_disk_has_room() {
    let dir = tempfile::tempdir().unwrap();
    let _disk = testkit::SmallDisk::mount(dir.path(), "16m");
    let queue = Queue::open(&dir.path().join("queue")).await.unwrap();
    // Enough mail that the database has pages and a WAL to reuse while the disk is full.
    for n in 0..400 {
        accept(&queue, n).await.unwrap();
    }
    let ballast_path = dir.path().join("ballast");
    let mut ballast = std::fs::File::create(&ballast_path).unwrap();
    for chunk in [65536, 4096, 512] {
        while ballast.write_all(&vec![0u8; chunk]).is_ok() {}
    }
    // Processing while full: claims and decisions, with long reasons that need pages.
    let mut failures = 0;
    let full_since = std::time::Instant::now();
    for round in 0..200 {
        if full_since.elapsed() > std::time::Duration::from_secs(10) {
            break;
        }
        match queue.claim_received(256).await {
            Ok(claimed) => {
                let batch: Vec<Decision> = claimed
                    .iter()
                    .map(|(id, e, _)| Decision {
                        id: id.clone(),
                        errored: e
                            .recipients
                            .iter()
                            .map(|a| Errored {
                                address: a.clone(),
                                reason: format!("round {round} {}", "x".repeat(300)),
                            })
                            .collect(),
                        ..Decision::default()
                    })
                    .collect();
                let ids: Vec<String> = claimed.iter().map(|(id, _, _)| id.clone()).collect();
                if let Err(e) = queue.apply(batch, BACKOFF).await {
                    eprintln!("apply: {e}");
                    failures += 1;
                    if let Err(e) = queue.release(&ids).await {
                        eprintln!("release: {e}");
                    }
                }
            }
            Err(e) => {
                eprintln!("claim: {e}");
                failures += 1;
            }
        }
        let _ = queue
            .requeue_errored(u64::MAX, &store::ErroredFilter::default())
            .await;
        if let Err(e) = accept(&queue, 1000 + round).await {
            eprintln!("accept: {e}");
        }
    }
    eprintln!("{failures} failures while full");
    drop(ballast);
    std::fs::remove_file(&ballast_path).unwrap();
    // Room again: everything works at once (a connection left in a transaction by a failed
    // commit would keep the database locked: every write waits for the busy timeout, then fails).
    let again = async {
        accept(&queue, 5000).await.unwrap();
        queue.claim_received(256).await.unwrap();
        queue
            .requeue_errored(u64::MAX, &store::ErroredFilter::default())
            .await
            .unwrap();
    };
    tokio::time::timeout(std::time::Duration::from_secs(8), again)
        .await
        .expect("the queue database stayed locked after the disk had room again");
}
