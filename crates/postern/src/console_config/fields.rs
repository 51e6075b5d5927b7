//! The settings field table: which configuration keys the console edits, how each is shown
//! and how a posted value is read.

use toml::Value;
use web::config_form::Kind;

/// One field of the form.
pub(super) struct Spec {
    pub(super) key: &'static str,
    pub(super) label: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: Kind,
    pub(super) choices: &'static [&'static str],
    /// Empty means "not set" (a default, or a value derived from other settings).
    pub(super) optional: bool,
}

const fn spec(key: &'static str, label: &'static str, help: &'static str, kind: Kind) -> Spec {
    Spec {
        key,
        label,
        help,
        kind,
        choices: &[],
        optional: false,
    }
}

/// A field that may be empty: not set.
const fn optional(key: &'static str, label: &'static str, help: &'static str, kind: Kind) -> Spec {
    Spec {
        optional: true,
        ..spec(key, label, help, kind)
    }
}

/// The form: the seed's SMTP and MIMEBuilder fields, in its order, and the neighbours an
/// administrator changes with them.
pub(super) const SECTIONS: &[(&str, &[Spec])] = &[
    (
        "SMTP",
        &[
            spec(
                "smtp.listen",
                "Incoming messages address",
                "address:port the policy listener accepts mail on",
                Kind::Text,
            ),
            spec(
                "smtp.require_auth",
                "Require authentication",
                "clients outside the relay networks must log in (users are set in the configuration file)",
                Kind::Flag,
            ),
            optional(
                "delivery.internal",
                "Internal messages host",
                "host:port, or maildir:/path; empty: delivered into maildir/ in the data directory",
                Kind::Text,
            ),
            optional(
                "delivery.external",
                "External messages host",
                "host:port, or maildir:/path; empty: the internal messages host",
                Kind::Text,
            ),
            Spec {
                choices: &["opportunistic", "required", "off"],
                ..spec(
                    "delivery.starttls",
                    "STARTTLS to the next hops",
                    "opportunistic: when offered",
                    Kind::Choice,
                )
            },
            spec(
                "gateway.use_default_sender",
                "Use default sender?",
                "sign as the default sender when the sender's own key cannot be had",
                Kind::Flag,
            ),
            optional(
                "gateway.default_sender",
                "Default sender address",
                "empty: postmaster@ the first internal domain",
                Kind::Text,
            ),
            optional(
                "smtp.hostname",
                "Host name",
                "in the greeting and in links; empty: this machine's name",
                Kind::Text,
            ),
            spec(
                "smtp.internal_domains",
                "Internal domains",
                "one per line: mail from them is encrypted, mail to them decrypted",
                Kind::List,
            ),
            spec(
                "smtp.client_networks",
                "Relay networks",
                "one per line (CIDR): clients that may send without logging in",
                Kind::List,
            ),
            spec(
                "smtp.max_message_size",
                "Largest message (bytes)",
                "larger messages are refused with 552",
                Kind::Number,
            ),
        ],
    ),
    (
        "MIMEBuilder",
        &[
            spec(
                "mime.add_encryption_header",
                "Add encryption X-Header",
                "",
                Kind::Flag,
            ),
            spec(
                "mime.encryption_header",
                "Encryption X-Header",
                "added to encrypted email",
                Kind::Text,
            ),
            spec(
                "mime.add_decryption_header",
                "Add decryption X-Header",
                "",
                Kind::Flag,
            ),
            spec(
                "mime.decryption_header",
                "Decryption X-Header",
                "added to decrypted email; must differ from the encryption X-Header",
                Kind::Text,
            ),
            spec(
                "mime.add_decryption_notice",
                "Add decryption notice",
                "",
                Kind::Flag,
            ),
            spec(
                "mime.decryption_notice",
                "Decryption notice",
                "put at the top of a decrypted message's text",
                Kind::Long,
            ),
            spec(
                "mime.error_on_verification_failure",
                "Error on verification failure",
                "off: deliver with a warning header",
                Kind::Flag,
            ),
            spec(
                "mime.encrypted_notice",
                "Encrypted message notice",
                "the body of an encrypted email",
                Kind::Long,
            ),
            spec(
                "mime.meeting_request_notice",
                "Encrypted meeting request email message",
                "the body when the original is a meeting request",
                Kind::Long,
            ),
            Spec {
                choices: &["zero-download"],
                ..spec(
                    "mime.outgoing_envelope",
                    "Encrypt outgoing messages to",
                    "",
                    Kind::Choice,
                )
            },
            optional(
                "mime.reader_url",
                "Reader address",
                "where \"Open my email\" leads; empty: follows web.listen",
                Kind::Text,
            ),
            optional(
                "mime.replace_subject",
                "Replace the subject with",
                "empty: encrypted email keeps its subject",
                Kind::Text,
            ),
            spec(
                "mime.keep_above_bytes",
                "Keep messages larger than (bytes) on the gateway",
                "their email carries a link to the reader",
                Kind::Number,
            ),
            spec(
                "mime.kept_days",
                "Days a large message is kept",
                "",
                Kind::Number,
            ),
        ],
    ),
];

pub(super) fn specs() -> impl Iterator<Item = &'static Spec> {
    SECTIONS.iter().flat_map(|(_, fields)| fields.iter())
}

/// A value as the form shows it: flags as "on" or empty, lists one per line.
pub(super) fn form_value(v: Option<&Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::Boolean(b)) => if *b { "on" } else { "" }.to_string(),
        Some(other) => web::config_form::value_text(other),
    }
}

/// A value as a sentence shows it.
pub(super) fn shown(spec: &Spec, v: Option<&Value>) -> String {
    match (v, &spec.kind) {
        (Some(Value::Boolean(b)), _) => if *b { "on" } else { "off" }.to_string(),
        (None, _) => "(not set)".into(),
        (Some(_), Kind::List) => form_value(v).replace('\n', ", "),
        _ => form_value(v),
    }
}

/// Whether a saved value is the one posted: text is compared as the form sends it back
/// (trimmed, with plain line ends), so a notice written with a final newline is not a change.
pub(super) fn same(saved: Option<&Value>, posted: &Value) -> bool {
    match (saved, posted) {
        (Some(Value::String(a)), Value::String(b)) => a.replace("\r\n", "\n").trim() == b,
        (a, b) => a == Some(b),
    }
}

/// A posted value as the configuration's type; `None`: not set.
pub(super) fn parse_value(spec: &Spec, text: &str) -> Result<Option<Value>, String> {
    let named = |problem: String| format!("{} ({}): {problem}", spec.label, spec.key);
    if spec.kind == Kind::Flag {
        return Ok(Some(Value::Boolean(text == "on")));
    }
    let text = text.replace("\r\n", "\n");
    let text = text.trim();
    if text.is_empty() && spec.optional {
        return Ok(None);
    }
    Ok(Some(match spec.kind {
        Kind::Number => {
            let n: i64 = text
                .parse()
                .map_err(|_| named(format!("{text:?} is not a whole number")))?;
            if n < 0 {
                return Err(named("must not be negative".into()));
            }
            Value::Integer(n)
        }
        Kind::List => Value::Array(
            text.split(['\n', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Choice => {
            if !spec.choices.contains(&text) {
                return Err(named(format!(
                    "{text:?} is not one of {}",
                    spec.choices.join(", ")
                )));
            }
            Value::String(text.to_string())
        }
        Kind::Text if text.contains('\n') => {
            return Err(named("must be one line".into()));
        }
        _ => Value::String(text.to_string()),
    }))
}
