//! STARTTLS and AUTH (PLAIN, LOGIN): the TLS handshake under its deadline, and logins checked
//! only over TLS or from trusted networks.

use super::*;

impl Session {
    pub(super) async fn starttls(&mut self) -> Result<(), End> {
        if self.tls {
            return self.error(503, "5.5.1", "TLS is already active");
        }
        // Anything pipelined after STARTTLS was sent in clear and must not be obeyed after it.
        if !self.io.buffer().is_empty() {
            return self.error(
                503,
                "5.5.1",
                "no commands may follow STARTTLS in the same packet",
            );
        }
        self.reply(220, "2.0.0", "ready to start TLS");
        self.flush().await?;
        let io = std::mem::replace(&mut self.io, BufReader::new(Stream::Detached));
        let Stream::Plain(tcp) = io.into_inner() else {
            return Err(End::Closed);
        };
        let accepted =
            tokio::time::timeout(Duration::from_secs(30), self.shared.tls.accept(tcp)).await;
        match accepted {
            Ok(Ok(tls)) => {
                self.io = BufReader::with_capacity(64 * 1024, Stream::Tls(Box::new(tls)));
                self.tls = true;
                self.phase = Phase::Connected;
                self.esmtp = false;
                self.user = None;
                self.reset();
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "STARTTLS handshake failed");
                Err(End::Closed)
            }
            Err(_) => Err(End::Timeout),
        }
    }

    pub(super) async fn auth(&mut self, mech: String, initial: Option<String>) -> Result<(), End> {
        if self.shared.config.users.is_empty() {
            return self.error(502, "5.5.1", "authentication is not offered");
        }
        if !self.tls {
            return self.error(538, "5.7.11", "encryption required: use STARTTLS first");
        }
        if self.phase == Phase::Connected {
            return self.error(503, "5.5.1", "say EHLO first");
        }
        if self.user.is_some() {
            return self.error(503, "5.5.1", "already authenticated");
        }
        if matches!(self.phase, Phase::Mail | Phase::Rcpt) {
            return self.error(503, "5.5.1", "not during a transaction");
        }
        let credentials = match mech.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(i) => i,
                    None => match self.challenge("").await? {
                        Some(r) => r,
                        None => return self.error(501, "5.0.0", "authentication cancelled"),
                    },
                };
                let Ok(decoded) = STANDARD.decode(response.as_bytes()) else {
                    return self.error(501, "5.5.2", "the response is not base64");
                };
                let mut parts = decoded.split(|b| *b == 0);
                let (_authz, user, pass) = (parts.next(), parts.next(), parts.next());
                match (user, pass) {
                    (Some(u), Some(p)) => (String::from_utf8_lossy(u).into_owned(), p.to_vec()),
                    _ => return self.error(501, "5.5.2", "malformed PLAIN response"),
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => i,
                    None => match self.challenge("VXNlcm5hbWU6").await? {
                        Some(r) => r,
                        None => return self.error(501, "5.0.0", "authentication cancelled"),
                    },
                };
                let pass = match self.challenge("UGFzc3dvcmQ6").await? {
                    Some(r) => r,
                    None => return self.error(501, "5.0.0", "authentication cancelled"),
                };
                match (
                    STANDARD.decode(user.as_bytes()),
                    STANDARD.decode(pass.as_bytes()),
                ) {
                    (Ok(u), Ok(p)) => (String::from_utf8_lossy(&u).into_owned(), p),
                    _ => return self.error(501, "5.5.2", "the response is not base64"),
                }
            }
            _ => return self.error(504, "5.5.4", "unsupported mechanism (use PLAIN or LOGIN)"),
        };
        let (name, password) = credentials;
        let users = self.shared.config.users.clone();
        let name_for_check = name.clone();
        let ok = tokio::task::spawn_blocking(move || {
            crate::auth::verify(&users, &name_for_check, &password)
        })
        .await
        .unwrap_or(false);
        if ok {
            tracing::info!(peer = %self.peer, user = %name, "authenticated");
            self.user = Some(name);
            self.reply(235, "2.7.0", "authentication succeeded");
            Ok(())
        } else {
            tracing::info!(peer = %self.peer, user = %name, "authentication failed");
            self.error(535, "5.7.8", "authentication credentials invalid")
        }
    }

    /// Sends a 334 challenge and reads the response; `None` when the client cancels with `*`.
    pub(super) async fn challenge(&mut self, prompt: &str) -> Result<Option<String>, End> {
        self.out
            .extend_from_slice(format!("334 {prompt}\r\n").as_bytes());
        let Some((line, too_long)) = self.read_command().await? else {
            return Err(End::Closed);
        };
        let text = String::from_utf8_lossy(&line).trim().to_string();
        if too_long || text == "*" {
            return Ok(None);
        }
        Ok(Some(text))
    }
}

pub(super) fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(100).collect()
}
