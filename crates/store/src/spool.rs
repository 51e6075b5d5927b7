//! Where a message is written while it arrives or is made. A small one (up to the inline limit)
//! stays in memory and is stored in the database with its row, in the same transaction: no file
//! is created, fsynced or removed for it. A larger one spills to a file in `incoming/`, is
//! fsynced, and is renamed into `messages/` when the queue accepts it; the rename is made
//! durable by the committer's fsync of the directory, shared by every message of a commit group.
//!
//! A file in `incoming/` is removed as soon as its [`Incoming`] or [`Finished`] is dropped
//! without having been placed: a message refused (a full disk, a client gone, a commit that
//! failed) leaves nothing behind, not even until the next start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::body::Body;

/// Messages up to this size are kept in the database by default (`store.inline_limit`).
pub const DEFAULT_INLINE_LIMIT: u64 = 256 * 1024;

/// The spool directories, and the size up to which a message stays in memory.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    inline_limit: usize,
}

/// A message being received or made: in memory while it is small, in a file in `incoming/`
/// once it is not. Dropped, it removes its file.
pub struct Incoming {
    held: Vec<u8>,
    file: Option<(BufWriter<File>, Unplaced)>,
    len: u64,
    limit: usize,
    dir: PathBuf,
}

/// A file in `incoming/`, removed when this is dropped. Once the file is placed (renamed out of
/// `incoming/`), its name there is gone and the removal finds nothing.
#[derive(Debug)]
struct Unplaced(PathBuf);

impl Drop for Unplaced {
    fn drop(&mut self) {
        match fs::remove_file(&self.0) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(file = %self.0.display(), error = %e, "cannot remove an unfinished spool file; it goes at the next start");
            }
            _ => {}
        }
    }
}

impl Spool {
    /// Opens (creating) the spool under `root`, and clears files of messages that never arrived.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("incoming"))?;
        fs::create_dir_all(root.join("messages"))?;
        fs::create_dir_all(root.join("kept"))?;
        for entry in fs::read_dir(root.join("incoming"))? {
            // Only messages that were never answered 250 are here.
            let _ = fs::remove_file(entry?.path());
        }
        Ok(Spool {
            root: root.to_path_buf(),
            inline_limit: DEFAULT_INLINE_LIMIT as usize,
        })
    }

    /// The same spool with messages up to `bytes` kept in memory and stored in the database
    /// (0: every message in a file).
    pub fn with_inline_limit(mut self, bytes: u64) -> Self {
        self.inline_limit = usize::try_from(bytes).unwrap_or(usize::MAX);
        self
    }

    /// The spool under `root` as it is, touching nothing (for tools beside a running gateway).
    pub fn existing(root: &Path) -> Self {
        Spool {
            root: root.to_path_buf(),
            inline_limit: DEFAULT_INLINE_LIMIT as usize,
        }
    }

    /// Starts a message. Nothing touches the disk until it outgrows the inline limit.
    pub fn create(&self) -> io::Result<Incoming> {
        Ok(Incoming {
            held: Vec::new(),
            file: None,
            len: 0,
            limit: self.inline_limit,
            dir: self.root.join("incoming"),
        })
    }

    /// Where the message `id` lives once accepted, if it is kept in a file.
    pub(crate) fn path(&self, id: &str) -> PathBuf {
        self.root.join("messages").join(id)
    }

    /// Moves a finished incoming file to its place for `id` (durable after [`Spool::sync_dir`]).
    pub(crate) fn place(&self, incoming: &Path, id: &str) -> io::Result<()> {
        fs::rename(incoming, self.path(id))
    }

    /// Where a sealed message kept on the server is (see [`crate::kept`]).
    pub(crate) fn kept_path(&self, id: &str) -> PathBuf {
        self.root.join("kept").join(id)
    }

    /// Moves a finished file into `kept/` as `id`.
    pub(crate) fn place_kept(&self, incoming: &Path, id: &str) -> io::Result<()> {
        fs::rename(incoming, self.kept_path(id))
    }

    /// Removes a kept sealed message.
    pub(crate) fn remove_kept(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.kept_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The names of the files in `kept/`.
    pub(crate) fn kept_names(&self, min_age: std::time::Duration) -> io::Result<Vec<String>> {
        match settled(&self.root.join("kept"), min_age) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            other => other,
        }
    }

    /// Makes renames into `kept/` durable.
    pub(crate) fn sync_kept_dir(&self) -> io::Result<()> {
        File::open(self.root.join("kept"))?.sync_all()
    }

    /// Makes renames into `messages/` durable.
    pub(crate) fn sync_dir(&self) -> io::Result<()> {
        File::open(self.root.join("messages"))?.sync_all()
    }

    /// Removes a message file (delivered or deleted).
    pub(crate) fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The names of the message files in `messages/` placed at least `min_age` ago.
    pub(crate) fn names(&self, min_age: std::time::Duration) -> io::Result<Vec<String>> {
        settled(&self.root.join("messages"), min_age)
    }
}

