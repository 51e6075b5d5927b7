//! What the administration console reads beside the queue: the audit log, where every change
//! made from the console, the CLI or the REST API is written with who made it, and the rate of
//! mail received. The administrators themselves are in [`crate::accounts`].

use sqlx::Row;

use crate::queue::{Queue, QueueError, to_i64, to_u64};

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its number.
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    /// Who: `admin:NAME`, `cli`, `api`.
    pub actor: String,
    /// What, in a word or two (`policy.save`, `quarantine.release`).
    pub action: String,
    /// The particulars.
    pub detail: String,
}

impl Queue {
    /// Writes a line to the audit log.
    pub async fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), QueueError> {
        sqlx::query("INSERT INTO audit (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)")
            .bind(to_i64(self.clock.now()))
            .bind(actor)
            .bind(action)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest `limit` lines of the audit log, newest first.
    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, QueueError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at: to_u64(r.get(1)),
                actor: r.get(2),
                action: r.get(3),
                detail: r.get(4),
            })
            .collect())
    }

    /// Messages received on the SMTP ports (not copies Postern made) in each of the `minutes`
    /// minutes before `until`, oldest first.
    pub async fn received_per_minute(
        &self,
        until: u64,
        minutes: u32,
    ) -> Result<Vec<u64>, QueueError> {
        let start = until.saturating_sub(u64::from(minutes) * 60);
        let rows = sqlx::query(
            "SELECT (received_at - ?1) / 60, COUNT(*) FROM messages
             WHERE received_at >= ?1 AND received_at < ?2 AND source IN ('policy', 'bypass')
             GROUP BY 1",
        )
        .bind(to_i64(start))
        .bind(to_i64(until))
        .fetch_all(&self.pool)
        .await?;
        let mut out = vec![0u64; minutes as usize];
        for r in rows {
            let slot: i64 = r.get(0);
            let n: i64 = r.get(1);
            if let Some(s) = usize::try_from(slot).ok().and_then(|i| out.get_mut(i)) {
                *s = to_u64(n);
            }
        }
        Ok(out)
    }
}
