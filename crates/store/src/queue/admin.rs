//! The queue as the administrator sees it: listing and showing messages, retrying and
//! deleting them, the counts by state.

use sqlx::Row;

use super::*;

impl Queue {
    /// Messages, newest first, optionally in one state.
    pub async fn list(
        &self,
        state: Option<MessageState>,
        limit: u32,
    ) -> Result<Vec<MessageInfo>, QueueError> {
        let state = state.map(MessageState::as_str);
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE (?1 IS NULL OR state = ?1) ORDER BY received_at DESC, id DESC LIMIT ?2",
        )
        .bind(state)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.show_all(&ids).await
    }

    pub(super) async fn show_all(&self, ids: &[String]) -> Result<Vec<MessageInfo>, QueueError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.show(id).await?);
        }
        Ok(out)
    }

    /// One message with its recipients.
    pub async fn show(&self, id: &str) -> Result<MessageInfo, QueueError> {
        let m = sqlx::query(
            "SELECT id, sender, source, size, received_at, state, message_id, parent, note FROM messages WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| QueueError::NotFound(format!("message {id}")))?;
        let rows = sqlx::query(
            "SELECT id, address, hop, state, attempts, next_attempt, last_reply
             FROM recipients WHERE message = ?1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let source: String = m.get(2);
        Ok(MessageInfo {
            id: m.get(0),
            sender: m.get(1),
            source: Source::parse(&source),
            size: to_u64(m.get(3)),
            received_at: to_u64(m.get(4)),
            state: m.get::<String, _>(5).parse()?,
            message_id: m.get(6),
            parent: m.get(7),
            note: m.get(8),
            recipients: rows
                .iter()
                .map(|r| -> Result<RecipientInfo, QueueError> {
                    Ok(RecipientInfo {
                        id: r.get(0),
                        address: r.get(1),
                        hop: r
                            .get::<Option<String>, _>(2)
                            .map(|h| h.parse())
                            .transpose()?,
                        state: r.get::<String, _>(3).parse()?,
                        attempts: u32::try_from(r.get::<i64, _>(4)).unwrap_or(0),
                        next_attempt: to_u64(r.get(5)),
                        last_reply: r.get(6),
                    })
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Makes a message's deferred recipients due now; returns how many.
    pub async fn retry(&self, id: &str) -> Result<u64, QueueError> {
        self.show(id).await?;
        let done = sqlx::query(
            "UPDATE recipients SET next_attempt = 0 WHERE message = ?1 AND state = 'deferred'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes a message: no further delivery, file removed; the rows stay as a record.
    pub async fn delete(&self, id: &str) -> Result<(), QueueError> {
        self.show(id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE recipients SET state = 'bounced', last_reply = 'deleted by an administrator' WHERE message = ?1 AND state IN ('new', 'pending', 'deferred', 'errored')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE messages SET state = 'deleted', updated_at = ?1 WHERE id = ?2")
            .bind(to_i64(self.clock.now()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let in_files = delete_bodies(&mut tx, &[id.to_string()]).await?;
        tx.commit().await?;
        for id in in_files {
            self.spool.remove(&id)?;
        }
        Ok(())
    }

    /// How much is waiting.
    pub async fn depth(&self) -> Result<Depth, QueueError> {
        let received: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE state IN ('received', 'processing')",
        )
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT state, COUNT(*) FROM recipients WHERE state IN ('pending', 'deferred', 'errored') GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut depth = Depth {
            received: to_u64(received),
            ..Depth::default()
        };
        for r in rows {
            let state: String = r.get(0);
            let n = to_u64(r.get(1));
            match state.as_str() {
                "pending" => depth.pending = n,
                "deferred" => depth.deferred = n,
                _ => depth.errored = n,
            }
        }
        Ok(depth)
    }
}
