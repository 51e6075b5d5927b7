//! Quarantine areas and the policies that fill them, beside the queue in the same database.
//!
//! A held message keeps its file and its rows: its held recipients are in state `quarantined`
//! and point at a `quarantine` entry (area, rule, reason, subject). Releasing or reprocessing
//! sends those recipients back to processing (a release skips the rule that held them);
//! deleting ends them. Entries older than their area's retention are deleted.

use sqlx::Row;

use crate::queue::{Queue, QueueError, finish_done, json_ids, to_i64, to_u64};

/// Retention of an area made on the fly (by a policy naming it), in seconds: 30 days.
pub const DEFAULT_RETENTION_SECS: u64 = 30 * 86_400;

/// A quarantine area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    /// Its name.
    pub name: String,
    /// How long held messages are kept before they are deleted.
    pub retention_secs: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// Messages held in it now.
    pub held: u64,
}

/// A held message (one entry: the recipients one rule held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Entry id (what release, reprocess and delete take).
    pub id: i64,
    /// The queue id of the message.
    pub message: String,
    /// The area.
    pub area: String,
    /// The rule that held it.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// Envelope sender.
    pub sender: String,
    /// The held recipients.
    pub recipients: Vec<String>,
    /// The subject.
    pub subject: String,
    /// When it was held (Unix seconds).
    pub at: u64,
    /// The message's size in bytes.
    pub size: u64,
}

/// Which held messages a query or an operation covers; every field narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineFilter {
    /// One entry.
    pub id: Option<i64>,
    /// The area.
    pub area: Option<String>,
    /// Sender contains (case-insensitive).
    pub sender: Option<String>,
    /// A recipient contains.
    pub recipient: Option<String>,
    /// Subject contains.
    pub subject: Option<String>,
    /// The rule's name contains.
    pub rule: Option<String>,
    /// The reason contains.
    pub reason: Option<String>,
    /// Held at or after (Unix seconds).
    pub since: Option<u64>,
    /// Held before.
    pub until: Option<u64>,
}

/// What an administrator does with held messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineOp {
    /// Deliver, skipping the rule that held them.
    Release,
    /// Run the current policy on them again.
    Reprocess,
    /// Delete them for good.
    Delete,
}

impl QuarantineOp {
    /// Reads `release`, `reprocess` or `delete`.
    pub fn parse(s: &str) -> Option<QuarantineOp> {
        match s {
            "release" => Some(QuarantineOp::Release),
            "reprocess" => Some(QuarantineOp::Reprocess),
            "delete" => Some(QuarantineOp::Delete),
            _ => None,
        }
    }

    /// What was done, for messages to the administrator.
    pub fn done(self) -> &'static str {
        match self {
            QuarantineOp::Release => "released (delivered, skipping the rule that held them)",
            QuarantineOp::Reprocess => "sent back through the current policy",
            QuarantineOp::Delete => "deleted",
        }
    }
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// Increases with every import.
    pub version: i64,
    /// The policy file.
    pub text: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Who imported it.
    pub author: String,
}

/// Holds recipients (or, with `delete`, drops them) inside `apply`'s transaction. `h` carries
/// `m` (message), `a` (addresses), `r` (reason) and, for a hold, `area`, `rule`, `subject`.
pub(crate) async fn hold(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    h: &serde_json::Value,
    at: u64,
) -> Result<(), QueueError> {
    let text = |k: &str| {
        h.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let addresses = h.get("a").cloned().unwrap_or_default().to_string();
    if h.get("delete").is_some() {
        sqlx::query(
            "UPDATE recipients SET state = 'deleted', last_reply = ?3
             WHERE message = ?1 AND address IN (SELECT value FROM json_each(?2)) AND +state = 'new'",
        )
        .bind(text("m"))
        .bind(&addresses)
        .bind(text("r"))
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }
    let area = text("area");
    sqlx::query("INSERT INTO areas (name, retention_secs, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING")
        .bind(&area)
        .bind(to_i64(DEFAULT_RETENTION_SECS))
        .bind(to_i64(at))
        .execute(&mut **tx)
        .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO quarantine (message, area, rule, reason, sender, recipients, subject, at)
         SELECT ?1, ?2, ?3, ?4, m.sender, ?5, ?6, ?7 FROM messages m WHERE m.id = ?1
         RETURNING id",
    )
    .bind(text("m"))
    .bind(&area)
    .bind(text("rule"))
    .bind(text("r"))
    .bind(&addresses)
    .bind(text("subject"))
    .bind(to_i64(at))
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE recipients SET state = 'quarantined', hold = ?3, last_reply = 'held in ' || ?4
         WHERE message = ?1 AND address IN (SELECT value FROM json_each(?2)) AND +state = 'new'",
    )
    .bind(text("m"))
    .bind(&addresses)
    .bind(id)
    .bind(&area)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The SQL condition for a filter (on `quarantine q`), with its bound values in order.
