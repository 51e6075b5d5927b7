//! Sends one-time codes by email through the configured SMTP relay.

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

/// How the relay is reached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// Relay host name or address.
    pub relay_host: String,
    /// Relay port.
    pub relay_port: u16,
    /// The From of code emails.
    pub from: String,
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
            from: "Postern key server <keys@localhost>".into(),
            starttls: StartTls::Opportunistic,
            timeout_secs: 30,
        }
    }
}

/// Why a code could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A setting does not parse.
    #[error("mail setting {0}")]
    Config(String),
    /// The relay refused or could not be reached.
    #[error("the SMTP relay did not take the message: {0}")]
    Relay(String),
}

/// Sends code emails.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `config`; connects lazily.
    pub fn new(config: &MailConfig) -> Result<Self, MailError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| MailError::Config(format!("from = {:?}: {e}", config.from)))?;
        let tls = match config.starttls {
            StartTls::Off => Tls::None,
            mode => {
                let params = TlsParameters::new(config.relay_host.clone())
                    .map_err(|e| MailError::Config(format!("relay_host: {e}")))?;
                if mode == StartTls::Required {
                    Tls::Required(params)
                } else {
                    Tls::Opportunistic(params)
                }
            }
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.relay_host)
            .port(config.relay_port)
            .tls(tls)
            .timeout(Some(std::time::Duration::from_secs(config.timeout_secs)))
            .build();
        Ok(Mailer { transport, from })
    }

    /// Sends `code` to `to`.
    pub async fn send_code(
        &self,
        to: &str,
        code: &str,
        valid_minutes: u64,
    ) -> Result<(), MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| MailError::Relay(format!("recipient: {e}")))?;
        let body = format!(
            "Your Postern sign-in code is\r\n\r\n    {code}\r\n\r\n\
             It is valid for {valid_minutes} minutes and can be used once.\r\n\
             If you did not ask for it, ignore this message: nobody can sign in without the code.\r\n"
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject("Your Postern sign-in code")
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Relay(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| MailError::Relay(e.to_string()))?;
        Ok(())
    }
}