impl std::fmt::Debug for Incoming {
    // Never the bytes: they are someone's mail.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("len", &self.len)
            .field("in_file", &self.file.is_some())
            .finish()
    }
}

impl Incoming {
    /// Appends bytes; past the inline limit the message moves to a file.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some((file, _)) => file.write_all(bytes)?,
            None if self.held.len() + bytes.len() <= self.limit => {
                self.held.extend_from_slice(bytes);
            }
            None => {
                let file = self.spill()?;
                file.write_all(bytes)?;
            }
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Creates the file and moves what is held into it.
    fn spill(&mut self) -> io::Result<&mut BufWriter<File>> {
        let mut raw = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut raw);
        let name: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        // Removed again if anything below fails.
        let path = Unplaced(path);
        let mut file = BufWriter::with_capacity(128 * 1024, file);
        file.write_all(&self.held)?;
        self.held = Vec::new();
        let (file, _) = self.file.insert((file, path));
        Ok(file)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Completes the message. A file is flushed and fsynced, and is then complete on disk; on
    /// failure it is removed. A message held in memory becomes durable with its row.
    pub fn finish(self) -> io::Result<Finished> {
        self.complete(true)
    }

    /// Drops a message that will not be accepted (removing its file, as dropping it does).
    pub fn discard(self) {
        drop(self);
    }

    /// Completes without an fsync: for a scratch message that is read back and discarded (a
    /// file is cleared with `incoming/` after a crash). On failure the file is removed.
    pub fn finish_unsynced(self) -> io::Result<Finished> {
        self.complete(false)
    }

    fn complete(self, sync: bool) -> io::Result<Finished> {
        let Incoming {
            held, file, len, ..
        } = self;
        let stored = match file {
            None => Stored::Inline(held.into()),
            Some((file, path)) => {
                let file = file.into_inner().map_err(|e| e.into_error())?;
                if sync {
                    file.sync_all()?;
                }
                Stored::File(path)
            }
        };
        Ok(Finished { stored, len })
    }
}

impl Write for Incoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some((file, _)) => file.flush(),
            None => Ok(()),
        }
    }
}

/// A complete message waiting for its queue row: in memory, or in an fsynced file that is
/// removed when this is dropped before it is placed.
#[derive(Debug)]
pub struct Finished {
    stored: Stored,
    /// Its size in bytes.
    pub len: u64,
}

enum Stored {
    Inline(bytes::Bytes),
    File(Unplaced),
}

impl std::fmt::Debug for Stored {
    // Never the bytes: they are someone's mail.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stored::Inline(b) => write!(f, "Inline({} bytes)", b.len()),
            Stored::File(p) => write!(f, "File({})", p.0.display()),
        }
    }
}

impl Finished {
    /// The message, to read before it is stored (or without storing it).
    pub fn body(&self) -> Body {
        match &self.stored {
            Stored::Inline(b) => Body::inline(b.clone()),
            Stored::File(p) => Body::file(&p.0, self.len),
        }
    }

    /// True when the message is small enough to be stored in the database.
    pub fn is_inline(&self) -> bool {
        matches!(self.stored, Stored::Inline(_))
    }

    /// The bytes of a message stored in the database.
    pub(crate) fn inline(&self) -> Option<&[u8]> {
        match &self.stored {
            Stored::Inline(b) => Some(b),
            Stored::File(_) => None,
        }
    }

    /// The file of a message too large for the database.
    pub(crate) fn file(&self) -> Option<&Path> {
        match &self.stored {
            Stored::Inline(_) => None,
            Stored::File(p) => Some(&p.0),
        }
    }

    /// Drops a message that will not be accepted (removing its file, as dropping it does).
    pub fn discard(self) {
        drop(self);
    }
}

/// The names of the files in `dir` last written at least `min_age` ago. A file is finished
/// (its last write) moments before it is placed and its row committed, so a younger one may be
/// a commit under way.
fn settled(dir: &Path, min_age: std::time::Duration) -> io::Result<Vec<String>> {
    let now = std::time::SystemTime::now();
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let written = match entry.metadata().and_then(|m| m.modified()) {
            Ok(t) => t,
            // Removed meanwhile (delivered, expired).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // A time in the future (a clock set back) counts as young.
        if now
            .duration_since(written)
            .map_or(true, |age| age < min_age)
        {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}
