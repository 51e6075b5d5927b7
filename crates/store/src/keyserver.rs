//! The key server's database (SQLite): gateway tokens, login sessions, one-time codes, address
//! locks and the audit log. Secrets are stored only as SHA-256 hashes: the tokens are 256-bit
//! random strings, so a hash is enough to make a stolen database useless for logging in.

use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use zeroize::Zeroizing;

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("key server database: {0}")]
    Db(#[from] crate::DbError),
    /// A token name is taken.
    #[error("a token named {0:?} already exists")]
    NameTaken(String),
    /// The database was made by a newer Postern.
    #[error("the key server database has schema version {0}, newer than this Postern knows")]
    TooNew(i64),
    /// A schema script failed, or one applied differs from this Postern's.
    #[error("the key server database: {0}")]
    Migration(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e.into())
    }
}

/// Prefix of gateway API tokens.
pub const GATEWAY_TOKEN_PREFIX: &str = "pgw_";
/// Prefix of session tokens from a code login.
pub const SESSION_TOKEN_PREFIX: &str = "pss_";

/// A gateway token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// Domains it covers.
    pub domains: Vec<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds, when revoked.
    pub revoked: Option<u64>,
}

/// A pending one-time code.
#[derive(Debug, Clone)]
pub struct CodeRow {
    /// SHA-256 over salt, address and code.
    pub hash: Vec<u8>,
    /// Per-code salt.
    pub salt: Vec<u8>,
    /// Unix seconds it was sent.
    pub sent_at: u64,
    /// Unix seconds it stops working.
    pub expires: u64,
    /// Unused since wrong codes are counted per address (schema 2); kept for the column.
    pub attempts_left: u32,
}

/// One audit row: who asked for what, from where, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: u64,
    /// `token:NAME`, `person:ADDRESS`, `anonymous` (logins) or `unknown` (bad credentials).
    pub actor: String,
    /// The client's IP address.
    pub client: String,
    /// The address concerned.
    pub address: Option<String>,
    /// `YYYY-MM`, for key requests.
    pub epoch: Option<String>,
    /// `decrypt`, `sign` or `login`.
    pub kind: Option<String>,
    /// `issued`, `refused:CODE`, `code_sent`, `login`, `wrong_code`, `locked`, ...
    pub outcome: String,
}

