//! The policy's decision for a message, and carrying it out: the non-terminal actions (header
//! changes, notifications, archive copies) and the terminal one (deliver, hand off, change
//! recipients, hold, delete, encrypt, decrypt).

use std::sync::Arc;

use store::{Errored, MessageCopy, Route};

use super::failure::{Cause, Failed, Failure, blocking};
use super::{Message, Pipeline, Work};
use crate::notify::{self, Notice};
use crate::rewrite;

impl Pipeline {
    /// Carries out one group's actions: the non-terminal ones (header changes, notifications,
    /// archive copies) and the terminal one.
    pub(super) async fn carry_out(
        &self,
        m: &Message<'_>,
        group: &policy::Decided,
        why: &str,
        sealed: Option<&Result<(), Arc<Cause>>>,
        work: &mut Work,
    ) {
        let rule = group.rule.clone().unwrap_or_default();
        let mut changes = rewrite::Changes {
            remove: m.forged.to_vec(),
            ..rewrite::Changes::default()
        };
        for (from_rule, action) in &group.actions {
            match action {
                policy::Action::AddHeader { name, value } => {
                    changes.headers.push((name.clone(), value.clone()));
                }
                policy::Action::TagSubject { tag } => changes.tags.push(tag.clone()),
                policy::Action::Notify { to, template } => {
                    self.notice(m, group, from_rule, to, template, why, work);
                }
                policy::Action::Archive { to } => {
                    // One archive copy per message, however many groups name the address.
                    if work.archived.contains(to) {
                        continue;
                    }
                    work.archived.push(to.clone());
                    self.new_recipients(
                        m,
                        std::slice::from_ref(to),
                        &[],
                        &rewrite::Changes::default(),
                        work,
                    )
                    .await;
                }
                _ => {}
            }
        }
        let recipients = &group.recipients;
        match &group.terminal {
            policy::Action::Pass => self.deliver(m, recipients, &changes, None, work).await,
            policy::Action::Handoff { host, port } => {
                let hop = Route::Handoff {
                    host: host.clone(),
                    port: *port,
                };
                self.deliver(m, recipients, &changes, Some(hop), work).await;
            }
            policy::Action::ChangeRecipient { to } => {
                tracing::info!(queue_id = %m.id, rule = %rule, "recipients changed to {}", to.join(", "));
                self.new_recipients(m, to, recipients, &changes, work).await;
            }
            policy::Action::Delete | policy::Action::Quarantine { .. } => {
                self.stop(m, group, why, work);
            }
            policy::Action::Encrypt => {
                if matches!(sealed, Some(Ok(_))) {
                    // Already an encrypted email: sealing it again would help nobody.
                    self.deliver(m, recipients, &changes, None, work).await;
                } else {
                    self.encrypt(m, recipients, &changes, work).await;
                }
            }
            policy::Action::Decrypt | policy::Action::DecryptScanReencrypt => match sealed {
                Some(s) => {
                    let again = group.terminal == policy::Action::DecryptScanReencrypt
                        || self.settings.gateway.reencrypt_inbound;
                    let first = work.decision.copies.len();
                    let located = match s {
                        Ok(()) => m.take_located().await,
                        Err(cause) => Err(Failed::new(
                            "cannot decrypt",
                            Cause::Shared(cause.clone()),
                            Failure::Decryption,
                        )),
                    };
                    let scan = group.terminal == policy::Action::DecryptScanReencrypt;
                    self.decrypt(m, located, recipients, (again, scan), work)
                        .await;
                    // The decrypted copy's verdict fields are this gateway's own.
                    let changes = rewrite::Changes {
                        remove: Vec::new(),
                        ..changes
                    };
                    if !changes.is_empty() {
                        self.change_copies(first, &changes, work).await;
                    }
                }
                None => self.deliver(m, recipients, &changes, None, work).await,
            },
            // Non-terminal actions never decide (the policy crate guarantees it).
            _ => self.deliver(m, recipients, &changes, None, work).await,
        }
    }

