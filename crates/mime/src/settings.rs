//! The MIMEBuilder settings (`[mime]` in `postern.toml`), after the seed's MIMEBuilder screen.

use serde::{Deserialize, Serialize};

/// The header every encrypted email carries, whatever the settings: other gateways of the seed
/// family look for it to decide that a message needs decrypting.
pub const ENCRYPTED_MARKER: &str = "X-PP-ENCRYPTED";

/// The header that records the signature verdict of a decrypted message.
pub const SIGNATURE_HEADER: &str = "X-Postern-Signature";

/// The header added when a decrypted message's signature does not verify and it is delivered
/// anyway.
pub const WARNING_HEADER: &str = "X-Postern-Warning";

/// What outgoing encryption produces ("Encrypt outgoing messages to ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OutgoingEnvelope {
    /// A notice and `encrypted_message.htm`, readable in a browser with no software.
    #[default]
    ZeroDownload,
}

/// How encrypted emails are built and decrypted ones restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MimeSettings {
    /// Add `encryption_header` (value: this gateway's host name) to encrypted email.
    pub add_encryption_header: bool,
    /// The encryption X-header's name ("Encryption X-Header").
    pub encryption_header: String,
    /// Add `decryption_header` (value: this gateway's host name) to decrypted email.
    pub add_decryption_header: bool,
    /// The decryption X-header's name; must differ from `encryption_header`.
    pub decryption_header: String,
    /// Put `decryption_notice` at the top of a decrypted message's first text part.
    pub add_decryption_notice: bool,
    /// The decryption notice.
    pub decryption_notice: String,
    /// A decrypted message whose signature does not verify goes to the errored queue; when off,
    /// it is delivered with a warning header.
    pub error_on_verification_failure: bool,
    /// The notice in an encrypted email's body.
    pub encrypted_notice: String,
    /// The notice instead, when the original carries a meeting request (`text/calendar`).
    pub meeting_request_notice: String,
    /// What outgoing encryption produces.
    pub outgoing_envelope: OutgoingEnvelope,
    /// Where "Open my email" in `encrypted_message.htm` posts the sealed message.
    pub reader_url: String,
    /// Replace the subject of encrypted email with this text; unset keeps the subject.
    pub replace_subject: Option<String>,
    /// A message larger than this (bytes) keeps its sealed message on the gateway, and its
    /// `encrypted_message.htm` carries a link to the reader instead (10 MiB).
    pub keep_above_bytes: u64,
    /// Days a large message's sealed message is kept (and its link works).
    pub kept_days: u32,
}

impl Default for MimeSettings {
    fn default() -> Self {
        MimeSettings {
            add_encryption_header: true,
            encryption_header: "X-Postern-Encrypted".into(),
            add_decryption_header: true,
            decryption_header: "X-Postern-Decrypted".into(),
            add_decryption_notice: false,
            decryption_notice: "This message was decrypted by the mail gateway to allow content scanning.".into(),
            error_on_verification_failure: true,
            encrypted_notice: "You have received an encrypted message. To read it, open the attachment encrypted_message.htm and click \"Open my email\".".into(),
            meeting_request_notice: "You have received an encrypted meeting request. To read it, open the attachment encrypted_message.htm and click \"Open my email\".".into(),
            outgoing_envelope: OutgoingEnvelope::ZeroDownload,
            reader_url: "http://127.0.0.1:8080/read".into(),
            replace_subject: None,
            keep_above_bytes: 10 * 1024 * 1024,
            kept_days: 30,
        }
    }
}

/// A setting that cannot work, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mime.{field}: {problem}")]
pub struct SettingsError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        field,
        problem: problem.into(),
    }
}

/// A header name as RFC 5322 allows it: printable ASCII without a colon.
fn check_header_name(field: &'static str, name: &str) -> Result<(), SettingsError> {
    if name.is_empty() || name.len() > 76 {
        return Err(bad(field, "must be 1 to 76 characters"));
    }
    if !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(bad(
            field,
            format!("{name:?} is not a header name (printable ASCII, no spaces or colons)"),
        ));
    }
    for reserved in [ENCRYPTED_MARKER, SIGNATURE_HEADER, WARNING_HEADER] {
        if name.eq_ignore_ascii_case(reserved) {
            return Err(bad(field, format!("{reserved} is Postern's own header")));
        }
    }
    Ok(())
}

fn check_text(field: &'static str, text: &str) -> Result<(), SettingsError> {
    if text.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad(field, "must not contain control characters"));
    }
    Ok(())
}

impl MimeSettings {
    /// Checks what the types cannot: header names, their uniqueness, texts and the reader URL.
    pub fn validate(&self) -> Result<(), SettingsError> {
        check_header_name("encryption_header", &self.encryption_header)?;
        check_header_name("decryption_header", &self.decryption_header)?;
        if self
            .encryption_header
            .eq_ignore_ascii_case(&self.decryption_header)
        {
            return Err(bad(
                "decryption_header",
                "must differ from encryption_header (gateways that do not parse X-headers tell them apart by name)",
            ));
        }
        check_text("decryption_notice", &self.decryption_notice)?;
        check_text("encrypted_notice", &self.encrypted_notice)?;
        check_text("meeting_request_notice", &self.meeting_request_notice)?;
        if let Some(s) = &self.replace_subject {
            check_text("replace_subject", s)?;
            if s.contains('\n') {
                return Err(bad("replace_subject", "must be one line"));
            }
        }
        if self.keep_above_bytes < 1024 {
            return Err(bad(
                "keep_above_bytes",
                "must be at least 1024 (a smaller message is cheaper to carry than a link)",
            ));
        }
        if self.kept_days == 0 {
            return Err(bad("kept_days", "must be at least 1"));
        }
        let url = &self.reader_url;
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| bad("reader_url", format!("{url:?} is not an http(s) URL")))?;
        if rest.is_empty()
            || rest.starts_with('/')
            || !url
                .bytes()
                .all(|b| (33..=126).contains(&b) && b != b'"' && b != b'<' && b != b'>')
        {
            return Err(bad("reader_url", format!("{url:?} is not an http(s) URL")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        MimeSettings::default().validate().unwrap();
    }

    #[test]
    fn the_two_header_names_must_differ() {
        let s = MimeSettings {
            decryption_header: "x-postern-encrypted".into(),
            ..MimeSettings::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "decryption_header");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let s = MimeSettings {
            encryption_header: "X Bad".into(),
            ..MimeSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "encryption_header");
        let s = MimeSettings {
            reader_url: "javascript:alert(1)".into(),
            ..MimeSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "reader_url");
        let s = MimeSettings {
            kept_days: 0,
            ..MimeSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "kept_days");
        let s = MimeSettings {
            encryption_header: "X-PP-Encrypted".into(),
            ..MimeSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "encryption_header");
    }
}
