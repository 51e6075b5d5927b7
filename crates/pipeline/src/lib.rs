//! Postern's decision step: between the SMTP server that receives mail and the workers that
//! deliver it. It decides each recipient's copy by the policy ([`policy`]), makes it with
//! [`transform`] (sealed into an encrypted email, or opened), and keeps every message that needs
//! a missing key in the errored queue until the key comes.
//!
//! - [`config`]: `[gateway]` of `postern.toml`.
//! - [`rewrite`]: the policy's view of a message, and copies with header changes.
//! - [`notify`]: notifications made from the policy's templates, and bounces of the errored
//!   queue.
//! - [`run`]: the loop that claims, decides by the policy, transforms and records; the errored
//!   queue's retries and bounces; quarantine retention; the key prefetch; forward to decrypt.

pub mod config;
pub mod notify;
pub mod rewrite;
pub mod run;

pub use config::{ConfigError, GatewayConfig};
pub use run::{Maintenance, Pipeline, Settings};
