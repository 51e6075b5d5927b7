//! The mail queue: every message and recipient with its state, in a database, beside the spool.
//!
//! A message moves `received → processing → queued → delivered | bounced | deleted`; each of its
//! recipients is `new → pending → delivered | deferred | bounced`. Every change is one
//! transaction. [`Queue::accept`] returns only once the message file is fsynced, renamed into
//! place and its rows committed; concurrent accepts share one commit and one directory fsync
//! (group commit). After a crash, [`Queue::open`] returns messages left in `processing` to
//! `received` and releases leases, so every accepted message is processed and delivered at
//! least once.
//!
//! `Queue` is the interface the rest of Postern uses; its back end is SQLite today. The
//! PostgreSQL back end will slot in beside it (leasing with `FOR UPDATE SKIP LOCKED`).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clock::{SharedClock, SystemClock};
use rand::Rng;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

use crate::body::Body;
use crate::spool::{Finished, Spool};

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database failed.
    #[error("queue database: {0}")]
    Db(#[from] crate::DbError),
    /// The spool failed (a full disk, permissions).
    #[error("spool: {0}")]
    Io(#[from] std::io::Error),
    /// The committer is gone (shutting down).
    #[error("the queue is shutting down")]
    Closed,
    /// No such message (or no queue).
    #[error("no {0} in the queue")]
    NotFound(String),
    /// The operation is refused (the reason says why and what to do).
    #[error("{0}")]
    Refused(String),
    /// The database was written by a newer Postern.
    #[error("the queue database has schema version {0}, newer than this Postern knows")]
    TooNew(i64),
    /// A row holds a state this Postern does not know.
    #[error("the queue database: {0}")]
    UnknownState(#[from] UnknownState),
    /// A row holds a next hop this Postern does not know.
    #[error("the queue database: {0}")]
    UnknownRoute(#[from] UnknownRoute),
}

mod accept;
mod admin;
mod decide;
mod deliver;
mod errored;
mod schema;
mod types;

pub use types::*;

use accept::committer;
pub(crate) use decide::{delete_bodies, finish_done};
use deliver::recorder;
use schema::{migrate, remove_orphans, still_usable};

impl From<sqlx::Error> for QueueError {
    fn from(e: sqlx::Error) -> Self {
        QueueError::Db(e.into())
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The largest message [`Queue::bodies`] reads with its batch.
pub const BATCH_BODY_BYTES: u64 = 64 * 1024;

/// A sortable, unique queue id: 11 hex digits of microseconds, 5 random.
pub(crate) fn new_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let r: u32 = rand::thread_rng().gen_range(0..0x10_0000);
    format!("{:011x}{r:05x}", micros & 0xfff_ffff_ffff)
}

/// A JSON array of ids, for `json_each` (one statement for a whole batch).
pub(crate) fn json_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    serde_json::Value::Array(ids.map(serde_json::Value::from).collect()).to_string()
}

pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) outcome: Vec<(i64, Outcome)>,
    pub(crate) done: oneshot::Sender<Result<(), QueueError>>,
}

pub(crate) struct Pending {
    pub(crate) id: String,
    pub(crate) envelope: Envelope,
    pub(crate) file: Finished,
    pub(crate) at: u64,
    pub(crate) done: oneshot::Sender<Result<(), QueueError>>,
}

/// How the process that delivers opens the queue.
#[derive(Clone)]
pub struct QueueOptions {
    /// Where the time is read (the process's one clock).
    pub clock: SharedClock,
    /// The node this process is ([`crate::node`]): its claims and leases carry it, and crash
    /// recovery takes back only its own.
    pub node: String,
    /// Messages up to this size are stored in the database ([`Spool::with_inline_limit`]).
    pub inline_limit: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            clock: SystemClock::shared(),
            node: crate::node::LOCAL.into(),
            inline_limit: crate::spool::DEFAULT_INLINE_LIMIT,
        }
    }
}

/// A spool file placed less recently than this may belong to a commit under way: orphan
/// sweeps leave it alone.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(60);

/// How long the policy loop holds a claimed message before another node may take it: far
/// longer than a batch takes, short enough that a node's failure delays its mail only so much.
pub const PROCESSING_LEASE_SECS: u64 = 600;

/// The queue. Cheap to clone; clones share the database and the committer.
#[derive(Debug, Clone)]
pub struct Queue {
    pub(crate) pool: SqlitePool,
    /// The node whose claims and leases this handle makes.
    pub(crate) node: Arc<str>,
    pub(crate) spool: Spool,
    pub(crate) commits: mpsc::Sender<Pending>,
    pub(crate) records: mpsc::Sender<Record>,
    pub(crate) clock: SharedClock,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the queue in `dir` (database `queue.db`, spool beside it) and recovers from a crash.
    /// Only the process that delivers may open it so; tools use [`Queue::open_admin`].
    pub async fn open(dir: &Path) -> Result<Self, QueueError> {
        Queue::open_with_options(dir, QueueOptions::default()).await
    }

    /// [`Queue::open`], with the time read from `clock` (the process's one clock).
    pub async fn open_with_clock(dir: &Path, clock: SharedClock) -> Result<Self, QueueError> {
        Queue::open_with_options(
            dir,
            QueueOptions {
                clock,
                ..QueueOptions::default()
            },
        )
        .await
    }

