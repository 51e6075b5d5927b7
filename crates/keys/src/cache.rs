//! The key client's cache: keys and public parameters in SQLite, each key encrypted with
//! AES-256-GCM under a cache key, bound to its (address, epoch, kind, master key id) so rows
//! cannot be swapped.
//!
//! A key for one month never changes, so a cached key is as good as a fresh one: this is what
//! lets mail move while the key server is down.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use rand::rngs::OsRng;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};
use zeroize::Zeroizing;

use crate::api::KeyKind;

/// Why the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// SQLite failed.
    #[error("key cache database: {0}")]
    Db(#[from] sqlx::Error),
    /// The cache key file could not be read or made.
    #[error("key cache key {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A row does not decrypt under the cache key.
    #[error("a cached key does not decrypt: the cache key changed or the cache was altered")]
    Corrupt,
}

/// Keys cached at rest.
#[derive(Clone)]
pub struct KeyCache {
    pool: SqlitePool,
    aead: Aes256Gcm,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").finish_non_exhaustive()
    }
}

/// The file beside the database that holds the cache key.
pub const KEY_FILE: &str = "cache.key";
/// The database file.
pub const DB_FILE: &str = "keys.db";

const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    address TEXT NOT NULL,
    epoch TEXT NOT NULL,
    kind TEXT NOT NULL,
    key_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL,
    fetched INTEGER NOT NULL,
    PRIMARY KEY (address, epoch, kind, key_id)
);
CREATE TABLE IF NOT EXISTS params (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    bytes BLOB NOT NULL
);";

impl KeyCache {
    /// Opens the cache in `dir` (mode 0700), making its random cache key (mode 0600) on first use.
    pub async fn open_dir(dir: &Path) -> Result<Self, CacheError> {
        let key_path = dir.join(KEY_FILE);
        let io = |source| CacheError::KeyFile {
            path: key_path.display().to_string(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        // An existing directory or key file keeps no looser mode than a new one gets.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        if key_path.exists() {
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        let key = match std::fs::read(&key_path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut k = Zeroizing::new([0u8; 32]);
                k.copy_from_slice(&bytes);
                k
            }
            Ok(_) => {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a 32-byte key",
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(k.as_mut());
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path)
                    .map_err(io)?;
                std::io::Write::write_all(&mut f, k.as_ref()).map_err(io)?;
                f.sync_all().map_err(io)?;
                k
            }
            Err(e) => return Err(io(e)),
        };
        KeyCache::open(&dir.join(DB_FILE), &key).await
    }

    /// Opens the cache database at `path` with `key`.
    pub async fn open(path: &Path, key: &[u8; 32]) -> Result<Self, CacheError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        // A cache is only a copy: one of an older layout is dropped, not migrated.
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&pool)
            .await?;
        if version != SCHEMA_VERSION {
            sqlx::raw_sql("DROP TABLE IF EXISTS keys; DROP TABLE IF EXISTS params;")
                .execute(&pool)
                .await?;
            sqlx::raw_sql(SCHEMA).execute(&pool).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "PRAGMA user_version = {SCHEMA_VERSION}"
            )))
            .execute(&pool)
            .await?;
        }
        Ok(KeyCache {
            pool,
            aead: Aes256Gcm::new(key.into()),
        })
    }

    fn aad(address: &str, epoch: &str, kind: KeyKind, key_id: &str) -> Vec<u8> {
        format!(
            "postern/v1/key-cache\0{address}\0{epoch}\0{}\0{key_id}",
            kind.as_str()
        )
        .into_bytes()
    }

    /// Stores a key's encoding, under the master key id it was extracted from.
    pub async fn put(
        &self,
        address: &str,
        epoch: &str,
        kind: KeyKind,
        key_id: &str,
        key: &[u8],
        now: u64,
    ) -> Result<(), CacheError> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let aad = Self::aad(address, epoch, kind, key_id);
        let sealed = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key,
                    aad: &aad,
                },
            )
            .map_err(|_| CacheError::Corrupt)?;
        sqlx::query(
            "INSERT OR REPLACE INTO keys (address, epoch, kind, key_id, nonce, sealed, fetched)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(address)
        .bind(epoch)
        .bind(kind.as_str())
        .bind(key_id)
        .bind(&nonce[..])
        .bind(sealed)
        .bind(i64::try_from(now).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A cached key's encoding: under master key `key_id`, or the one fetched last.
    pub async fn get(
        &self,
        address: &str,
        epoch: &str,
        kind: KeyKind,
        key_id: Option<&str>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CacheError> {
        let row = sqlx::query(
            "SELECT nonce, sealed, key_id FROM keys
             WHERE address = ?1 AND epoch = ?2 AND kind = ?3 AND (?4 IS NULL OR key_id = ?4)
             ORDER BY fetched DESC LIMIT 1",
        )
        .bind(address)
        .bind(epoch)
        .bind(kind.as_str())
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let nonce: Vec<u8> = row.get(0);
        let sealed: Vec<u8> = row.get(1);
        let key_id: String = row.get(2);
        if nonce.len() != 12 {
            return Err(CacheError::Corrupt);
        }
        let aad = Self::aad(address, epoch, kind, &key_id);
        let plain = self
            .aead
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| CacheError::Corrupt)?;
        Ok(Some(Zeroizing::new(plain)))
    }

    /// Every cached (address, epoch, kind), for listings.
    pub async fn entries(&self) -> Result<Vec<(String, String, String)>, CacheError> {
        let rows =
            sqlx::query("SELECT address, epoch, kind FROM keys ORDER BY address, epoch, kind")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Stores the public parameters (not secret; kept so that opening works offline).
    pub async fn put_params(&self, bytes: &[u8]) -> Result<(), CacheError> {
        sqlx::query("INSERT OR REPLACE INTO params (id, bytes) VALUES (1, ?1)")
            .bind(bytes)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The cached public parameters.
    pub async fn params(&self) -> Result<Option<Vec<u8>>, CacheError> {
        let row = sqlx::query("SELECT bytes FROM params WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}
