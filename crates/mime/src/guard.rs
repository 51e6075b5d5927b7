//! The header fields only this gateway may write: its verdict fields (decrypted here, the
//! signature, a warning) and `Authentication-Results` that name it as the authenticating
//! server (RFC 8601 §5: an MTA removes such fields from mail it receives). A sender who wrote
//! them would make a message look checked by this gateway.

use crate::headers::{self, Field};
use crate::settings::MimeSettings;

/// Which fields a message may not bring in from outside.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    names: Vec<String>,
    authserv_id: Option<String>,
}

impl Guard {
    /// The verdict fields of `settings`, and `Authentication-Results` naming `hostname`.
    pub fn new(settings: &MimeSettings, hostname: &str) -> Self {
        Guard {
            names: crate::guarded_fields(settings),
            authserv_id: Some(hostname.to_ascii_lowercase()),
        }
    }

    /// Only the fields named `names`.
    pub fn names(names: Vec<String>) -> Self {
        Guard {
            names,
            authserv_id: None,
        }
    }

    /// True when `field` is one only this gateway may write.
    pub fn owns(&self, field: &Field<'_>) -> bool {
        if self.names.iter().any(|n| field.is(n)) {
            return true;
        }
        match &self.authserv_id {
            Some(id) if field.is("Authentication-Results") => {
                authserv_id(&field.value()).eq_ignore_ascii_case(id)
            }
            _ => false,
        }
    }

    /// `header` (a header section) without the fields this gateway owns.
    pub fn strip(&self, header: &[u8]) -> Vec<u8> {
        headers::without(header, |f| self.owns(f))
    }
}

/// The authserv-id of an `Authentication-Results` value: its first token (RFC 8601 §2.2),
/// comments skipped.
fn authserv_id(value: &str) -> &str {
    let mut rest = value.trim_start();
    while let Some(after) = rest.strip_prefix('(') {
        rest = after.split_once(')').map_or("", |(_, r)| r).trim_start();
    }
    rest.split(|c: char| c == ';' || c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_results_naming_the_gateway_are_its_own() {
        let guard = Guard::new(&MimeSettings::default(), "GW.corp.example");
        let header = b"Authentication-Results: gw.corp.example; dkim=pass\r\n\
Authentication-Results: (comment) gw.corp.example;\r\n spf=pass\r\n\
Authentication-Results:\r\n gw.corp.example; dmarc=pass\r\n\
Authentication-Results: mx.partner.example; dkim=pass\r\n\
X-Postern-Signature: valid\r\nSubject: hi\r\n";
        let kept = String::from_utf8(guard.strip(header)).unwrap_or_default();
        assert_eq!(
            kept,
            "Authentication-Results: mx.partner.example; dkim=pass\r\nSubject: hi\r\n"
        );
    }
}
