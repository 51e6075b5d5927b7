//! `postern.toml`: one file, every key optional, every key documented in
//! `docs/configuration.md`. Unknown keys are errors that name the key, so a typo never passes as
//! a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use keyserver::KeyServerConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where Postern keeps its state.
    pub data_dir: PathBuf,
    /// The HTTP listener (key server API now; the console and reader later).
    pub web: WebConfig,
    /// The key server.
    pub keyserver: KeyServerConfig,
    /// The SMTP listeners.
    pub smtp: smtp::SmtpConfig,
    /// Next hops, retries and the queue lifetime.
    pub delivery: smtp::DeliveryConfig,
    /// Encryption in the mail path: the key server, signing, the errored queue, prefetch.
    pub gateway: pipeline::GatewayConfig,
    /// How encrypted email is built and decrypted email restored (the MIMEBuilder).
    pub mime: mime::MimeSettings,
    /// Where messages are kept.
    pub store: StoreConfig,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Messages up to this many bytes are stored in the database with their row; larger ones
    /// in spool files.
    pub inline_limit: u64,
    /// This node's name in the queue's claims and leases; by default one made on the first
    /// start and kept in `DATA_DIR/node-id`.
    pub node_id: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            inline_limit: store::spool::DEFAULT_INLINE_LIMIT,
            node_id: None,
        }
    }
}

/// The largest `store.inline_limit`: each connection receiving a message may hold this much.
const MAX_INLINE_LIMIT: u64 = 16 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("postern-data"),
            web: WebConfig::default(),
            keyserver: KeyServerConfig::default(),
            smtp: smtp::SmtpConfig::default(),
            delivery: smtp::DeliveryConfig::default(),
            gateway: pipeline::GatewayConfig::default(),
            mime: mime::MimeSettings::default(),
            store: StoreConfig::default(),
        }
    }
}

/// `[web]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, the listener speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (keys would cross the network in
    /// clear; only behind a TLS-terminating proxy on a protected network).
    pub allow_plain_http: bool,
    /// A reader session ends after this many seconds without a request.
    pub reader_idle_secs: u64,
    /// ... and this many seconds after it began.
    pub reader_lifetime_secs: u64,
    /// Largest form the reader takes (a posted sealed message, a reply with attachments).
    pub max_post_bytes: usize,
    /// Most bytes of sealed and opened messages the reader holds, all sessions together.
    pub reader_memory_bytes: usize,
    /// Most recipients of a reply or forward written in the reader.
    pub max_recipients: usize,
    /// Most messages one person sends from the reader in an hour.
    pub replies_per_hour: usize,
    /// A console session ends after this many seconds without a request.
    pub admin_idle_secs: u64,
    /// ... and this many seconds after the login.
    pub admin_lifetime_secs: u64,
    /// Most connections to the web listener at once. When all are taken, the connection that
    /// waits for a request, from the address that holds the most, is closed to make room.
    pub max_connections: usize,
    /// Most connections at once from one client address.
    pub max_connections_per_client: usize,
    /// Seconds a client has to send a whole request head (and finish a TLS handshake).
    pub header_timeout_secs: u64,
    /// Seconds a connection may stay open, whatever it does.
    pub connection_lifetime_secs: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        let w = web::WebSettings::default();
        WebConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            reader_idle_secs: w.reader_idle_secs,
            reader_lifetime_secs: w.reader_lifetime_secs,
            max_post_bytes: w.max_post_bytes,
            reader_memory_bytes: w.reader_memory_bytes,
            max_recipients: w.max_recipients,
            replies_per_hour: w.replies_per_hour,
            admin_idle_secs: w.admin_idle_secs,
            admin_lifetime_secs: w.admin_lifetime_secs,
            max_connections: 1000,
            max_connections_per_client: 100,
            header_timeout_secs: 10,
            connection_lifetime_secs: 3600,
        }
    }
}

