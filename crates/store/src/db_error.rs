//! A database failure as the rest of Postern sees it: what kind of failure, and the database's
//! own words, without the back end's types.

/// What kind of database failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The disk (or the database's quota) is full: a retry may work once there is room.
    Full,
    /// The database is busy, locked, gone or unreachable: a retry may work.
    Unavailable,
    /// A constraint refused the change (a name or token already taken).
    Conflict,
    /// Anything else (a corrupt file, a schema it does not know).
    Other,
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    kind: DbErrorKind,
    message: String,
}

impl DbError {
    /// What kind of failure.
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        let kind = match &e {
            sqlx::Error::Database(d) => match d.code().as_deref() {
                // SQLite's primary result codes (the extended ones keep them in the low byte).
                Some(code) => match code.parse::<i64>().map(|c| c & 0xff) {
                    Ok(13) => DbErrorKind::Full,
                    Ok(5 | 6 | 10 | 14) => DbErrorKind::Unavailable,
                    Ok(19) => DbErrorKind::Conflict,
                    _ => DbErrorKind::Other,
                },
                None => DbErrorKind::Other,
            },
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DbErrorKind::Unavailable,
            _ => DbErrorKind::Other,
        };
        DbError {
            kind,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_taken_name_is_a_conflict_and_the_words_are_kept() {
        let db = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (name TEXT UNIQUE); INSERT INTO t VALUES ('a');")
            .execute(&db)
            .await
            .unwrap();
        let e = sqlx::query("INSERT INTO t VALUES ('a')")
            .execute(&db)
            .await
            .unwrap_err();
        let e = DbError::from(e);
        assert_eq!(e.kind(), DbErrorKind::Conflict);
        assert!(e.to_string().contains("UNIQUE"), "{e}");
        let e = DbError::from(
            sqlx::query("SELECT * FROM missing")
                .execute(&db)
                .await
                .unwrap_err(),
        );
        assert_eq!(e.kind(), DbErrorKind::Other);
    }
}
