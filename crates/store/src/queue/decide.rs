//! The policy loop's side of the queue: claiming received messages, recording what was
//! decided for a batch (copies, routes, held, deleted, errored) in one transaction, releasing
//! what could not be recorded.

use sqlx::Row;

use super::*;

impl Queue {
    /// Claims up to `limit` received messages for processing, each with its recipients still to
    /// be decided.
    /// The third element is the rule to skip, for a message released from quarantine.
    pub async fn claim_received(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, Envelope, Option<String>)>, QueueError> {
        let now = self.clock.now();
        // Received messages, and those whose claim ran out (a node that failed mid-batch).
        let rows = sqlx::query(
            "UPDATE messages SET state = 'processing', updated_at = ?1, owner = ?3,
                    lease_until = ?4
             WHERE id IN (SELECT id FROM messages
                          WHERE state = 'received' OR (state = 'processing' AND lease_until <= ?1)
                          ORDER BY received_at LIMIT ?2)
             RETURNING id, sender, client, helo, source, message_id, skip_rule",
        )
        .bind(to_i64(now))
        .bind(i64::from(limit))
        .bind(&*self.node)
        .bind(to_i64(now + PROCESSING_LEASE_SECS))
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        let mut recipients: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        if !ids.is_empty() {
            let list = sqlx::query(
                "SELECT message, address FROM recipients
                 WHERE message IN (SELECT value FROM json_each(?1)) AND +state = 'new' ORDER BY id",
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
    pub async fn route(&self, id: &str, routes: &[(String, Route)]) -> Result<(), QueueError> {
        self.route_batch(&[(id.to_string(), routes.to_vec())]).await
    }

    /// [`Queue::route`] for many messages in one transaction (one commit, one fsync): each
    /// message passes as received, a [`Queue::apply`] with one untransformed copy.
    pub async fn route_batch(
        &self,
        batch: &[(String, Vec<(String, Route)>)],
    ) -> Result<(), QueueError> {
        let decisions = batch
            .iter()
            .map(|(id, routes)| Decision {
                id: id.clone(),
                copies: vec![MessageCopy {
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

    /// Records what processing decided for a batch of messages, in one transaction: transformed
    /// copies become messages of their own (their files placed and fsynced first), recipients
    /// of the message as received are routed, errored ones wait for their retry.
    /// A message whose claim this node no longer holds (it ran out and another node took it)
    /// is left out: that node records its own decision.
    pub async fn apply(&self, batch: Vec<Decision>, backoff: Backoff) -> Result<(), QueueError> {
        let batch = self.still_claimed(batch).await?;
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
        // Bodies small enough for the database, written with the rows.
        let mut bodies: Vec<(String, &[u8])> = Vec::new();
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
                if let Some(bytes) = k.file.inline() {
                    bodies.push((id.clone(), bytes));
                } else if let Some(file) = k.file.file() {
                    if let Err(e) = self.spool.place_kept(file, &id) {
                        undo(&placed, &kept_placed);
                        discard_copies(&batch);
                        return Err(e.into());
                    }
                    kept_placed.push(id.clone());
                }
                named.push((id, k));
            }
            kept_rows.extend(crate::kept::rows(&named, &d.id));
            for copy in &d.copies {
                match &copy.file {
                    None => {
                        for (a, h) in &copy.routes {
                            routes.push(serde_json::json!({"m": d.id, "a": a, "h": h.to_string()}));
                        }
                    }
                    Some(file) => {
                        let child = new_id();
                        if let Some(bytes) = file.inline() {
                            bodies.push((child.clone(), bytes));
                        } else if let Some(path) = file.file() {
                            if let Err(e) = self.spool.place(path, &child) {
                                undo(&placed, &kept_placed);
                                discard_copies(&batch);
                                return Err(e.into());
                            }
                            placed.push(child.clone());
                        }
                        children.push(serde_json::json!({
                            "id": child, "parent": d.id, "size": file.len, "note": copy.note,
                            "sender": copy.sender,
                        }));
                        match &copy.replaces {
                            None => {
                                for (a, h) in &copy.routes {
                                    child_rcpts.push(serde_json::json!({
                                        "m": child, "p": d.id, "a": a, "h": h.to_string(), "o": a,
                                    }));
                                    splits.push(serde_json::json!({"m": d.id, "a": a, "c": child}));
                                }
                            }
                            Some(list) => {
                                for (a, h) in &copy.routes {
                                    child_rcpts.push(serde_json::json!({
                                        "m": child, "p": d.id, "a": a, "h": h.to_string(), "o": list.first(),
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
                &bodies,
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
        bodies: &[(String, &[u8])],
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
        let rows: Vec<(&str, &[u8])> = bodies.iter().map(|(id, b)| (id.as_str(), *b)).collect();
        insert_bodies(&mut tx, &rows).await?;
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
                               AND r.address = j.value->>'o' AND +r.state = 'new')
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
                   AND +recipients.state = 'new'",
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
                   AND +recipients.state = 'new'",
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
                   AND +recipients.state = 'new'",
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
             WHERE message IN (SELECT value FROM json_each(?1)) AND +state = 'new'",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE messages SET state = 'queued', updated_at = ?2, owner = NULL, lease_until = 0
             WHERE id IN (SELECT value FROM json_each(?1)) AND +state = 'processing'",
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

    /// Returns every message this node claimed for processing to `received`: for a policy
    /// loop that starts again after a failure, while no other loop of this node runs. Gives
    /// the number.
    pub async fn release_all_processing(&self) -> Result<u64, QueueError> {
        let done = sqlx::query(
            "UPDATE messages SET state = 'received', owner = NULL, lease_until = 0
             WHERE state = 'processing' AND owner = ?1",
        )
        .bind(&*self.node)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The decisions of `batch` whose message this node still holds; the others are dropped,
    /// their copies discarded.
    async fn still_claimed(&self, batch: Vec<Decision>) -> Result<Vec<Decision>, QueueError> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let held: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(?1))
               AND +state = 'processing' AND owner = ?2",
        )
        .bind(json_ids(batch.iter().map(|d| d.id.as_str())))
        .bind(&*self.node)
        .fetch_all(&self.pool)
        .await?;
        let held: std::collections::HashSet<String> = held.into_iter().collect();
        let (kept, lost): (Vec<Decision>, Vec<Decision>) =
            batch.into_iter().partition(|d| held.contains(&d.id));
        for d in &lost {
            tracing::warn!(queue_id = %d.id, node = %self.node, "the claim on the message ran out and another node took it; this node's decision is not recorded");
        }
        discard_copies(&lost);
        Ok(kept)
    }

    /// Returns messages claimed for processing to `received`, so that they are processed
    /// again (the decision could not be recorded).
    pub async fn release(&self, ids: &[String]) -> Result<(), QueueError> {
        sqlx::query(
            "UPDATE messages SET state = 'received', owner = NULL, lease_until = 0
             WHERE id IN (SELECT value FROM json_each(?1)) AND +state = 'processing'
               AND owner = ?2",
        )
        .bind(json_ids(ids.iter().map(String::as_str)))
        .bind(&*self.node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Removes the copy files of a batch that could not be recorded (those already placed are
/// removed by id).
fn discard_copies(batch: &[Decision]) {
    let copies = batch
        .iter()
        .flat_map(|d| &d.copies)
        .filter_map(|c| c.file.as_ref());
    let kept = batch.iter().flat_map(|d| &d.kept).map(|k| &k.file);
    for path in copies.chain(kept).filter_map(|f| f.file()) {
        let _ = std::fs::remove_file(path);
    }
}

/// (A `+` before a state column in these statements keeps SQLite from driving them from the
/// state index: that would visit every row in that state, the whole backlog or history, for
/// each batch, instead of the batch's own rows.)
///
/// Ends the messages among `ids` (a JSON array) whose recipients are all final (delivered if any
/// was, transformed if any went into a copy, else bounced), deleting the bodies stored in the
/// database; returns those kept in files, so that their files can go once the transaction
/// commits.
pub(crate) async fn finish_done(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ids: &str,
    at: u64,
) -> Result<Vec<String>, QueueError> {
    let finished = sqlx::query_scalar(
        "UPDATE messages SET updated_at = ?2, state = CASE
             WHEN EXISTS (SELECT 1 FROM recipients r WHERE r.message = messages.id AND +r.state = 'delivered')
             THEN 'delivered'
             WHEN EXISTS (SELECT 1 FROM recipients r WHERE r.message = messages.id AND +r.state = 'split')
             THEN 'transformed'
             WHEN EXISTS (SELECT 1 FROM recipients r WHERE r.message = messages.id AND +r.state = 'deleted')
             THEN 'deleted'
             ELSE 'bounced' END
         WHERE id IN (SELECT value FROM json_each(?1)) AND +state = 'queued'
           AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message = messages.id
                           AND +r.state IN ('new', 'pending', 'deferred', 'errored', 'quarantined'))
         RETURNING id",
    )
    .bind(ids)
    .bind(to_i64(at))
    .fetch_all(&mut **tx)
    .await?;
    let in_files = delete_bodies(tx, &finished).await?;
    Ok(in_files)
}

/// Deletes the stored bodies of `ids`; returns the ids that had none (their bytes are files).
pub(crate) async fn delete_bodies(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ids: &[String],
) -> Result<Vec<String>, QueueError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let inline: Vec<String> = sqlx::query_scalar(
        "DELETE FROM bodies WHERE id IN (SELECT value FROM json_each(?1)) RETURNING id",
    )
    .bind(json_ids(ids.iter().map(String::as_str)))
    .fetch_all(&mut **tx)
    .await?;
    let inline: std::collections::HashSet<String> = inline.into_iter().collect();
    Ok(ids
        .iter()
        .filter(|id| !inline.contains(*id))
        .cloned()
        .collect())
}

/// Stores the bytes of messages small enough for the database, many rows to a statement (one
/// round trip to the database's thread for a whole batch, not one per message).
pub(crate) async fn insert_bodies(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    bodies: &[(&str, &[u8])],
) -> Result<(), QueueError> {
    // Two parameters a row, far below SQLite's limit of 32766.
    for chunk in bodies.chunks(256) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO bodies (id, data) ");
        insert.push_values(chunk, |mut row, (id, bytes)| {
            row.push_bind(*id).push_bind(*bytes);
        });
        // Each batch size is its own statement: not worth a place in the statement cache.
        insert.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}
