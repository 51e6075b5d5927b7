//! Postern's SMTP side: the server that receives mail on the policy and bypass ports and
//! the delivery workers that send it on (SMTP with
//! retries, or a Maildir), with delivery status notifications for what cannot be delivered.

pub mod auth;
pub mod client;
pub mod command;
pub mod config;
pub mod data;
pub mod deliver;
pub mod dsn;
pub mod maildir;
pub mod metrics;
pub mod server;
pub mod session;
mod stream;

pub use config::{DeliveryConfig, Hops, NextHop, SmtpConfig, TlsMode};
