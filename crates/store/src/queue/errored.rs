//! The errored queue: recipients waiting for a key, retried when due or all at once, listed,
//! and returned for a bounce once their lifetime ends; and the users seen, for the prefetch.

use sqlx::Row;

use super::*;

impl Queue {
    /// Sends errored recipients due by `due_by` (Unix seconds) back to processing, with their
    /// messages; returns how many recipients. `u64::MAX` takes all of them (the key server is
    /// back), a filter narrows it (an administrator's resend).
    pub async fn requeue_errored(
        &self,
        due_by: u64,
        filter: &ErroredFilter,
    ) -> Result<u64, QueueError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE recipients SET state = 'new'
             WHERE state = 'errored' AND next_attempt <= ?1
               AND message IN (SELECT id FROM messages WHERE state = 'queued' AND (?2 IS NULL OR id = ?2)
                               AND (?3 IS NULL OR received_at >= ?3)
                               AND (?4 IS NULL OR received_at < ?4))
             RETURNING message",
        )
        .bind(to_i64(due_by))
        .bind(filter.id.as_deref())
        .bind(filter.since.map(to_i64))
        .bind(filter.until.map(to_i64))
        .fetch_all(&mut *tx)
        .await?;
        let count = ids.len() as u64;
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE messages SET state = 'received', updated_at = ?2
                 WHERE id IN (SELECT value FROM json_each(?1)) AND +state = 'queued'",
            )
            .bind(json_ids(ids.iter().map(String::as_str)))
            .bind(to_i64(self.clock.now()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// Messages with recipients in the errored queue, oldest first.
    pub async fn errored(
        &self,
        filter: &ErroredFilter,
        limit: u32,
    ) -> Result<Vec<MessageInfo>, QueueError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM messages m
             WHERE id IN (SELECT message FROM recipients WHERE state = 'errored')
               AND (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR received_at >= ?2)
               AND (?3 IS NULL OR received_at < ?3)
             ORDER BY received_at, id LIMIT ?4",
        )
        .bind(filter.id.as_deref())
        .bind(filter.since.map(to_i64))
        .bind(filter.until.map(to_i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.show_all(&ids).await
    }

    /// Errored recipients of messages received before `cutoff` (past their lifetime), grouped
    /// by message with each one's reason, for bouncing.
    pub async fn expired_errored(
        &self,
        cutoff: u64,
    ) -> Result<Vec<(Delivery, Vec<String>)>, QueueError> {
        let rows = sqlx::query(
            "SELECT r.id, r.address, r.attempts, m.id, m.sender, m.received_at, m.message_id,
                    r.last_reply
             FROM recipients r JOIN messages m ON m.id = r.message
             WHERE r.state = 'errored' AND m.received_at < ?1 AND m.state = 'queued'
             ORDER BY m.id, r.id LIMIT 1000",
        )
        .bind(to_i64(cutoff))
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(Delivery, Vec<String>)> = Vec::new();
        for r in rows {
            let id: String = r.get(3);
            let rid: i64 = r.get(0);
            let address: String = r.get(1);
            let reason: Option<String> = r.get(7);
            let reason = reason.unwrap_or_default();
            let attempts = u32::try_from(r.get::<i64, _>(2)).unwrap_or(0);
            match out.last_mut() {
                Some((d, reasons)) if d.id == id => {
                    d.recipients.push((rid, address));
                    reasons.push(reason);
                }
                _ => out.push((
                    Delivery {
                        id,
                        sender: r.get(4),
                        hop: None,
                        recipients: vec![(rid, address)],
                        attempts,
                        received_at: to_u64(r.get(5)),
                        message_id: r.get(6),
                        derived: false,
                    },
                    vec![reason],
                )),
            }
        }
        Ok(out)
    }

    /// Internal users seen since `since` (Unix seconds).
    pub async fn users_seen(&self, since: u64) -> Result<Vec<String>, QueueError> {
        Ok(
            sqlx::query_scalar("SELECT address FROM users WHERE last_seen >= ?1 ORDER BY address")
                .bind(to_i64(since))
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