fn filter_sql(f: &QuarantineFilter) -> (String, Vec<String>) {
    let mut clauses = vec!["q.state = 'held'".to_string()];
    let mut binds = Vec::new();
    let mut like = |column: &str, value: &Option<String>, binds: &mut Vec<String>| {
        if let Some(v) = value {
            binds.push(format!("%{}%", v.to_lowercase()));
            clauses.push(format!("lower({column}) LIKE ?{}", binds.len()));
        }
    };
    like("q.sender", &f.sender, &mut binds);
    like("q.recipients", &f.recipient, &mut binds);
    like("q.subject", &f.subject, &mut binds);
    like("q.rule", &f.rule, &mut binds);
    like("q.reason", &f.reason, &mut binds);
    if let Some(a) = &f.area {
        binds.push(a.clone());
        clauses.push(format!("q.area = ?{}", binds.len()));
    }
    if let Some(id) = f.id {
        binds.push(id.to_string());
        clauses.push(format!("q.id = CAST(?{} AS INTEGER)", binds.len()));
    }
    if let Some(t) = f.since {
        binds.push(t.to_string());
        clauses.push(format!("q.at >= CAST(?{} AS INTEGER)", binds.len()));
    }
    if let Some(t) = f.until {
        binds.push(t.to_string());
        clauses.push(format!("q.at < CAST(?{} AS INTEGER)", binds.len()));
    }
    (clauses.join(" AND "), binds)
}

