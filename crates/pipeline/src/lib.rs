//! Postern's decision step: between the SMTP server that receives mail and the workers that
//! deliver it. It encrypts outbound mail and decrypts inbound mail with the MIMEBuilder
//! ([`mime`]) around sealed messages ([`envelope`]), with keys from the key server through a
//! cache ([`keyring`]), and keeps every message that needs a missing key in the errored queue
//! until the key comes.
//!
//! - [`config`]: `[gateway]` of `postern.toml`.
//! - [`keyring`]: keys for the mail path, parsed once, and the key server's reachability.
//! - [`transform`]: the blocking file-to-file work (sealing into an encrypted email, opening one).
//! - [`rewrite`]: the policy's view of a message, and copies with header changes.
//! - [`notify`]: notifications made from the policy's templates.
//! - [`mark`]: the gateway's mark on the encrypted email it makes, so that forward to decrypt
//!   answers only for those.
//! - [`hourly`]: per-person counts over the last hour (forward-to-decrypt answers, replies).
//! - [`run`]: the loop that claims, decides by the policy ([`policy`]), transforms and records;
//!   the errored queue's retries and bounces; quarantine retention; the key prefetch; forward
//!   to decrypt.

pub mod config;
pub mod hourly;
pub mod keyring;
pub mod mark;
pub mod notify;
pub mod rewrite;
pub mod run;
pub mod transform;

pub use config::{ConfigError, GatewayConfig};
pub use keyring::{KeyFailure, KeyRing};
pub use run::{Pipeline, Settings};
