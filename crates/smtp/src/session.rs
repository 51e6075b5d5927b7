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

mod envelope;
mod receive;
mod secure;

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
}