impl WebConfig {
    /// The listener's limits; `max_connections` as the file budget allows (see
    /// `admission::files::share`).
    pub fn limits(&self, max_connections: usize) -> web::listener::Limits {
        web::listener::Limits {
            max_connections,
            max_connections_per_client: self.max_connections_per_client,
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs),
            connection_lifetime: std::time::Duration::from_secs(self.connection_lifetime_secs),
        }
    }

    /// What the pages run with.
    pub fn settings(&self) -> web::WebSettings {
        web::WebSettings {
            secure_cookies: self.tls_cert.is_some(),
            reader_idle_secs: self.reader_idle_secs,
            reader_lifetime_secs: self.reader_lifetime_secs,
            max_post_bytes: self.max_post_bytes,
            reader_memory_bytes: self.reader_memory_bytes,
            max_recipients: self.max_recipients,
            replies_per_hour: self.replies_per_hour,
            admin_idle_secs: self.admin_idle_secs,
            admin_lifetime_secs: self.admin_lifetime_secs,
        }
    }

    /// The reader's address as `web.listen` makes it, for when `mime.reader_url` is not set: the
    /// listener's address, or the gateway's host name (`smtp.hostname`, else the machine's)
    /// when it listens on every address.
    fn reader_url(&self, hostname: Option<&str>) -> String {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let port = self.listen.port();
        if !self.listen.ip().is_unspecified() {
            return format!("{scheme}://{}/read", self.listen);
        }
        let host = hostname.map_or_else(machine_name, str::to_string);
        format!("{scheme}://{host}:{port}/read")
    }

    fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("reader_idle_secs", self.reader_idle_secs),
            ("reader_lifetime_secs", self.reader_lifetime_secs),
            ("admin_idle_secs", self.admin_idle_secs),
            ("admin_lifetime_secs", self.admin_lifetime_secs),
        ] {
            if v < 60 {
                anyhow::bail!("web.{key} must be at least 60");
            }
        }
        if self.reader_idle_secs > self.reader_lifetime_secs {
            anyhow::bail!("web.reader_idle_secs must be at most web.reader_lifetime_secs");
        }
        if self.admin_idle_secs > self.admin_lifetime_secs {
            anyhow::bail!("web.admin_idle_secs must be at most web.admin_lifetime_secs");
        }
        if self.max_post_bytes < 64 * 1024 {
            anyhow::bail!("web.max_post_bytes must be at least 65536");
        }
        if self.reader_memory_bytes < self.max_post_bytes {
            anyhow::bail!(
                "web.reader_memory_bytes must be at least web.max_post_bytes (one posted message must fit)"
            );
        }
        if self.max_recipients == 0 {
            anyhow::bail!("web.max_recipients must be at least 1");
        }
        if self.replies_per_hour == 0 {
            anyhow::bail!("web.replies_per_hour must be at least 1");
        }
        Ok(())
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("{}", path.display()))
    }

    /// Parses configuration text and checks what types cannot.
    pub fn parse(text: &str) -> Result<Self> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        let raw: toml::Table = toml::from_str(text)?;
        let reader_url_set = raw.get("mime").and_then(|m| m.get("reader_url")).is_some();
        if !reader_url_set {
            config.mime.reader_url = config.web.reader_url(config.smtp.hostname.as_deref());
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.web.tls_cert.is_some() != self.web.tls_key.is_some() {
            anyhow::bail!("web.tls_cert and web.tls_key must be set together");
        }
        self.web.validate()?;
        if let Some(id) = &self.store.node_id {
            store::node::check(id).map_err(|e| anyhow::anyhow!("store.node_id: {e}"))?;
        }
        if self.store.inline_limit > MAX_INLINE_LIMIT {
            anyhow::bail!(
                "store.inline_limit must be at most {MAX_INLINE_LIMIT} (16 MiB): every connection receiving a message may hold this much in memory"
            );
        }
        // A kept (large) message is opened in memory like a posted one; the largest accepted
        // must fit, with room for the sealed message's overhead.
        let largest = self.smtp.max_message_size.saturating_add(1024 * 1024);
        if (self.web.reader_memory_bytes as u64) < largest {
            anyhow::bail!(
                "web.reader_memory_bytes must be at least smtp.max_message_size + 1048576 ({largest}), so that the largest message kept on the gateway can be opened"
            );
        }
        let w = &self.web;
        for (key, value) in [
            ("web.max_connections", w.max_connections as u64),
            (
                "web.max_connections_per_client",
                w.max_connections_per_client as u64,
            ),
            ("web.header_timeout_secs", w.header_timeout_secs),
            ("web.connection_lifetime_secs", w.connection_lifetime_secs),
        ] {
            if value == 0 {
                anyhow::bail!("{key} must be at least 1");
            }
        }
        let k = &self.keyserver;
        if k.code_attempts == 0 {
            anyhow::bail!("keyserver.code_attempts must be at least 1");
        }
        if k.code_ttl_secs < 60 {
            anyhow::bail!("keyserver.code_ttl_secs must be at least 60");
        }
        if k.prefetch_window_days > 27 {
            anyhow::bail!("keyserver.prefetch_window_days must be at most 27");
        }
        k.mail.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let s = &self.smtp;
        if s.max_line_length < 1000 {
            anyhow::bail!(
                "smtp.max_line_length must be at least 1000 (RFC 5321 section 4.5.3.1.6)"
            );
        }
        if s.max_message_size == 0
            || s.max_recipients == 0
            || s.max_connections == 0
            || s.max_connections_per_client == 0
        {
            anyhow::bail!(
                "smtp.max_message_size, max_recipients, max_connections and max_connections_per_client must be at least 1"
            );
        }
        for (key, value) in [
            ("smtp.command_timeout_secs", s.command_timeout_secs),
            ("smtp.data_timeout_secs", s.data_timeout_secs),
            ("smtp.session_timeout_secs", s.session_timeout_secs),
        ] {
            if value == 0 {
                anyhow::bail!("{key} must be at least 1");
            }
        }
        if let Some(p) = &s.postmaster
            && !p.contains('@')
        {
            anyhow::bail!("smtp.postmaster must be a full address (name@domain), not {p:?}");
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            anyhow::bail!("smtp.tls_cert and smtp.tls_key must be set together");
        }
        if s.require_auth && s.users.is_empty() {
            anyhow::bail!("smtp.require_auth is on but smtp.users is empty: nobody could send");
        }
        for u in &s.users {
            if argon2::PasswordHash::new(&u.password_hash).is_err() {
                anyhow::bail!(
                    "smtp.users: the password_hash of {:?} is not an Argon2 PHC string (make one with `postern smtp hash-password`)",
                    u.name
                );
            }
        }
        for (key, hop) in [
            ("delivery.internal", &self.delivery.internal),
            ("delivery.external", &self.delivery.external),
        ] {
            if let Some(h) = hop {
                h.parse::<smtp::NextHop>()
                    .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            }
        }
        if self.delivery.retry_initial_secs == 0
            || self.delivery.retry_max_secs < self.delivery.retry_initial_secs
        {
            anyhow::bail!(
                "delivery.retry_initial_secs must be at least 1 and at most delivery.retry_max_secs"
            );
        }
        if self.delivery.concurrency_per_hop == 0 {
            anyhow::bail!("delivery.concurrency_per_hop must be at least 1");
        }
        self.gateway.validate()?;
        self.mime.validate()?;
        Ok(())
    }

    /// Plain HTTP off loopback would carry keys in clear: refused unless explicitly allowed.
    pub fn check_plain_http(&self) -> Result<()> {
        if self.web.tls_cert.is_none()
            && !self.web.listen.ip().is_loopback()
            && !self.web.allow_plain_http
        {
            anyhow::bail!(
                "web.listen = {} is not loopback, so web.tls_cert and web.tls_key are needed (or web.allow_plain_http = true behind a TLS proxy)",
                self.web.listen
            );
        }
        Ok(())
    }

    /// The key server's key directory.
    pub fn key_dir(&self) -> PathBuf {
        self.keyserver
            .key_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// Where internal and external recipients are delivered.
    pub fn next_hops(&self) -> Result<smtp::Hops> {
        let default = format!("maildir:{}", self.data_dir.join("maildir").display());
        let internal = self.delivery.internal.clone().unwrap_or(default);
        let external = self
            .delivery
            .external
            .clone()
            .unwrap_or_else(|| internal.clone());
        let parse = |name: &str, text: &str| {
            text.parse::<smtp::NextHop>()
                .map_err(|e| anyhow::anyhow!("delivery.{name}: {e}"))
        };
        Ok(smtp::Hops {
            internal: parse("internal", &internal)?,
            external: parse("external", &external)?,
        })
    }

    /// The queue's directory.
    pub fn queue_dir(&self) -> PathBuf {
        self.data_dir.join("queue")
    }

    /// The gateway's key cache.
    pub fn gateway_cache_dir(&self) -> PathBuf {
        self.data_dir.join("keycache")
    }

    /// The key server's database.
    pub fn keyserver_db(&self) -> PathBuf {
        self.data_dir.join("keyserver.db")
    }
}

