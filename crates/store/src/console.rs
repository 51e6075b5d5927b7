//! What the administration console keeps beside the queue: administrator accounts (only their
//! password hashes) and the audit log, where every change made from the console, the CLI or the
//! REST API is written with who made it.

use sqlx::Row;

use crate::queue::{Queue, QueueError, now, to_i64, to_u64};

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
    /// Adds an administrator with an already-hashed password; refused when the name is taken.
    pub async fn create_admin(&self, name: &str, hash: &str) -> Result<(), QueueError> {
        let done = sqlx::query(
            "INSERT INTO admins (name, hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(hash)
        .bind(to_i64(now()))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(QueueError::Refused(format!(
                "an administrator named {name:?} exists"
            )));
        }
        Ok(())
    }

    /// Replaces an administrator's password hash.
    pub async fn set_admin_password(&self, name: &str, hash: &str) -> Result<(), QueueError> {
        let done = sqlx::query("UPDATE admins SET hash = ?2 WHERE name = ?1")
            .bind(name)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(QueueError::NotFound(format!("administrator {name:?}")));
        }
        Ok(())
    }

    /// The password hash of administrator `name`.
    pub async fn admin_hash(&self, name: &str) -> Result<Option<String>, QueueError> {
        Ok(
            sqlx::query_scalar("SELECT hash FROM admins WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Administrator names, in order.
    pub async fn admins(&self) -> Result<Vec<String>, QueueError> {
        Ok(sqlx::query_scalar("SELECT name FROM admins ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Writes a line to the audit log.
    pub async fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), QueueError> {
        sqlx::query("INSERT INTO audit (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)")
            .bind(to_i64(now()))
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
