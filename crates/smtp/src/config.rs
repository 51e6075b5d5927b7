//! `[smtp]` and `[delivery]` of `postern.toml`. Every field has a default, so no file is needed.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The SMTP listeners and their rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// The policy port (mail is decided and transformed before delivery).
    pub listen: SocketAddr,
    /// The bypass port (mail is delivered as received, like the seed's downstream MTA); none to
    /// turn it off.
    pub bypass_listen: Option<SocketAddr>,
    /// The name in the greeting, in EHLO and in Received headers [default: the machine's name].
    pub hostname: Option<String>,
    /// Domains whose mail this gateway accepts from anyone (its own users).
    pub internal_domains: Vec<String>,
    /// Client networks allowed to relay to any domain, as CIDR ("192.0.2.0/24", "::1/128").
    pub client_networks: Vec<Cidr>,
    /// Accept mail only from authenticated clients ("Require authentication").
    pub require_auth: bool,
    /// Users for AUTH PLAIN and LOGIN (offered only over TLS).
    pub users: Vec<SmtpUser>,
    /// PEM certificate for STARTTLS [default: a self-signed certificate made at start].
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Largest message accepted, in bytes (announced with SIZE).
    pub max_message_size: u64,
    /// Most recipients in one message.
    pub max_recipients: usize,
    /// Longest line of message text, in bytes, CRLF included (RFC 5321 requires 1000).
    pub max_line_length: usize,
    /// Largest header section, in bytes.
    pub max_header_size: usize,
    /// Seconds a client has to send one whole command line (not each byte of it).
    pub command_timeout_secs: u64,
    /// Seconds a client has to send one whole line of message text.
    pub data_timeout_secs: u64,
    /// Seconds a whole session may last, whatever it does; then it is closed with 421.
    pub session_timeout_secs: u64,
    /// Most connections at once. When all are taken, a session waiting for a command, from the
    /// client address that holds the most, is closed to make room (see `admission`).
    pub max_connections: usize,
    /// Most connections at once from one client address.
    pub max_connections_per_client: usize,
    /// Protocol errors in one session before it is closed.
    pub max_errors: u32,
    /// Client networks whose bare LF or bare CR in message text is turned into CRLF instead of
    /// refused (old software that needs it; never the internet).
    pub normalize_bare_newlines_from: Vec<Cidr>,
    /// Where `RCPT TO:<postmaster>` without a domain goes [default: postmaster at the first
    /// internal domain, or at `hostname`].
    pub postmaster: Option<String>,
}

/// One SMTP AUTH user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SmtpUser {
    /// The login name.
    pub name: String,
    /// An Argon2 PHC string (`postern smtp hash-password` makes one).
    pub password_hash: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            bypass_listen: Some(SocketAddr::from(([127, 0, 0, 1], 10026))),
            hostname: None,
            internal_domains: Vec::new(),
            client_networks: vec![
                Cidr::from_str("127.0.0.0/8").unwrap_or(Cidr::LOOPBACK_V4),
                Cidr::from_str("::1/128").unwrap_or(Cidr::LOOPBACK_V4),
            ],
            require_auth: false,
            users: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 1000,
            max_header_size: 256 * 1024,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            session_timeout_secs: 3600,
            max_connections: 1000,
            max_connections_per_client: 100,
            max_errors: 20,
            normalize_bare_newlines_from: Vec::new(),
            postmaster: None,
        }
    }
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    const LOOPBACK_V4: Cidr = Cidr {
        addr: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        prefix: 8,
    };

    /// True when `ip` is inside the network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network such as 192.0.2.0/24"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where mail goes next.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Next hop for internal recipients ("Internal messages" of the seed): `host:port` or
    /// `maildir:PATH` [default: maildir:DATA_DIR/maildir].
    pub internal: Option<String>,
    /// Next hop for external recipients ("External messages") [default: as `internal`].
    pub external: Option<String>,
    /// STARTTLS towards next hops: `opportunistic`, `required` or `off`.
    pub starttls: TlsMode,
    /// STARTTLS towards the internal next hop, overriding `starttls`.
    pub internal_starttls: Option<TlsMode>,
    /// STARTTLS towards the external next hop, overriding `starttls`.
    pub external_starttls: Option<TlsMode>,
    /// Connections at once to one next hop.
    pub concurrency_per_hop: usize,
    /// Seconds before the first retry; doubled each time.
    pub retry_initial_secs: u64,
    /// Longest wait between retries.
    pub retry_max_secs: u64,
    /// Seconds a message may wait before it is bounced (default 5 days).
    pub queue_lifetime_secs: u64,
    /// Seconds to wait for a next hop's connection and replies.
    pub timeout_secs: u64,
}

/// STARTTLS use towards a next hop.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// When offered.
    Opportunistic,
    /// Never send without it.
    Required,
    /// Never.
    Off,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            internal: None,
            external: None,
            starttls: TlsMode::Opportunistic,
            internal_starttls: None,
            external_starttls: None,
            concurrency_per_hop: 20,
            retry_initial_secs: 60,
            retry_max_secs: 3600,
            queue_lifetime_secs: 5 * 86_400,
            timeout_secs: 60,
        }
    }
}

impl DeliveryConfig {
    /// The STARTTLS mode towards the next hop named `hop` (`internal` or `external`).
    pub fn starttls_for(&self, hop: &store::Route) -> TlsMode {
        let specific = match hop {
            store::Route::Internal => self.internal_starttls,
            store::Route::External => self.external_starttls,
            store::Route::Handoff { .. } => None,
        };
        specific.unwrap_or(self.starttls)
    }
}

/// Where the two routes go: the internal mail server and the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hops {
    /// `delivery.internal`.
    pub internal: NextHop,
    /// `delivery.external`.
    pub external: NextHop,
}

impl Hops {
    /// The next hop of `route`: a configured one, or the host a policy hands off to.
    pub fn of(&self, route: &store::Route) -> NextHop {
        match route {
            store::Route::Internal => self.internal.clone(),
            store::Route::External => self.external.clone(),
            store::Route::Handoff { host, port } => NextHop::Smtp {
                host: host.clone(),
                port: *port,
            },
        }
    }
}

/// A parsed next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// An SMTP server.
    Smtp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Maildir on this machine.
    Maildir(PathBuf),
}

impl FromStr for NextHop {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("maildir:") {
            if path.is_empty() {
                return Err("maildir: needs a path, e.g. maildir:/var/mail/postern".into());
            }
            return Ok(NextHop::Maildir(PathBuf::from(path)));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is neither host:port nor maildir:PATH"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: the port must be 1 to 65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?}: the host is empty"));
        }
        Ok(NextHop::Smtp {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextHop::Smtp { host, port } => write!(f, "{host}:{port}"),
            NextHop::Maildir(p) => write!(f, "maildir:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let net: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn next_hops_parse() {
        assert_eq!(
            "mx.corp.example:25".parse::<NextHop>().unwrap(),
            NextHop::Smtp {
                host: "mx.corp.example".into(),
                port: 25
            }
        );
        assert_eq!(
            "maildir:/tmp/m".parse::<NextHop>().unwrap(),
            NextHop::Maildir("/tmp/m".into())
        );
        assert!("mx.corp.example".parse::<NextHop>().is_err());
        assert!("mx:0".parse::<NextHop>().is_err());
    }
}
