//! Errors, as types: each names what was wrong so that a caller can say it to a person.

use thiserror::Error;

use crate::keys::KeyId;

/// True when an I/O error says the system failed (a full disk, a quota, a device error, a file
/// that could not be opened) rather than that the bytes are wrong: the same work may succeed
/// later. Content is refused with `InvalidData`, `InvalidInput` or `UnexpectedEof` and no OS
/// error code; an error that wraps another I/O error is judged by the one inside.
pub fn io_is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    if e.raw_os_error().is_some() {
        return true;
    }
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<std::io::Error>()) {
        return io_is_transient(inner);
    }
    !matches!(
        e.kind(),
        ErrorKind::InvalidData | ErrorKind::InvalidInput | ErrorKind::UnexpectedEof
    )
}

/// Why a string is not an address Postern accepts.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AddressError {
    /// Nothing but whitespace.
    #[error("the address is empty")]
    Empty,
    /// No `@`.
    #[error("the address has no '@'")]
    MissingAt,
    /// Nothing before the `@`.
    #[error("the address has nothing before the '@'")]
    EmptyLocalPart,
    /// Nothing after the `@`.
    #[error("the address has no domain after the '@'")]
    EmptyDomain,
    /// A dot at the start or end of the local part, or two in a row.
    #[error("the part before the '@' starts or ends with a dot, or has two dots in a row")]
    MisplacedDot,
    /// A character not allowed unquoted before the `@`.
    #[error("the part before the '@' contains {0:?}, which is not allowed there")]
    InvalidLocalChar(char),
    /// A quoted local part without its closing quote.
    #[error("the quoted part before the '@' is not terminated")]
    UnterminatedQuote,
    /// The local part is longer than 64 octets.
    #[error("the part before the '@' is {0} octets long; at most 64 are allowed")]
    LocalPartTooLong(usize),
    /// The whole address is longer than 254 octets.
    #[error("the address is {0} octets long; at most 254 are allowed")]
    TooLong(usize),
    /// `user@[192.0.2.1]`: identities are names, not hosts.
    #[error("address literals such as [192.0.2.1] cannot be identities")]
    AddressLiteral,
    /// The domain is not a valid (internationalized) host name.
    #[error("the domain {0:?} is not a valid domain name")]
    InvalidDomain(String),
}

/// Why a string or number is not an epoch.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EpochError {
    /// Not of the form `YYYY-MM`.
    #[error("{0:?} is not a month of the form YYYY-MM")]
    Format(String),
    /// Month outside 1–12.
    #[error("month {0} is not between 01 and 12")]
    MonthOutOfRange(u8),
    /// Year outside 1970–9999.
    #[error("year {0} is not between 1970 and 9999")]
    YearOutOfRange(u16),
}

/// Why bytes are not a key of the expected kind.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The bytes do not start as any Postern key file does.
    #[error("not a Postern key file (expected {expected})")]
    NotAKey {
        /// What the caller wanted.
        expected: &'static str,
    },
    /// A Postern key, but another kind.
    #[error("this is a {found}, not a {expected}")]
    WrongKind {
        /// What the caller wanted.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// A format version this build does not read.
    #[error("key format version {0} is not supported by this version of Postern")]
    UnsupportedVersion(u8),
    /// The file ends early or has bytes after its end.
    #[error("the {0} is truncated or has trailing bytes")]
    Length(&'static str),
    /// A field does not decode (a point not on the curve, a bad address, a bad month).
    #[error("the {0} is corrupt")]
    Corrupt(&'static str),
    /// The public parameters hold no master key.
    #[error("the public parameters hold no master key")]
    NoMasterKey,
    /// No master key with this id is known.
    #[error("no master key with id {0} is known")]
    UnknownKeyId(KeyId),
}

/// Why the passphrase-sealed master keys could not be opened.
#[derive(Debug, Error)]
pub enum VaultError {
    /// Wrong passphrase, or the file was changed.
    #[error("the passphrase is wrong, or the master key file has been altered")]
    WrongPassphrase,
    /// Not a master key file, or an unsupported version of one.
    #[error("not a Postern master key file: {0}")]
    Format(&'static str),
    /// The decrypted contents do not decode.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The passphrase is too short to protect anything.
    #[error("the passphrase must be at least {0} characters long")]
    WeakPassphrase(usize),
    /// Argon2 rejected its parameters.
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Why a message could not be sealed.
#[derive(Debug, Error)]
pub enum SealError {
    /// At least one recipient is needed.
    #[error("a sealed message needs at least one recipient")]
    NoRecipients,
    /// More recipients than the format allows.
    #[error("{0} recipients is more than the {max} one message may have", max = crate::header::MAX_RECIPIENTS)]
    TooManyRecipients(usize),
    /// The signing key belongs to a master key the public parameters do not hold.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Reading the plaintext or writing the sealed message failed.
    #[error("I/O error while sealing: {0}")]
    Io(#[from] std::io::Error),
}

impl SealError {
    /// True when sealing again later may succeed (the disk, not the message or the key): the
    /// caller retries rather than treating the message as one that cannot be encrypted.
    pub fn is_transient(&self) -> bool {
        match self {
            SealError::Io(e) => io_is_transient(e),
            SealError::NoRecipients | SealError::TooManyRecipients(_) | SealError::Key(_) => false,
        }
    }
}

/// Why a sealed message could not be opened. No plaintext may be trusted after any of these.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The input does not start like a sealed message.
    #[error("not a Postern sealed message")]
    NotSealed,
    /// A format version this build does not read.
    #[error("sealed-message format version {0} is not supported by this version of Postern")]
    UnsupportedVersion(u8),
    /// An algorithm suite this build does not know.
    #[error("sealed-message algorithm suite {0} is not supported")]
    UnsupportedSuite(u8),
    /// The header does not decode.
    #[error("the sealed message header is malformed: {0}")]
    Malformed(&'static str),
    /// The key's identity is not among the recipients.
    #[error("the key is for {key_for}, but the message is for {recipients} ({epoch})")]
    NotARecipient {
        /// Whom the key opens.
        key_for: String,
        /// The recipients named in the header.
        recipients: String,
        /// The epoch of the message.
        epoch: String,
    },
    /// The key was issued under another master key.
    #[error(
        "the key belongs to master key {key}, but the message was sealed under master key {message}"
    )]
    WrongMasterKey {
        /// The key's master key id.
        key: KeyId,
        /// The message's master key id.
        message: KeyId,
    },
    /// The data key did not unwrap: a wrong key, or a changed header.
    #[error("the key does not open this message, or its header has been altered")]
    KeyMismatch,
    /// A segment failed authentication.
    #[error("the sealed message has been altered (segment {0} fails authentication)")]
    Tampered(u64),
    /// The message ends before its final segment.
    #[error("the sealed message is truncated")]
    Truncated,
    /// Reading the sealed message or writing the plaintext failed.
    #[error("I/O error while opening: {0}")]
    Io(#[from] std::io::Error),
}

impl OpenError {
    /// True when opening again later may succeed (the disk failed); false when the message or
    /// the key is wrong, which no retry changes.
    pub fn is_transient(&self) -> bool {
        match self {
            OpenError::Io(e) => io_is_transient(e),
            OpenError::NotSealed
            | OpenError::UnsupportedVersion(_)
            | OpenError::UnsupportedSuite(_)
            | OpenError::Malformed(_)
            | OpenError::NotARecipient { .. }
            | OpenError::WrongMasterKey { .. }
            | OpenError::KeyMismatch
            | OpenError::Tampered(_)
            | OpenError::Truncated => false,
        }
    }
}
