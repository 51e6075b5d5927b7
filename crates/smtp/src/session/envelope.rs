//! The envelope: EHLO/HELO, MAIL FROM and RCPT TO, who may relay, and where the bare
//! `postmaster` goes.

use super::*;

impl Session {
    pub(super) fn hello(&mut self, extended: bool, domain: String) -> Result<(), End> {
        self.reset();
        self.phase = Phase::Ready;
        self.helo = domain;
        if !extended {
            self.esmtp = false;
            let name = self.shared.hostname.clone();
            self.out
                .extend_from_slice(format!("250 {name}\r\n").as_bytes());
            return Ok(());
        }
        self.esmtp = true;
        let c = &self.shared.config;
        let mut lines = vec![
            self.shared.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", c.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.tls && !c.users.is_empty() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.reply_lines(250, &lines);
        Ok(())
    }

    /// A client on a named client network, or one that authenticated.
    pub(super) fn trusted(&self) -> bool {
        self.user.is_some()
            || self
                .shared
                .config
                .client_networks
                .iter()
                .any(|n| n.contains(self.peer.ip()))
    }

    pub(super) fn relay_allowed(&self, recipient: &str) -> bool {
        if self.trusted() {
            return true;
        }
        policy::is_internal(recipient, &self.shared.config.internal_domains)
    }

    pub(super) fn mail(&mut self, sender: String, params: MailParams) -> Result<(), End> {
        match self.phase {
            Phase::Connected => return self.error(503, "5.5.1", "say EHLO or HELO first"),
            Phase::Mail | Phase::Rcpt => {
                return self.error(503, "5.5.1", "a transaction is already open (RSET first)");
            }
            Phase::Ready => {}
        }
        if *self.stop.borrow() {
            return Err(End::Shutdown);
        }
        if self.shared.config.require_auth && self.user.is_none() {
            return self.error(530, "5.7.0", "authentication required");
        }
        if self.shared.source == Source::Bypass && !self.trusted() {
            return self.error(
                530,
                "5.7.1",
                "this port takes mail only from trusted hops: a client network or an authenticated client",
            );
        }
        if !self.esmtp && params != MailParams::default() {
            return self.error(555, "5.5.4", "MAIL parameters need EHLO");
        }
        if params
            .size
            .is_some_and(|size| size > self.shared.config.max_message_size)
        {
            return self.error(
                552,
                "5.3.4",
                "the message is larger than this server accepts",
            );
        }
        // Both BODY values are accepted; 8BITMIME is announced.
        let _: Option<Body> = params.body;
        self.sender = Some(sender);
        self.phase = Phase::Mail;
        self.reply(250, "2.1.0", "sender ok");
        Ok(())
    }

    pub(super) fn rcpt(&mut self, recipient: String) -> Result<(), End> {
        if !matches!(self.phase, Phase::Mail | Phase::Rcpt) {
            return self.error(503, "5.5.1", "MAIL first");
        }
        if self.recipients.len() >= self.shared.config.max_recipients {
            self.reply(452, "4.5.3", "too many recipients in this message");
            return Ok(());
        }
        // RFC 5321 4.5.1: "postmaster" without a domain is always accepted.
        let recipient = if command::is_bare_postmaster(&recipient) {
            self.postmaster()
        } else {
            if !self.relay_allowed(&recipient) {
                tracing::info!(peer = %self.peer, recipient = %recipient, "relay attempt refused");
                return self.error(554, "5.7.1", "relaying denied: the recipient's domain is not served here and the client may not relay");
            }
            recipient
        };
        self.recipients.push(recipient);
        self.phase = Phase::Rcpt;
        self.reply(250, "2.1.5", "recipient ok");
        Ok(())
    }

    /// Where the bare `postmaster` goes.
    pub(super) fn postmaster(&self) -> String {
        let c = &self.shared.config;
        c.postmaster.clone().unwrap_or_else(|| {
            let domain = c.internal_domains.first().unwrap_or(&self.shared.hostname);
            format!("postmaster@{domain}")
        })
    }
}
