//! Postern's key server. It holds the master keys and issues monthly user keys over HTTP
//! (`/api/keys/v1`, see `docs/keyserver-api.md`): to gateways with a token scoped to their
//! domains (including next month's keys during the prefetch window), and to people who prove an
//! address with a one-time code sent to it. Every issuance and refusal goes to the audit log
//! (`store::keyserver`).
//!
//! - [`server`]: the HTTP routes and who may ask what.
//! - [`grant`]: which months a requester may have.
//! - [`mailer`]: the one-time code emails, and [`relay`] the health of the relay carrying them.
//! - [`tls`]: HTTPS with a configured certificate.

pub mod grant;
pub mod mailer;
pub mod relay;
pub mod server;
pub mod tls;

pub use server::{KeyServer, KeyServerConfig, router};
