//! Forward to decrypt, for people who cannot open `encrypted_message.htm` (on a phone): they
//! forward the encrypted email to `decrypt@` one of the gateway's domains.
//!
//! When the forwarder (the envelope sender) is one of the sealed message's recipients, the
//! gateway keeps the sealed message for `decrypt_link_hours` and answers, from the null sender,
//! with a link to the reader; the reader still asks for the one-time code sent to the address
//! before anything opens. The answer goes to the forwarder's own address, so a forged sender
//! only sends the link to the real recipient.
//!
//! Anyone else gets no answer at all: not a recipient, no sealed message found, a link that
//! expired, over the hourly limit. A refusal would tell a stranger which addresses a message
//! was sealed to, and an answer to every forward would make the gateway a source of backscatter.
//! What happened is logged and recorded on the message.

use std::path::Path;

use envelope::{Address, Header};
use store::{Copy, Envelope, Errored, Keep, KeptKind};

use super::{Failure, Pipeline, Work, blocking, reason};
use crate::transform::{self, TransformError};

/// The sealed message found in a forward, copied aside to be kept.
struct Found {
    file: store::Finished,
    header: Header,
}

impl Pipeline {
    /// True when `recipient` is this gateway's forward-to-decrypt address.
    pub(super) fn is_decrypt_address(&self, recipient: &str) -> bool {
        let local = &self.settings.gateway.decrypt_address;
        if local.is_empty() {
            return false;
        }
        let Some((l, domain)) = recipient.rsplit_once('@') else {
            return false;
        };
        l.eq_ignore_ascii_case(local)
            && (self.is_internal(recipient) || domain.eq_ignore_ascii_case(&self.settings.hostname))
    }

    /// Answers a forward to `to` (the decrypt addresses among the recipients), or records why
    /// nothing is sent.
    pub(super) async fn forward_to_decrypt(
        &self,
        id: &str,
        path: &Path,
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
        let now = store::queue::now();
        match self
            .queue
            .links_for(forwarder.as_str(), now.saturating_sub(3600))
            .await
        {
            Ok(n) if n >= u64::from(g.decrypt_links_per_hour) => {
                return silent(work, "the sender had as many links as an hour allows");
            }
            Ok(_) => {}
            Err(e) => {
                let why = reason("cannot count the links sent", &e);
                return work.fail(id, to, why, Failure::Retry);
            }
        }
        let found = match self.find_forwarded(path, now).await {
            Ok(Some(f)) => f,
            Ok(None) => return silent(work, "no encrypted message or live link in it"),
            Err(why) => return work.fail(id, to, why, Failure::Retry),
        };
        if !found
            .header
            .recipients
            .iter()
            .any(|r| r.address == forwarder)
        {
            found.file.discard();
            return silent(work, "the sender is not one of the message's recipients");
        }
        let token = store::kept::new_token();
        let until = now + u64::from(g.decrypt_link_hours) * 3600;
        let link = transform::kept_link(&self.mime.reader_url, &token);
        let text = answer(
            &to[0],
            &forwarder,
            &found.header.sender,
            head,
            &link,
            &transform::day_text(until),
            &self.settings.hostname,
        );
        let spool = self.queue.spool().clone();
        let written = blocking(move || {
            let mut f = spool.create()?;
            f.append(text.as_bytes())?;
            f.finish()
        })
        .await;
        let answer_file = match written {
            Ok(f) => f,
            Err(e) => {
                found.file.discard();
                let why = reason("cannot write the answer", &e);
                return work.fail(id, to, why, Failure::Retry);
            }
        };
        tracing::info!(queue_id = %id, forwarder = %forwarder, "forward to decrypt: a link was sent");
        work.decision.copies.push(Copy {
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
            file: found.file,
            kind: KeptKind::Forward,
            forwarder: Some(forwarder.to_string()),
            expires_at: until,
        });
    }

    /// The sealed message in a forward (attached, or inside an attached message), or the one
    /// kept on this gateway that a large message's link names; copied aside.
    async fn find_forwarded(&self, path: &Path, now: u64) -> Result<Option<Found>, String> {
        let spool = self.queue.spool().clone();
        let p = path.to_path_buf();
        let located = tokio::task::spawn_blocking(move || {
            transform::locate(&p).and_then(|l| {
                let file = transform::keep_sealed(&l, &spool)?;
                Ok(Found {
                    file,
                    header: l.header,
                })
            })
        })
        .await
        .map_err(|e| e.to_string())?;
        match located {
            Ok(found) => return Ok(Some(found)),
            Err(TransformError::Io(e)) => return Err(reason("cannot read the forward", &e)),
            // Damaged or absent: perhaps it carries a link instead.
            Err(_) => {}
        }
        let p = path.to_path_buf();
        let token = blocking(move || {
            let bytes = std::fs::read(&p)?;
            Ok::<_, std::io::Error>(mime::kept_token(&bytes))
        })
        .await
        .map_err(|e| reason("cannot read the forward", &e))?;
        let Some(token) = token else {
            return Ok(None);
        };
        let kept = match self.queue.kept(&token, now).await {
            Ok(Some(k)) => k,
            Ok(None) => return Ok(None),
            Err(e) => return Err(reason("cannot look up the link", &e)),
        };
        let spool = self.queue.spool().clone();
        match tokio::task::spawn_blocking(move || transform::keep_copy(&kept.path, &spool)).await {
            Ok(Ok((file, header))) => Ok(Some(Found { file, header })),
            Ok(Err(TransformError::Io(e))) => Err(reason("cannot copy the kept message", &e)),
            // Expired and swept meanwhile, or damaged: nothing to link to.
            Ok(Err(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The answer: a short text with the link, threaded under the forward.
fn answer(
    from: &str,
    to: &Address,
    sender: &Address,
    forward_head: &[u8],
    link: &str,
    until: &str,
    hostname: &str,
) -> String {
    let date = smtp::session::rfc2822_now();
    let id = format!("<decrypt.{:016x}@{hostname}>", rand::random::<u64>());
    let mut thread = String::new();
    let parsed = mail_parser::MessageParser::default().parse_headers(forward_head);
    if let Some(mid) = parsed.as_ref().and_then(|m| m.message_id())
        && mid.chars().all(|c| c.is_ascii_graphic())
    {
        thread = format!("In-Reply-To: <{mid}>\r\nReferences: <{mid}>\r\n");
    }
    format!(
        "From: Postern <{from}>\r\nTo: <{to}>\r\nSubject: Your encrypted message is ready to read\r\n\
Date: {date}\r\nMessage-ID: {id}\r\n{thread}Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
You forwarded an encrypted message from {sender} to be read in a browser.\r\n\r\n\
Open it here:\r\n\r\n{link}\r\n\r\n\
The link works until {until}. Before the message opens, a one-time code is sent to\r\n\
{to} to prove that it is you.\r\n\r\n\
If you did not forward this message, ignore this email: nobody can read the message\r\n\
without that code.\r\n"
    )
}
