//! The SMTP client that delivers to next hops (and drives the load generator): EHLO, STARTTLS
//! (opportunistic or required), PIPELINING when offered, per-recipient replies, dot-stuffing,
//! and connection reuse with RSET.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::config::TlsMode;

/// A reply: code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of all lines, joined with spaces.
    pub text: String,
}

impl Reply {
    /// 2xx.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Why a delivery attempt failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection, a timeout, or the connection broke: retry later.
    #[error("{0}")]
    Network(String),
    /// The server refused at the session or transaction level.
    #[error("{0}")]
    Refused(Reply),
    /// STARTTLS was required and is not offered or failed.
    #[error("TLS is required towards this next hop: {0}")]
    TlsRequired(String),
}

impl ClientError {
    /// True when a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Network(_) | ClientError::TlsRequired(_) => true,
            ClientError::Refused(r) => !r.is_permanent(),
        }
    }
}

type Stream = crate::stream::Stream<TlsStream<TcpStream>>;

/// Opportunistic SMTP TLS (RFC 7435) encrypts against passive listeners without authenticating
/// the server; certificate checks belong to DANE or MTA-STS, which are not implemented here.
#[derive(Debug)]
struct AnyCertificate(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> Result<TlsConnector, String> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// An open SMTP connection to a next hop, after EHLO (and STARTTLS when used).
pub struct Connection {
    io: BufReader<Stream>,
    pipelining: bool,
    tls: bool,
    timeout: Duration,
}

/// What one recipient got.
pub type RecipientReply = Reply;

impl Connection {
    /// Connects, reads the greeting, says EHLO and starts TLS as `tls` asks.
    pub async fn open(
        host: &str,
        port: u16,
        helo: &str,
        tls: TlsMode,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ClientError::Network(format!("connecting to {host}:{port} timed out")))?
            .map_err(|e| ClientError::Network(format!("cannot connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut c = Connection {
            io: BufReader::with_capacity(16 * 1024, Stream::Plain(tcp)),
            pipelining: false,
            tls: false,
            timeout,
        };
        let greeting = c.read_reply().await?;
        if !greeting.is_ok() {
            return Err(ClientError::Refused(greeting));
        }
        let mut caps = c.ehlo(helo).await?;
        let offers_tls = caps.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS"));
        match (tls, offers_tls) {
            (TlsMode::Off, _) | (TlsMode::Opportunistic, false) => {}
            (TlsMode::Required, false) => {
                return Err(ClientError::TlsRequired(format!(
                    "{host}:{port} does not offer STARTTLS"
                )));
            }
            (_, true) => {
                c.write(b"STARTTLS\r\n").await?;
                let r = c.read_reply().await?;
                if r.code != 220 {
                    if tls == TlsMode::Required {
                        return Err(ClientError::TlsRequired(r.to_string()));
                    }
                } else {
                    let connector = tls_connector().map_err(ClientError::Network)?;
                    let name = ServerName::try_from(host.to_string())
                        .map_err(|e| ClientError::Network(format!("{host}: {e}")))?;
                    let io = std::mem::replace(&mut c.io, BufReader::new(Stream::Detached));
                    let Stream::Plain(tcp) = io.into_inner() else {
                        return Err(ClientError::Network("connection lost".into()));
                    };
                    let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
                        .await
                        .map_err(|_| ClientError::Network("TLS handshake timed out".into()))?
                        .map_err(|e| ClientError::Network(format!("TLS handshake failed: {e}")))?;
                    c.io = BufReader::with_capacity(16 * 1024, Stream::Tls(Box::new(stream)));
                    c.tls = true;
                    caps = c.ehlo(helo).await?;
                }
            }
        }
        c.pipelining = caps.iter().any(|l| l.eq_ignore_ascii_case("PIPELINING"));
        Ok(c)
    }

    /// True when STARTTLS is in effect.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    async fn ehlo(&mut self, helo: &str) -> Result<Vec<String>, ClientError> {
        self.write(format!("EHLO {helo}\r\n").as_bytes()).await?;
        let (reply, lines) = self.read_reply_lines().await?;
        if !reply.is_ok() {
            return Err(ClientError::Refused(reply));
        }
        Ok(lines.into_iter().skip(1).collect())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let io = self.io.get_mut();
        tokio::time::timeout(self.timeout, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .map_err(|_| ClientError::Network("timed out writing".into()))?
        .map_err(|e| ClientError::Network(format!("connection broke: {e}")))
    }

    async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        Ok(self.read_reply_lines().await?.0)
    }

    async fn read_reply_lines(&mut self) -> Result<(Reply, Vec<String>), ClientError> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n =
                tokio::time::timeout(self.timeout, (&mut self.io).take(4096).read_line(&mut line))
                    .await
                    .map_err(|_| ClientError::Network("timed out waiting for a reply".into()))?
                    .map_err(|e| ClientError::Network(format!("connection broke: {e}")))?;
            if n == 0 {
                return Err(ClientError::Network("the connection was closed".into()));
            }
            let line = line.trim_end();
            if line.len() < 3 {
                return Err(ClientError::Network(format!("malformed reply {line:?}")));
            }
            let code: u16 = line[..3]
                .parse()
                .map_err(|_| ClientError::Network(format!("malformed reply {line:?}")))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok((
                    Reply {
                        code,
                        text: lines.join(" "),
                    },
                    lines,
                ));
            }
        }
    }

    /// Sends one stored message to `recipients`. Returns each recipient's reply (the DATA
    /// reply for those accepted at RCPT).
    pub async fn send_body(
        &mut self,
        sender: &str,
        recipients: &[String],
        body: &store::Body,
    ) -> Result<Vec<RecipientReply>, ClientError> {
        let reader = body
            .open_async()
            .await
            .map_err(|e| ClientError::Network(format!("cannot read the queued message: {e}")))?;
        let capacity = usize::try_from(body.len())
            .unwrap_or(usize::MAX)
            .clamp(1, 64 * 1024);
        self.send(
            sender,
            recipients,
            BufReader::with_capacity(capacity, reader),
        )
        .await
    }

    /// Sends one message read from `body`.
    pub async fn send<R: AsyncRead + Unpin>(
        &mut self,
        sender: &str,
        recipients: &[String],
        body: BufReader<R>,
    ) -> Result<Vec<RecipientReply>, ClientError> {
        let mut replies = Vec::with_capacity(recipients.len());
        if self.pipelining {
            let mut batch = format!("MAIL FROM:<{sender}>\r\n");
            for r in recipients {
                batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
            }
            batch.push_str("DATA\r\n");
            self.write(batch.as_bytes()).await?;
            let mail = self.read_reply().await?;
            for _ in recipients {
                replies.push(self.read_reply().await?);
            }
            let data = self.read_reply().await?;
            if !mail.is_ok() {
                if data.code == 354 {
                    // The server went to DATA anyway: end it empty.
                    self.write(b".\r\n").await?;
                    let _ = self.read_reply().await?;
                }
                return Err(ClientError::Refused(mail));
            }
            if !replies.iter().any(Reply::is_ok) {
                if data.code == 354 {
                    self.write(b".\r\n").await?;
                    let _ = self.read_reply().await?;
                }
                self.reset().await?;
                return Ok(replies);
            }
            if data.code != 354 {
                return Err(ClientError::Refused(data));
            }
        } else {
            self.write(format!("MAIL FROM:<{sender}>\r\n").as_bytes())
                .await?;
            let mail = self.read_reply().await?;
            if !mail.is_ok() {
                return Err(ClientError::Refused(mail));
            }
            for r in recipients {
                self.write(format!("RCPT TO:<{r}>\r\n").as_bytes()).await?;
                replies.push(self.read_reply().await?);
            }
            if !replies.iter().any(Reply::is_ok) {
                self.reset().await?;
                return Ok(replies);
            }
            self.write(b"DATA\r\n").await?;
            let data = self.read_reply().await?;
            if data.code != 354 {
                return Err(ClientError::Refused(data));
            }
        }
        self.write_body(body).await?;
        let done = self.read_reply().await?;
        for r in replies.iter_mut().filter(|r| r.is_ok()) {
            *r = done.clone();
        }
        Ok(replies)
    }

    /// Writes the message with CRLF line ends and dot-stuffing, then the end-of-data line.
    async fn write_body<R: AsyncRead + Unpin>(
        &mut self,
        mut body: BufReader<R>,
    ) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(64 * 1024);
        let mut line = Vec::with_capacity(1024);
        let mut ended_with_newline = true;
        loop {
            line.clear();
            let n = body.read_until(b'\n', &mut line).await.map_err(|e| {
                ClientError::Network(format!("cannot read the spooled message: {e}"))
            })?;
            if n == 0 {
                break;
            }
            let ended = line.last() == Some(&b'\n');
            let content = line
                .strip_suffix(b"\r\n")
                .or_else(|| line.strip_suffix(b"\n"))
                .unwrap_or(&line);
            ended_with_newline = encode_line(content, ended, &mut out);
            if out.len() >= 60 * 1024 {
                self.write_raw(&out).await?;
                out.clear();
            }
        }
        if !ended_with_newline {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.write(&out).await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let io = self.io.get_mut();
        tokio::time::timeout(self.timeout, io.write_all(bytes))
            .await
            .map_err(|_| ClientError::Network("timed out writing".into()))?
            .map_err(|e| ClientError::Network(format!("connection broke: {e}")))
    }

    /// RSET, to reuse the connection for another message.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        self.write(b"RSET\r\n").await?;
        let r = self.read_reply().await?;
        if r.is_ok() {
            Ok(())
        } else {
            Err(ClientError::Refused(r))
        }
    }

    /// QUIT and close.
    pub async fn quit(mut self) {
        if self.write(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply().await;
        }
        let _ = self.io.get_mut().shutdown().await;
    }
}

/// Appends one stored line to the DATA text: dot-stuffed, ended with CRLF when `ended`, and
/// with every bare CR made a line end of its own, so that no next hop is handed a bare CR it
/// might read as a line end (where the text could be made to end early). Returns whether the
/// text now ends with a line end.
fn encode_line(content: &[u8], ended: bool, out: &mut Vec<u8>) -> bool {
    let mut parts = content.split(|&b| b == b'\r').peekable();
    while let Some(part) = parts.next() {
        if part.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(part);
        if parts.peek().is_some() || ended {
            out.extend_from_slice(b"\r\n");
        }
    }
    ended || content.last() == Some(&b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_carriage_returns_leave_as_line_ends() {
        let mut out = Vec::new();
        assert!(encode_line(b"a\r.\rb", true, &mut out));
        assert_eq!(out, b"a\r\n..\r\nb\r\n");
        let mut out = Vec::new();
        assert!(!encode_line(b".x", false, &mut out));
        assert_eq!(out, b"..x");
    }
}