impl Queue {
    /// Makes an area, or changes its retention.
    pub async fn create_area(&self, name: &str, retention_secs: u64) -> Result<(), QueueError> {
        sqlx::query(
            "INSERT INTO areas (name, retention_secs, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET retention_secs = excluded.retention_secs",
        )
        .bind(name)
        .bind(to_i64(retention_secs))
        .bind(to_i64(self.clock.now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every area with the number of messages it holds.
    pub async fn areas(&self) -> Result<Vec<Area>, QueueError> {
        let rows = sqlx::query(
            "SELECT a.name, a.retention_secs, a.created_at,
                    (SELECT COUNT(*) FROM quarantine q WHERE q.area = a.name AND q.state = 'held')
             FROM areas a ORDER BY a.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Area {
                name: r.get(0),
                retention_secs: to_u64(r.get(1)),
                created_at: to_u64(r.get(2)),
                held: to_u64(r.get(3)),
            })
            .collect())
    }

    /// Deletes an empty area. One that holds messages is refused, so that nothing is lost by
    /// a slip: delete or release its messages first.
    pub async fn delete_area(&self, name: &str) -> Result<(), QueueError> {
        let areas = self.areas().await?;
        let Some(area) = areas.iter().find(|a| a.name == name) else {
            return Err(QueueError::NotFound(format!("quarantine area {name:?}")));
        };
        if area.held > 0 {
            return Err(QueueError::Refused(format!(
                "area {name:?} holds {} messages; release or delete them first",
                area.held
            )));
        }
        sqlx::query("DELETE FROM areas WHERE name = ?1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Held messages matching `filter`, newest first, at most `limit`.
    pub async fn quarantined(
        &self,
        filter: &QuarantineFilter,
        limit: u32,
    ) -> Result<Vec<Quarantined>, QueueError> {
        let (condition, binds) = filter_sql(filter);
        let sql = format!(
            "SELECT q.id, q.message, q.area, q.rule, q.reason, q.sender, q.recipients, q.subject,
                    q.at, COALESCE(m.size, 0)
             FROM quarantine q LEFT JOIN messages m ON m.id = q.message
             WHERE {condition} ORDER BY q.at DESC, q.id DESC LIMIT {limit}"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let recipients: String = r.get(6);
                Quarantined {
                    id: r.get(0),
                    message: r.get(1),
                    area: r.get(2),
                    rule: r.get(3),
                    reason: r.get(4),
                    sender: r.get(5),
                    recipients: serde_json::from_str(&recipients).unwrap_or_default(),
                    subject: r.get(7),
                    at: to_u64(r.get(8)),
                    size: to_u64(r.get(9)),
                }
            })
            .collect())
    }

    /// Which of `ids` are quarantine entries, held or not (released, reprocessed and deleted
    /// entries are kept): an id not among them never was one, or its message is gone.
    pub async fn quarantine_entries(&self, ids: &[i64]) -> Result<Vec<i64>, QueueError> {
        let list = serde_json::Value::from(ids.to_vec()).to_string();
        Ok(sqlx::query_scalar(
            "SELECT id FROM quarantine WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id",
        )
        .bind(&list)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Carries out `op` on the held entries `ids`; returns how many were still held.
    pub async fn act_on_quarantined(
        &self,
        op: QuarantineOp,
        ids: &[i64],
    ) -> Result<u64, QueueError> {
        match op {
            QuarantineOp::Release => self.release_quarantined(ids).await,
            QuarantineOp::Reprocess => self.reprocess_quarantined(ids).await,
            QuarantineOp::Delete => self.delete_quarantined(ids).await,
        }
    }

    /// Delivers held messages: their recipients are processed again, skipping the rule that
    /// held them. Returns how many entries were released.
    pub async fn release_quarantined(&self, ids: &[i64]) -> Result<u64, QueueError> {
        self.unhold(ids, true).await
    }

    /// Runs the current policy on held messages again (all rules). Returns how many entries.
    pub async fn reprocess_quarantined(&self, ids: &[i64]) -> Result<u64, QueueError> {
        self.unhold(ids, false).await
    }

    async fn unhold(&self, ids: &[i64], skip: bool) -> Result<u64, QueueError> {
        let list = serde_json::Value::from(ids.to_vec()).to_string();
        let mut tx = self.pool.begin().await?;
        let entries = sqlx::query(
            "UPDATE quarantine SET state = ?2
             WHERE id IN (SELECT value FROM json_each(?1)) AND +state = 'held'
             RETURNING id, message, rule",
        )
        .bind(&list)
        .bind(if skip { "released" } else { "reprocessed" })
        .fetch_all(&mut *tx)
        .await?;
        for e in &entries {
            let id: i64 = e.get(0);
            let message: String = e.get(1);
            let rule: String = e.get(2);
            sqlx::query(
                "UPDATE recipients SET state = 'new', hold = NULL, last_reply = NULL
                 WHERE hold = ?1 AND state = 'quarantined'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE messages SET state = 'received', skip_rule = ?2, updated_at = ?3
                 WHERE id = ?1 AND state IN ('queued', 'received')",
            )
            .bind(&message)
            .bind(skip.then_some(rule))
            .bind(to_i64(self.clock.now()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(entries.len() as u64)
    }

    /// Deletes held messages for good. Returns how many entries.
    pub async fn delete_quarantined(&self, ids: &[i64]) -> Result<u64, QueueError> {
        self.drop_held(ids, "deleted from quarantine").await
    }

    async fn drop_held(&self, ids: &[i64], why: &str) -> Result<u64, QueueError> {
        let list = serde_json::Value::from(ids.to_vec()).to_string();
        let mut tx = self.pool.begin().await?;
        let messages: Vec<String> = sqlx::query_scalar(
            "UPDATE quarantine SET state = 'deleted'
             WHERE id IN (SELECT value FROM json_each(?1)) AND +state = 'held'
             RETURNING message",
        )
        .bind(&list)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE recipients SET state = 'deleted', last_reply = ?2
             WHERE hold IN (SELECT value FROM json_each(?1)) AND +state = 'quarantined'",
        )
        .bind(&list)
        .bind(why)
        .execute(&mut *tx)
        .await?;
        let finished = finish_done(
            &mut tx,
            &json_ids(messages.iter().map(String::as_str)),
            self.clock.now(),
        )
        .await?;
        tx.commit().await?;
        for id in finished {
            self.spool.remove(&id)?;
        }
        Ok(messages.len() as u64)
    }

    /// Deletes entries held longer than their area's retention; returns how many.
    pub async fn expire_quarantine(&self, now: u64) -> Result<u64, QueueError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT q.id FROM quarantine q JOIN areas a ON a.name = q.area
             WHERE q.state = 'held' AND q.at + a.retention_secs <= ?1",
        )
        .bind(to_i64(now))
        .fetch_all(&self.pool)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.drop_held(&ids, "past the quarantine area's retention")
            .await
    }

    /// Messages held now (for metrics and the console).
    pub async fn quarantine_depth(&self) -> Result<u64, QueueError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quarantine WHERE state = 'held'")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(n))
    }

    /// Stores a new policy version (the caller has validated it) and makes the quarantine
    /// areas it names that do not exist yet (30 days' retention; existing areas keep theirs),
    /// in one transaction; returns the version.
    pub async fn save_policy(
        &self,
        text: &str,
        author: &str,
        areas: &[&str],
    ) -> Result<i64, QueueError> {
        let at = to_i64(self.clock.now());
        let mut tx = self.pool.begin().await?;
        let version = sqlx::query_scalar(
            "INSERT INTO policies (text, created_at, author) VALUES (?1, ?2, ?3) RETURNING version",
        )
        .bind(text)
        .bind(at)
        .bind(author)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO areas (name, retention_secs, created_at)
             SELECT value, ?2, ?3 FROM json_each(?1) WHERE true
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(json_ids(areas.iter().copied()))
        .bind(to_i64(DEFAULT_RETENTION_SECS))
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// The version of the current policy (0: none stored, the default applies).
    pub async fn policy_version(&self) -> Result<i64, QueueError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM policies")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The current policy, if one was stored.
    pub async fn current_policy(&self) -> Result<Option<StoredPolicy>, QueueError> {
        let row = sqlx::query(
            "SELECT version, text, created_at, author FROM policies ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| StoredPolicy {
            version: r.get(0),
            text: r.get(1),
            created_at: to_u64(r.get(2)),
            author: r.get(3),
        }))
    }
}
