//! One SMTP server session (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, STARTTLS and AUTH PLAIN/LOGIN), as an explicit state machine over a
//! buffered stream. A `250` after DATA is sent only once the queue has the message durably.
//!
//! The grammar is [`crate::command`]'s and the message text [`crate::data`]'s; this file holds
//! the I/O, the deadlines (a whole command line, a whole line of text, a whole session), and
//! what each command means in the session's state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admission::Slot;
use tokio::sync::watch;
use tokio::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use store::{Envelope, Queue, Source};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::command::{self, Body, Command, MailParams};
use crate::config::SmtpConfig;
use crate::data::{self, BareNewlines};

/// Told the queue id and size of each accepted message.
pub type AcceptHook = Box<dyn Fn(&str, u64) + Send + Sync>;

/// What a session needs from its server.
pub struct Shared {
    /// The settings.
    pub config: SmtpConfig,
    /// The greeting name.
    pub hostname: String,
    /// Where accepted mail goes.
    pub queue: Queue,
    /// For STARTTLS.
    pub tls: TlsAcceptor,
    /// Which port this is.
    pub source: Source,
    /// The header fields only this gateway writes: removed from mail received on the bypass
    /// port or from a client that is not trusted.
    pub guard: mime::Guard,
    /// Called after each accepted message (metrics, waking the pipeline).
    pub on_accept: AcceptHook,
}

/// The connection, before or after STARTTLS.
type Stream = crate::stream::Stream<TlsStream<TcpStream>>;

/// Where the session is in the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Before EHLO/HELO.
    Connected,
    /// Greeted, no transaction.
    Ready,
    /// After MAIL FROM.
    Mail,
    /// After at least one accepted RCPT TO.
    Rcpt,
}

/// What a read waits for, which decides what may interrupt it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A command outside a transaction: a stop or another client's need of the slot ends it.
    Idle,
    /// A command inside a transaction: only another client's need of the slot ends it (a stop
    /// lets the transaction finish).
    Transaction,
    /// A line of message text: nothing but its deadline ends it.
    Text,
}

/// Why a session ended early.
enum End {
    Quit,
    Closed,
    /// A command or a line of text took longer than its deadline.
    Timeout,
    /// The session lasted `session_timeout_secs`.
    SessionTimeout,
    TooManyErrors,
    /// The gateway is stopping.
    Shutdown,
    /// Its slot went to another client while this one stalled.
    Evicted,
    /// A bare LF or bare CR in the message text.
    BareNewline,
    Io(std::io::Error),
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        End::Io(e)
    }
}

/// Longest command line (RFC 5321 §4.5.3.1.4 allows 512 with CRLF; extensions add parameters).
const MAX_COMMAND_LINE: usize = 2048;

struct Session {
    shared: Arc<Shared>,
    io: BufReader<Stream>,
    out: Vec<u8>,
    peer: SocketAddr,
    slot: Slot,
    stop: watch::Receiver<bool>,
    /// When the session must end, whatever it is doing.
    ends: Instant,
    /// Lines ending otherwise than in CRLF are refused, or made CRLF for named networks.
    bare_newlines: BareNewlines,
    phase: Phase,
    helo: String,
    esmtp: bool,
    tls: bool,
    user: Option<String>,
    sender: Option<String>,
    recipients: Vec<String>,
    errors: u32,
}

