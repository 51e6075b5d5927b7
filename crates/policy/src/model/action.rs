//! Actions: what a matching rule does, and who a notification goes to.

use serde::{Deserialize, Serialize};

/// Who a notification goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Recipient {
    /// The envelope sender.
    Sender,
    /// The recipients the rule decided for.
    Recipients,
    /// The administrator address of the gateway.
    Admin,
    /// Any address.
    Address(String),
}

impl TryFrom<String> for Recipient {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "sender" => Ok(Recipient::Sender),
            "recipients" => Ok(Recipient::Recipients),
            "admin" => Ok(Recipient::Admin),
            a if is_address(a) => Ok(Recipient::Address(s)),
            _ => Err(format!(
                "{s:?} is neither sender, recipients, admin nor an email address"
            )),
        }
    }
}

impl From<Recipient> for String {
    fn from(r: Recipient) -> String {
        match r {
            Recipient::Sender => "sender".into(),
            Recipient::Recipients => "recipients".into(),
            Recipient::Admin => "admin".into(),
            Recipient::Address(a) => a,
        }
    }
}

/// A plausible `local@domain` (the delivery path checks further).
pub fn is_address(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && domain.contains('.')
                && !a
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        }
        None => false,
    }
}

/// What a rule does. The first eight are terminal (the first matching rule with one decides);
/// the rest accumulate from every matching rule up to the deciding one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Deliver as it is.
    Pass,
    /// Encrypt to each recipient (an encrypted email passes as it is).
    Encrypt,
    /// Decrypt for recipients it is sealed to.
    Decrypt,
    /// Decrypt, run the policy on the plain message (its quarantine and delete decisions
    /// apply), and encrypt again for the others, signed by the default sender.
    DecryptScanReencrypt,
    /// Hold in a quarantine area.
    Quarantine {
        /// The area's name.
        area: String,
    },
    /// Drop (logged).
    Delete,
    /// Deliver to this SMTP server instead of the normal next hop.
    Handoff {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// Deliver to these addresses instead of the recipients.
    ChangeRecipient {
        /// The new recipients.
        to: Vec<String>,
    },
    /// Add a header field to what is delivered.
    AddHeader {
        /// Field name.
        name: String,
        /// Field value.
        value: String,
    },
    /// Put a tag in front of the subject (`[SECURE]`).
    TagSubject {
        /// The tag.
        tag: String,
    },
    /// Send a notification made from a template.
    Notify {
        /// Who gets it.
        to: Recipient,
        /// The template's name.
        template: String,
    },
    /// Deliver a copy, as received, to an archive address.
    Archive {
        /// The archive's address.
        to: String,
    },
}

impl Action {
    /// Whether this action decides the message (ends the rule walk).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Action::Pass
                | Action::Encrypt
                | Action::Decrypt
                | Action::DecryptScanReencrypt
                | Action::Quarantine { .. }
                | Action::Delete
                | Action::Handoff { .. }
                | Action::ChangeRecipient { .. }
        )
    }

    /// A short description for traces and notes.
    pub fn describe(&self) -> String {
        match self {
            Action::Pass => "pass".into(),
            Action::Encrypt => "encrypt".into(),
            Action::Decrypt => "decrypt".into(),
            Action::DecryptScanReencrypt => "decrypt, scan and encrypt again".into(),
            Action::Quarantine { area } => format!("quarantine to {area}"),
            Action::Delete => "delete".into(),
            Action::Handoff { host, port } => format!("hand off to {host}:{port}"),
            Action::ChangeRecipient { to } => format!("change recipient to {}", to.join(", ")),
            Action::AddHeader { name, value } => format!("add header {name}: {value}"),
            Action::TagSubject { tag } => format!("tag subject {tag:?}"),
            Action::Notify { to, template } => {
                format!("notify {} ({template})", String::from(to.clone()))
            }
            Action::Archive { to } => format!("archive a copy to {to}"),
        }
    }
}

/// Whether `name` can name a quarantine area.
pub fn is_area_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
