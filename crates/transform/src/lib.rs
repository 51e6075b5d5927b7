//! The encrypted email, made and opened: the work between deciding what to do with a message and
//! delivering it, shared by the gateway's pipeline and the reader (which seals a recipient's
//! reply).
//!
//! - [`encrypt`]: a message file sealed into an encrypted email (file in, file out).
//! - [`decrypt`]: an encrypted email found, checked for the gateway's mark, and opened.
//! - [`keyring`]: keys for the mail path, parsed once, and the key server's reachability.
//! - [`mark`]: the gateway's mark on the encrypted email it makes, so that forward to decrypt
//!   answers only for those.
//!
//! The file work is blocking: run it on the blocking thread pool. Each function streams, so
//! memory stays bounded for large messages (except when a notice must be put inside a body,
//! which needs the message parsed).

pub mod decrypt;
pub mod encrypt;
pub mod error;
pub mod keyring;
pub mod mark;

pub use decrypt::{
    Decrypt, Located, decrypt, keep_copy, keep_sealed, locate, made_here, signature,
};
pub use encrypt::{
    Encrypt, Encrypted, MAX_HEAD, Original, day_text, encrypt, kept_link, read_head,
};
pub use error::TransformError;
pub use keyring::{KeyFailure, KeyRing};
pub use mark::MarkKey;
