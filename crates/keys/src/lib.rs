//! Postern's key server and key client.
//!
//! The key server holds the master keys and issues monthly user keys over HTTP (`/api/keys/v1`,
//! see `docs/keyserver-api.md`): to gateways with a token scoped to their domains (including next
//! month's keys during the prefetch window), and to people who prove an address with a one-time
//! code sent to it. Every issuance and refusal goes to the audit log.
//!
//! The key client fetches parameters and keys and keeps them in an encrypted cache, answering
//! from the cache first, so that an outage of the key server stops nothing a cached key can do.

pub mod api;
pub mod cache;
pub mod client;
pub mod clock;
pub mod grant;
pub mod limiter;
pub mod mailer;
pub mod relay;
pub mod server;
pub mod store;
pub mod tls;

pub use api::KeyKind;
pub use cache::KeyCache;
pub use client::{ClientConfig, ClientError, KeyClient, PrefetchReport};
pub use clock::{Clock, ManualClock, SystemClock};
pub use server::{KeyServer, KeyServerConfig, router};
pub use store::Store;