/// Runs a session on an accepted connection to its end. `slot` is its place in the listener's
/// connection table; `stop` turns true when the gateway stops.
pub async fn run(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    stop: watch::Receiver<bool>,
) {
    let ends = Instant::now() + Duration::from_secs(shared.config.session_timeout_secs);
    let bare_newlines = if shared
        .config
        .normalize_bare_newlines_from
        .iter()
        .any(|n| n.contains(peer.ip()))
    {
        BareNewlines::Normalize
    } else {
        BareNewlines::Reject
    };
    let mut session = Session {
        shared,
        io: BufReader::with_capacity(64 * 1024, Stream::Plain(tcp)),
        out: Vec::with_capacity(1024),
        peer,
        slot,
        stop,
        ends,
        bare_newlines,
        phase: Phase::Connected,
        helo: String::new(),
        esmtp: false,
        tls: false,
        user: None,
        sender: None,
        recipients: Vec::new(),
        errors: 0,
    };
    let greeting = format!("220 {} ESMTP Postern\r\n", session.shared.hostname);
    session.out.extend_from_slice(greeting.as_bytes());
    let end = session.serve().await;
    match end {
        End::Quit | End::Closed => {}
        End::Timeout => {
            session.reply(421, "4.4.2", "timeout, closing the connection");
        }
        End::SessionTimeout => {
            session.reply(
                421,
                "4.4.2",
                "the session lasted too long, closing the connection",
            );
        }
        End::TooManyErrors => {
            session.reply(421, "4.7.0", "too many errors, closing the connection");
        }
        End::Shutdown => {
            session.reply(
                421,
                "4.3.2",
                "the gateway is shutting down; try again later",
            );
        }
        End::Evicted => {
            tracing::info!(peer = %peer, "stalled session closed to make room for another client");
            session.reply(
                421,
                "4.4.2",
                "too many connections and this one is waiting; closing it",
            );
        }
        End::BareNewline => {
            tracing::info!(peer = %peer, "message text with a bare LF or CR refused");
            session.reply(
                521,
                "5.5.2",
                "bare LF or CR received: lines must end with CRLF (RFC 5321 2.3.8); closing the connection",
            );
        }
        End::Io(e) => tracing::debug!(peer = %peer, error = %e, "session I/O error"),
    }
    let _ = session.flush().await;
    let _ = session.io.get_mut().shutdown().await;
}

