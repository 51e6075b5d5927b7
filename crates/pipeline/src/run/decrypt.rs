//! Opening an encrypted email for the recipients it is sealed to, optionally scanning the plain
//! message with the policy again and sealing it again for delivery.

use std::collections::HashSet;
use std::sync::Arc;

use envelope::{Address, Epoch, KeyId};
use store::MessageCopy;
use transform::{Decrypt, Encrypt, KeyFailure};

use super::failure::{Cause, Failed, Failure, NoSigner, blocking};
use super::{Message, Pipeline, Work, pass_as_is};

impl Message<'_> {
    /// The sealed message, or why it cannot be had and whether a retry may help.
    pub(super) async fn take_located(&self) -> Result<transform::Located, Failed> {
        let taken = match self.located.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(l) = taken {
            return Ok(l);
        }
        let body = self.body.clone();
        match tokio::task::spawn_blocking(move || transform::locate(&body)).await {
            Ok(Ok(l)) => Ok(l),
            Ok(Err(e)) => Err(Failed::judged("cannot decrypt", e, Failure::Decryption)),
            Err(e) => Err(Failed::retry("cannot decrypt", e)),
        }
    }
}

impl Pipeline {
    /// Opens the sealed message for the recipients among `recipients` it is sealed to;
    /// `reencrypt` seals the plain copy again, `scan` runs the policy on it first.
    pub(super) async fn decrypt(
        &self,
        m: &Message<'_>,
        sealed: Result<transform::Located, Failed>,
        recipients: &[String],
        (reencrypt, scan): (bool, bool),
        work: &mut Work,
    ) {
        let id = m.id;
        let located = match sealed {
            Ok(l) => l,
            Err(failed) => return work.fail(id, recipients, failed),
        };
        let header = &located.header;
        // Only recipients the message is sealed to can have it opened for them; anyone else
        // (a forward, a list) gets it as it came.
        let sealed_to: HashSet<&Address> = header.recipients.iter().map(|r| &r.address).collect();
        let mut addressed: Vec<(String, Address)> = Vec::new();
        let mut others = Vec::new();
        for r in recipients {
            match Address::parse(r) {
                Ok(a) if sealed_to.contains(&a) => addressed.push((r.clone(), a)),
                _ => others.push(r.clone()),
            }
        }
        if !others.is_empty() {
            tracing::info!(queue_id = %id, recipients = others.len(), "not sealed to these recipients: delivered encrypted");
            work.decision.copies.push(pass_as_is(self, &others));
        }
        if addressed.is_empty() {
            return;
        }
        let names: Vec<String> = addressed.iter().map(|(r, _)| r.clone()).collect();
        let mut params = match self.keys.params().await {
            Ok(p) => p,
            Err(e) => return work.fail(id, &names, Failed::retry("cannot decrypt", e)),
        };
        if params.get(header.sig_key_id).is_err() {
            // A master key newer than the parameters held: fetch them again.
            self.keys.refresh_params();
            if let Ok(p) = self.keys.params().await {
                params = p;
            }
        }
        let key = match self
            .first_key(&addressed, header.epoch, header.kem_key_id)
            .await
        {
            Ok(k) => k,
            Err(e) => {
                let kind = if e.is_transient() {
                    Failure::Retry
                } else {
                    Failure::Decryption
                };
                return work.fail(id, &names, Failed::new("cannot decrypt", e, kind));
            }
        };
        let job = Decrypt {
            source: m.body.clone(),
            outer: m.head.to_vec(),
            located,
            key,
            params,
            decaps: self.decaps.clone(),
            settings: self.mime.clone(),
            hostname: self.settings.hostname.clone(),
        };
        let spool = self.queue.spool().clone();
        let opened = tokio::task::spawn_blocking(move || transform::decrypt(&job, &spool)).await;
        let (file, signature) = match opened {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let failed = Failed::judged("cannot decrypt", e, Failure::Decryption);
                return work.fail(id, &names, failed);
            }
            Err(e) => return work.fail(id, &names, Failed::retry("cannot decrypt", e)),
        };
        self.counters.decrypted.inc();
        let verdict = signature.header_value();
        if matches!(signature, mime::Signature::Invalid { .. })
            && self.mime.error_on_verification_failure
        {
            file.discard();
            let failed = Failed::bare(Cause::BadSignature(verdict), Failure::Decryption);
            return work.fail(id, &names, failed);
        }
        tracing::info!(queue_id = %id, recipients = names.len(), "decrypted; signature {verdict}");
        work.decision
            .users
            .extend(addressed.iter().map(|(_, a)| a.to_string()));
        let mut note = format!("decrypted; signature {verdict}");
        let (addressed, names) = if scan {
            let kept = self.scan_plain(m, &file.body(), &addressed, work).await;
            if kept.is_empty() {
                file.discard();
                return;
            }
            let names: Vec<String> = kept.iter().map(|(r, _)| r.clone()).collect();
            note.push_str("; scanned");
            (kept, names)
        } else {
            (addressed, names)
        };
        let file = if reencrypt {
            match self.reencrypt(file, &addressed).await {
                Ok(f) => {
                    note.push_str("; encrypted again for delivery");
                    f
                }
                Err(cause) => {
                    let failed = Failed::retry("cannot encrypt again after decrypting", cause);
                    return work.fail(id, &names, failed);
                }
            }
        } else {
            file
        };
        work.decision.copies.push(MessageCopy {
            file: Some(file),
            routes: self.routes(&names),
            note: Some(note),
            replaces: None,
            sender: None,
        });
    }

    /// The scan of `decrypt_scan_reencrypt`: the policy runs again on the plain message (as
    /// not encrypted). Recipients it quarantines or deletes are held or dropped (the message
    /// as received is what a quarantine keeps, so nothing plain is stored); the others are
    /// returned, to be encrypted again. Other decisions of the second pass change nothing.
    pub(super) async fn scan_plain(
        &self,
        m: &Message<'_>,
        plain: &store::Body,
        addressed: &[(String, Address)],
        work: &mut Work,
    ) -> Vec<(String, Address)> {
        let names: Vec<String> = addressed.iter().map(|(r, _)| r.clone()).collect();
        let decided = self
            .decide(
                self.policy(),
                plain,
                &names,
                false,
                m.skip_rule,
                &m.envelope.sender,
            )
            .await;
        let eval = match decided {
            Ok((_, e)) => e,
            Err(e) => {
                let failed = Failed::retry("cannot scan the decrypted message", e);
                work.fail(m.id, &names, failed);
                return Vec::new();
            }
        };
        if let Some(cut) = eval.cut {
            tracing::warn!(queue_id = %m.id, %cut, "a scan limit cut the policy's scan of the decrypted message");
        }
        let mut stopped: Vec<String> = Vec::new();
        for g in &eval.groups {
            if !matches!(
                g.terminal,
                policy::Action::Quarantine { .. } | policy::Action::Delete
            ) {
                continue;
            }
            let why = eval
                .trace
                .iter()
                .find(|s| s.matched && Some(&s.rule) == g.rule.as_ref())
                .map(|s| format!("in the decrypted message: {}", s.why))
                .unwrap_or_default();
            for (from_rule, action) in &g.actions {
                if let policy::Action::Notify { to, template } = action {
                    self.notice(m, g, from_rule, to, template, &why, work);
                }
            }
            self.stop(m, g, &why, work);
            stopped.extend(g.recipients.iter().cloned());
        }
        addressed
            .iter()
            .filter(|(r, _)| !stopped.contains(r))
            .cloned()
            .collect()
    }

    pub(super) async fn first_key(
        &self,
        addressed: &[(String, Address)],
        epoch: Epoch,
        key_id: KeyId,
    ) -> Result<Arc<envelope::DecryptionKey>, KeyFailure> {
        let mut first_error = None;
        for (_, a) in addressed {
            match self.keys.decryption_key(a, epoch, key_id).await {
                Ok(k) => return Ok(k),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| KeyFailure::Broken("no recipient".into())))
    }

    /// Seals a decrypted message again for its internal recipients, signed by the default
    /// sender (the original signer's key is not this gateway's to use).
    pub(super) async fn reencrypt(
        &self,
        decrypted: store::Finished,
        recipients: &[(String, Address)],
    ) -> Result<store::Finished, Cause> {
        let made = async {
            let epoch = Epoch::from_unix(self.keys.now());
            let params = self.keys.params().await?;
            let default = self.default_sender.clone().ok_or(NoSigner::NotConfigured)?;
            let signer = self
                .keys
                .signing_key(&default, epoch)
                .await
                .map_err(NoSigner::DefaultKey)?;
            let body = decrypted.body();
            let original = blocking(move || transform::Original::read(&body)).await?;
            let job = Encrypt {
                original: Arc::new(original),
                recipients: recipients.iter().map(|(_, a)| a.clone()).collect(),
                epoch,
                sender: Some(default),
                signer,
                mark: self.mark.clone(),
                params,
                encaps: self.encaps.clone(),
                settings: self.mime.clone(),
                hostname: self.settings.hostname.clone(),
                // Internal mail carries its sealed message whatever its size.
                keep_until: None,
            };
            let spool = self.queue.spool().clone();
            blocking(move || transform::encrypt(&job, &spool))
                .await
                .map(|made| made.email)
        }
        .await;
        decrypted.discard();
        made
    }
}
