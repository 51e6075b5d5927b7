//! Postern's key client: it fetches the public parameters and monthly user keys from the key
//! server (`crates/keyserver`, `/api/keys/v1`, see `docs/keyserver-api.md`) and keeps them in an
//! encrypted cache, answering from the cache first, so that an outage of the key server stops
//! nothing a cached key can do. [`api`] holds the wire types both sides share.
//!
//! The gateway, the reader and the CLI use this crate; none of them compiles the server.

pub mod api;
pub mod cache;
pub mod client;

pub use api::KeyKind;
pub use cache::KeyCache;
pub use client::{ClientConfig, ClientError, KeyClient, PrefetchReport};