    /// A notification for `group`, sent once the decision is recorded.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn notice(
        &self,
        m: &Message<'_>,
        group: &policy::Decided,
        from_rule: &str,
        to: &policy::Recipient,
        template: &str,
        why: &str,
        work: &mut Work,
    ) {
        let area = match &group.terminal {
            policy::Action::Quarantine { area } => area.clone(),
            _ => String::new(),
        };
        work.notices.push(Notice {
            to: notify::addresses(to, &m.envelope.sender, &group.recipients, &self.admin),
            template: template.to_string(),
            context: policy::templates::Context {
                sender: m.envelope.sender.clone(),
                recipients: group.recipients.clone(),
                subject: m.subject.to_string(),
                rule: from_rule.to_string(),
                area,
                reason: why.to_string(),
                queue_id: m.id.to_string(),
                hostname: self.settings.hostname.clone(),
                date: self.queue.clock().rfc2822(),
            },
        });
    }

    /// Holds (quarantine) or drops (delete) `group`'s recipients, as its terminal action says.
    pub(super) fn stop(
        &self,
        m: &Message<'_>,
        group: &policy::Decided,
        why: &str,
        work: &mut Work,
    ) {
        let rule = group.rule.clone().unwrap_or_default();
        let recipients = &group.recipients;
        match &group.terminal {
            policy::Action::Delete => {
                tracing::warn!(queue_id = %m.id, recipients = recipients.len(), rule = %rule, "deleted by policy: {why}");
                for r in recipients {
                    work.decision.deleted.push(Errored {
                        address: r.clone(),
                        reason: format!("deleted by rule {rule:?}: {why}"),
                    });
                }
            }
            policy::Action::Quarantine { area } => {
                tracing::warn!(queue_id = %m.id, recipients = recipients.len(), rule = %rule, area = %area, "quarantined: {why}");
                work.decision.held.push(store::Hold {
                    recipients: recipients.clone(),
                    area: area.clone(),
                    rule,
                    reason: why.to_string(),
                    subject: m.subject.to_string(),
                });
            }
            _ => {}
        }
    }

    /// Delivers the message as received (with `changes`), to the normal next hops or `hop`.
    pub(super) async fn deliver(
        &self,
        m: &Message<'_>,
        recipients: &[String],
        changes: &rewrite::Changes,
        hop: Option<Route>,
        work: &mut Work,
    ) {
        let routes = match &hop {
            Some(h) => recipients.iter().map(|r| (r.clone(), h.clone())).collect(),
            None => self.routes(recipients),
        };
        if changes.is_empty() {
            work.decision.copies.push(MessageCopy {
                file: None,
                routes,
                note: match &hop {
                    Some(Route::Handoff { host, port }) => {
                        Some(format!("handed off to {host}:{port}"))
                    }
                    _ => None,
                },
                replaces: None,
                sender: None,
            });
            return;
        }
        match self.changed_copy(m.body, changes).await {
            Ok(file) => work.decision.copies.push(MessageCopy {
                file: Some(file),
                routes,
                note: Some("header changed by policy".into()),
                replaces: None,
                sender: None,
            }),
            Err(e) => work.fail(
                m.id,
                recipients,
                Failed::retry("cannot copy the message", e),
            ),
        }
    }

    /// A copy of the message to addresses that were not its recipients: a changed recipient
    /// (standing in for `instead_of`) or an archive (`instead_of` empty).
    pub(super) async fn new_recipients(
        &self,
        m: &Message<'_>,
        to: &[String],
        instead_of: &[String],
        changes: &rewrite::Changes,
        work: &mut Work,
    ) {
        match self.changed_copy(m.body, changes).await {
            Ok(file) => work.decision.copies.push(MessageCopy {
                file: Some(file),
                routes: self.routes(to),
                note: Some(if instead_of.is_empty() {
                    format!("archive copy to {}", to.join(", "))
                } else {
                    format!(
                        "recipients {} changed to {}",
                        instead_of.join(", "),
                        to.join(", ")
                    )
                }),
                replaces: Some(instead_of.to_vec()),
                sender: None,
            }),
            Err(e) => {
                let list = if instead_of.is_empty() {
                    to
                } else {
                    instead_of
                };
                work.fail(m.id, list, Failed::retry("cannot copy the message", e));
            }
        }
    }

    /// The policy's decision for `recipients` of `body`, read (up to the scan
    /// limit, or its header section if the policy looks at no content) on the blocking pool;
    /// with the message's subject.
    pub(super) async fn decide(
        &self,
        compiled: Arc<policy::Compiled>,
        body: &store::Body,
        recipients: &[String],
        encrypted: bool,
        skip_rule: Option<&str>,
        sender: &str,
    ) -> Result<(String, policy::Evaluation), Cause> {
        let body = body.clone();
        let limit = self.settings.gateway.scan_limit_bytes;
        let limits = self.settings.gateway.scan_limits();
        let (sender, recipients) = (sender.to_string(), recipients.to_vec());
        let (internal, skip_rule) = (self.internal.clone(), skip_rule.map(str::to_string));
        blocking(move || {
            let view = rewrite::view(&body, limit, &limits, compiled.reads_content())?;
            let eval = compiled.decide(
                &view,
                &policy::Facts {
                    sender: &sender,
                    recipients: &recipients,
                    recipient_count: recipients.len(),
                    internal_domains: &internal,
                    encrypted,
                    skip_rule: skip_rule.as_deref(),
                },
            );
            Ok::<_, std::io::Error>((view.subject, eval))
        })
        .await
    }

    pub(super) async fn changed_copy(
        &self,
        body: &store::Body,
        changes: &rewrite::Changes,
    ) -> Result<store::Finished, Cause> {
        let (body, changes, spool) = (body.clone(), changes.clone(), self.queue.spool().clone());
        blocking(move || rewrite::copy_with_changes(&body, &changes, &spool)).await
    }

    /// Applies `changes` to the transformed copies made since `first`.
    pub(super) async fn change_copies(
        &self,
        first: usize,
        changes: &rewrite::Changes,
        work: &mut Work,
    ) {
        for i in first..work.decision.copies.len() {
            let Some(file) = work.decision.copies[i].file.take() else {
                continue;
            };
            match self.changed_copy(&file.body(), changes).await {
                Ok(changed) => {
                    file.discard();
                    work.decision.copies[i].file = Some(changed);
                }
                Err(e) => {
                    file.discard();
                    let copy = work.decision.copies.remove(i);
                    let list: Vec<String> = copy.routes.into_iter().map(|(a, _)| a).collect();
                    let id = work.decision.id.clone();
                    work.fail(&id, &list, Failed::retry("cannot copy the message", e));
                    return;
                }
            }
        }
    }
}
