//! Why making a recipient's copy failed, and what becomes of the recipient: the errored queue
//! when a retry may help (the key server is down, the disk is full), or the exception rules
//! ("Encryption Exception", "Unable to decrypt") when no retry will (the message or its keys
//! are at fault).

use std::sync::Arc;

use envelope::{Address, AddressError};
use transform::{KeyFailure, TransformError};

use super::{Work, put_in_errored};

/// Whether a failed transformation may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The key server is down, the disk is full: the errored queue retries it.
    Retry,
    /// No retry will fix it: the "Encryption Exception" rule decides.
    Encryption,
    /// No retry will fix it: the "Unable to decrypt" rule decides.
    Decryption,
}

impl Failure {
    /// How a failed transformation is handled: `permanent` when the message or its keys are at
    /// fault, a retry when the disk is (whatever error type carried its I/O error).
    pub(crate) fn of(e: &TransformError, permanent: Failure) -> Failure {
        if e.is_transient() {
            Failure::Retry
        } else {
            permanent
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Cause {
    /// Reading or writing the message or a copy (a full disk).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Sealing, opening or finding the sealed message.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// A key or the public parameters could not be had.
    #[error(transparent)]
    Key(#[from] KeyFailure),
    /// The queue's database.
    #[error(transparent)]
    Queue(#[from] store::QueueError),
    /// No key to sign with.
    #[error(transparent)]
    Signer(#[from] NoSigner),
    /// Not an address a message can be sealed to.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The signature of a decrypted message does not verify, and the settings refuse it.
    #[error("the signature does not verify ({0})")]
    BadSignature(String),
    /// A blocking task failed (a bug, or a shutdown).
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// A cause found once and told to several groups of recipients.
    #[error(transparent)]
    Shared(Arc<Cause>),
}

/// Why no key can sign a message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoSigner {
    /// The sender is a user, but their key could not be had.
    #[error("no signing key for the sender {sender} ({error})")]
    Sender {
        /// The sender.
        sender: Address,
        /// Why not.
        error: KeyFailure,
    },
    /// The sender is not one of this gateway's users.
    #[error("the sender is not one of this gateway's users")]
    NotAUser,
    /// The sender's own key failed and no default sender is configured.
    #[error("{own}; no default sender is configured")]
    NoDefault {
        /// Why the sender's own key failed.
        own: Box<NoSigner>,
    },
    /// Neither the sender's key nor the default sender's could be had.
    #[error("{own}; and none for the default sender {default} ({error})")]
    DefaultFailed {
        /// Why the sender's own key failed.
        own: Box<NoSigner>,
        /// The default sender.
        default: Address,
        /// Why its key failed.
        error: KeyFailure,
    },
    /// A message encrypted again after decrypting is signed by the default sender: none is
    /// configured.
    #[error("no default sender is configured")]
    NotConfigured,
    /// The same, and the default sender's key could not be had.
    #[error("no signing key for the default sender: {0}")]
    DefaultKey(KeyFailure),
}

impl NoSigner {
    /// True when a retry may find the key (the key server or the cache failed).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            NoSigner::Sender { error, .. }
            | NoSigner::DefaultFailed { error, .. }
            | NoSigner::DefaultKey(error) => error.is_transient(),
            NoSigner::NotAUser | NoSigner::NoDefault { .. } | NoSigner::NotConfigured => false,
        }
    }
}

/// A step that failed: what it was doing, why, and what becomes of its recipients.
#[derive(Debug)]
pub(crate) struct Failed {
    context: Option<&'static str>,
    cause: Cause,
    kind: Failure,
}

impl Failed {
    /// A failure while `context`, handled as `kind`.
    pub(crate) fn new(context: &'static str, cause: impl Into<Cause>, kind: Failure) -> Self {
        Failed {
            context: Some(context),
            cause: cause.into(),
            kind,
        }
    }

    /// A failure a retry may fix (the errored queue waits for it).
    pub(crate) fn retry(context: &'static str, cause: impl Into<Cause>) -> Self {
        Failed::new(context, cause, Failure::Retry)
    }

    /// A failed transformation: a retry when the disk failed, else `permanent`.
    pub(crate) fn judged(context: &'static str, e: TransformError, permanent: Failure) -> Self {
        let kind = Failure::of(&e, permanent);
        Failed::new(context, e, kind)
    }

    /// A failure whose cause says all.
    pub(crate) fn bare(cause: impl Into<Cause>, kind: Failure) -> Self {
        Failed {
            context: None,
            cause: cause.into(),
            kind,
        }
    }

    /// One line for the errored queue, the exception rules and the log.
    pub(crate) fn reason(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.context {
            Some(context) => write!(f, "{context}: {}", self.cause),
            None => write!(f, "{}", self.cause),
        }
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// A failure no retry will fix, for the exception rules.
#[derive(Debug)]
pub(crate) struct Exception {
    /// Which exception rule decides.
    pub(crate) kind: Failure,
    /// The recipients it decides for.
    pub(crate) recipients: Vec<String>,
    /// Why, in one line.
    pub(crate) reason: String,
}

impl Work {
    /// Sends `list` where `failed` says: the errored queue, or the exception rules.
    pub(crate) fn fail(&mut self, id: &str, list: &[String], failed: Failed) {
        let reason = failed.reason();
        if failed.kind == Failure::Retry {
            put_in_errored(id, &mut self.decision, list, reason);
        } else {
            self.exceptions.push(Exception {
                kind: failed.kind,
                recipients: list.to_vec(),
                reason,
            });
        }
    }
}

/// Runs `f` on the blocking pool; its error, or a panic in it, comes back as a [`Cause`].
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Cause>
where
    T: Send + 'static,
    E: Into<Cause> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transform::{KeyFailure, TransformError};

    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(28)
    }

    #[test]
    fn a_full_disk_anywhere_in_a_transformation_is_a_retry() {
        let sealing = TransformError::Seal(envelope::SealError::Io(enospc()));
        assert_eq!(Failure::of(&sealing, Failure::Encryption), Failure::Retry);
        let opening = TransformError::Open(envelope::OpenError::Io(enospc()));
        assert_eq!(Failure::of(&opening, Failure::Decryption), Failure::Retry);
        let reading =
            TransformError::NotSealed(mime::ReadError::Io(std::io::Error::from_raw_os_error(5)));
        assert_eq!(Failure::of(&reading, Failure::Decryption), Failure::Retry);
        let spool = TransformError::Io(enospc());
        assert_eq!(Failure::of(&spool, Failure::Encryption), Failure::Retry);
    }

    #[test]
    fn a_fault_of_the_message_or_key_goes_to_the_exception_rules() {
        let damaged = TransformError::Open(envelope::OpenError::Tampered(3));
        assert_eq!(
            Failure::of(&damaged, Failure::Decryption),
            Failure::Decryption
        );
        let not_base64 = TransformError::Open(envelope::OpenError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not base64",
        )));
        assert_eq!(
            Failure::of(&not_base64, Failure::Decryption),
            Failure::Decryption
        );
        let nobody = TransformError::Seal(envelope::SealError::NoRecipients);
        assert_eq!(
            Failure::of(&nobody, Failure::Encryption),
            Failure::Encryption
        );
    }

    #[test]
    fn a_key_cache_on_a_full_disk_is_waited_for() {
        assert!(KeyFailure::Local("database or disk is full".into()).is_transient());
        assert!(KeyFailure::Unreachable("timeout".into()).is_transient());
        assert!(!KeyFailure::Refused("unknown domain".into()).is_transient());
    }
}
