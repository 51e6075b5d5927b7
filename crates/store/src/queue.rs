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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clock::{SharedClock, SystemClock};
use rand::Rng;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::spool::{Finished, Spool};

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database failed.
    #[error("queue database: {0}")]
    Db(#[from] sqlx::Error),
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
}

/// Where a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The policy port: decided and transformed before delivery.
    Policy,
    /// The bypass port: delivered as received.
    Bypass,
    /// Made by Postern itself (delivery status notifications).
    Local,
    /// A transformed copy (encrypted or decrypted) of a message that came in on the policy port.
    Derived,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Policy => "policy",
            Source::Bypass => "bypass",
            Source::Local => "local",
            Source::Derived => "derived",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "bypass" => Source::Bypass,
            "local" => Source::Local,
            "derived" => Source::Derived,
            _ => Source::Policy,
        }
    }
}

/// The SMTP envelope of a message, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// MAIL FROM; empty for the null sender `<>`.
    pub sender: String,
    /// RCPT TO, in order.
    pub recipients: Vec<String>,
    /// The client's IP address.
    pub client: String,
    /// What the client said in EHLO/HELO.
    pub helo: String,
    /// Which port.
    pub source: Source,
    /// The Message-ID header, if any (for logs and duplicate detection).
    pub message_id: Option<String>,
}

/// A message as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Queue id.
    pub id: String,
    /// MAIL FROM.
    pub sender: String,
    /// Where it came in.
    pub source: Source,
    /// Bytes.
    pub size: u64,
    /// Unix seconds.
    pub received_at: u64,
    /// Message state.
    pub state: String,
    /// The Message-ID header.
    pub message_id: Option<String>,
    /// The message this one is a transformed copy of.
    pub parent: Option<String>,
    /// What the transformation did (encrypted for whom, signed by whom; the signature verdict).
    pub note: Option<String>,
    /// Its recipients.
    pub recipients: Vec<RecipientInfo>,
}

/// A recipient as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientInfo {
    /// Row id.
    pub id: i64,
    /// RCPT TO.
    pub address: String,
    /// Next hop name, once routed.
    pub hop: Option<String>,
    /// `new`, `pending`, `deferred`, `errored` (waiting for a key), `split` (went into a
    /// transformed copy), `delivered` or `bounced`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt: u64,
    /// The last reply or error.
    pub last_reply: Option<String>,
}

/// Recipients of one message due for one next hop.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Queue id.
    pub id: String,
    /// MAIL FROM.
    pub sender: String,
    /// The next hop's name.
    pub hop: String,
    /// (row id, address).
    pub recipients: Vec<(i64, String)>,
    /// Attempts made before this one (the most among the recipients).
    pub attempts: u32,
    /// When the message arrived.
    pub received_at: u64,
    /// The Message-ID header.
    pub message_id: Option<String>,
    /// A transformed copy (its header is not quoted back in a notification: a decrypted copy's
    /// inner header must not cross the network in clear).
    pub derived: bool,
}

/// Counts by state, for metrics and the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    /// Messages waiting to be processed.
    pub received: u64,
    /// Recipients waiting for their first attempt.
    pub pending: u64,
    /// Recipients waiting for a retry.
    pub deferred: u64,
    /// Recipients waiting for a key (the errored queue).
    pub errored: u64,
}

/// One copy of a processed message: its content and the recipients that get it.
#[derive(Debug)]
pub struct Copy {
    /// The transformed content, or `None` for the message as received.
    pub file: Option<Finished>,
    /// (recipient, next hop).
    pub routes: Vec<(String, String)>,
    /// What the transformation did, for the record.
    pub note: Option<String>,
    /// `None`: the routes name the message's own recipients. `Some(list)`: the routes name new
    /// addresses standing in for the recipients in `list` (a changed recipient), or added
    /// beside them when `list` is empty (an archive copy). Needs a `file`.
    pub replaces: Option<Vec<String>>,
    /// The envelope sender of the copy when it is not the message's own: `Some("")` for an
    /// automatic answer, which must not bounce back. Needs a `file`.
    pub sender: Option<String>,
}

/// A recipient whose copy cannot be made now (no key): it waits in the errored queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errored {
    /// The recipient.
    pub address: String,
    /// Why, for the administrator and, at the end of the lifetime, the sender.
    pub reason: String,
}

/// When errored recipients are retried: `initial` seconds after their first failure, doubling
/// with each failure up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Seconds before the first retry.
    pub initial: u64,
    /// Longest wait.
    pub max: u64,
}

