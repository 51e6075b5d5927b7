//! What the status page shows of the gateway's background tasks and the services it depends
//! on. The binary runs and supervises them (and exposes them on `/metrics`); the pages only
//! report what a [`Status`] they are given says.

use serde::Serialize;

/// The component the status page adds the policy queue's depth to.
pub const POLICY: &str = "Policy and encryption";
/// The component the status page adds the delivery queue's depth to.
pub const DELIVERY: &str = "Delivery";
/// The maintenance loop (errored retries, expiry, prefetch).
pub const MAINTENANCE: &str = "Maintenance";
/// The SMTP relay that carries sign-in code emails.
pub const CODE_RELAY: &str = "Code email relay";

/// What a component is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its task runs and its loop comes round.
    Running,
    /// Its task runs, but its loop has not come round for too long, or it failed lately.
    Stalled,
    /// Its task has ended.
    Stopped,
    /// A service outside the process it depends on does not answer.
    Down,
}

/// A component's state with words for the administrator.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// E.g. "Delivery".
    pub name: String,
    /// Running, stalled, stopped or down.
    pub state: State,
    /// What it does, or why it stopped.
    pub detail: String,
}

/// The source of the reports: the process's components, in the order the status page lists
/// them.
pub trait Status: Send + Sync {
    /// Every component's state at `now` (Unix seconds).
    fn reports(&self, now: u64) -> Vec<Report>;
}
