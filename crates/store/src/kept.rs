//! Sealed messages kept on the server: a large message's sealed part (its encrypted email
//! carries a link instead), and the copy a forward-to-decrypt answer links to.
//!
//! A link carries a random token; only its SHA-256 is stored, so the database alone does not
//! give working links. Its bytes are stored under an id of its own: in the database when small,
//! else as a file in the spool's `kept/` directory.
//! A kept message is recorded in the same transaction as the decision that made it
//! ([`crate::Decision::kept`]) and removed by [`Queue::expire_kept`] when its time is over.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::body::Body;
use crate::queue::{Queue, QueueError, to_i64, to_u64};
use crate::spool::Finished;

/// Why a sealed message is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptKind {
    /// Too large to travel inside its encrypted email.
    Large,
    /// Linked from an answer to a forward-to-decrypt.
    Forward,
}

impl KeptKind {
    fn as_str(self) -> &'static str {
        match self {
            KeptKind::Large => "large",
            KeptKind::Forward => "forward",
        }
    }

    fn parse(s: &str) -> KeptKind {
        if s == "forward" {
            KeptKind::Forward
        } else {
            KeptKind::Large
        }
    }
}

/// A sealed message to keep, made by a transformation and recorded with its decision.
#[derive(Debug)]
pub struct Keep {
    /// The SHA-256 of the link's token ([`token_hash`]).
    pub token_hash: String,
    /// The sealed message (raw bytes, not base64).
    pub file: Finished,
    /// Why.
    pub kind: KeptKind,
    /// Who asked for it (a forward-to-decrypt), for the per-person limit.
    pub forwarder: Option<String>,
    /// When the link stops working (Unix seconds).
    pub expires_at: u64,
}

/// A kept sealed message found by its token.
#[derive(Debug, Clone)]
pub struct Kept {
    /// The sealed message.
    pub body: Body,
    /// Its size in bytes.
    pub size: u64,
    /// Why it is kept.
    pub kind: KeptKind,
    /// When the link stops working (Unix seconds).
    pub expires_at: u64,
}

/// A new link token: 32 random bytes in hex.
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is stored for a token.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The JSON rows of the kept messages of a decision batch, each with the id its file got.
pub(crate) fn rows(kept: &[(String, &Keep)], message: &str) -> Vec<serde_json::Value> {
    kept.iter()
        .map(|(id, k)| {
            serde_json::json!({
                "id": id, "t": k.token_hash, "m": message, "k": k.kind.as_str(),
                "f": k.forwarder, "s": k.file.len, "x": to_i64(k.expires_at),
            })
        })
        .collect()
}

/// Inserts the rows made by [`rows`].
pub(crate) async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    rows: Vec<serde_json::Value>,
    at: i64,
) -> Result<(), QueueError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO kept (id, token_hash, message, kind, forwarder, size, created_at, expires_at)
         SELECT j.value->>'id', j.value->>'t', j.value->>'m', j.value->>'k', j.value->>'f',
                j.value->>'s', ?2, j.value->>'x'
         FROM json_each(?1) AS j",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Queue {
    /// The kept message a link's `token` names, unless it expired by `now`.
    pub async fn kept(&self, token: &str, now: u64) -> Result<Option<Kept>, QueueError> {
        type Row = (String, i64, String, i64, Option<Vec<u8>>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT k.id, k.size, k.kind, k.expires_at, b.data
             FROM kept k LEFT JOIN bodies b ON b.id = k.id
             WHERE k.token_hash = ?1 AND k.expires_at > ?2",
        )
        .bind(token_hash(token))
        .bind(to_i64(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, size, kind, expires_at, data)| Kept {
            body: match data {
                Some(bytes) => Body::from_bytes(bytes),
                None => Body::file(&self.spool.kept_path(&id), to_u64(size)),
            },
            size: to_u64(size),
            kind: KeptKind::parse(&kind),
            expires_at: to_u64(expires_at),
        }))
    }

    /// Forward-to-decrypt links made for `forwarder` from `since` to before `before` (the
    /// per-person limit).
    pub async fn links_for(
        &self,
        forwarder: &str,
        since: u64,
        before: u64,
    ) -> Result<u64, QueueError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM kept WHERE forwarder = ?1 AND created_at >= ?2 AND created_at < ?3",
        )
        .bind(forwarder)
        .bind(to_i64(since))
        .bind(to_i64(before))
        .fetch_one(&self.pool)
        .await?;
        Ok(to_u64(n))
    }

    /// Removes kept messages whose time ended by `now`, rows first; returns how many.
    pub async fn expire_kept(&self, now: u64) -> Result<u64, QueueError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> =
            sqlx::query_scalar("DELETE FROM kept WHERE expires_at <= ?1 RETURNING id")
                .bind(to_i64(now))
                .fetch_all(&mut *tx)
                .await?;
        let in_files = crate::queue::delete_bodies(&mut tx, &ids).await?;
        tx.commit().await?;
        // The rows are gone; a file that cannot be removed now is removed at the next start
        // (no row names it). One failure does not keep the others.
        for id in &in_files {
            if let Err(e) = self.spool.remove_kept(id) {
                tracing::warn!(kept = %id, error = %e, "cannot remove an expired kept message");
            }
        }
        Ok(ids.len() as u64)
    }
}

/// Removes kept files with no row, placed at least `min_age` ago (their decision never
/// committed: a crash between the two).
pub(crate) async fn remove_orphans(
    pool: &sqlx::SqlitePool,
    spool: &crate::Spool,
    min_age: std::time::Duration,
) -> Result<u64, QueueError> {
    let names = spool.kept_names(min_age)?;
    if names.is_empty() {
        return Ok(0);
    }
    let known: Vec<String> =
        sqlx::query_scalar("SELECT value FROM json_each(?1) WHERE value IN (SELECT id FROM kept)")
            .bind(serde_json::Value::from(names.clone()).to_string())
            .fetch_all(pool)
            .await?;
    let mut removed = 0;
    for name in names.iter().filter(|n| !known.contains(n)) {
        tracing::warn!(file = %name, "removing a kept sealed message that no row names (left by a crash)");
        spool.remove_kept(name)?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_only_their_hash_is_kept() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), a);
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
