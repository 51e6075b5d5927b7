//! Accepting a received message: its rows committed with its bytes (a large one's file fsynced
//! and placed first), concurrent accepts sharing one transaction and at most one directory
//! fsync (group commit).

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::spool::{Finished, Spool};

impl Queue {
    /// Makes a received message durable and returns its queue id. Only after this returns may
    /// the client be told 250.
    pub async fn accept(&self, envelope: Envelope, file: Finished) -> Result<String, QueueError> {
        let id = new_id();
        let (done, wait) = oneshot::channel();
        self.commits
            .send(Pending {
                id: id.clone(),
                envelope,
                file,
                at: self.clock.now(),
                done,
            })
            .await
            .map_err(|_| QueueError::Closed)?;
        wait.await.map_err(|_| QueueError::Closed)??;
        Ok(id)
    }
}

/// Commits accepted messages in groups: whatever is waiting when a commit starts goes into it.
pub(super) async fn committer(pool: SqlitePool, spool: Spool, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let result = commit_batch(&pool, &spool, &batch).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, messages = batch.len(), "cannot commit received messages");
        }
        for p in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(QueueError::Io(std::io::Error::other(e.to_string()))),
            };
            if r.is_err() && p.file.file().is_some() {
                let _ = std::fs::remove_file(spool.path(&p.id));
            }
            let _ = p.done.send(r);
        }
    }
}

async fn commit_batch(
    pool: &SqlitePool,
    spool: &Spool,
    batch: &[Pending],
) -> Result<(), QueueError> {
    let mut placed = false;
    for p in batch {
        if let Some(file) = p.file.file() {
            spool.place(file, &p.id)?;
            placed = true;
        }
    }
    if placed {
        spool.sync_dir()?;
    }
    let messages: Vec<serde_json::Value> = batch
        .iter()
        .map(|p| {
            let e = &p.envelope;
            serde_json::json!({
                "id": p.id, "sender": e.sender, "client": e.client, "helo": e.helo,
                "source": e.source.as_str(), "size": p.file.len, "at": p.at, "mid": e.message_id,
            })
        })
        .collect();
    let recipients: Vec<serde_json::Value> = batch
        .iter()
        .flat_map(|p| {
            p.envelope
                .recipients
                .iter()
                .map(move |r| serde_json::json!({"m": p.id, "a": r}))
        })
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO messages (id, sender, client, helo, source, size, received_at, state, message_id, updated_at)
         SELECT j.value->>'id', j.value->>'sender', j.value->>'client', j.value->>'helo',
                j.value->>'source', j.value->>'size', j.value->>'at', 'received', j.value->>'mid', j.value->>'at'
         FROM json_each(?1) AS j",
    )
    .bind(serde_json::Value::Array(messages).to_string())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO recipients (message, address, state, next_attempt)
         SELECT j.value->>'m', j.value->>'a', 'new', 0 FROM json_each(?1) AS j ORDER BY j.key",
    )
    .bind(serde_json::Value::Array(recipients).to_string())
    .execute(&mut *tx)
    .await?;
    let bodies: Vec<(&str, &[u8])> = batch
        .iter()
        .filter_map(|p| Some((p.id.as_str(), p.file.inline()?)))
        .collect();
    super::decide::insert_bodies(&mut tx, &bodies).await?;
    tx.commit().await?;
    Ok(())
}
