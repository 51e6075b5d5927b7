//! Test support shared by the integration tests of several crates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod disk;
pub mod messages;

pub use disk::SmallDisk;
pub use messages::Sample;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A minimal SMTP receiver: enough of RFC 5321 for a client to deliver, keeping each message.
pub async fn smtp_sink() -> (u16, mpsc::UnboundedReceiver<String>) {
    smtp_sink_on(0).await
}

/// [`smtp_sink`] on a chosen port (0 for any).
pub async fn smtp_sink_on(port: u16) -> (u16, mpsc::UnboundedReceiver<String>) {
    let (port, mut full) = smtp_recorder_on(port).await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = full.recv().await {
            let text = String::from_utf8_lossy(&m.data).replace("\r\n", "\n");
            if tx.send(text).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// A message as an SMTP receiver got it: the envelope and the text, CRLF and dot-stuffing undone
/// only as far as the protocol requires (lines end in CRLF).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// MAIL FROM.
    pub from: String,
    /// RCPT TO, in order.
    pub to: Vec<String>,
    /// The name the client gave in EHLO (or HELO).
    pub helo: String,
    /// The message text.
    pub data: Vec<u8>,
}

fn path_of(line: &str) -> String {
    let start = line.find('<').map_or(line.len(), |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_string()
}

/// Starts [`smtp_recorder_on`] on its own runtime thread.
pub fn smtp_recorder_thread() -> (u16, std::sync::mpsc::Receiver<Recorded>) {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (mail_tx, mail_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (port, mut rx) = smtp_recorder_on(0).await;
            port_tx.send(port).unwrap();
            while let Some(m) = rx.recv().await {
                if mail_tx.send(m).is_err() {
                    return;
                }
            }
        });
    });
    (port_rx.recv().unwrap(), mail_rx)
}

/// Like [`smtp_sink_on`], keeping each message's envelope and exact text.
pub async fn smtp_recorder_on(port: u16) -> (u16, mpsc::UnboundedReceiver<Recorded>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut reader = BufReader::new(r);
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut from = String::new();
                let mut to = Vec::new();
                let mut helo = String::new();
                loop {
                    let mut raw = Vec::new();
                    match reader.read_until(b'\n', &mut raw).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    if verb == "EHLO" || verb == "HELO" {
                        helo = line.get(5..).unwrap_or("").trim().to_string();
                    }
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        // Addresses starting with "reject" are refused for good, as an unknown
                        // mailbox would be.
                        "RCPT" if line.to_ascii_lowercase().contains("<reject") => {
                            b"550 5.1.1 no such mailbox\r\n"
                        }
                        "MAIL" => {
                            from = path_of(&line);
                            to.clear();
                            b"250 ok\r\n"
                        }
                        "RCPT" => {
                            to.push(path_of(&line));
                            b"250 ok\r\n"
                        }
                        "HELO" | "RSET" | "NOOP" => b"250 ok\r\n",
                        "DATA" => {
                            w.write_all(b"354 go on\r\n").await.unwrap();
                            let mut data = Vec::new();
                            loop {
                                let mut l = Vec::new();
                                match reader.read_until(b'\n', &mut l).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(_) => {}
                                }
                                if l == b".\r\n" || l == b".\n" {
                                    break;
                                }
                                // Undo dot-stuffing, as a real receiver does.
                                let l = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                                data.extend_from_slice(l);
                            }
                            let _ = tx.send(Recorded {
                                from: from.clone(),
                                to: to.clone(),
                                helo: helo.clone(),
                                data,
                            });
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not here\r\n",
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, rx)
}

/// Starts [`smtp_sink`] on its own runtime thread, for tests without one; messages arrive on
/// the returned standard channel.
pub fn smtp_sink_thread() -> (u16, std::sync::mpsc::Receiver<String>) {
    smtp_sink_thread_on(0)
}

/// [`smtp_sink_thread`] on a chosen port (0 for any).
pub fn smtp_sink_thread_on(port: u16) -> (u16, std::sync::mpsc::Receiver<String>) {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (mail_tx, mail_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (port, mut rx) = smtp_sink_on(port).await;
            port_tx.send(port).unwrap();
            while let Some(m) = rx.recv().await {
                if mail_tx.send(m).is_err() {
                    return;
                }
            }
        });
    });
    (port_rx.recv().unwrap(), mail_rx)
}

/// A port free on loopback now (another process may take it before it is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`; false after `limit`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The six-digit code in a code email.
pub fn code_in(mail: &str) -> Option<String> {
    mail.lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
}

/// A blocking SMTP client for load and crash tests: one connection, one message at a time.
pub struct SmtpConn {
    reader: std::io::BufReader<TcpStream>,
    writer: TcpStream,
}

impl SmtpConn {
    /// Connects and says EHLO.
    pub fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        let mut conn = SmtpConn {
            reader: std::io::BufReader::new(stream),
            writer,
        };
        conn.expect(220)?;
        conn.command("EHLO load.test", 250)?;
        Ok(conn)
    }

    fn reply(&mut self) -> std::io::Result<(u16, String)> {
        use std::io::BufRead;
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed",
                ));
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, all));
            }
        }
    }

    fn expect(&mut self, code: u16) -> std::io::Result<String> {
        let (got, text) = self.reply()?;
        if got == code {
            Ok(text)
        } else {
            Err(std::io::Error::other(format!(
                "expected {code}, got {}",
                text.trim_end()
            )))
        }
    }

    fn command(&mut self, line: &str, code: u16) -> std::io::Result<String> {
        use std::io::Write;
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.expect(code)
    }

    /// Sends one message; `Ok` only on the final 250.
    pub fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> std::io::Result<String> {
        use std::io::Write;
        self.command(&format!("MAIL FROM:<{from}>"), 250)?;
        for r in to {
            self.command(&format!("RCPT TO:<{r}>"), 250)?;
        }
        self.command("DATA", 354)?;
        self.writer.write_all(message)?;
        self.writer.write_all(b".\r\n")?;
        self.expect(250)
    }
}

/// The Message-ID header value of a message, if any.
pub fn message_id(message: &str) -> Option<String> {
    message
        .lines()
        .find_map(|l| {
            l.strip_prefix("Message-ID:")
                .or_else(|| l.strip_prefix("Message-Id:"))
        })
        .map(|v| v.trim().to_string())
}

/// The messages the round-trip tests carry: the [`messages::generated`] set, and with it every
/// `.eml` file below the directory `POSTERN_CORPUS` names, if it names one (a real corpus
/// finds what a generator does not think of).
pub fn corpus() -> Vec<Sample> {
    let mut all = messages::generated();
    if let Some(root) = std::env::var_os("POSTERN_CORPUS") {
        let root = std::path::PathBuf::from(root);
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(d) = dirs.pop() {
            let entries = std::fs::read_dir(&d)
                .unwrap_or_else(|e| panic!("POSTERN_CORPUS: {}: {e}", d.display()));
            for entry in entries {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|e| e == "eml") {
                    files.push(p);
                }
            }
        }
        files.sort();
        assert!(
            !files.is_empty(),
            "POSTERN_CORPUS names {}, which holds no .eml file",
            root.display()
        );
        all.extend(files.into_iter().map(|p| Sample {
            name: p.display().to_string(),
            bytes: std::fs::read(&p).unwrap(),
        }));
    }
    all
}

/// `bytes` in base64, in lines of 76 characters joined by `\n` (a MIME body).
pub fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    b64.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}