/// The machine's host name (`/etc/hostname`), or `localhost`: the gateway's name when
/// `smtp.hostname` is not set.
pub fn machine_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::parse("[keyserver]\nprefetch_window_dayz = 3\n").unwrap_err();
        assert!(err.to_string().contains("prefetch_window_dayz"), "{err}");
        let err = Config::parse("[web]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = Config::parse("[keyserver]\ncode_attempts = 0\n").unwrap_err();
        assert!(err.to_string().contains("keyserver.code_attempts"), "{err}");
        let open = Config::parse("[web]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
        let err = open.check_plain_http().unwrap_err();
        assert!(err.to_string().contains("web.tls_cert"), "{err}");
        let open = Config::parse("[web]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
        let err = open.check_plain_http().unwrap_err();
        assert!(err.to_string().contains("web.tls_cert"), "{err}");
        let err = Config::parse("[keyserver.mail]\nstarttls = \"maybe\"\n").unwrap_err();
        assert!(err.to_string().contains("starttls"), "{err}");
        let err = Config::parse("[keyserver.mail]\nfrom = \"not a mailbox\"\n").unwrap_err();
        assert!(err.to_string().contains("keyserver.mail.from"), "{err}");
    }

    #[test]
    fn the_reader_url_follows_the_web_listener_unless_it_is_set() {
        let c = Config::parse("[web]\nlisten = \"127.0.0.1:9443\"\n").unwrap();
        assert_eq!(c.mime.reader_url, "http://127.0.0.1:9443/read");
        let c = Config::parse(
            "[web]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
             [smtp]\nhostname = \"gw.corp.example\"\n",
        )
        .unwrap();
        assert_eq!(c.mime.reader_url, "https://gw.corp.example:8443/read");
        let c = Config::parse(
            "[web]\nlisten = \"0.0.0.0:8443\"\n[mime]\nreader_url = \"https://mail.corp.example/read\"\n",
        )
        .unwrap();
        assert_eq!(c.mime.reader_url, "https://mail.corp.example/read");
    }

    #[test]
    fn web_limits_are_settings_and_are_checked() {
        let c = Config::parse("[web]\nreader_idle_secs = 600\nmax_recipients = 5\n").unwrap();
        let w = c.web.settings();
        assert_eq!(w.reader_idle_secs, 600);
        assert_eq!(w.max_recipients, 5);
        assert_eq!(
            w.admin_idle_secs,
            web::WebSettings::default().admin_idle_secs
        );
        for (text, key) in [
            ("reader_idle_secs = 5", "web.reader_idle_secs"),
            ("admin_idle_secs = 90000", "web.admin_idle_secs"),
            ("max_post_bytes = 10", "web.max_post_bytes"),
            ("reader_memory_bytes = 100000", "web.reader_memory_bytes"),
            ("max_recipients = 0", "web.max_recipients"),
            ("replies_per_hour = 0", "web.replies_per_hour"),
        ] {
            let err = Config::parse(&format!("[web]\n{text}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        // The largest message kept on the gateway must fit in the reader's memory.
        let err =
            Config::parse("[web]\nmax_post_bytes = 1048576\nreader_memory_bytes = 41943040\n")
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("web.reader_memory_bytes must be at least smtp.max_message_size"),
            "{err}"
        );
        Config::parse(
            "[smtp]\nmax_message_size = 10485760\n[web]\nmax_post_bytes = 1048576\nreader_memory_bytes = 41943040\n",
        )
        .unwrap();
    }

    #[test]
    fn gateway_and_mime_settings_are_checked() {
        let err = Config::parse(
            "[mime]\nencryption_header = \"X-Crypt\"\ndecryption_header = \"x-crypt\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("mime.decryption_header"), "{err}");
        let err = Config::parse("[gateway]\ndefault_sender = \"nobody\"\n").unwrap_err();
        assert!(err.to_string().contains("gateway.default_sender"), "{err}");
        let err = Config::parse("[gateway]\nerrored_retry_initial_secs = 0\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("gateway.errored_retry_initial_secs"),
            "{err}"
        );
        let c = Config::parse(
            "[mime]\nadd_decryption_notice = true\nreplace_subject = \"Encrypted\"\n[gateway]\nreencrypt_inbound = true\n",
        )
        .unwrap();
        assert!(c.mime.add_decryption_notice && c.gateway.reencrypt_inbound);
    }

    #[test]
    fn keyserver_settings_parse() {
        let c = Config::parse(
            "data_dir = \"/var/lib/postern\"\n[keyserver]\nprefetch_window_days = 3\n[keyserver.mail]\nrelay_host = \"mx.corp.example\"\nrelay_port = 587\n",
        )
        .unwrap();
        assert_eq!(c.keyserver.prefetch_window_days, 3);
        assert_eq!(c.keyserver.mail.relay_port, 587);
        assert_eq!(c.key_dir(), PathBuf::from("/var/lib/postern/keys"));
    }
}
