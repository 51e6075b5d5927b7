//! Sends one-time codes by email through the configured SMTP relay.
//!
//! A code email is a plain RFC 5322 message a spam filter has no reason to drop: `Message-ID`
//! and `From` at the gateway's host name, `Date`, `MIME-Version`, a UTF-8 text body,
//! `Auto-Submitted`, and EHLO with the same host name.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::Rng;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};

use crate::relay::{RelayHealth, RelayState};

/// How the relay is reached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// Relay host name or address.
    pub relay_host: String,
    /// Relay port.
    pub relay_port: u16,
    /// The From of code emails [default: `Postern <keys@HOSTNAME>`, HOSTNAME the gateway's
    /// `smtp.hostname`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `opportunistic` (STARTTLS when offered), `required`, or `off`.
    pub starttls: StartTls,
    /// Seconds to wait for the relay.
    pub timeout_secs: u64,
}

/// STARTTLS use towards the relay.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Use it when the relay offers it.
    Opportunistic,
    /// Refuse to send without it.
    Required,
    /// Never use it.
    Off,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            relay_host: "127.0.0.1".into(),
            relay_port: 25,
            from: None,
            starttls: StartTls::Opportunistic,
            timeout_secs: 30,
        }
    }
}

impl MailConfig {
    /// The From of code emails for a gateway called `hostname`.
    pub fn from_for(&self, hostname: &str) -> String {
        self.from
            .clone()
            .unwrap_or_else(|| format!("Postern <keys@{hostname}>"))
    }

    /// `relay_host:relay_port`.
    pub fn relay_address(&self) -> String {
        if self.relay_host.contains(':') {
            format!("[{}]:{}", self.relay_host, self.relay_port)
        } else {
            format!("{}:{}", self.relay_host, self.relay_port)
        }
    }

    /// Checks what types cannot; the error names the setting.
    pub fn validate(&self) -> Result<(), MailError> {
        if let Some(from) = &self.from {
            from.parse::<Mailbox>().map_err(|e| {
                MailError::Config(format!(
                    "keyserver.mail.from = {from:?} is not a mailbox: {e}"
                ))
            })?;
        }
        if self.relay_host.trim().is_empty() {
            return Err(MailError::Config(
                "keyserver.mail.relay_host must not be empty".into(),
            ));
        }
        if self.timeout_secs == 0 {
            return Err(MailError::Config(
                "keyserver.mail.timeout_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Why a code could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A setting does not parse.
    #[error("mail setting {0}")]
    Config(String),
    /// The relay cannot be reached, or would not talk: nothing to do with the recipient.
    #[error("the SMTP relay does not answer: {0}")]
    Unreachable(String),
    /// The relay answered but did not take the message.
    #[error("the SMTP relay did not take the message: {0}")]
    Refused(String),
}

/// Longest a relay check takes: a person waits for its answer, and the key client gives up
/// after 10 s.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends code emails.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    hostname: String,
    health: Arc<RelayHealth>,
    check_timeout: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .field("relay", &self.health.address())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `config` on the gateway called `hostname` (its EHLO name, the right side of
    /// Message-IDs, and the default From's domain); connects lazily.
    pub fn new(
        config: &MailConfig,
        hostname: &str,
        clock: clock::SharedClock,
    ) -> Result<Self, MailError> {
        config.validate()?;
        let from_text = config.from_for(hostname);
        let from: Mailbox = from_text.parse().map_err(|e| {
            MailError::Config(format!(
                "keyserver.mail.from = {from_text:?} is not a mailbox (set it, or smtp.hostname to a domain name): {e}"
            ))
        })?;
        let tls = match config.starttls {
            StartTls::Off => Tls::None,
            mode => {
                let params = TlsParameters::new(config.relay_host.clone())
                    .map_err(|e| MailError::Config(format!("keyserver.mail.relay_host: {e}")))?;
                if mode == StartTls::Required {
                    Tls::Required(params)
                } else {
                    Tls::Opportunistic(params)
                }
            }
        };
        let timeout = Duration::from_secs(config.timeout_secs);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.relay_host)
            .port(config.relay_port)
            .hello_name(ClientId::Domain(hostname.to_string()))
            .tls(tls)
            .timeout(Some(timeout))
            .build();
        Ok(Mailer {
            transport,
            from,
            hostname: hostname.to_string(),
            health: Arc::new(RelayHealth::new(config.relay_address(), clock)),
            check_timeout: CHECK_TIMEOUT.min(timeout),
        })
    }

    /// The relay's health, as checks and sends find it.
    pub fn health(&self) -> Arc<RelayHealth> {
        self.health.clone()
    }

    /// Connects to the relay, greets it (EHLO, STARTTLS as configured) and asks NOOP; records
    /// the outcome.
    pub async fn check(&self) -> Result<(), MailError> {
        let outcome = match tokio::time::timeout(
            self.check_timeout,
            self.transport.test_connection(),
        )
        .await
        {
            Err(_) => Err(format!(
                "no answer within {} s",
                self.check_timeout.as_secs()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(false)) => Err("it did not answer NOOP".to_string()),
            Ok(Ok(true)) => Ok(()),
        };
        match outcome {
            Ok(()) => {
                self.health.record(RelayState::Reachable);
                Ok(())
            }
            Err(why) => {
                self.health.record(RelayState::Unreachable(why.clone()));
                Err(MailError::Unreachable(why))
            }
        }
    }

    /// The code email for `to`.
    fn message(&self, to: Mailbox, code: &str, valid_minutes: u64) -> Result<Message, MailError> {
        let body = format!(
            "Your Postern sign-in code is\n\n    {code}\n\n\
             It is valid for {valid_minutes} minutes and can be used once.\n\
             If you did not ask for it, ignore this message: nobody can sign in without the code.\n"
        );
        let mut id = [0u8; 16];
        OsRng.fill(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let auto = HeaderName::new_from_ascii_str("Auto-Submitted");
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject("Your Postern sign-in code")
            .message_id(Some(format!("<{id}.code@{}>", self.hostname)))
            .raw_header(HeaderValue::new(auto, "auto-generated".into()))
            .singlepart(SinglePart::plain(body))
            .map_err(|e| MailError::Refused(e.to_string()))
    }

    /// Sends `code` to `to`; a failure is counted, and one that is the relay's (not the
    /// message's) marks it unreachable.
    pub async fn send_code(
        &self,
        to: &str,
        code: &str,
        valid_minutes: u64,
    ) -> Result<(), MailError> {
        let sent = match to.parse::<Mailbox>() {
            Ok(to) => match self.message(to, code, valid_minutes) {
                Ok(message) => self.transport.send(message).await.map_err(|e| {
                    if e.is_transient() || e.is_permanent() {
                        MailError::Refused(e.to_string())
                    } else {
                        MailError::Unreachable(e.to_string())
                    }
                }),
                Err(e) => Err(e),
            },
            Err(e) => Err(MailError::Refused(format!("recipient: {e}"))),
        };
        match &sent {
            Ok(_) => self.health.record(RelayState::Reachable),
            Err(e) => {
                self.health.count_failed_send();
                match e {
                    MailError::Unreachable(why) => {
                        self.health.record(RelayState::Unreachable(why.clone()));
                    }
                    // It answered: it is up, whatever it thought of the message.
                    MailError::Refused(_) => self.health.record(RelayState::Reachable),
                    MailError::Config(_) => {}
                }
            }
        }
        sent.map(|_| ())
    }

    /// Counts a code that was not sent because the relay did not answer the check before it.
    pub(crate) fn count_unsent(&self) {
        self.health.count_failed_send();
    }
}
