//! `[gateway]` of `postern.toml`: where keys come from, who signs, and how the errored queue
//! retries.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The encryption gateway's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The key server's base URL [default: the key server in this process].
    pub keyserver_url: Option<String>,
    /// File holding this gateway's API token (`postern keys token create`) [default: a token
    /// made by the key server in this process].
    pub token_file: Option<PathBuf>,
    /// Trust only this CA (PEM) for the key server's certificate.
    pub keyserver_ca_file: Option<PathBuf>,
    /// Sign with the default sender's key when the sender's own key cannot be had ("Use
    /// default sender?").
    pub use_default_sender: bool,
    /// The default sender [default: postmaster@ the first internal domain].
    pub default_sender: Option<String>,
    /// Encrypt decrypted inbound mail again before internal delivery (after it was opened for
    /// scanning), signed by the default sender.
    pub reencrypt_inbound: bool,
    /// Seconds before the first automatic retry of an errored message.
    pub errored_retry_initial_secs: u64,
    /// Longest wait between automatic retries.
    pub errored_retry_max_secs: u64,
    /// Seconds after which an errored message is bounced to its sender (3 days).
    pub errored_lifetime_secs: u64,
    /// Seconds between checks of a key server that did not answer; when it answers again,
    /// every errored message is retried at once.
    pub keyserver_probe_secs: u64,
    /// Days before a month starts when next month's keys are prefetched.
    pub prefetch_days: u32,
    /// Users seen in mail within this many days get their keys prefetched.
    pub prefetch_seen_days: u32,
    /// More addresses to prefetch keys for.
    pub prefetch_addresses: Vec<String>,
    /// Seconds between prefetch rounds.
    pub prefetch_interval_secs: u64,
    /// Messages transformed at once.
    pub workers: usize,
    /// How much of a message the policy's conditions scan (bytes); the rest of a larger
    /// message is not scanned.
    pub scan_limit_bytes: u64,
    /// MIME parts the policy's conditions read; the scan stops at the first part past it.
    pub scan_max_parts: usize,
    /// How deep nested parts may be for the scan; it stops at the first part deeper.
    pub scan_max_depth: usize,
    /// Decoded text (body and attachment text together) the policy's conditions read.
    pub scan_max_text_bytes: usize,
    /// Where policy notifications to `admin` go (default postmaster@ the first internal domain).
    pub admin_address: Option<String>,
    /// Forward to decrypt: the local part that, at any internal domain, answers
    /// a recipient who forwards an encrypted email with a link to the reader; empty turns it off.
    pub decrypt_address: String,
    /// Hours a forward-to-decrypt link works.
    pub decrypt_link_hours: u32,
    /// Forward-to-decrypt answers one address gets per hour; more forwards get no answer.
    pub decrypt_links_per_hour: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            keyserver_url: None,
            token_file: None,
            keyserver_ca_file: None,
            use_default_sender: true,
            default_sender: None,
            reencrypt_inbound: false,
            errored_retry_initial_secs: 30,
            errored_retry_max_secs: 600,
            errored_lifetime_secs: 3 * 24 * 3600,
            keyserver_probe_secs: 10,
            prefetch_days: 7,
            prefetch_seen_days: 60,
            prefetch_addresses: Vec::new(),
            prefetch_interval_secs: 3600,
            workers: 8,
            scan_limit_bytes: 10 * 1024 * 1024,
            scan_max_parts: policy::Limits::default().max_parts,
            scan_max_depth: policy::Limits::default().max_depth,
            scan_max_text_bytes: policy::Limits::default().max_text_bytes,
            admin_address: None,
            decrypt_address: "decrypt".into(),
            decrypt_link_hours: 24,
            decrypt_links_per_hour: 10,
        }
    }
}

/// A `[gateway]` setting that cannot work, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gateway.{field}: {problem}")]
pub struct ConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        problem: problem.into(),
    }
}

impl GatewayConfig {
    /// What the policy's view of one message may hold.
    pub fn scan_limits(&self) -> policy::Limits {
        policy::Limits {
            max_parts: self.scan_max_parts,
            max_depth: self.scan_max_depth,
            max_text_bytes: self.scan_max_text_bytes,
        }
    }

    /// Checks what the types cannot; errors name the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.errored_retry_initial_secs == 0 {
            return Err(bad("errored_retry_initial_secs", "must be at least 1"));
        }
        if self.errored_retry_max_secs < self.errored_retry_initial_secs {
            return Err(bad(
                "errored_retry_max_secs",
                "must be at least gateway.errored_retry_initial_secs",
            ));
        }
        if self.errored_lifetime_secs < self.errored_retry_initial_secs {
            return Err(bad(
                "errored_lifetime_secs",
                "must be at least gateway.errored_retry_initial_secs",
            ));
        }
        if self.keyserver_probe_secs == 0 {
            return Err(bad("keyserver_probe_secs", "must be at least 1"));
        }
        if self.prefetch_interval_secs == 0 {
            return Err(bad("prefetch_interval_secs", "must be at least 1"));
        }
        if self.prefetch_days > 27 {
            return Err(bad("prefetch_days", "must be at most 27"));
        }
        if self.scan_limit_bytes < 4096 {
            return Err(bad("scan_limit_bytes", "must be at least 4096"));
        }
        if self.scan_max_parts == 0 {
            return Err(bad("scan_max_parts", "must be at least 1"));
        }
        if !(1..=1000).contains(&self.scan_max_depth) {
            return Err(bad("scan_max_depth", "must be from 1 to 1000"));
        }
        if self.scan_max_text_bytes < 4096 {
            return Err(bad("scan_max_text_bytes", "must be at least 4096"));
        }
        if let Some(a) = &self.admin_address
            && !policy::model::is_address(a)
        {
            return Err(bad("admin_address", "must be an email address"));
        }
        if !self.decrypt_address.is_empty()
            && (self.decrypt_address.contains('@')
                || !policy::model::is_address(&format!("{}@example.com", self.decrypt_address)))
        {
            return Err(bad(
                "decrypt_address",
                "must be the local part of an address (\"decrypt\"), or empty",
            ));
        }
        if self.decrypt_links_per_hour == 0 {
            return Err(bad(
                "decrypt_links_per_hour",
                "must be at least 1 (set decrypt_address = \"\" to turn forward to decrypt off)",
            ));
        }
        if self.decrypt_link_hours == 0 || self.decrypt_link_hours > 24 * 30 {
            return Err(bad("decrypt_link_hours", "must be from 1 to 720"));
        }
        if self.workers == 0 {
            return Err(bad("workers", "must be at least 1"));
        }
        if let Some(s) = &self.default_sender {
            envelope::Address::parse(s)
                .map_err(|e| bad("default_sender", format!("{s:?}: {e}")))?;
        }
        for a in &self.prefetch_addresses {
            envelope::Address::parse(a)
                .map_err(|e| bad("prefetch_addresses", format!("{a:?}: {e}")))?;
        }
        Ok(())
    }
}