/// What processing decided for one message. Recipients named nowhere are dropped.
#[derive(Debug, Default)]
pub struct Decision {
    /// Queue id.
    pub id: String,
    /// The copies to deliver.
    pub copies: Vec<Copy>,
    /// Recipients for the errored queue.
    pub errored: Vec<Errored>,
    /// Internal users seen in the message (for key prefetching).
    pub users: Vec<String>,
    /// Recipients held in quarantine areas (the message as received is kept for them).
    pub held: Vec<Hold>,
    /// Recipients dropped by policy, with the reason (logged and kept in the record).
    pub deleted: Vec<Errored>,
    /// Sealed messages to keep on the server (see [`crate::kept`]).
    pub kept: Vec<crate::kept::Keep>,
}

/// Recipients of a message held in a quarantine area.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hold {
    /// Who.
    pub recipients: Vec<String>,
    /// The area (made with the default retention if it does not exist).
    pub area: String,
    /// The rule that held it.
    pub rule: String,
    /// Why (what matched).
    pub reason: String,
    /// The message's subject, for queries.
    pub subject: String,
}

/// Which errored messages an operation covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErroredFilter {
    /// One message.
    pub id: Option<String>,
    /// Received at or after (Unix seconds).
    pub since: Option<u64>,
    /// Received before (Unix seconds).
    pub until: Option<u64>,
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A sortable, unique queue id: 11 hex digits of microseconds, 5 random.
fn new_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let r: u32 = rand::thread_rng().gen_range(0..0x10_0000);
    format!("{:011x}{r:05x}", micros & 0xfff_ffff_ffff)
}

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
];

struct Record {
    id: String,
    outcome: Vec<(i64, Outcome)>,
    done: oneshot::Sender<Result<(), QueueError>>,
}

struct Pending {
    id: String,
    envelope: Envelope,
    file: Finished,
    at: u64,
    done: oneshot::Sender<Result<(), QueueError>>,
}

