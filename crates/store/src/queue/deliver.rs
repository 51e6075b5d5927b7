//! The delivery workers' side of the queue: leasing recipients that are due, and recording
//! the outcomes of attempts in batches.

use std::time::Duration;

use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::spool::Spool;

impl Queue {
    /// Claims recipients due now, grouped by message and next hop, leasing them for `lease`
    /// so that no other worker takes them meanwhile.
    pub async fn due(&self, limit: u32, lease: Duration) -> Result<Vec<Delivery>, QueueError> {
        let at = self.clock.now();
        let until = to_i64(at + lease.as_secs());
        let rows = sqlx::query(
            "UPDATE recipients SET leased_until = ?1, owner = ?4
             WHERE id IN (
                SELECT r.id FROM recipients r JOIN messages m ON m.id = r.message
                WHERE r.state IN ('pending', 'deferred') AND r.next_attempt <= ?2
                  AND r.leased_until <= ?2 AND m.state = 'queued'
                ORDER BY r.next_attempt LIMIT ?3)
             RETURNING id, message, address, hop, attempts",
        )
        .bind(until)
        .bind(to_i64(at))
        .bind(i64::from(limit))
        .bind(&*self.node)
        .fetch_all(&self.pool)
        .await?;
        let ids = json_ids(rows.iter().map(|r| r.get::<&str, _>(1)));
        let mut messages: std::collections::HashMap<String, (String, u64, Option<String>, bool)> =
            std::collections::HashMap::new();
        if !rows.is_empty() {
            let list = sqlx::query(
                "SELECT id, sender, received_at, message_id, parent IS NOT NULL FROM messages
                 WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
            for m in list {
                messages.insert(
                    m.get(0),
                    (m.get(1), to_u64(m.get(2)), m.get(3), m.get::<bool, _>(4)),
                );
            }
        }
        let mut groups: Vec<Delivery> = Vec::new();
        for r in rows {
            let (rid, message, address, hop): (i64, String, String, Option<String>) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let attempts = u32::try_from(r.get::<i64, _>(4)).unwrap_or(0);
            // A next hop this Postern cannot read holds up only its own recipient: it is left
            // without one (the workers log it and its lease runs out), not the whole batch.
            let hop = match hop.map(|h| h.parse::<Route>()).transpose() {
                Ok(hop) => hop,
                Err(e) => {
                    tracing::error!(queue_id = %message, recipient = %address, error = %e, "cannot read the recipient's next hop");
                    None
                }
            };
            if let Some(g) = groups.iter_mut().find(|g| g.id == message && g.hop == hop) {
                g.recipients.push((rid, address));
                g.attempts = g.attempts.max(attempts);
                continue;
            }
            let Some((sender, received_at, message_id, derived)) = messages.get(&message).cloned()
            else {
                continue;
            };
            groups.push(Delivery {
                id: message,
                sender,
                hop,
                recipients: vec![(rid, address)],
                attempts,
                received_at,
                message_id,
                derived,
            });
        }
        Ok(groups)
    }

    /// Records an attempt's outcome for recipients of one message. Concurrent calls share one
    /// transaction (group commit), like [`Queue::accept`].
    pub async fn record(&self, id: &str, outcome: &[(i64, Outcome)]) -> Result<(), QueueError> {
        let (done, wait) = oneshot::channel();
        self.records
            .send(Record {
                id: id.to_string(),
                outcome: outcome.to_vec(),
                done,
            })
            .await
            .map_err(|_| QueueError::Closed)?;
        wait.await.map_err(|_| QueueError::Closed)?
    }
}

/// Records delivery outcomes in groups: whatever is waiting when a commit starts goes into it.
pub(super) async fn recorder(
    pool: SqlitePool,
    spool: Spool,
    mut rx: mpsc::Receiver<Record>,
    clock: SharedClock,
    node: Arc<str>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match record_batch(&pool, &batch, clock.now(), &node).await {
            Ok(finished) => {
                for id in finished {
                    if let Err(e) = spool.remove(&id) {
                        tracing::warn!(queue_id = %id, error = %e, "cannot remove a finished message file");
                    }
                }
                for r in batch {
                    let _ = r.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record delivery outcomes");
                for r in batch {
                    let _ = r
                        .done
                        .send(Err(QueueError::Io(std::io::Error::other(e.to_string()))));
                }
            }
        }
    }
}

async fn record_batch(
    pool: &SqlitePool,
    batch: &[Record],
    at: u64,
    node: &str,
) -> Result<Vec<String>, QueueError> {
    let rows: Vec<serde_json::Value> = batch
        .iter()
        .flat_map(|r| r.outcome.iter())
        .map(|(rid, o)| {
            let (state, next, reply) = match o {
                Outcome::Delivered(reply) => ("delivered", 0, reply.as_str()),
                Outcome::Deferred { retry_at, reply } => ("deferred", *retry_at, reply.as_str()),
                Outcome::Bounced(reply) => ("bounced", 0, reply.as_str()),
            };
            serde_json::json!({"id": rid, "s": state, "n": next, "r": reply})
        })
        .collect();
    let ids = json_ids(batch.iter().map(|r| r.id.as_str()));
    let mut tx = pool.begin().await?;
    sqlx::query(
        // Only while this node holds the lease (or nobody does: the errored queue's expiry):
        // once another node has taken a lease that ran out, its own outcome counts.
        "UPDATE recipients SET state = j.value->>'s', next_attempt = j.value->>'n',
            last_reply = j.value->>'r', attempts = attempts + 1, leased_until = 0, owner = NULL
         FROM json_each(?1) AS j WHERE recipients.id = j.value->>'id'
           AND +recipients.state IN ('pending', 'deferred', 'errored')
           AND (recipients.owner = ?2 OR recipients.owner IS NULL)",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .bind(node)
    .execute(&mut *tx)
    .await?;
    let finished = finish_done(&mut tx, &ids, at).await?;
    tx.commit().await?;
    Ok(finished)
}
