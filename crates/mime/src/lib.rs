//! Postern's MIMEBuilder: the encrypted email that carries a sealed message, and reading it
//! back.
//!
//! An encrypted email keeps the original's addressing and threading headers, says
//! `X-PP-ENCRYPTED: TRUE` and (if set) the encryption X-header with the gateway's host name,
//! shows a notice (or the meeting-request notice), and attaches `encrypted_message.htm`: a page
//! holding the sealed message as 7bit base64 lines and an "Open my email" form that posts it to
//! the Zero Download reader. Decrypting restores the original byte for byte and puts the
//! decryption X-header, the signature verdict and, if set, a notice on it.
//!
//! This crate does no I/O of its own: it works on byte slices and on the readers and writers it
//! is given, so that a message of any size streams through it.

mod build;
mod guard;
pub mod headers;
mod read;
pub mod report;
mod settings;

pub use build::{
    ATTACHMENT_NAME, BEGIN_MARKER, Base64Lines, END_MARKER, MARK_FIELD, Wrapper,
    is_meeting_request, linked, mark_after, wrapper,
};
pub use guard::Guard;
pub use read::{
    HeaderFilter, ReadError, SealedReader, Signature, add_notice, decryption_prefix,
    guarded_fields, is_encrypted, kept_token, sealed_and_mark_from_mime, sealed_from_mime,
};
pub use settings::{
    ENCRYPTED_MARKER, MimeSettings, OutgoingEnvelope, SIGNATURE_HEADER, SettingsError,
    WARNING_HEADER,
};
