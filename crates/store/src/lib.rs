//! Postern's durable mail queue: message files in a spool directory and their states in a
//! database. See [`queue`] for the life of a message and the durability rules.

pub mod accounts;
pub mod console;
pub mod kept;
pub mod keyserver;
pub mod local;
pub mod quarantine;
pub mod queue;
pub mod rate;
pub mod secrets;
pub mod spool;

pub use console::AuditEntry;
pub use kept::{Keep, Kept, KeptKind};
pub use quarantine::{Area, QuarantineFilter, QuarantineOp, Quarantined, StoredPolicy};
pub use queue::{
    Backoff, Decision, Delivery, Depth, Envelope, Errored, ErroredFilter, Hold, MessageCopy,
    MessageInfo, MessageState, Outcome, Queue, QueueError, RecipientInfo, RecipientState, Route,
    Source, UnknownRoute, UnknownState,
};
pub use rate::{RateLimit, client_key};
pub use spool::{Finished, Incoming, Spool};
