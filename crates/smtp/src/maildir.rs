//! The `maildir:PATH` next hop: each message a file in `new/`, written in `tmp/`, fsynced, then
//! renamed (the Maildir protocol), with `Delivered-To` and `Return-Path` added.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Delivers `message` to the Maildir at `root` for one recipient.
pub fn deliver(
    root: &Path,
    sender: &str,
    recipient: &str,
    message: &store::Body,
) -> io::Result<String> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(root.join(sub))?;
    }
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "postern".into());
    let name = format!(
        "{}.M{micros}P{}Q{seq}.{host}",
        micros / 1_000_000,
        std::process::id()
    );
    let tmp = root.join("tmp").join(&name);
    let mut out = BufWriter::with_capacity(
        64 * 1024,
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?,
    );
    write!(
        out,
        "Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n"
    )?;
    io::copy(&mut message.open()?, &mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(&tmp, root.join("new").join(&name))?;
    File::open(root.join("new"))?.sync_all()?;
    Ok(name)
}
