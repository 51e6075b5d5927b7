//! The policy loop: claims received messages in batches, processes each on a worker, records
//! the batch's decisions in one transaction, and sends the notifications they asked for.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use envelope::Address;
use store::{Decision, Envelope, Errored, Source};
use tokio::sync::watch;
use transform::TransformError;

use super::failure::{Cause, Exception, Failed, Failure, blocking};
use super::{Message, Pipeline, Work, pass_as_is};
use crate::notify;

impl Pipeline {
    /// Runs the policy loop until `stop` turns true. [`Maintenance`](super::Maintenance) runs beside it.
    /// Only one runs at a time: it first takes back what an earlier run, which failed, had
    /// claimed.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        match self.queue.release_all_processing().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                messages = n,
                "processing again what a failed run had claimed"
            ),
            Err(e) => tracing::error!(error = %e, "cannot take back what a failed run had claimed"),
        }
        loop {
            if *stop.borrow() {
                break;
            }
            self.beat
                .store(self.now(), std::sync::atomic::Ordering::Relaxed);
            let claimed = match self.queue.claim_received(256).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read received messages");
                    Vec::new()
                }
            };
            let busy = !claimed.is_empty();
            if busy {
                let mut tasks = tokio::task::JoinSet::new();
                let mut waiting: std::collections::HashMap<tokio::task::Id, (String, Vec<String>)> =
                    std::collections::HashMap::new();
                self.refresh_policy().await;
                let compiled = self.policy();
                // One read for the batch's small messages; the others are read in turn.
                let ids: Vec<&str> = claimed.iter().map(|(id, _, _)| id.as_str()).collect();
                let mut bodies = self.queue.bodies(&ids).await.unwrap_or_default();
                for (id, envelope, skip_rule) in claimed {
                    let body = bodies.remove(&id);
                    let me = self.clone();
                    let recipients = envelope.recipients.clone();
                    let key = id.clone();
                    let compiled = compiled.clone();
                    let handle = tasks.spawn(async move {
                        let Ok(_permit) = me.workers.clone().acquire_owned().await else {
                            return None;
                        };
                        Some(me.process(id, envelope, body, skip_rule, compiled).await)
                    });
                    waiting.insert(handle.id(), (key, recipients));
                }
                let mut batch = Vec::new();
                let mut notices = Vec::new();
                while let Some(done) = tasks.join_next_with_id().await {
                    match done {
                        Ok((task, Some(work))) => {
                            waiting.remove(&task);
                            batch.push(work.decision);
                            notices.extend(work.notices);
                        }
                        Ok((_, None)) => {}
                        Err(e) => {
                            // A bug, not the message's fault: it waits in the errored queue
                            // rather than crash the loop again at every start.
                            if let Some((id, recipients)) = waiting.remove(&e.id()) {
                                tracing::error!(queue_id = %id, error = %e, "processing failed");
                                batch.push(Decision {
                                    id,
                                    errored: recipients
                                        .into_iter()
                                        .map(|address| Errored {
                                            address,
                                            reason: "an internal error occurred while processing"
                                                .into(),
                                        })
                                        .collect(),
                                    ..Decision::default()
                                });
                            }
                        }
                    }
                }
                let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
                match self.queue.apply(batch, self.backoff()).await {
                    Ok(()) => {
                        tracing::debug!(messages = ids.len(), "processed");
                        // Sent once the decision is recorded: a decision processed again
                        // after a failure does not notify twice.
                        for notice in &notices {
                            let sent = notify::send(
                                &self.queue,
                                compiled.policy(),
                                &self.settings.hostname,
                                notice,
                            )
                            .await;
                            if let Err(e) = sent {
                                tracing::error!(template = %notice.template, error = %e, "cannot send a notification");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, messages = ids.len(), "cannot record processing; trying again");
                        // Until they are released, nothing claims these messages again: keep
                        // trying (a full disk fails both; it frees them together). A stop
                        // leaves them to the next start, which releases what is processing.
                        while let Err(e) = self.queue.release(&ids).await {
                            tracing::error!(error = %e, messages = ids.len(), "cannot release the messages; trying again");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = stop.changed() => break,
                            }
                            if *stop.borrow() {
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                self.delivery.notify_one();
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Decides one message by the policy and makes its copies.
    pub(super) async fn process(
        &self,
        id: String,
        mut envelope: Envelope,
        body: Option<store::Body>,
        skip_rule: Option<String>,
        compiled: Arc<policy::Compiled>,
    ) -> Work {
        let mut work = Work {
            decision: Decision {
                id: id.clone(),
                ..Decision::default()
            },
            exceptions: Vec::new(),
            notices: Vec::new(),
            archived: Vec::new(),
        };
        if envelope.source != Source::Policy {
            work.decision
                .copies
                .push(pass_as_is(self, &envelope.recipients));
            return work;
        }
        let body = match body {
            Some(b) => Ok(b),
            None => self.queue.body(&id).await,
        };
        let body = match body {
            Ok(b) => b,
            Err(cause) => {
                let failed = Failed::retry("cannot read the message", cause);
                tracing::error!(queue_id = %id, error = %failed, "it stays in the errored queue");
                work.fail(&id, &envelope.recipients, failed);
                return work;
            }
        };
        let head = {
            let b = body.clone();
            match blocking(move || transform::read_head(&b)).await {
                Ok(h) => h,
                Err(cause) => {
                    let failed = Failed::retry("cannot read the message", cause);
                    tracing::error!(queue_id = %id, error = %failed, "it stays in the errored queue");
                    work.fail(&id, &envelope.recipients, failed);
                    return work;
                }
            }
        };
        // Forward to decrypt: its address answers (or not) and takes no part in the policy.
        let (to_decrypt, rest): (Vec<String>, Vec<String>) = envelope
            .recipients
            .iter()
            .cloned()
            .partition(|r| self.is_decrypt_address(r));
        if !to_decrypt.is_empty() {
            self.forward_to_decrypt(&id, &body, &head, &envelope, &to_decrypt, &mut work)
                .await;
            if rest.is_empty() {
                return work;
            }
            envelope.recipients = rest;
        }
        let fields = mime::headers::fields(&head);
        // The gateway's own verdict fields (decrypted here, signature, warning) in a message
        // as received were written by its sender: they are removed from what is delivered.
        let forged: Vec<String> = mime::guarded_fields(&self.mime)
            .into_iter()
            .filter(|name| fields.iter().any(|f| f.is(name)))
            .collect();
        if !forged.is_empty() {
            tracing::warn!(queue_id = %id, fields = ?forged, "the message carries this gateway's verdict fields; they are removed");
        }
        // The marker alone proves nothing: a message counts as encrypted only when a sealed
        // message can be found in it. A plain message with a forged marker is still encrypted
        // on its way out, and passes as the plain message it is on its way in. A damaged
        // sealed message counts (its decryption fails: "Unable to decrypt").
        let mut located = None;
        let sealed: Option<Result<(), Arc<Cause>>> = if mime::is_encrypted(&fields) {
            let b = body.clone();
            match tokio::task::spawn_blocking(move || transform::locate(&b)).await {
                Ok(Ok(h)) => {
                    located = Some(h);
                    Some(Ok(()))
                }
                Ok(Err(TransformError::NotSealed(mime::ReadError::NotFound))) => None,
                // The disk, not the message: nothing is decided until it can be read.
                Ok(Err(e)) if e.is_transient() => {
                    let failed = Failed::retry("cannot read the message", e);
                    work.fail(&id, &envelope.recipients, failed);
                    return work;
                }
                Ok(Err(e)) => Some(Err(Arc::new(e.into()))),
                Err(e) => Some(Err(Arc::new(e.into()))),
            }
        } else {
            None
        };
        let decided = self
            .decide(
                compiled.clone(),
                &body,
                &envelope.recipients,
                sealed.is_some(),
                skip_rule.as_deref(),
                &envelope.sender,
            )
            .await;
        let (subject, eval) = match decided {
            Ok(x) => x,
            Err(cause) => {
                let failed = Failed::retry("cannot read the message", cause);
                work.fail(&id, &envelope.recipients, failed);
                return work;
            }
        };
        if let Some(cut) = eval.cut {
            tracing::warn!(queue_id = %id, %cut, "a scan limit cut the policy's scan of the message");
        }
        let parsed = mail_parser::MessageParser::default().parse_headers(&head[..]);
        let from = parsed
            .as_ref()
            .and_then(|m| m.from())
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .and_then(|a| Address::parse(a).ok())
            .or_else(|| Address::parse(&envelope.sender).ok());
        let visible: HashSet<Address> = parsed
            .as_ref()
            .map(|m| {
                m.to()
                    .into_iter()
                    .chain(m.cc())
                    .flat_map(|list| list.iter())
                    .filter_map(|a| a.address())
                    .filter_map(|a| Address::parse(a).ok())
                    .collect()
            })
            .unwrap_or_default();
        let message = Message {
            id: &id,
            body: &body,
            head: &head,
            envelope: &envelope,
            subject: &subject,
            from: from.as_ref(),
            visible: &visible,
            located: std::sync::Mutex::new(located),
            skip_rule: skip_rule.as_deref(),
            forged: &forged,
        };
        for group in &eval.groups {
            let why = group
                .rule
                .as_ref()
                .and_then(|rule| {
                    eval.trace.iter().find(|s| {
                        s.matched
                            && &s.rule == rule
                            && Some(&s.recipient) == group.recipients.first()
                    })
                })
                .map(|s| s.why.clone())
                .unwrap_or_else(|| "no rule decided".into());
            tracing::info!(
                queue_id = %id,
                recipients = group.recipients.len(),
                rule = group.rule.as_deref().unwrap_or("-"),
                action = %group.terminal.describe(),
                "policy decided"
            );
            self.carry_out(&message, group, &why, sealed.as_ref(), &mut work)
                .await;
        }
        // Failures no retry will fix go to the exception rules.
        let exceptions = std::mem::take(&mut work.exceptions);
        for Exception {
            kind,
            recipients,
            reason: why,
        } in exceptions
        {
            let (name, actions) = match kind {
                Failure::Decryption => (
                    "Unable to decrypt",
                    &compiled.policy().exceptions.decryption,
                ),
                _ => (
                    "Encryption Exception",
                    &compiled.policy().exceptions.encryption,
                ),
            };
            let terminal = actions.iter().find(|a| a.is_terminal()).cloned().unwrap_or(
                policy::Action::Quarantine {
                    area: "Encryption_Quarantine".into(),
                },
            );
            let group = policy::Decided {
                recipients,
                rule: Some(name.to_string()),
                terminal,
                actions: actions
                    .iter()
                    .filter(|a| !a.is_terminal())
                    .map(|a| (name.to_string(), a.clone()))
                    .collect(),
            };
            tracing::warn!(queue_id = %id, recipients = group.recipients.len(), rule = name, "{why}");
            self.carry_out(&message, &group, &why, None, &mut work)
                .await;
        }
        let errored = work.decision.errored.len() as u64;
        if errored > 0 {
            self.counters.errored.inc_by(errored);
        }
        work
    }
}
