//! DATA: the message text received line by line under its deadlines, the Received line and
//! the header guard put on it, and the `250` only once the queue holds it durably.

use super::secure::sanitize;
use super::*;

impl Session {
    pub(super) async fn data(&mut self) -> Result<(), End> {
        match self.phase {
            Phase::Rcpt => {}
            Phase::Mail => return self.error(554, "5.5.1", "no valid recipients"),
            _ => return self.error(503, "5.5.1", "MAIL and RCPT first"),
        }
        let spool = self.shared.queue.spool().clone();
        let mut file = match spool.create() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot create a spool file");
                self.reply(
                    451,
                    "4.3.0",
                    "cannot store the message now; try again later",
                );
                self.reset();
                return Ok(());
            }
        };
        self.reply(354, "", "end data with <CR><LF>.<CR><LF>");
        let received = format!(
            "Received: from {} ([{}])\r\n\tby {} (Postern) with {}{};\r\n\t{}\r\n",
            sanitize(&self.helo),
            self.peer.ip(),
            self.shared.hostname,
            if self.esmtp { "ESMTP" } else { "SMTP" },
            if self.tls { "S" } else { "" },
            self.shared.queue.clock().rfc2822(),
        );
        let c = self.shared.config.clone();
        let line_timeout = Duration::from_secs(c.data_timeout_secs);
        let mut decoder = data::Decoder::new(self.bare_newlines);
        let mut problem: Option<(u16, &str, &str)> = None;
        let mut in_header = true;
        let mut header_bytes = 0usize;
        let mut size = 0u64;
        let mut message_id = None;
        let mut write_error = false;
        if file.append(received.as_bytes()).is_err() {
            write_error = true;
        }
        // The header section is held back and filtered when the sender may not be trusted to
        // leave this gateway's own fields alone.
        let guarded = self.shared.source == Source::Bypass || !self.trusted();
        let mut held: Vec<u8> = Vec::new();
        loop {
            let deadline = Instant::now() + line_timeout;
            let (line, too_long) = match self
                .read_line(c.max_line_length, deadline, Wait::Text)
                .await
            {
                Ok(Some(l)) => l,
                Ok(None) => {
                    file.discard();
                    return Err(End::Closed);
                }
                Err(e) => {
                    file.discard();
                    return Err(e);
                }
            };
            let body = match decoder.line(&line) {
                data::Line::End => break,
                data::Line::BareNewline => {
                    file.discard();
                    return Err(End::BareNewline);
                }
                data::Line::Text(body) => body,
            };
            if too_long {
                problem.get_or_insert((
                    552,
                    "5.3.4",
                    "a line of the message is longer than allowed",
                ));
                continue;
            }
            size += body.len() as u64;
            if size > c.max_message_size {
                problem.get_or_insert((
                    552,
                    "5.3.4",
                    "the message is larger than this server accepts",
                ));
                continue;
            }
            if in_header {
                if *body == *b"\r\n" {
                    in_header = false;
                } else {
                    header_bytes += body.len();
                    if header_bytes > c.max_header_size {
                        problem.get_or_insert((
                            552,
                            "5.3.4",
                            "the message header is larger than allowed",
                        ));
                        continue;
                    }
                    if message_id.is_none()
                        && body.len() > 11
                        && body[..11].eq_ignore_ascii_case(b"message-id:")
                    {
                        message_id = Some(
                            String::from_utf8_lossy(&body[11..])
                                .trim()
                                .chars()
                                .take(250)
                                .collect::<String>(),
                        );
                    }
                }
            }
            let bytes: &[u8] = if guarded && (in_header || !held.is_empty()) {
                held.extend_from_slice(&body);
                if in_header {
                    continue;
                }
                // The blank line: the whole header section is here.
                held = self.shared.guard.strip(&held);
                &held
            } else {
                &body
            };
            if problem.is_none() && !write_error && file.append(bytes).is_err() {
                write_error = true;
            }
            held.clear();
        }
        if !held.is_empty() {
            // A message that is all header.
            let stripped = self.shared.guard.strip(&held);
            if problem.is_none() && !write_error && file.append(&stripped).is_err() {
                write_error = true;
            }
        }
        if let Some((code, enhanced, text)) = problem {
            file.discard();
            self.reset();
            return self.error(code, enhanced, text);
        }
        if write_error {
            file.discard();
            self.reset();
            self.reply(
                451,
                "4.3.0",
                "cannot store the message now; try again later",
            );
            return Ok(());
        }
        let finished = match tokio::task::spawn_blocking(move || file.finish()).await {
            Ok(Ok(f)) => f,
            _ => {
                self.reset();
                self.reply(
                    451,
                    "4.3.0",
                    "cannot store the message now; try again later",
                );
                return Ok(());
            }
        };
        let len = finished.len;
        let envelope = Envelope {
            sender: self.sender.clone().unwrap_or_default(),
            recipients: std::mem::take(&mut self.recipients),
            client: self.peer.ip().to_string(),
            helo: self.helo.clone(),
            source: self.shared.source,
            message_id,
        };
        let rcpts = envelope.recipients.len();
        match self.shared.queue.accept(envelope, finished).await {
            Ok(id) => {
                tracing::info!(queue_id = %id, peer = %self.peer, size = len, recipients = rcpts, "accepted");
                (self.shared.on_accept)(&id, len);
                self.reply(250, "2.0.0", &format!("queued as {id}"));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot queue a message");
                self.reply(
                    451,
                    "4.3.0",
                    "cannot store the message now; try again later",
                );
            }
        }
        self.reset();
        Ok(())
    }
}
