//! The queue's SQLite schema and its migrations; crash recovery's removal of files no row
//! names; the check that keeps a connection broken by a failed transaction out of the pool.

use sqlx::SqlitePool;

use super::*;
use crate::spool::Spool;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        client TEXT NOT NULL,
        helo TEXT NOT NULL,
        source TEXT NOT NULL,
        size INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        message_id TEXT,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX messages_state ON messages(state, received_at);
    CREATE TABLE recipients (
        id INTEGER PRIMARY KEY,
        message TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        address TEXT NOT NULL,
        hop TEXT,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        leased_until INTEGER NOT NULL DEFAULT 0,
        last_reply TEXT
    );
    CREATE INDEX recipients_due ON recipients(state, next_attempt);
    CREATE INDEX recipients_message ON recipients(message);",
    // Transformed copies (encrypted, decrypted) are messages of their own with a parent; what
    // the transformation did is noted; internal users are remembered for key prefetching.
    "ALTER TABLE messages ADD COLUMN parent TEXT;
    ALTER TABLE messages ADD COLUMN note TEXT;
    CREATE INDEX messages_parent ON messages(parent);
    CREATE TABLE users (address TEXT PRIMARY KEY, last_seen INTEGER NOT NULL);",
    // The policy engine: stored policies (versions), quarantine areas and what they hold
    // (recipients of the message as received, state 'quarantined'), and the rule a released
    // message skips when it is processed again.
    "CREATE TABLE policies (
        version INTEGER PRIMARY KEY,
        text TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        author TEXT NOT NULL
    );
    CREATE TABLE areas (
        name TEXT PRIMARY KEY,
        retention_secs INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        message TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        area TEXT NOT NULL,
        rule TEXT NOT NULL,
        reason TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        subject TEXT NOT NULL,
        at INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'held'
    );
    CREATE INDEX quarantine_held ON quarantine(state, area, at);
    ALTER TABLE recipients ADD COLUMN hold INTEGER;
    ALTER TABLE messages ADD COLUMN skip_rule TEXT;",
    // The console: administrators (Argon2 hashes) and the audit log of every change.
    "CREATE TABLE admins (
        name TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX messages_received ON messages(received_at);",
    // Sealed messages kept on the server (large messages, forward-to-decrypt links), found by
    // the SHA-256 of their link's token.
    "CREATE TABLE kept (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        message TEXT NOT NULL,
        kind TEXT NOT NULL,
        forwarder TEXT,
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX kept_expiry ON kept(expires_at);
    CREATE INDEX kept_forwarder ON kept(forwarder, created_at);",
    // Secrets the gateway makes for itself once (the key of the gateway's mark).
    "CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );",
    // The bytes of small messages and kept sealed messages, by their id, written in the same
    // transaction as their row (larger ones are files in the spool).
    "CREATE TABLE bodies (
        id TEXT PRIMARY KEY,
        data BLOB NOT NULL
    );",
    // Claims name the node that holds them, and a claimed message until when: a node takes
    // back only its own after a crash, and another's once it has run out.
    "ALTER TABLE messages ADD COLUMN owner TEXT;
    ALTER TABLE messages ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE recipients ADD COLUMN owner TEXT;",
];

pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), QueueError> {
    crate::migrate::apply(pool, MIGRATIONS)
        .await
        .map_err(|e| match e {
            crate::migrate::MigrateError::Db(e) => QueueError::Db(e),
            crate::migrate::MigrateError::TooNew(v) => QueueError::TooNew(v),
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
