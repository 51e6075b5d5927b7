//! Sealing a message for its recipients: the signer (the sender, else the default sender), one
//! sealed message for the recipients in To and Cc and one for each blind copy, header changes
//! sealed in with it.

use std::sync::Arc;

use envelope::{Address, Epoch};
use store::MessageCopy;
use transform::Encrypt;

use super::failure::{Failed, Failure, NoSigner, blocking};
use super::{Message, Pipeline, Work};
use crate::rewrite;

impl Pipeline {
    /// The signing key for mail from `sender`: the sender's own, else (if allowed) the default
    /// sender's. Returns the key and who it signs as; the error says whether a retry may help.
    pub(super) async fn signer(
        &self,
        sender: Option<&Address>,
        epoch: Epoch,
    ) -> Result<(Arc<envelope::SigningKey>, Address), Failed> {
        let own = match sender {
            Some(s) => match self.keys.signing_key(s, epoch).await {
                Ok(k) => return Ok((k, s.clone())),
                Err(error) => NoSigner::Sender {
                    sender: s.clone(),
                    error,
                },
            },
            None => NoSigner::NotAUser,
        };
        let failed = |why: NoSigner| {
            let kind = if why.is_transient() {
                Failure::Retry
            } else {
                Failure::Encryption
            };
            Failed::new("cannot sign", why, kind)
        };
        if !self.settings.gateway.use_default_sender {
            return Err(failed(own));
        }
        let Some(default) = &self.default_sender else {
            return Err(failed(NoSigner::NoDefault { own: Box::new(own) }));
        };
        match self.keys.signing_key(default, epoch).await {
            Ok(k) => Ok((k, default.clone())),
            Err(error) => Err(failed(NoSigner::DefaultFailed {
                own: Box::new(own),
                default: default.clone(),
                error,
            })),
        }
    }

    pub(super) async fn encrypt(
        &self,
        m: &Message<'_>,
        recipients: &[String],
        changes: &rewrite::Changes,
        work: &mut Work,
    ) {
        let id = m.id;
        // The sender whose key signs: the From address if it is one of this gateway's users,
        // else the envelope sender if it is (a message relayed for a user with a foreign
        // From); else nobody, and the default sender signs.
        let own = m
            .from
            .cloned()
            .filter(|f| self.is_internal(f.as_str()))
            .or_else(|| {
                Address::parse(&m.envelope.sender)
                    .ok()
                    .filter(|a| self.is_internal(a.as_str()))
            });
        let from = own.clone().or(m.from.cloned());
        let epoch = Epoch::from_unix(self.keys.now());
        let params = match self.keys.params().await {
            Ok(p) => p,
            Err(e) => return work.fail(id, recipients, Failed::retry("cannot encrypt", e)),
        };
        let (signer, signed_as) = match self.signer(own.as_ref(), epoch).await {
            Ok(s) => s,
            Err(failed) => return work.fail(id, recipients, failed),
        };
        // Recipients in To and Cc share one sealed message; each blind copy gets its own.
        let mut shared: Vec<(String, Address)> = Vec::new();
        let mut groups: Vec<Vec<(String, Address)>> = Vec::new();
        for r in recipients {
            match Address::parse(r) {
                Ok(a) if m.visible.contains(&a) => shared.push((r.clone(), a)),
                Ok(a) => groups.push(vec![(r.clone(), a)]),
                Err(e) => work.fail(
                    id,
                    std::slice::from_ref(r),
                    Failed::new(
                        "not an address a message can be encrypted to",
                        e,
                        Failure::Encryption,
                    ),
                ),
            }
        }
        if !shared.is_empty() {
            groups.insert(0, shared);
        }
        if groups.is_empty() {
            return;
        }
        // Header changes go into what is sealed (and so into the outer subject too).
        let all: Vec<String> = groups.iter().flatten().map(|(r, _)| r.clone()).collect();
        let changed = if changes.is_empty() {
            None
        } else {
            match self.changed_copy(m.body, changes).await {
                Ok(f) => Some(f),
                Err(e) => return work.fail(id, &all, Failed::retry("cannot copy the message", e)),
            }
        };
        let source = changed
            .as_ref()
            .map_or_else(|| m.body.clone(), store::Finished::body);
        let head = if changed.is_some() {
            None
        } else {
            Some(m.head.to_vec())
        };
        let keep_until = self.now() + u64::from(self.mime.kept_days).saturating_mul(86_400);
        // Read once for all the sealed copies of this message.
        let read = blocking(move || match head {
            Some(h) => transform::Original::with_head(&source, h),
            None => transform::Original::read(&source),
        })
        .await;
        let original = match read {
            Ok(o) => Arc::new(o),
            Err(e) => {
                if let Some(f) = changed {
                    f.discard();
                }
                return work.fail(id, &all, Failed::retry("cannot encrypt", e));
            }
        };
        for group in groups {
            let job = Encrypt {
                original: original.clone(),
                recipients: group.iter().map(|(_, a)| a.clone()).collect(),
                epoch,
                sender: from.clone(),
                signer: signer.clone(),
                mark: self.mark.clone(),
                params: params.clone(),
                encaps: self.encaps.clone(),
                settings: self.mime.clone(),
                hostname: self.settings.hostname.clone(),
                keep_until: Some(keep_until),
            };
            let spool = self.queue.spool().clone();
            let made = tokio::task::spawn_blocking(move || transform::encrypt(&job, &spool)).await;
            let names: Vec<String> = group.iter().map(|(r, _)| r.clone()).collect();
            match made {
                Ok(Ok(made)) => {
                    self.counters.encrypted.inc();
                    let default = from.as_ref() != Some(&signed_as);
                    let note = format!(
                        "encrypted for {} ({epoch}); signed as {signed_as}{}{}",
                        names.join(", "),
                        if default { " (default sender)" } else { "" },
                        if made.kept.is_some() {
                            "; large: the sealed message is kept on the gateway"
                        } else {
                            ""
                        }
                    );
                    let file = made.email;
                    work.decision.kept.extend(made.kept);
                    tracing::info!(queue_id = %id, recipients = names.len(), signer = %signed_as, "encrypted");
                    // Keys of users whose keys were used are prefetched for next month.
                    if own.as_ref() == Some(&signed_as)
                        && !work.decision.users.contains(&signed_as.to_string())
                    {
                        work.decision.users.push(signed_as.to_string());
                    }
                    work.decision.copies.push(MessageCopy {
                        file: Some(file),
                        routes: self.routes(&names),
                        note: Some(note),
                        replaces: None,
                        sender: None,
                    });
                }
                Ok(Err(e)) => {
                    work.fail(
                        id,
                        &names,
                        Failed::judged("cannot encrypt", e, Failure::Encryption),
                    );
                }
                Err(e) => work.fail(id, &names, Failed::retry("cannot encrypt", e)),
            }
        }
        drop(original);
        if let Some(f) = changed {
            f.discard();
        }
    }
}
