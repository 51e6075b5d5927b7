//! Forward to decrypt, for people who cannot open `encrypted_message.htm` (on a phone): they
//! forward the encrypted email to `decrypt@` one of the gateway's domains.
//!
//! When the forwarder (the envelope sender) is one of the sealed message's recipients, and the
//! encrypted email carries this gateway's mark ([`transform::mark`]: it made it), the gateway keeps
//! a copy of the sealed message for `decrypt_link_hours` (no longer than the large message it
//! came from, if it did) and answers, from the null sender, with a link to the reader; the
//! reader still asks for the one-time code sent to the address before anything opens. The
//! answer goes to the forwarder's own address, so a forged sender only sends the link to the
//! real recipient.
//!
//! Anyone else gets no answer at all: not a recipient, no sealed message found, one this
//! gateway did not make, a link that expired, over the hourly limit. A refusal would tell a
//! stranger which addresses a message was sealed to, and an answer to every forward would make
//! the gateway a source of backscatter. What happened is logged and recorded on the message.

use envelope::{Address, Header};
use store::{Envelope, Errored, Keep, KeptKind, MessageCopy};

use super::failure::{Failed, blocking};
use super::{Pipeline, Work};
use transform::TransformError;

/// Where the sealed message of a forward is.
enum Source {
    /// In the forward itself.
    Carried(transform::Located),
    /// Kept on this gateway; a large message's link named it. A copy lives no longer.
    Kept { body: store::Body, until: u64 },
}

/// The sealed message found in a forward, before anything is copied.
struct Found {
    source: Source,
    header: Header,
}

impl Pipeline {
    /// True when `recipient` is this gateway's forward-to-decrypt address.
    pub(super) fn is_decrypt_address(&self, recipient: &str) -> bool {
        let local = &self.settings.gateway.decrypt_address;
        !local.is_empty()
            && recipient
                .rsplit_once('@')
                .is_some_and(|(l, _)| l.eq_ignore_ascii_case(local))
            && self.is_internal(recipient)
    }