    /// [`Queue::open`] as `options` say.
    pub async fn open_with_options(dir: &Path, options: QueueOptions) -> Result<Self, QueueError> {
        let inline_limit = options.inline_limit;
        Ok(Queue::open_with(dir, true, options)
            .await?
            .with_inline_limit(inline_limit))
    }

    /// Opens the queue of a running (or stopped) gateway for inspection and changes, without
    /// crash recovery: the gateway's leases and messages in processing are left alone.
    pub async fn open_admin(dir: &Path) -> Result<Self, QueueError> {
        if !dir.join("queue.db").exists() {
            return Err(QueueError::NotFound(format!(
                "queue database in {}",
                dir.display()
            )));
        }
        Queue::open_with(dir, false, QueueOptions::default()).await
    }

    async fn open_with(
        dir: &Path,
        recover: bool,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        let QueueOptions { clock, node, .. } = options;
        std::fs::create_dir_all(dir)?;
        let spool = if recover {
            Spool::open(&dir.join("spool"))?
        } else {
            Spool::existing(&dir.join("spool"))
        };
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(dir.join("queue.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit reaches the disk before a 250 is sent.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .after_release(|conn, _| Box::pin(async move { Ok(still_usable(conn).await) }))
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        if recover {
            // Crash recovery: this node's unfinished processing starts again and its delivery
            // leases end (a row without an owner predates owners: a single node's). Another
            // node's claims are left to run out; its work is then taken like any due work.
            sqlx::query(
                "UPDATE messages SET state = 'received', owner = NULL, lease_until = 0
                 WHERE state = 'processing' AND (owner = ?1 OR owner IS NULL)",
            )
            .bind(&node)
            .execute(&pool)
            .await?;
            sqlx::query(
                "UPDATE recipients SET leased_until = 0, owner = NULL
                 WHERE leased_until > 0 AND (owner = ?1 OR owner IS NULL)",
            )
            .bind(&node)
            .execute(&pool)
            .await?;
            remove_orphans(&pool, &spool, ORPHAN_MIN_AGE).await?;
            crate::kept::remove_orphans(&pool, &spool, ORPHAN_MIN_AGE).await?;
        }
        let (commits, rx) = mpsc::channel(1024);
        tokio::spawn(committer(pool.clone(), spool.clone(), rx));
        let (records, rx) = mpsc::channel(1024);
        tokio::spawn(recorder(
            pool.clone(),
            spool.clone(),
            rx,
            clock.clone(),
            node.clone().into(),
        ));
        Ok(Queue {
            pool,
            node: node.into(),
            spool,
            commits,
            records,
            clock,
        })
    }

    /// Removes spool files no row names, placed more than a minute ago (left by a crash
    /// between placing a file and committing its row); returns how many. Run at the start and
    /// every few minutes by the maintenance loop.
    pub async fn sweep_orphans(&self) -> Result<u64, QueueError> {
        let messages = remove_orphans(&self.pool, &self.spool, ORPHAN_MIN_AGE).await?;
        let kept = crate::kept::remove_orphans(&self.pool, &self.spool, ORPHAN_MIN_AGE).await?;
        Ok(messages + kept)
    }

    /// The node whose claims and leases this handle makes.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The clock the queue's times are read from.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Where messages are written while they arrive or are made ([`Spool::create`]).
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The same queue with messages up to `bytes` stored in the database (`store.inline_limit`;
    /// 0 keeps every message in a file).
    pub fn with_inline_limit(mut self, bytes: u64) -> Self {
        self.spool = self.spool.with_inline_limit(bytes);
        self
    }

    /// The bytes of the messages among `ids` read in one query (a batch claimed for processing
    /// or due for delivery), for messages up to [`BATCH_BODY_BYTES`] and those in files. The
    /// others, and finished ones, are left out: read them with [`Queue::body`] when their turn
    /// comes, so that a batch does not hold many large messages in memory at once.
    pub async fn bodies(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Body>, QueueError> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let rows: Vec<(String, i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT m.id, m.size, b.data FROM messages m
             LEFT JOIN bodies b ON b.id = m.id AND m.size <= ?2
             WHERE m.id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_ids(ids.iter().copied()))
        .bind(to_i64(BATCH_BODY_BYTES))
        .fetch_all(&self.pool)
        .await?;
        for (id, size, data) in rows {
            let size = to_u64(size);
            let body = match data {
                Some(bytes) => Body::from_bytes(bytes),
                None => {
                    // In a file, or too large to read with the batch, or finished.
                    let path = self.spool.path(&id);
                    if !path.exists() {
                        continue;
                    }
                    Body::file(&path, size)
                }
            };
            out.insert(id, body);
        }
        Ok(out)
    }

    /// The bytes of message `id`, wherever they are kept.
    pub async fn body(&self, id: &str) -> Result<Body, QueueError> {
        let row: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT m.size, b.data FROM messages m LEFT JOIN bodies b ON b.id = m.id WHERE m.id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Err(QueueError::NotFound(format!("message {id}"))),
            Some((_, Some(bytes))) => Ok(Body::from_bytes(bytes)),
            Some((size, None)) => {
                let path = self.spool.path(id);
                // A finished message keeps its row as a record; its bytes are gone.
                match std::fs::metadata(&path) {
                    Ok(_) => Ok(Body::file(&path, to_u64(size))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
                        QueueError::NotFound(format!("content of message {id} (it is finished)")),
                    ),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}