/// The key server's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_token(prefix: &str) -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(raw.as_mut());
    Zeroizing::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw.as_ref())))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL survives a crash of the process; a power cut may lose the last
            // commits. Issuing keys is idempotent, so that trade is taken for speed.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrate::apply(&self.pool, &crate::migrate::KEYSERVER)
            .await
            .map_err(|e| match e {
                crate::migrate::MigrateError::Db(e) => StoreError::Db(e.into()),
                crate::migrate::MigrateError::TooNew(v) => StoreError::TooNew(v),
                crate::migrate::MigrateError::Migration(e) => StoreError::Migration(e),
            })
    }

    /// Creates a gateway token; the returned string is shown once and stored only hashed.
    pub async fn create_token(
        &self,
        name: &str,
        domains: &[String],
        now: u64,
    ) -> Result<Zeroizing<String>, StoreError> {
        let token = new_token(GATEWAY_TOKEN_PREFIX);
        let result = sqlx::query(
            "INSERT INTO tokens (name, hash, domains, created) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(name)
        .bind(hash(&token))
        .bind(domains.join(","))
        .bind(to_i64(now))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(token),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::NameTaken(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every token, revoked ones included.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query("SELECT name, domains, created, revoked FROM tokens ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(token_info).collect())
    }

    /// Revokes a token by name; false when there is no such live token.
    pub async fn revoke_token(&self, name: &str, now: u64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE tokens SET revoked = ?1 WHERE name = ?2 AND revoked IS NULL")
                .bind(to_i64(now))
                .bind(name)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The live token with this value, if any. Looked up by hash on every request, so a
    /// revocation takes effect at once.
    pub async fn find_token(&self, token: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT name, domains, created, revoked FROM tokens WHERE hash = ?1 AND revoked IS NULL",
        )
        .bind(hash(token))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(token_info))
    }

    /// Starts a session for a proven address.
    pub async fn create_session(
        &self,
        address: &str,
        expires: u64,
    ) -> Result<Zeroizing<String>, StoreError> {
        let token = new_token(SESSION_TOKEN_PREFIX);
        sqlx::query("INSERT INTO sessions (hash, address, expires) VALUES (?1, ?2, ?3)")
            .bind(hash(&token))
            .bind(address)
            .bind(to_i64(expires))
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    /// The address of a live session.
    pub async fn find_session(&self, token: &str, now: u64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT address FROM sessions WHERE hash = ?1 AND expires > ?2")
            .bind(hash(token))
            .bind(to_i64(now))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Records a new code for an address, replacing any earlier one.
    pub async fn put_code(&self, address: &str, code: &CodeRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO codes (address, hash, salt, sent_at, expires, attempts_left)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(address)
        .bind(&code.hash)
        .bind(&code.salt)
        .bind(to_i64(code.sent_at))
        .bind(to_i64(code.expires))
        .bind(i64::from(code.attempts_left))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The pending code of an address.
    pub async fn get_code(&self, address: &str) -> Result<Option<CodeRow>, StoreError> {
        let row = sqlx::query(
            "SELECT hash, salt, sent_at, expires, attempts_left FROM codes WHERE address = ?1",
        )
        .bind(address)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| CodeRow {
            hash: r.get(0),
            salt: r.get(1),
            sent_at: to_u64(r.get(2)),
            expires: to_u64(r.get(3)),
            attempts_left: u32::try_from(r.get::<i64, _>(4)).unwrap_or(0),
        }))
    }

    /// Counts one login attempt for `address` and returns how many were made in the current
    /// window (which restarts `window` seconds after its first attempt). Atomic, so concurrent
    /// guesses are all counted.
    pub async fn count_attempt(
        &self,
        address: &str,
        now: u64,
        window: u64,
    ) -> Result<u32, StoreError> {
        let now = to_i64(now);
        let window = to_i64(window);
        let count: i64 = sqlx::query_scalar(
            "INSERT INTO failures (address, count, since) VALUES (?1, 1, ?2)
             ON CONFLICT(address) DO UPDATE SET
                count = CASE WHEN since + ?3 > ?2 THEN count + 1 ELSE 1 END,
                since = CASE WHEN since + ?3 > ?2 THEN since ELSE ?2 END
             RETURNING count",
        )
        .bind(address)
        .bind(now)
        .bind(window)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Forgets the attempts of an address (after a login, or when it is locked).
    pub async fn clear_attempts(&self, address: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM failures WHERE address = ?1")
            .bind(address)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Uses up the code with this hash; false when another request used or replaced it first.
    pub async fn consume_code(&self, address: &str, hash: &[u8]) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM codes WHERE address = ?1 AND hash = ?2")
            .bind(address)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets an address's code (used, expired or exhausted).
    pub async fn delete_code(&self, address: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM codes WHERE address = ?1")
            .bind(address)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Locks an address against logins until `until`.
    pub async fn lock(&self, address: &str, until: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT OR REPLACE INTO locks (address, until) VALUES (?1, ?2)")
            .bind(address)
            .bind(to_i64(until))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// When the address's lock ends, if it is locked now.
    pub async fn locked_until(&self, address: &str, now: u64) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query("SELECT until FROM locks WHERE address = ?1 AND until > ?2")
            .bind(address)
            .bind(to_i64(now))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| to_u64(r.get(0))))
    }

    /// Appends an audit row.
    pub async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (at, actor, client, address, epoch, kind, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(to_i64(e.at))
        .bind(&e.actor)
        .bind(&e.client)
        .bind(&e.address)
        .bind(&e.epoch)
        .bind(&e.kind)
        .bind(&e.outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Audit rows, oldest first, optionally for one address and from a time on.
    pub async fn audit_log(
        &self,
        address: Option<&str>,
        since: Option<u64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, client, address, epoch, kind, outcome FROM audit
             WHERE (?1 IS NULL OR address = ?1) AND at >= ?2 ORDER BY id",
        )
        .bind(address)
        .bind(to_i64(since.unwrap_or(0)))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                at: to_u64(r.get(0)),
                actor: r.get(1),
                client: r.get(2),
                address: r.get(3),
                epoch: r.get(4),
                kind: r.get(5),
                outcome: r.get(6),
            })
            .collect())
    }

    /// Removes expired sessions, codes and locks.
    pub async fn sweep(&self, now: u64) -> Result<(), StoreError> {
        let now = to_i64(now);
        for sql in [
            "DELETE FROM sessions WHERE expires <= ?1",
            "DELETE FROM codes WHERE expires <= ?1",
            "DELETE FROM locks WHERE until <= ?1",
            "DELETE FROM failures WHERE since <= ?1 - 86400",
        ] {
            sqlx::query(sql).bind(now).execute(&self.pool).await?;
        }
        Ok(())
    }
}

fn token_info(r: &sqlx::sqlite::SqliteRow) -> TokenInfo {
    let domains: String = r.get(1);
    TokenInfo {
        name: r.get(0),
        domains: domains
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect(),
        created: to_u64(r.get(2)),
        revoked: r.get::<Option<i64>, _>(3).map(to_u64),
    }
}