/// The queue. Cheap to clone; clones share the database and the committer.
#[derive(Debug, Clone)]
pub struct Queue {
    pub(crate) pool: SqlitePool,
    pub(crate) spool: Spool,
    commits: mpsc::Sender<Pending>,
    records: mpsc::Sender<Record>,
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
        Queue::open_with_clock(dir, SystemClock::shared()).await
    }

    /// [`Queue::open`], with the time read from `clock` (the process's one clock).
    pub async fn open_with_clock(dir: &Path, clock: SharedClock) -> Result<Self, QueueError> {
        Queue::open_with(dir, true, clock).await
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
        Queue::open_with(dir, false, SystemClock::shared()).await
    }

    async fn open_with(dir: &Path, recover: bool, clock: SharedClock) -> Result<Self, QueueError> {
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
            // Crash recovery: unfinished processing starts again; leases of the dead process end.
            sqlx::query("UPDATE messages SET state = 'received' WHERE state = 'processing'")
                .execute(&pool)
                .await?;
            sqlx::query("UPDATE recipients SET leased_until = 0 WHERE leased_until > 0")
                .execute(&pool)
                .await?;
            remove_orphans(&pool, &spool).await?;
            crate::kept::remove_orphans(&pool, &spool).await?;
        }
        let (commits, rx) = mpsc::channel(1024);
        tokio::spawn(committer(pool.clone(), spool.clone(), rx));
        let (records, rx) = mpsc::channel(1024);
        tokio::spawn(recorder(pool.clone(), spool.clone(), rx, clock.clone()));
        Ok(Queue {
            pool,
            spool,
            commits,
            records,
            clock,
        })
    }

    /// The clock the queue's times are read from.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The spool, for writing incoming messages and reading queued ones.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Makes a received message durable and returns its queue id. Only after this returns may
    /// the client be told 250.
    pub async fn accept(&self, envelope: Envelope, file: Finished) -> Result<String, QueueError> {
        let id = new_id();
        let (done, wait) = oneshot::channel();
        self.commits
            .send(Pending {
                id: id.clone(),
                envelope,
                file,
                at: self.clock.now(),
                done,
            })
            .await
            .map_err(|_| QueueError::Closed)?;
        wait.await.map_err(|_| QueueError::Closed)??;
        Ok(id)
    }

    /// Claims up to `limit` received messages for processing, each with its recipients still to
    /// be decided.
    /// The third element is the rule to skip, for a message released from quarantine.
    pub async fn claim_received(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, Envelope, Option<String>)>, QueueError> {
        let rows = sqlx::query(
            "UPDATE messages SET state = 'processing', updated_at = ?1
             WHERE id IN (SELECT id FROM messages WHERE state = 'received'
                          ORDER BY received_at LIMIT ?2)
             RETURNING id, sender, client, helo, source, message_id, skip_rule",
        )
        .bind(to_i64(self.clock.now()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        let mut recipients: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        if !ids.is_empty() {
            let list = sqlx::query(
                "SELECT message, address FROM recipients
                 WHERE message IN (SELECT value FROM json_each(?1)) AND state = 'new' ORDER BY id",
            )
            .bind(serde_json::to_string(&ids).unwrap_or_default())
            .fetch_all(&self.pool)
            .await?;
            for r in list {
                recipients.entry(r.get(0)).or_default().push(r.get(1));
            }
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let id: String = r.get(0);
                let source: String = r.get(4);
                let envelope = Envelope {
                    sender: r.get(1),
                    recipients: recipients.remove(&id).unwrap_or_default(),
                    client: r.get(2),
                    helo: r.get(3),
                    source: Source::parse(&source),
                    message_id: r.get(5),
                };
                (id, envelope, r.get(6))
            })
            .collect())
    }

    /// Records the decision for a processed message: each recipient's next hop (recipients not
    /// named are dropped as decided), in one transaction.
    pub async fn route(&self, id: &str, routes: &[(String, String)]) -> Result<(), QueueError> {
        self.route_batch(&[(id.to_string(), routes.to_vec())]).await
    }

    /// [`Queue::route`] for many messages in one transaction (one commit, one fsync): each
    /// message passes as received, a [`Queue::apply`] with one untransformed copy.
    pub async fn route_batch(
        &self,
        batch: &[(String, Vec<(String, String)>)],
    ) -> Result<(), QueueError> {
        let decisions = batch
            .iter()
            .map(|(id, routes)| Decision {
                id: id.clone(),
                copies: vec![Copy {
                    file: None,
                    routes: routes.clone(),
                    note: None,
                    replaces: None,
                    sender: None,
                }],
                ..Decision::default()
            })
            .collect();
        // Nothing errors here, so the backoff is never used.
        self.apply(decisions, Backoff { initial: 1, max: 1 }).await
    }

    /// Claims recipients due now, grouped by message and next hop, leasing them for `lease`
    /// so that no other worker takes them meanwhile.
    pub async fn due(&self, limit: u32, lease: Duration) -> Result<Vec<Delivery>, QueueError> {
        let at = self.clock.now();
        let until = to_i64(at + lease.as_secs());
        let rows = sqlx::query(
            "UPDATE recipients SET leased_until = ?1
             WHERE id IN (
                SELECT r.id FROM recipients r JOIN messages m ON m.id = r.message
                WHERE r.state IN ('pending', 'deferred') AND r.next_attempt <= ?2
                  AND r.leased_until <= ?2 AND m.state = 'queued'
                ORDER BY r.next_attempt LIMIT ?3)
             RETURNING id, message, address, hop, attempts",
        )
        .bind(until)
        .bind(to_i64(at))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let ids = json_ids(rows.iter().map(|r| r.get::<&str, _>(1)));
        let mut messages: std::collections::HashMap<String, (String, u64, Option<String>, bool)> =
            std::collections::HashMap::new();
        if !rows.is_empty() {
            let list = sqlx::query(
                "SELECT id, sender, received_at, message_id, parent IS NOT NULL FROM messages
                 WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
            for m in list {
                messages.insert(
                    m.get(0),
                    (m.get(1), to_u64(m.get(2)), m.get(3), m.get::<bool, _>(4)),
                );
            }
        }
        let mut groups: Vec<Delivery> = Vec::new();
        for r in rows {
            let (rid, message, address, hop): (i64, String, String, Option<String>) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let attempts = u32::try_from(r.get::<i64, _>(4)).unwrap_or(0);
            let hop = hop.unwrap_or_default();
            if let Some(g) = groups.iter_mut().find(|g| g.id == message && g.hop == hop) {
                g.recipients.push((rid, address));
                g.attempts = g.attempts.max(attempts);
                continue;
            }
            let Some((sender, received_at, message_id, derived)) = messages.get(&message).cloned()
            else {
                continue;
            };
            groups.push(Delivery {
                id: message,
                sender,
                hop,
                recipients: vec![(rid, address)],
                attempts,
                received_at,
                message_id,
                derived,
            });
        }
        Ok(groups)
    }

    /// Records an attempt's outcome for recipients of one message. Concurrent calls share one
    /// transaction (group commit), like [`Queue::accept`].
    pub async fn record(&self, id: &str, outcome: &[(i64, Outcome)]) -> Result<(), QueueError> {
        let (done, wait) = oneshot::channel();
        self.records
            .send(Record {
                id: id.to_string(),
                outcome: outcome.to_vec(),
                done,
            })
            .await
            .map_err(|_| QueueError::Closed)?;
        wait.await.map_err(|_| QueueError::Closed)?
    }

    /// Messages, newest first, optionally in one state.
    pub async fn list(
        &self,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MessageInfo>, QueueError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE (?1 IS NULL OR state = ?1) ORDER BY received_at DESC, id DESC LIMIT ?2",
        )
        .bind(state)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.show_all(&ids).await
    }

    async fn show_all(&self, ids: &[String]) -> Result<Vec<MessageInfo>, QueueError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.show(id).await?);
        }
        Ok(out)
    }

    /// One message with its recipients.
    pub async fn show(&self, id: &str) -> Result<MessageInfo, QueueError> {
        let m = sqlx::query(
            "SELECT id, sender, source, size, received_at, state, message_id, parent, note FROM messages WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| QueueError::NotFound(format!("message {id}")))?;
        let rows = sqlx::query(
            "SELECT id, address, hop, state, attempts, next_attempt, last_reply
             FROM recipients WHERE message = ?1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let source: String = m.get(2);
        Ok(MessageInfo {
            id: m.get(0),
            sender: m.get(1),
            source: Source::parse(&source),
            size: to_u64(m.get(3)),
            received_at: to_u64(m.get(4)),
            state: m.get(5),
            message_id: m.get(6),
            parent: m.get(7),
            note: m.get(8),
            recipients: rows
                .iter()
                .map(|r| RecipientInfo {
                    id: r.get(0),
                    address: r.get(1),
                    hop: r.get(2),
                    state: r.get(3),
                    attempts: u32::try_from(r.get::<i64, _>(4)).unwrap_or(0),
                    next_attempt: to_u64(r.get(5)),
                    last_reply: r.get(6),
                })
                .collect(),
        })
    }

    /// Makes a message's deferred recipients due now; returns how many.
    pub async fn retry(&self, id: &str) -> Result<u64, QueueError> {
        self.show(id).await?;
        let done = sqlx::query(
            "UPDATE recipients SET next_attempt = 0 WHERE message = ?1 AND state = 'deferred'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records what processing decided for a batch of messages, in one transaction: transformed
    /// copies become messages of their own (their files placed and fsynced first), recipients
    /// of the message as received are routed, errored ones wait for their retry.
    pub async fn apply(&self, batch: Vec<Decision>, backoff: Backoff) -> Result<(), QueueError> {
        if batch.is_empty() {
            return Ok(());
        }
        let at = self.clock.now();
        let mut children = Vec::new();
        let mut child_rcpts = Vec::new();
        let mut routes = Vec::new();
        let mut splits = Vec::new();
        let mut errored = Vec::new();
        let mut users = Vec::new();
        let mut holds = Vec::new();
        let mut placed: Vec<String> = Vec::new();
        let mut kept_rows = Vec::new();
        let mut kept_placed: Vec<String> = Vec::new();
        let undo = |placed: &[String], kept: &[String]| {
            for id in placed {
                let _ = self.spool.remove(id);
            }
            for id in kept {
                let _ = self.spool.remove_kept(id);
            }
        };
        for d in &batch {
            let mut named = Vec::new();
            for k in &d.kept {
                let id = new_id();
                if let Err(e) = self.spool.place_kept(k.file.path(), &id) {
                    undo(&placed, &kept_placed);
                    discard_copies(&batch);
                    return Err(e.into());
                }
                kept_placed.push(id.clone());
                named.push((id, k));
            }
            kept_rows.extend(crate::kept::rows(&named, &d.id));
            for copy in &d.copies {
                match &copy.file {
                    None => {
                        for (a, h) in &copy.routes {
                            routes.push(serde_json::json!({"m": d.id, "a": a, "h": h}));
                        }
                    }
                    Some(file) => {
                        let child = new_id();
                        if let Err(e) = self.spool.place(file.path(), &child) {
                            undo(&placed, &kept_placed);
                            discard_copies(&batch);
                            return Err(e.into());
                        }
                        placed.push(child.clone());
                        children.push(serde_json::json!({
                            "id": child, "parent": d.id, "size": file.len, "note": copy.note,
                            "sender": copy.sender,
                        }));
                        match &copy.replaces {
                            None => {
                                for (a, h) in &copy.routes {
                                    child_rcpts.push(serde_json::json!({
                                        "m": child, "p": d.id, "a": a, "h": h, "o": a,
                                    }));
                                    splits.push(serde_json::json!({"m": d.id, "a": a, "c": child}));
                                }
                            }
                            Some(list) => {
                                for (a, h) in &copy.routes {
                                    child_rcpts.push(serde_json::json!({
                                        "m": child, "p": d.id, "a": a, "h": h, "o": list.first(),
                                    }));
                                }
                                for a in list {
                                    splits.push(serde_json::json!({"m": d.id, "a": a, "c": child}));
                                }
                            }
                        }
                    }
                }
            }
            for e in &d.errored {
                errored.push(serde_json::json!({"m": d.id, "a": e.address, "r": e.reason}));
            }
            for e in &d.deleted {
                holds.push(
                    serde_json::json!({"m": d.id, "a": [e.address], "r": e.reason, "delete": true}),
                );
            }
            for h in &d.held {
                holds.push(serde_json::json!({
                    "m": d.id, "a": h.recipients, "area": h.area, "rule": h.rule,
                    "r": h.reason, "subject": h.subject,
                }));
            }
            for u in &d.users {
                users.push(serde_json::Value::from(u.as_str()));
            }
        }
        let result = self
            .apply_rows(
                &batch,
                at,
                backoff,
                [
                    children,
                    child_rcpts,
                    routes,
                    splits,
                    errored,
                    users,
                    holds,
                    kept_rows,
                ],
                (!placed.is_empty(), !kept_placed.is_empty()),
            )
            .await;
        match result {
            Ok(finished) => {
                for id in finished {
                    self.spool.remove(&id)?;
                }
                Ok(())
            }
            Err(e) => {
                undo(&placed, &kept_placed);
                discard_copies(&batch);
                Err(e)
            }
        }
    }

    async fn apply_rows(
        &self,
        batch: &[Decision],
        at: u64,
        backoff: Backoff,
        rows: [Vec<serde_json::Value>; 8],
        (sync, sync_kept): (bool, bool),
    ) -> Result<Vec<String>, QueueError> {
        let [
            children,
            child_rcpts,
            routes,
            splits,
            errored,
            users,
            holds,
            kept,
        ] = rows;
        let child_ids: Vec<String> = children
            .iter()
            .filter_map(|c| c.get("id").and_then(|v| v.as_str()).map(str::to_string))
            .collect();
        if sync {
            self.spool.sync_dir()?;
        }
        if sync_kept {
            self.spool.sync_kept_dir()?;
        }
        let ids = json_ids(batch.iter().map(|d| d.id.as_str()));
        let at = to_i64(at);
        let mut tx = self.pool.begin().await?;
        if !children.is_empty() {
            sqlx::query(
                "INSERT INTO messages (id, sender, client, helo, source, size, received_at, state,
                                       message_id, updated_at, parent, note)
                 SELECT j.value->>'id', coalesce(j.value->>'sender', p.sender), p.client, p.helo,
                        'derived', j.value->>'size',
                        p.received_at, 'queued', p.message_id, ?2, p.id, j.value->>'note'
                 FROM json_each(?1) AS j JOIN messages p ON p.id = j.value->>'parent'",
            )
            .bind(serde_json::Value::Array(children).to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                // Only for recipients still undecided: one deleted meanwhile gets no copy.
                "INSERT INTO recipients (message, address, hop, state, next_attempt)
                 SELECT j.value->>'m', j.value->>'a', j.value->>'h', 'pending', ?2
                 FROM json_each(?1) AS j
                 WHERE j.value->>'o' IS NULL
                    OR EXISTS (SELECT 1 FROM recipients r WHERE r.message = j.value->>'p'
                               AND r.address = j.value->>'o' AND r.state = 'new')
                 ORDER BY j.key",
            )
            .bind(serde_json::Value::Array(child_rcpts).to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE recipients SET state = 'split', last_reply = 'as ' || (j.value->>'c')
                 FROM json_each(?1) AS j
                 WHERE recipients.message = j.value->>'m' AND recipients.address = j.value->>'a'
                   AND recipients.state = 'new'",
            )
            .bind(serde_json::Value::Array(splits).to_string())
            .execute(&mut *tx)
            .await?;
        }
        if !routes.is_empty() {
            sqlx::query(
                "UPDATE recipients SET hop = j.value->>'h', state = 'pending', next_attempt = ?2
                 FROM json_each(?1) AS j
                 WHERE recipients.message = j.value->>'m' AND recipients.address = j.value->>'a'
                   AND recipients.state = 'new'",
            )
            .bind(serde_json::Value::Array(routes).to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        if !errored.is_empty() {
            sqlx::query(
                "UPDATE recipients SET state = 'errored', last_reply = j.value->>'r',
                    next_attempt = ?2 + min(?4, ?3 << min(attempts, 20)), attempts = attempts + 1
                 FROM json_each(?1) AS j
                 WHERE recipients.message = j.value->>'m' AND recipients.address = j.value->>'a'
                   AND recipients.state = 'new'",
            )
            .bind(serde_json::Value::Array(errored).to_string())
            .bind(at)
            .bind(to_i64(backoff.initial))
            .bind(to_i64(backoff.max))
            .execute(&mut *tx)
            .await?;
        }
        if !users.is_empty() {
            sqlx::query(
                "INSERT INTO users (address, last_seen) SELECT DISTINCT value, ?2 FROM json_each(?1) WHERE true
                 ON CONFLICT (address) DO UPDATE SET last_seen = excluded.last_seen",
            )
            .bind(serde_json::Value::Array(users).to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        for h in holds {
            crate::quarantine::hold(&mut tx, &h, to_u64(at)).await?;
        }
        crate::kept::insert(&mut tx, kept, at).await?;
        sqlx::query(
            "UPDATE recipients SET state = 'bounced', last_reply = 'dropped by policy'
             WHERE message IN (SELECT value FROM json_each(?1)) AND state = 'new'",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE messages SET state = 'queued', updated_at = ?2
             WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'processing'",
        )
        .bind(&ids)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        // Copies left without recipients (all deleted meanwhile) end at once, like parents.
        let all = json_ids(
            batch
                .iter()
                .map(|d| d.id.as_str())
                .chain(child_ids.iter().map(String::as_str)),
        );
        let finished = finish_done(&mut tx, &all, self.clock.now()).await?;
        tx.commit().await?;
        Ok(finished)
    }

    /// Returns every message claimed for processing to `received`: for a policy loop that
    /// starts again after a failure, while no other loop runs. Gives the number.
    pub async fn release_all_processing(&self) -> Result<u64, QueueError> {
        let done = sqlx::query("UPDATE messages SET state = 'received' WHERE state = 'processing'")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Returns messages claimed for processing to `received`, so that they are processed
    /// again (the decision could not be recorded).
    pub async fn release(&self, ids: &[String]) -> Result<(), QueueError> {
        sqlx::query(
            "UPDATE messages SET state = 'received'
             WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'processing'",
        )
        .bind(json_ids(ids.iter().map(String::as_str)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sends errored recipients due by `due_by` (Unix seconds) back to processing, with their
    /// messages; returns how many recipients. `u64::MAX` takes all of them (the key server is
    /// back), a filter narrows it (an administrator's resend).
    pub async fn requeue_errored(
        &self,
        due_by: u64,
        filter: &ErroredFilter,
    ) -> Result<u64, QueueError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE recipients SET state = 'new'
             WHERE state = 'errored' AND next_attempt <= ?1
               AND message IN (SELECT id FROM messages WHERE state = 'queued' AND (?2 IS NULL OR id = ?2)
                               AND (?3 IS NULL OR received_at >= ?3)
                               AND (?4 IS NULL OR received_at < ?4))
             RETURNING message",
        )
        .bind(to_i64(due_by))
        .bind(filter.id.as_deref())
        .bind(filter.since.map(to_i64))
        .bind(filter.until.map(to_i64))
        .fetch_all(&mut *tx)
        .await?;
        let count = ids.len() as u64;
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE messages SET state = 'received', updated_at = ?2
                 WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'queued'",
            )
            .bind(json_ids(ids.iter().map(String::as_str)))
            .bind(to_i64(self.clock.now()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// Messages with recipients in the errored queue, oldest first.
    pub async fn errored(
        &self,
        filter: &ErroredFilter,
        limit: u32,
    ) -> Result<Vec<MessageInfo>, QueueError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM messages m WHERE EXISTS (
                 SELECT 1 FROM recipients r WHERE r.message = m.id AND r.state = 'errored')
               AND (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR received_at >= ?2)
               AND (?3 IS NULL OR received_at < ?3)
             ORDER BY received_at, id LIMIT ?4",
        )
        .bind(filter.id.as_deref())
        .bind(filter.since.map(to_i64))
        .bind(filter.until.map(to_i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.show_all(&ids).await
    }

    /// Errored recipients of messages received before `cutoff` (past their lifetime), grouped
    /// by message with each one's reason, for bouncing.
    pub async fn expired_errored(
        &self,
        cutoff: u64,
    ) -> Result<Vec<(Delivery, Vec<String>)>, QueueError> {
        let rows = sqlx::query(
            "SELECT r.id, r.address, r.attempts, m.id, m.sender, m.received_at, m.message_id,
                    r.last_reply
             FROM recipients r JOIN messages m ON m.id = r.message
             WHERE r.state = 'errored' AND m.received_at < ?1 AND m.state = 'queued'
             ORDER BY m.id, r.id LIMIT 1000",
        )
        .bind(to_i64(cutoff))
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(Delivery, Vec<String>)> = Vec::new();
        for r in rows {
            let id: String = r.get(3);
            let rid: i64 = r.get(0);
            let address: String = r.get(1);
            let reason: Option<String> = r.get(7);
            let reason = reason.unwrap_or_default();
            let attempts = u32::try_from(r.get::<i64, _>(2)).unwrap_or(0);
            match out.last_mut() {
                Some((d, reasons)) if d.id == id => {
                    d.recipients.push((rid, address));
                    reasons.push(reason);
                }
                _ => out.push((
                    Delivery {
                        id,
                        sender: r.get(4),
                        hop: String::new(),
                        recipients: vec![(rid, address)],
                        attempts,
                        received_at: to_u64(r.get(5)),
                        message_id: r.get(6),
                        derived: false,
                    },
                    vec![reason],
                )),
            }
        }
        Ok(out)
    }

    /// Internal users seen since `since` (Unix seconds).
    pub async fn users_seen(&self, since: u64) -> Result<Vec<String>, QueueError> {
        Ok(
            sqlx::query_scalar("SELECT address FROM users WHERE last_seen >= ?1 ORDER BY address")
                .bind(to_i64(since))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Deletes a message: no further delivery, file removed; the rows stay as a record.
    pub async fn delete(&self, id: &str) -> Result<(), QueueError> {
        self.show(id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE recipients SET state = 'bounced', last_reply = 'deleted by an administrator' WHERE message = ?1 AND state IN ('new', 'pending', 'deferred', 'errored')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE messages SET state = 'deleted', updated_at = ?1 WHERE id = ?2")
            .bind(to_i64(self.clock.now()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.spool.remove(id)?;
        Ok(())
    }

    /// How much is waiting.
    pub async fn depth(&self) -> Result<Depth, QueueError> {
        let received: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE state IN ('received', 'processing')",
        )
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT state, COUNT(*) FROM recipients WHERE state IN ('pending', 'deferred', 'errored') GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut depth = Depth {
            received: to_u64(received),
            ..Depth::default()
        };
        for r in rows {
            let state: String = r.get(0);
            let n = to_u64(r.get(1));
            match state.as_str() {
                "pending" => depth.pending = n,
                "deferred" => depth.deferred = n,
                _ => depth.errored = n,
            }
        }
        Ok(depth)
    }
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop took it.
    Delivered(String),
    /// Try again at `retry_at`.
    Deferred {
        /// Unix seconds.
        retry_at: u64,
        /// Why.
        reply: String,
    },
    /// Refused for good (a notification goes to the sender).
    Bounced(String),
}

/// Removes the copy files of a batch that could not be recorded (those already placed are
/// removed by id).
fn discard_copies(batch: &[Decision]) {
    for copy in batch.iter().flat_map(|d| &d.copies) {
        if let Some(f) = &copy.file {
            let _ = std::fs::remove_file(f.path());
        }
    }
    for k in batch.iter().flat_map(|d| &d.kept) {
        let _ = std::fs::remove_file(k.file.path());
    }
}

/// Ends the messages among `ids` (a JSON array) whose recipients are all final (delivered if any
/// was, transformed if any went into a copy, else bounced); returns them, so that their files can go once the transaction commits.
pub(crate) async fn finish_done(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ids: &str,
    at: u64,
) -> Result<Vec<String>, QueueError> {
    let finished = sqlx::query_scalar(
        "UPDATE messages SET updated_at = ?2, state = CASE
             WHEN EXISTS (SELECT 1 FROM recipients r WHERE r.message = messages.id AND r.state = 'delivered')
             THEN 'delivered'
             WHEN EXISTS (SELECT 1 FROM recipients r WHERE r.message = messages.id AND r.state = 'split')
             THEN 'transformed'
             WHEN EXISTS (SELECT 1 FROM recipients r WHERE r.message = messages.id AND r.state = 'deleted')
             THEN 'deleted'
             ELSE 'bounced' END
         WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'queued'
           AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message = messages.id
                           AND r.state IN ('new', 'pending', 'deferred', 'errored', 'quarantined'))
         RETURNING id",
    )
    .bind(ids)
    .bind(to_i64(at))
    .fetch_all(&mut **tx)
    .await?;
    Ok(finished)
}

/// A JSON array of ids, for `json_each` (one statement for a whole batch).
pub(crate) fn json_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    serde_json::Value::Array(ids.map(serde_json::Value::from).collect()).to_string()
}

/// Records delivery outcomes in groups: whatever is waiting when a commit starts goes into it.
async fn recorder(
    pool: SqlitePool,
    spool: Spool,
    mut rx: mpsc::Receiver<Record>,
    clock: SharedClock,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match record_batch(&pool, &batch, clock.now()).await {
            Ok(finished) => {
                for id in finished {
                    if let Err(e) = spool.remove(&id) {
                        tracing::warn!(queue_id = %id, error = %e, "cannot remove a finished message file");
                    }
                }
                for r in batch {
                    let _ = r.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record delivery outcomes");
                for r in batch {
                    let _ = r
                        .done
                        .send(Err(QueueError::Io(std::io::Error::other(e.to_string()))));
                }
            }
        }
    }
}

async fn record_batch(
    pool: &SqlitePool,
    batch: &[Record],
    at: u64,
) -> Result<Vec<String>, QueueError> {
    let rows: Vec<serde_json::Value> = batch
        .iter()
        .flat_map(|r| r.outcome.iter())
        .map(|(rid, o)| {
            let (state, next, reply) = match o {
                Outcome::Delivered(reply) => ("delivered", 0, reply.as_str()),
                Outcome::Deferred { retry_at, reply } => ("deferred", *retry_at, reply.as_str()),
                Outcome::Bounced(reply) => ("bounced", 0, reply.as_str()),
            };
            serde_json::json!({"id": rid, "s": state, "n": next, "r": reply})
        })
        .collect();
    let ids = json_ids(batch.iter().map(|r| r.id.as_str()));
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE recipients SET state = j.value->>'s', next_attempt = j.value->>'n',
            last_reply = j.value->>'r', attempts = attempts + 1, leased_until = 0
         FROM json_each(?1) AS j WHERE recipients.id = j.value->>'id'
           AND recipients.state IN ('pending', 'deferred', 'errored')",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(&mut *tx)
    .await?;
    let finished = finish_done(&mut tx, &ids, at).await?;
    tx.commit().await?;
    Ok(finished)
}

async fn migrate(pool: &SqlitePool) -> Result<(), QueueError> {
    let mut conn = pool.acquire().await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(QueueError::TooNew(version));
    }
    for (i, sql) in MIGRATIONS
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

/// False for a connection whose last transaction did not end cleanly; it is closed rather than
/// reused. On a full disk SQLite rolls a transaction back by itself (SQLITE_FULL), the ROLLBACK
/// that follows fails, and sqlx still counts the transaction as open: its next transaction on
/// that connection becomes a savepoint, and a failure in it (ROLLBACK TO) leaves a write
/// transaction open, locking the database for every other connection until the process ends.
async fn still_usable(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection as _;
    // The ping comes after the rollback that a dropped transaction queued.
    conn.ping().await.is_ok() && !conn.is_in_transaction()
}

/// Removes message files with no row: copies placed by a transformation whose transaction never
/// committed (a crash between the two). They may hold decrypted text, so they must not linger.
async fn remove_orphans(pool: &SqlitePool, spool: &Spool) -> Result<(), QueueError> {
    let names = spool.names()?;
    if names.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT value FROM json_each(?1) WHERE value IN (SELECT id FROM messages)",
    )
    .bind(json_ids(names.iter().map(String::as_str)))
    .fetch_all(pool)
    .await?;
    let known: std::collections::HashSet<String> = known.into_iter().collect();
    for name in names.iter().filter(|n| !known.contains(*n)) {
        tracing::warn!(file = %name, "removing a message file that no queue row names (left by a crash)");
        spool.remove(name)?;
    }
    Ok(())
}

/// Commits accepted messages in groups: whatever is waiting when a commit starts goes into it.
async fn committer(pool: SqlitePool, spool: Spool, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let result = commit_batch(&pool, &spool, &batch).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, messages = batch.len(), "cannot commit received messages");
        }
        for p in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(QueueError::Io(std::io::Error::other(e.to_string()))),
            };
            if r.is_err() {
                let _ = std::fs::remove_file(spool.path(&p.id));
            }
            let _ = p.done.send(r);
        }
    }
}

async fn commit_batch(
    pool: &SqlitePool,
    spool: &Spool,
    batch: &[Pending],
) -> Result<(), QueueError> {
    for p in batch {
        spool.place(p.file.path(), &p.id)?;
    }
    spool.sync_dir()?;
    let messages: Vec<serde_json::Value> = batch
        .iter()
        .map(|p| {
            let e = &p.envelope;
            serde_json::json!({
                "id": p.id, "sender": e.sender, "client": e.client, "helo": e.helo,
                "source": e.source.as_str(), "size": p.file.len, "at": p.at, "mid": e.message_id,
            })
        })
        .collect();
    let recipients: Vec<serde_json::Value> = batch
        .iter()
        .flat_map(|p| {
            p.envelope
                .recipients
                .iter()
                .map(move |r| serde_json::json!({"m": p.id, "a": r}))
        })
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO messages (id, sender, client, helo, source, size, received_at, state, message_id, updated_at)
         SELECT j.value->>'id', j.value->>'sender', j.value->>'client', j.value->>'helo',
                j.value->>'source', j.value->>'size', j.value->>'at', 'received', j.value->>'mid', j.value->>'at'
         FROM json_each(?1) AS j",
    )
    .bind(serde_json::Value::Array(messages).to_string())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO recipients (message, address, state, next_attempt)
         SELECT j.value->>'m', j.value->>'a', 'new', 0 FROM json_each(?1) AS j ORDER BY j.key",
    )
    .bind(serde_json::Value::Array(recipients).to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
