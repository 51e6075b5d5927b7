//! Why a transformation failed, and whether trying again later can help.

use std::io;

use envelope::{OpenError, SealError};

/// Why a transformation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// The spool (a full disk).
    #[error("spool: {0}")]
    Io(#[from] io::Error),
    /// No sealed message could be read from the email.
    #[error("{0}")]
    NotSealed(#[from] mime::ReadError),
    /// Sealing failed.
    #[error("cannot seal: {0}")]
    Seal(#[from] SealError),
    /// Opening failed.
    #[error("cannot open the sealed message: {0}")]
    Open(#[from] OpenError),
    /// Too large to handle in memory.
    #[error("the message is too large to read whole ({0} bytes)")]
    TooLarge(u64),
}

impl TransformError {
    /// True when the same transformation may succeed later: the disk failed (full, a quota, a
    /// device error), wherever in the chain its error came up. Such a failure waits in the
    /// errored queue; only a fault of the message or its keys goes to an exception rule.
    pub fn is_transient(&self) -> bool {
        match self {
            TransformError::Io(e) | TransformError::NotSealed(mime::ReadError::Io(e)) => {
                envelope::io_is_transient(e)
            }
            TransformError::Seal(e) => e.is_transient(),
            TransformError::Open(e) => e.is_transient(),
            TransformError::NotSealed(
                mime::ReadError::NotFound
                | mime::ReadError::Truncated
                | mime::ReadError::Damaged(_),
            )
            | TransformError::TooLarge(_) => false,
        }
    }
}
