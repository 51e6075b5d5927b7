//! Schema migrations of the SQLite databases: numbered SQL scripts, each applied once in its
//! own transaction, the number kept in `PRAGMA user_version`.

use sqlx::SqlitePool;

/// Why a database could not be brought to the current schema.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// SQLite said no.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The database was written by a newer Postern (its schema version).
    #[error("schema version {0} is newer than this Postern knows")]
    TooNew(i64),
}

/// Applies the scripts of `migrations` the database has not had yet, in order.
pub(crate) async fn apply(
    pool: &SqlitePool,
    migrations: &'static [&'static str],
) -> Result<(), MigrateError> {
    let mut conn = pool.acquire().await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    if version > migrations.len() as i64 {
        return Err(MigrateError::TooNew(version));
    }
    for (i, sql) in migrations
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        // The version is our own integer, not input.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {}",
            i + 1
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}