impl Session {
    fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        let line = format!("{code} {enhanced} {text}\r\n");
        self.out.extend_from_slice(line.as_bytes());
    }

    fn reply_lines(&mut self, code: u16, lines: &[String]) {
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            self.out
                .extend_from_slice(format!("{code}{sep}{l}\r\n").as_bytes());
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.get_mut().write_all(&self.out).await?;
            self.io.get_mut().flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads one line (up to and including its LF) of at most `max` bytes, in full before
    /// `deadline` (or the session's end); `Ok(None)` at end of input. A longer line is consumed
    /// and reported with the flag set. What else may end the wait depends on `wait`.
    async fn read_line(
        &mut self,
        max: usize,
        deadline: Instant,
        wait: Wait,
    ) -> Result<Option<(Vec<u8>, bool)>, End> {
        // Flush replies only when no pipelined input is waiting: one write per batch.
        if self.io.buffer().is_empty() {
            self.flush().await?;
        }
        let (deadline, timeout) = if deadline < self.ends {
            (deadline, End::Timeout)
        } else {
            (self.ends, End::SessionTimeout)
        };
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let mut stop = self.stop.clone();
            let buf = tokio::select! {
                biased;
                r = self.io.fill_buf() => r?,
                _ = tokio::time::sleep_until(deadline) => return Err(timeout),
                _ = self.slot.evicted(), if wait != Wait::Text => return Err(End::Evicted),
                _ = stop.wait_for(|s| *s), if wait == Wait::Idle => return Err(End::Shutdown),
            };
            if buf.is_empty() {
                return if line.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some((line, too_long)))
                };
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if !too_long && line.len() + take > max {
                too_long = true;
            }
            line.extend_from_slice(&buf[..take]);
            if too_long {
                // Only the line's ending matters now (where the message text ends).
                let keep = line.len().saturating_sub(2);
                line.drain(..keep);
            }
            self.io.consume(take);
            if done {
                return Ok(Some((line, too_long)));
            }
        }
    }

    /// Reads the next command line, waiting at most `command_timeout_secs` for all of it.
    async fn read_command(&mut self) -> Result<Option<(Vec<u8>, bool)>, End> {
        let wait = if self.phase == Phase::Connected || self.phase == Phase::Ready {
            Wait::Idle
        } else {
            Wait::Transaction
        };
        if wait == Wait::Idle && *self.stop.borrow() {
            return Err(End::Shutdown);
        }
        self.slot.waiting();
        let deadline =
            Instant::now() + Duration::from_secs(self.shared.config.command_timeout_secs);
        let line = self.read_line(MAX_COMMAND_LINE, deadline, wait).await;
        self.slot.working();
        line
    }

    fn error(&mut self, code: u16, enhanced: &str, text: &str) -> Result<(), End> {
        self.reply(code, enhanced, text);
        self.errors += 1;
        if self.errors >= self.shared.config.max_errors {
            return Err(End::TooManyErrors);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
        if self.phase != Phase::Connected {
            self.phase = Phase::Ready;
        }
    }

    async fn serve(&mut self) -> End {
        loop {
            let line = match self.read_command().await {
                Ok(Some(l)) => l,
                Ok(None) => return End::Closed,
                Err(e) => return e,
            };
            let result = match line {
                (_, true) => self.error(500, "5.5.6", "command line too long"),
                (bytes, false) => self.command(&bytes).await,
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    async fn command(&mut self, raw: &[u8]) -> Result<(), End> {
        let Some(line) = raw.strip_suffix(b"\r\n") else {
            if self.bare_newlines == BareNewlines::Reject {
                return self.error(
                    500,
                    "5.5.2",
                    "bare LF received: end commands with CRLF (RFC 5321 2.3.8)",
                );
            }
            return self
                .command_line(raw.strip_suffix(b"\n").unwrap_or(raw))
                .await;
        };
        self.command_line(line).await
    }

    async fn command_line(&mut self, line: &[u8]) -> Result<(), End> {
        let command = match command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                let (code, enhanced, text) = e.reply();
                return self.error(code, enhanced, text);
            }
        };
        match command {
            Command::Hello { extended, domain } => self.hello(extended, domain),
            Command::Mail { sender, params } => self.mail(sender, params),
            Command::Rcpt { recipient } => self.rcpt(recipient),
            Command::Data => self.data().await,
            Command::Rset => {
                self.reset();
                self.reply(250, "2.0.0", "reset");
                Ok(())
            }
            Command::Noop => {
                self.reply(250, "2.0.0", "ok");
                Ok(())
            }
            Command::Quit => {
                self.reply(221, "2.0.0", "closing connection");
                Err(End::Quit)
            }
            Command::StartTls => self.starttls().await,
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await,
            Command::Verify => self.error(502, "5.5.1", "VRFY and EXPN are disabled"),
            Command::Help => {
                self.reply(214, "2.0.0", "see RFC 5321");
                Ok(())
            }
        }
    }

    fn hello(&mut self, extended: bool, domain: String) -> Result<(), End> {
        self.reset();
        self.phase = Phase::Ready;
        self.helo = domain;
        if !extended {
            self.esmtp = false;
            let name = self.shared.hostname.clone();
            self.out
                .extend_from_slice(format!("250 {name}\r\n").as_bytes());
            return Ok(());
        }
        self.esmtp = true;
        let c = &self.shared.config;
        let mut lines = vec![
            self.shared.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", c.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.tls && !c.users.is_empty() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.reply_lines(250, &lines);
        Ok(())
    }

    /// A client on a named client network, or one that authenticated.
    fn trusted(&self) -> bool {
        self.user.is_some()
            || self
                .shared
                .config
                .client_networks
                .iter()
                .any(|n| n.contains(self.peer.ip()))
    }

    fn relay_allowed(&self, recipient: &str) -> bool {
        if self.trusted() {
            return true;
        }
        policy::is_internal(recipient, &self.shared.config.internal_domains)
    }

    fn mail(&mut self, sender: String, params: MailParams) -> Result<(), End> {
        match self.phase {
            Phase::Connected => return self.error(503, "5.5.1", "say EHLO or HELO first"),
            Phase::Mail | Phase::Rcpt => {
                return self.error(503, "5.5.1", "a transaction is already open (RSET first)");
            }
            Phase::Ready => {}
        }
        if *self.stop.borrow() {
            return Err(End::Shutdown);
        }
        if self.shared.config.require_auth && self.user.is_none() {
            return self.error(530, "5.7.0", "authentication required");
        }
        if self.shared.source == Source::Bypass && !self.trusted() {
            return self.error(
                530,
                "5.7.1",
                "this port takes mail only from trusted hops: a client network or an authenticated client",
            );
        }
        if !self.esmtp && params != MailParams::default() {
            return self.error(555, "5.5.4", "MAIL parameters need EHLO");
        }
        if params
            .size
            .is_some_and(|size| size > self.shared.config.max_message_size)
        {
            return self.error(
                552,
                "5.3.4",
                "the message is larger than this server accepts",
            );
        }
        // Both BODY values are accepted; 8BITMIME is announced.
        let _: Option<Body> = params.body;
        self.sender = Some(sender);
        self.phase = Phase::Mail;
        self.reply(250, "2.1.0", "sender ok");
        Ok(())
    }

    fn rcpt(&mut self, recipient: String) -> Result<(), End> {
        if !matches!(self.phase, Phase::Mail | Phase::Rcpt) {
            return self.error(503, "5.5.1", "MAIL first");
        }
        if self.recipients.len() >= self.shared.config.max_recipients {
            self.reply(452, "4.5.3", "too many recipients in this message");
            return Ok(());
        }
        // RFC 5321 4.5.1: "postmaster" without a domain is always accepted.
        let recipient = if command::is_bare_postmaster(&recipient) {
            self.postmaster()
        } else {
            if !self.relay_allowed(&recipient) {
                tracing::info!(peer = %self.peer, recipient = %recipient, "relay attempt refused");
                return self.error(554, "5.7.1", "relaying denied: the recipient's domain is not served here and the client may not relay");
            }
            recipient
        };
        self.recipients.push(recipient);
        self.phase = Phase::Rcpt;
        self.reply(250, "2.1.5", "recipient ok");
        Ok(())
    }

    /// Where the bare `postmaster` goes.
    fn postmaster(&self) -> String {
        let c = &self.shared.config;
        c.postmaster.clone().unwrap_or_else(|| {
            let domain = c.internal_domains.first().unwrap_or(&self.shared.hostname);
            format!("postmaster@{domain}")
        })
    }

    async fn data(&mut self) -> Result<(), End> {
        match self.phase {
            Phase::Rcpt => {}
            Phase::Mail => return self.error(554, "5.5.1", "no valid recipients"),
            _ => return self.error(503, "5.5.1", "MAIL and RCPT first"),
        }
        let spool = self.shared.queue.spool().clone();
        let mut file = match spool.create() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot create a spool file");
                self.reply(
                    451,
                    "4.3.0",
                    "cannot store the message now; try again later",
                );
                self.reset();
                return Ok(());
            }
        };
        self.reply(354, "", "end data with <CR><LF>.<CR><LF>");
        let received = format!(
            "Received: from {} ([{}])\r\n\tby {} (Postern) with {}{};\r\n\t{}\r\n",
            sanitize(&self.helo),
            self.peer.ip(),
            self.shared.hostname,
            if self.esmtp { "ESMTP" } else { "SMTP" },
            if self.tls { "S" } else { "" },
            self.shared.queue.clock().rfc2822(),
        );
        let c = self.shared.config.clone();
        let line_timeout = Duration::from_secs(c.data_timeout_secs);
        let mut decoder = data::Decoder::new(self.bare_newlines);
        let mut problem: Option<(u16, &str, &str)> = None;
        let mut in_header = true;
        let mut header_bytes = 0usize;
        let mut size = 0u64;
        let mut message_id = None;
        let mut write_error = false;
        if file.append(received.as_bytes()).is_err() {
            write_error = true;
        }
        // The header section is held back and filtered when the sender may not be trusted to
        // leave this gateway's own fields alone.
        let guarded = self.shared.source == Source::Bypass || !self.trusted();
        let mut held: Vec<u8> = Vec::new();
        loop {
            let deadline = Instant::now() + line_timeout;
            let (line, too_long) = match self
                .read_line(c.max_line_length, deadline, Wait::Text)
                .await
            {
                Ok(Some(l)) => l,
                Ok(None) => {
                    file.discard();
                    return Err(End::Closed);
                }
                Err(e) => {
                    file.discard();
                    return Err(e);
                }
            };
            let body = match decoder.line(&line) {
                data::Line::End => break,
                data::Line::BareNewline => {
                    file.discard();
                    return Err(End::BareNewline);
                }
                data::Line::Text(body) => body,
            };
            if too_long {
                problem.get_or_insert((
                    552,
                    "5.3.4",
                    "a line of the message is longer than allowed",
                ));
                continue;
            }
            size += body.len() as u64;
            if size > c.max_message_size {
                problem.get_or_insert((
                    552,
                    "5.3.4",
                    "the message is larger than this server accepts",
                ));
                continue;
            }
            if in_header {
                if *body == *b"\r\n" {
                    in_header = false;
                } else {
                    header_bytes += body.len();
                    if header_bytes > c.max_header_size {
                        problem.get_or_insert((
                            552,
                            "5.3.4",
                            "the message header is larger than allowed",
                        ));
                        continue;
                    }
                    if message_id.is_none()
                        && body.len() > 11
                        && body[..11].eq_ignore_ascii_case(b"message-id:")
                    {
                        message_id = Some(
                            String::from_utf8_lossy(&body[11..])
                                .trim()
                                .chars()
                                .take(250)
                                .collect::<String>(),
                        );
                    }
                }
            }
            let bytes: &[u8] = if guarded && (in_header || !held.is_empty()) {
                held.extend_from_slice(&body);
                if in_header {
                    continue;
                }
                // The blank line: the whole header section is here.
                held = self.shared.guard.strip(&held);
                &held
            } else {
                &body
            };
            if problem.is_none() && !write_error && file.append(bytes).is_err() {
                write_error = true;
            }
            held.clear();
        }
        if !held.is_empty() {
            // A message that is all header.
            let stripped = self.shared.guard.strip(&held);
            if problem.is_none() && !write_error && file.append(&stripped).is_err() {
                write_error = true;
            }
        }
        if let Some((code, enhanced, text)) = problem {
            file.discard();
            self.reset();
            return self.error(code, enhanced, text);
        }
        if write_error {
            file.discard();
            self.reset();
            self.reply(
                451,
                "4.3.0",
                "cannot store the message now; try again later",
            );
            return Ok(());
        }
        let finished = match tokio::task::spawn_blocking(move || file.finish()).await {
            Ok(Ok(f)) => f,
            _ => {
                self.reset();
                self.reply(
                    451,
                    "4.3.0",
                    "cannot store the message now; try again later",
                );
                return Ok(());
            }
        };
        let len = finished.len;
        let envelope = Envelope {
            sender: self.sender.clone().unwrap_or_default(),
            recipients: std::mem::take(&mut self.recipients),
            client: self.peer.ip().to_string(),
            helo: self.helo.clone(),
            source: self.shared.source,
            message_id,
        };
        let rcpts = envelope.recipients.len();
        match self.shared.queue.accept(envelope, finished).await {
            Ok(id) => {
                tracing::info!(queue_id = %id, peer = %self.peer, size = len, recipients = rcpts, "accepted");
                (self.shared.on_accept)(&id, len);
                self.reply(250, "2.0.0", &format!("queued as {id}"));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot queue a message");
                self.reply(
                    451,
                    "4.3.0",
                    "cannot store the message now; try again later",
                );
            }
        }
        self.reset();
        Ok(())
    }

    async fn starttls(&mut self) -> Result<(), End> {
        if self.tls {
            return self.error(503, "5.5.1", "TLS is already active");
        }
        // Anything pipelined after STARTTLS was sent in clear and must not be obeyed after it.
        if !self.io.buffer().is_empty() {
            return self.error(
                503,
                "5.5.1",
                "no commands may follow STARTTLS in the same packet",
            );
        }
        self.reply(220, "2.0.0", "ready to start TLS");
        self.flush().await?;
        let io = std::mem::replace(&mut self.io, BufReader::new(Stream::Detached));
        let Stream::Plain(tcp) = io.into_inner() else {
            return Err(End::Closed);
        };
        let accepted =
            tokio::time::timeout(Duration::from_secs(30), self.shared.tls.accept(tcp)).await;
        match accepted {
            Ok(Ok(tls)) => {
                self.io = BufReader::with_capacity(64 * 1024, Stream::Tls(Box::new(tls)));
                self.tls = true;
                self.phase = Phase::Connected;
                self.esmtp = false;
                self.user = None;
                self.reset();
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "STARTTLS handshake failed");
                Err(End::Closed)
            }
            Err(_) => Err(End::Timeout),
        }
    }

    async fn auth(&mut self, mech: String, initial: Option<String>) -> Result<(), End> {
        if self.shared.config.users.is_empty() {
            return self.error(502, "5.5.1", "authentication is not offered");
        }
        if !self.tls {
            return self.error(538, "5.7.11", "encryption required: use STARTTLS first");
        }
        if self.phase == Phase::Connected {
            return self.error(503, "5.5.1", "say EHLO first");
        }
        if self.user.is_some() {
            return self.error(503, "5.5.1", "already authenticated");
        }
        if matches!(self.phase, Phase::Mail | Phase::Rcpt) {
            return self.error(503, "5.5.1", "not during a transaction");
        }
        let credentials = match mech.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(i) => i,
                    None => match self.challenge("").await? {
                        Some(r) => r,
                        None => return self.error(501, "5.0.0", "authentication cancelled"),
                    },
                };
                let Ok(decoded) = STANDARD.decode(response.as_bytes()) else {
                    return self.error(501, "5.5.2", "the response is not base64");
                };
                let mut parts = decoded.split(|b| *b == 0);
                let (_authz, user, pass) = (parts.next(), parts.next(), parts.next());
                match (user, pass) {
                    (Some(u), Some(p)) => (String::from_utf8_lossy(u).into_owned(), p.to_vec()),
                    _ => return self.error(501, "5.5.2", "malformed PLAIN response"),
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => i,
                    None => match self.challenge("VXNlcm5hbWU6").await? {
                        Some(r) => r,
                        None => return self.error(501, "5.0.0", "authentication cancelled"),
                    },
                };
                let pass = match self.challenge("UGFzc3dvcmQ6").await? {
                    Some(r) => r,
                    None => return self.error(501, "5.0.0", "authentication cancelled"),
                };
                match (
                    STANDARD.decode(user.as_bytes()),
                    STANDARD.decode(pass.as_bytes()),
                ) {
                    (Ok(u), Ok(p)) => (String::from_utf8_lossy(&u).into_owned(), p),
                    _ => return self.error(501, "5.5.2", "the response is not base64"),
                }
            }
            _ => return self.error(504, "5.5.4", "unsupported mechanism (use PLAIN or LOGIN)"),
        };
        let (name, password) = credentials;
        let users = self.shared.config.users.clone();
        let name_for_check = name.clone();
        let ok = tokio::task::spawn_blocking(move || {
            crate::auth::verify(&users, &name_for_check, &password)
        })
        .await
        .unwrap_or(false);
        if ok {
            tracing::info!(peer = %self.peer, user = %name, "authenticated");
            self.user = Some(name);
            self.reply(235, "2.7.0", "authentication succeeded");
            Ok(())
        } else {
            tracing::info!(peer = %self.peer, user = %name, "authentication failed");
            self.error(535, "5.7.8", "authentication credentials invalid")
        }
    }

    /// Sends a 334 challenge and reads the response; `None` when the client cancels with `*`.
    async fn challenge(&mut self, prompt: &str) -> Result<Option<String>, End> {
        self.out
            .extend_from_slice(format!("334 {prompt}\r\n").as_bytes());
        let Some((line, too_long)) = self.read_command().await? else {
            return Err(End::Closed);
        };
        let text = String::from_utf8_lossy(&line).trim().to_string();
        if too_long || text == "*" {
            return Ok(None);
        }
        Ok(Some(text))
    }
}

fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(100).collect()
}
