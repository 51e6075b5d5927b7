//! The queue's SQLite schema and its migrations; crash recovery's removal of files no row
//! names; the check that keeps a connection broken by a failed transaction out of the pool.

use sqlx::SqlitePool;

use super::*;
use crate::spool::Spool;

/// Brings the queue database to the current schema (`migrations/sqlite/queue/`).
pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), QueueError> {
    crate::migrate::apply(pool, &crate::migrate::QUEUE)
        .await
        .map_err(|e| match e {
            crate::migrate::MigrateError::Db(e) => QueueError::from(e),
            crate::migrate::MigrateError::TooNew(v) => QueueError::TooNew(v),
            crate::migrate::MigrateError::Migration(e) => QueueError::Refused(e),
        })
}

/// False for a connection whose last transaction did not end cleanly; it is closed rather than
/// reused. On a full disk SQLite rolls a transaction back by itself (SQLITE_FULL), the ROLLBACK
/// that follows fails, and sqlx still counts the transaction as open: its next transaction on
/// that connection becomes a savepoint, and a failure in it (ROLLBACK TO) leaves a write
/// transaction open, locking the database for every other connection until the process ends.
pub(super) async fn still_usable(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection as _;
    // The ping comes after the rollback that a dropped transaction queued.
    conn.ping().await.is_ok() && !conn.is_in_transaction()
}

/// Removes message files with no row, placed at least `min_age` ago: copies placed by a
/// transformation whose transaction never committed (a crash between the two). They may hold
/// decrypted text, so they must not linger. A younger file may be a commit under way.
pub(super) async fn remove_orphans(
    pool: &SqlitePool,
    spool: &Spool,
    min_age: std::time::Duration,
) -> Result<u64, QueueError> {
    let names = spool.names(min_age)?;
    if names.is_empty() {
        return Ok(0);
    }
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT value FROM json_each(?1) WHERE value IN (SELECT id FROM messages)",
    )
    .bind(json_ids(names.iter().map(String::as_str)))
    .fetch_all(pool)
    .await?;
    let known: std::collections::HashSet<String> = known.into_iter().collect();
    let mut removed = 0;
    for name in names.iter().filter(|n| !known.contains(*n)) {
        tracing::warn!(file = %name, "removing a message file that no queue row names (left by a crash)");
        spool.remove(name)?;
        removed += 1;
    }
    Ok(removed)
}