    /// Answers a forward to `to` (the decrypt addresses among the recipients), or records why
    /// nothing is sent. A failure a retry may fix (the disk) waits in the errored queue; it is
    /// never bounced (see `expire`), since the sender may be forged.
    pub(super) async fn forward_to_decrypt(
        &self,
        id: &str,
        body: &store::Body,
        head: &[u8],
        envelope: &Envelope,
        to: &[String],
        work: &mut Work,
    ) {
        let silent = |work: &mut Work, why: &str| {
            tracing::info!(queue_id = %id, "forward to decrypt: no answer: {why}");
            for r in to {
                work.decision.deleted.push(Errored {
                    address: r.clone(),
                    reason: format!("forward to decrypt: no answer: {why}"),
                });
            }
        };
        let Ok(forwarder) = Address::parse(&envelope.sender) else {
            return silent(work, "the sender is not an address");
        };
        let g = &self.settings.gateway;
        let now = self.now();
        let found = match self.find_forwarded(body, now).await {
            Ok(Some(f)) => f,
            Ok(None) => return silent(work, "no encrypted message or live link in it"),
            Err(failed) => return work.fail(id, to, failed),
        };
        if !found
            .header
            .recipients
            .iter()
            .any(|r| r.address == forwarder)
        {
            return silent(work, "the sender is not one of the message's recipients");
        }
        // Anyone can write a sealed message's header; answer only for those this gateway made.
        let found = match self.made_here(found).await {
            Ok(Some(found)) => found,
            Ok(None) => return silent(work, "the encrypted message was not made by this gateway"),
            Err(failed) => return work.fail(id, to, failed),
        };
        let recorded = match self
            .queue
            .links_for(forwarder.as_str(), now.saturating_sub(3600), self.started)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                return work.fail(id, to, Failed::retry("cannot count the links sent", e));
            }
        };
        // The database counts the answers of earlier runs; `links` those of this one, recorded
        // or not yet (a burst of forwards in one batch). A slot given up (no answer made after
        // all) is given back when it drops.
        let limit = u64::from(g.decrypt_links_per_hour);
        let Ok(slot) = self
            .links
            .take(forwarder.as_str(), now, limit, recorded)
            .await
        else {
            return silent(work, "the sender had as many links as an hour allows");
        };
        let mut until = now + u64::from(g.decrypt_link_hours) * 3600;
        if let Source::Kept { until: ends, .. } = &found.source {
            until = until.min(*ends);
        }
        let spool = self.queue.spool().clone();
        let copied = tokio::task::spawn_blocking(move || match found.source {
            Source::Carried(located) => transform::keep_sealed(&located, &spool),
            Source::Kept { body, .. } => transform::keep_copy(&body, &spool).map(|(f, _)| f),
        })
        .await;
        let file = match copied {
            Ok(Ok(f)) => f,
            Ok(Err(e)) if e.is_transient() => {
                return work.fail(id, to, Failed::retry("cannot keep the sealed message", e));
            }
            Ok(Err(_)) => return silent(work, "the encrypted message in it is damaged"),
            Err(e) => {
                return work.fail(id, to, Failed::retry("cannot keep the sealed message", e));
            }
        };
        let token = store::kept::new_token();
        let link = transform::kept_link(&self.mime.reader_url, &token);
        let in_reply_to = mail_parser::MessageParser::default()
            .parse_headers(head)
            .and_then(|m| m.message_id().map(str::to_string));
        let text = mime::report::decrypt_answer(&mime::report::DecryptAnswer {
            hostname: &self.settings.hostname,
            from: &to[0],
            to: forwarder.as_str(),
            sender: found.header.sender.as_str(),
            in_reply_to: in_reply_to.as_deref(),
            link: &link,
            until: &transform::day_text(until),
            date: self.now(),
        });
        let spool = self.queue.spool().clone();
        let written = blocking(move || {
            let mut f = spool.create()?;
            match f.append(&text) {
                Ok(()) => f.finish(),
                Err(e) => {
                    f.discard();
                    Err(e)
                }
            }
        })
        .await;
        let answer_file = match written {
            Ok(f) => f,
            Err(e) => {
                file.discard();
                return work.fail(id, to, Failed::retry("cannot write the answer", e));
            }
        };
        tracing::info!(queue_id = %id, forwarder = %forwarder, "forward to decrypt: a link was sent");
        work.decision.copies.push(MessageCopy {
            file: Some(answer_file),
            routes: self.routes(&[forwarder.to_string()]),
            note: Some(format!(
                "forward to decrypt: a link to the reader was sent to {forwarder}"
            )),
            replaces: Some(to.to_vec()),
            sender: Some(String::new()),
        });
        work.decision.kept.push(Keep {
            token_hash: store::kept::token_hash(&token),
            file,
            kind: KeptKind::Forward,
            forwarder: Some(forwarder.to_string()),
            expires_at: until,
        });
        slot.keep();
    }

    /// `found`, when this gateway made it: a kept one, or one carrying this gateway's mark
    /// ([`transform::mark`]). A damaged one counts as not made here.
    async fn made_here(&self, found: Found) -> Result<Option<Found>, Failed> {
        let Source::Carried(located) = found.source else {
            return Ok(Some(found));
        };
        let mark = self.mark.clone();
        let (located, made) = tokio::task::spawn_blocking(move || {
            let made = transform::made_here(&located, &mark);
            (located, made)
        })
        .await
        .map_err(|e| Failed::retry("cannot read the forward", e))?;
        match made {
            Ok(true) => Ok(Some(Found {
                source: Source::Carried(located),
                header: found.header,
            })),
            Err(e) if e.is_transient() => Err(Failed::retry("cannot read the forward", e)),
            Ok(false) | Err(_) => Ok(None),
        }
    }

    /// The sealed message in a forward (attached, or inside an attached message), or the one
    /// kept on this gateway that a large message's link names. A damaged one counts as none.
    async fn find_forwarded(&self, body: &store::Body, now: u64) -> Result<Option<Found>, Failed> {
        let b = body.clone();
        let located = tokio::task::spawn_blocking(move || transform::locate(&b))
            .await
            .map_err(|e| Failed::retry("cannot read the forward", e))?;
        match located {
            Ok(l) => {
                return Ok(Some(Found {
                    header: l.header.clone(),
                    source: Source::Carried(l),
                }));
            }
            Err(e) if e.is_transient() => {
                return Err(Failed::retry("cannot read the forward", e));
            }
            // Damaged or absent: perhaps it carries a link instead.
            Err(_) => {}
        }
        let b = body.clone();
        let token = blocking(move || {
            let bytes = b.to_vec()?;
            Ok::<_, std::io::Error>(mime::kept_token(&bytes))
        })
        .await
        .map_err(|e| Failed::retry("cannot read the forward", e))?;
        let Some(token) = token else {
            return Ok(None);
        };
        let kept = match self.queue.kept(&token, now).await {
            Ok(Some(k)) => k,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Failed::retry("cannot look up the link", e)),
        };
        let b = kept.body.clone();
        let header = tokio::task::spawn_blocking(move || {
            b.open()
                .map_err(TransformError::from)
                .and_then(|f| Ok(envelope::read_header(std::io::BufReader::new(f))?))
        })
        .await
        .map_err(|e| Failed::retry("cannot read the kept message", e))?;
        match header {
            Ok(header) => Ok(Some(Found {
                header,
                source: Source::Kept {
                    body: kept.body,
                    until: kept.expires_at,
                },
            })),
            // Expired and swept meanwhile: nothing to link to.
            Err(TransformError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.is_transient() => Err(Failed::retry("cannot read the kept message", e)),
            // Damaged: nothing to link to.
            Err(_) => Ok(None),
        }
    }
}
