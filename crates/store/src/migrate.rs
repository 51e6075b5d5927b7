//! Schema migrations of the SQLite databases: the numbered scripts under
//! `migrations/sqlite/<database>/`, embedded at build time and applied by `sqlx::migrate`, each
//! once, in its own transaction, recorded in `_sqlx_migrations`.
//!
//! Postern before these files kept the number of scripts applied in `PRAGMA user_version`. Such
//! a database is adopted: the scripts it has had are recorded as applied (with the checksums of
//! the same scripts, as files now), and the rest run. `user_version` is still set after each
//! run, so that an older Postern sees a newer schema and refuses it.

use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

/// The queue database's scripts.
pub(crate) static QUEUE: Migrator = sqlx::migrate!("migrations/sqlite/queue");

/// The key server database's scripts.
pub(crate) static KEYSERVER: Migrator = sqlx::migrate!("migrations/sqlite/keyserver");

/// Why a database could not be brought to the current schema.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// SQLite said no.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The database was written by a newer Postern (its schema version).
    #[error("schema version {0} is newer than this Postern knows")]
    TooNew(i64),
    /// A script failed, or one applied differs from this Postern's.
    #[error("schema migration: {0}")]
    Migration(String),
}

/// Brings the database to `migrator`'s newest schema.
pub(crate) async fn apply(
    pool: &SqlitePool,
    migrator: &'static Migrator,
) -> Result<(), MigrateError> {
    let known = migrator.iter().count() as i64;
    let mut conn = pool.acquire().await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    if version > known {
        return Err(MigrateError::TooNew(version));
    }
    let recorded: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !recorded && version > 0 {
        adopt(&mut conn, migrator, version).await?;
    }
    drop(conn);
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => MigrateError::TooNew(v),
        sqlx::migrate::MigrateError::Execute(e) => MigrateError::Db(e),
        other => MigrateError::Migration(other.to_string()),
    })?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await?;
    // Our own integer, not input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA user_version = {applied}"
    )))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the first `version` scripts as applied to a database that counted them in
/// `user_version`.
async fn adopt(
    conn: &mut sqlx::SqliteConnection,
    migrator: &'static Migrator,
    version: i64,
) -> Result<(), MigrateError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await?;
    for m in migrator.iter().filter(|m| m.version <= version) {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, 0)",
        )
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    tracing::info!(
        scripts = version,
        "recorded the schema scripts this database had in sqlx's table"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;

    async fn pool(path: &std::path::Path) -> SqlitePool {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(path)
            .create_if_missing(true);
        SqlitePool::connect_with(options).await.unwrap()
    }

    #[tokio::test]
    async fn a_database_counted_in_user_version_is_adopted_and_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let db = pool(&path).await;
        // As the former runner left it: the first three scripts, user_version 3.
        for m in QUEUE.iter().take(3) {
            sqlx::raw_sql(m.sql.clone()).execute(&db).await.unwrap();
        }
        sqlx::raw_sql("PRAGMA user_version = 3")
            .execute(&db)
            .await
            .unwrap();
        apply(&db, &QUEUE).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(applied, QUEUE.iter().count() as i64);
        // The later scripts ran: their tables are there.
        sqlx::query("SELECT id, data FROM bodies")
            .fetch_all(&db)
            .await
            .unwrap();
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(version, applied);
        // Again: nothing to do.
        apply(&db, &QUEUE).await.unwrap();
    }

    #[tokio::test]
    async fn a_database_from_a_newer_postern_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = pool(&dir.path().join("new.db")).await;
        apply(&db, &KEYSERVER).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99, 'from the future', TRUE, x'00', 0)",
        )
        .execute(&db)
        .await
        .unwrap();
        assert!(matches!(
            apply(&db, &KEYSERVER).await,
            Err(MigrateError::TooNew(99))
        ));
    }
}
