//! What a Postern node keeps: the durable mail queue (message files in a spool directory and
//! their states in a database; see [`queue`] for the life of a message and the durability
//! rules), quarantine, kept sealed messages, secrets, console accounts and audit, the key
//! server's tokens, and rate limits.

pub mod accounts;
pub mod body;
pub mod console;
mod db_error;
pub mod kept;
pub mod keyserver;
pub mod local;
mod migrate;
pub mod node;
pub mod quarantine;
pub mod queue;
pub mod rate;
pub mod secrets;
pub mod spool;

pub use body::{AsyncBodyReader, Body, BodyReader};
pub use console::AuditEntry;
pub use db_error::{DbError, DbErrorKind};
pub use kept::{Keep, Kept, KeptKind};
pub use quarantine::{Area, QuarantineFilter, QuarantineOp, Quarantined, StoredPolicy};
pub use queue::{
    Backoff, Decision, Delivery, Depth, Envelope, Errored, ErroredFilter, Hold, MessageCopy,
    MessageInfo, MessageState, Outcome, Queue, QueueError, QueueOptions, RecipientInfo,
    RecipientState, Route, Source, UnknownRoute, UnknownState,
};
pub use rate::{RateLimit, client_key};
pub use spool::{Finished, Incoming, Spool};
