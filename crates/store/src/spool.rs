//! Message files. A message is written to `incoming/` while it arrives, fsynced, and renamed into
//! `messages/` when the queue accepts it; the rename is made durable by the committer's fsync of
//! the directory, shared by every message of a commit group.
//!
//! A file in `incoming/` is removed as soon as its [`Incoming`] or [`Finished`] is dropped
//! without having been placed: a message refused (a full disk, a client gone, a commit that
//! failed) leaves nothing behind, not even until the next start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// The spool directories.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

/// A message file being received. Dropped, it removes its file.
#[derive(Debug)]
pub struct Incoming {
    file: BufWriter<File>,
    path: Unplaced,
    len: u64,
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
        })
    }

    /// The spool under `root` as it is, touching nothing (for tools beside a running gateway).
    pub fn existing(root: &Path) -> Self {
        Spool {
            root: root.to_path_buf(),
        }
    }

    /// Starts a new message file.
    pub fn create(&self) -> io::Result<Incoming> {
        let mut raw = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut raw);
        let name: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.root.join("incoming").join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let path = Unplaced(path);
        Ok(Incoming {
            file: BufWriter::with_capacity(128 * 1024, file),
            path,
            len: 0,
        })
    }

    /// Where the message `id` lives once accepted.
    pub fn path(&self, id: &str) -> PathBuf {
        self.root.join("messages").join(id)
    }

    /// Moves a finished incoming file to its place for `id` (durable after [`Spool::sync_dir`]).
    pub(crate) fn place(&self, incoming: &Path, id: &str) -> io::Result<()> {
        fs::rename(incoming, self.path(id))
    }

    /// Where a sealed message kept on the server is (see [`crate::kept`]).
    pub fn kept_path(&self, id: &str) -> PathBuf {
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
    pub(crate) fn kept_names(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        match fs::read_dir(self.root.join("kept")) {
            Ok(entries) => {
                for entry in entries {
                    if let Some(name) = entry?.file_name().to_str() {
                        out.push(name.to_string());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(out)
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
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The names of the message files in `messages/`.
    pub fn names(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("messages"))? {
            if let Some(name) = entry?.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    /// Reads a whole message.
    pub fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(id))
    }
}

impl Incoming {
    /// Appends bytes.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.len += bytes.len() as u64;
        self.file.write_all(bytes)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flushes and fsyncs; the file is then complete on disk. On failure the file is removed.
    pub fn finish(self) -> io::Result<Finished> {
        let Incoming { file, path, len } = self;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(Finished { path, len })
    }

    /// Drops a message that will not be accepted (removing its file, as dropping it does).
    pub fn discard(self) {
        drop(self);
    }

    /// Flushes without an fsync: for a scratch file that is read back and discarded (it is
    /// cleared with `incoming/` after a crash). On failure the file is removed.
    pub fn finish_unsynced(self) -> io::Result<Finished> {
        let Incoming { file, path, len } = self;
        file.into_inner().map_err(|e| e.into_error())?;
        Ok(Finished { path, len })
    }
}

impl Write for Incoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A complete, fsynced message file waiting for its queue row. Dropped before it is placed, it
/// removes its file.
#[derive(Debug)]
pub struct Finished {
    path: Unplaced,
    /// Its size in bytes.
    pub len: u64,
}

impl Finished {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path.0
    }

    /// Drops a message that will not be accepted (removing its file, as dropping it does).
    pub fn discard(self) {
        drop(self);
    }
}
