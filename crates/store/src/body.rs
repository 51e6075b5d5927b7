//! A message's bytes as the rest of Postern reads them: from the database when the message is
//! small, from a spool file when it is large. Callers open readers; where the bytes live is the
//! store's business.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

/// A stored message (or one being made), read as many times as needed. Cheap to clone.
#[derive(Clone)]
pub struct Body(Repr);

#[derive(Clone)]
enum Repr {
    /// Shared, not copied: read from the database or held while it was made.
    Inline(Bytes),
    File {
        path: PathBuf,
        len: u64,
    },
}

impl std::fmt::Debug for Body {
    // Never the bytes: they are someone's mail.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Inline(b) => write!(f, "Body::Inline({} bytes)", b.len()),
            Repr::File { len, .. } => write!(f, "Body::File({len} bytes)"),
        }
    }
}

impl Body {
    /// A body held in memory (a message made here, a test's).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Body {
        Body(Repr::Inline(bytes.into()))
    }

    pub(crate) fn inline(bytes: Bytes) -> Body {
        Body(Repr::Inline(bytes))
    }

    pub(crate) fn file(path: &Path, len: u64) -> Body {
        Body(Repr::File {
            path: path.to_path_buf(),
            len,
        })
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        match &self.0 {
            Repr::Inline(b) => b.len() as u64,
            Repr::File { len, .. } => *len,
        }
    }

    /// True when its bytes are held in memory (read from the database), not in a file: a
    /// holder that keeps it for long counts it against its memory budget.
    pub fn in_memory(&self) -> bool {
        matches!(self.0, Repr::Inline(_))
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reader from the first byte (unbuffered for a file: wrap it as the caller reads).
    pub fn open(&self) -> io::Result<BodyReader> {
        Ok(BodyReader(match &self.0 {
            Repr::Inline(b) => Reader::Inline(Cursor::new(b.clone())),
            Repr::File { path, .. } => Reader::File(File::open(path)?),
        }))
    }

    /// The same for async code (the SMTP client).
    pub async fn open_async(&self) -> io::Result<AsyncBodyReader> {
        Ok(AsyncBodyReader(match &self.0 {
            Repr::Inline(b) => AsyncReader::Inline(Cursor::new(b.clone())),
            Repr::File { path, .. } => AsyncReader::File(tokio::fs::File::open(path).await?),
        }))
    }

    /// All of it in memory.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match &self.0 {
            Repr::Inline(b) => Ok(b.to_vec()),
            Repr::File { path, .. } => std::fs::read(path),
        }
    }
}

/// Reads a [`Body`].
pub struct BodyReader(Reader);

enum Reader {
    Inline(Cursor<Bytes>),
    File(File),
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Reader::Inline(c) => c.read(buf),
            Reader::File(f) => f.read(buf),
        }
    }
}

impl Seek for BodyReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match &mut self.0 {
            Reader::Inline(c) => c.seek(to),
            Reader::File(f) => f.seek(to),
        }
    }
}

/// Reads a [`Body`] without blocking the runtime.
pub struct AsyncBodyReader(AsyncReader);

enum AsyncReader {
    Inline(Cursor<Bytes>),
    File(tokio::fs::File),
}

impl AsyncRead for AsyncBodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.0 {
            AsyncReader::Inline(c) => Pin::new(c).poll_read(cx, buf),
            AsyncReader::File(f) => Pin::new(f).poll_read(cx, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn both_kinds_read_the_same_bytes_again_and_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, b"Subject: x\r\n\r\nhello\r\n").unwrap();
        for body in [
            Body::from_bytes(&b"Subject: x\r\n\r\nhello\r\n"[..]),
            Body::file(&path, 21),
        ] {
            assert_eq!(body.len(), 21);
            for _ in 0..2 {
                let mut sync = Vec::new();
                body.open().unwrap().read_to_end(&mut sync).unwrap();
                let mut not_blocking = Vec::new();
                body.open_async()
                    .await
                    .unwrap()
                    .read_to_end(&mut not_blocking)
                    .await
                    .unwrap();
                assert_eq!(sync, b"Subject: x\r\n\r\nhello\r\n");
                assert_eq!(not_blocking, sync);
                assert_eq!(body.to_vec().unwrap(), sync);
            }
            assert!(!format!("{body:?}").contains("hello"), "{body:?}");
        }
    }
}
