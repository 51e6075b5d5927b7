//! What the queue stores and returns: envelopes, messages and recipients as listed, the
//! deliveries it leases, the decisions it records, the outcomes of attempts.

use crate::spool::Finished;

/// Where a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The policy port: decided and transformed before delivery.
    Policy,
    /// The bypass port: delivered as received.
    Bypass,
    /// Made by Postern itself (delivery status notifications).
    Local,
    /// A transformed copy (encrypted or decrypted) of a message that came in on the policy port.
    Derived,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Policy => "policy",
            Source::Bypass => "bypass",
            Source::Local => "local",
            Source::Derived => "derived",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "bypass" => Source::Bypass,
            "local" => Source::Local,
            "derived" => Source::Derived,
            _ => Source::Policy,
        }
    }
}

/// The SMTP envelope of a message, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// MAIL FROM; empty for the null sender `<>`.
    pub sender: String,
    /// RCPT TO, in order.
    pub recipients: Vec<String>,
    /// The client's IP address.
    pub client: String,
    /// What the client said in EHLO/HELO.
    pub helo: String,
    /// Which port.
    pub source: Source,
    /// The Message-ID header, if any (for logs and duplicate detection).
    pub message_id: Option<String>,
}

/// A message as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Queue id.
    pub id: String,
    /// MAIL FROM.
    pub sender: String,
    /// Where it came in.
    pub source: Source,
    /// Bytes.
    pub size: u64,
    /// Unix seconds.
    pub received_at: u64,
    /// Message state.
    pub state: MessageState,
    /// The Message-ID header.
    pub message_id: Option<String>,
    /// The message this one is a transformed copy of.
    pub parent: Option<String>,
    /// What the transformation did (encrypted for whom, signed by whom; the signature verdict).
    pub note: Option<String>,
    /// Its recipients.
    pub recipients: Vec<RecipientInfo>,
}

/// A recipient as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientInfo {
    /// Row id.
    pub id: i64,
    /// RCPT TO.
    pub address: String,
    /// Its next hop, once routed.
    pub hop: Option<Route>,
    /// Its state.
    pub state: RecipientState,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt: u64,
    /// The last reply or error.
    pub last_reply: Option<String>,
}

/// Recipients of one message due for one next hop.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Queue id.
    pub id: String,
    /// MAIL FROM.
    pub sender: String,
    /// The next hop; `None` for recipients never routed (the errored queue's, bounced at the
    /// end of their lifetime).
    pub hop: Option<Route>,
    /// (row id, address).
    pub recipients: Vec<(i64, String)>,
    /// Attempts made before this one (the most among the recipients).
    pub attempts: u32,
    /// When the message arrived.
    pub received_at: u64,
    /// The Message-ID header.
    pub message_id: Option<String>,
    /// A transformed copy (its header is not quoted back in a notification: a decrypted copy's
    /// inner header must not cross the network in clear).
    pub derived: bool,
}

/// Counts by state, for metrics and the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    /// Messages waiting to be processed.
    pub received: u64,
    /// Recipients waiting for their first attempt.
    pub pending: u64,
    /// Recipients waiting for a retry.
    pub deferred: u64,
    /// Recipients waiting for a key (the errored queue).
    pub errored: u64,
}

/// One copy of a processed message: its content and the recipients that get it.
#[derive(Debug)]
pub struct MessageCopy {
    /// The transformed content, or `None` for the message as received.
    pub file: Option<Finished>,
    /// (recipient, next hop).
    pub routes: Vec<(String, Route)>,
    /// What the transformation did, for the record.
    pub note: Option<String>,
    /// `None`: the routes name the message's own recipients. `Some(list)`: the routes name new
    /// addresses standing in for the recipients in `list` (a changed recipient), or added
    /// beside them when `list` is empty (an archive copy). Needs a `file`.
    pub replaces: Option<Vec<String>>,
    /// The envelope sender of the copy when it is not the message's own: `Some("")` for an
    /// automatic answer, which must not bounce back. Needs a `file`.
    pub sender: Option<String>,
}

/// A recipient whose copy cannot be made now (no key): it waits in the errored queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errored {
    /// The recipient.
    pub address: String,
    /// Why, for the administrator and, at the end of the lifetime, the sender.
    pub reason: String,
}

/// When errored recipients are retried: `initial` seconds after their first failure, doubling
/// with each failure up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Seconds before the first retry.
    pub initial: u64,
    /// Longest wait.
    pub max: u64,
}

/// What processing decided for one message. Recipients named nowhere are dropped.
#[derive(Debug, Default)]
pub struct Decision {
    /// Queue id.
    pub id: String,
    /// The copies to deliver.
    pub copies: Vec<MessageCopy>,
    /// Recipients for the errored queue.
    pub errored: Vec<Errored>,
    /// Internal users seen in the message (for key prefetching).
    pub users: Vec<String>,
    /// Recipients held in quarantine areas (the message as received is kept for them).
    pub held: Vec<Hold>,
    /// Recipients dropped by policy, with the reason (logged and kept in the record).
    pub deleted: Vec<Errored>,
    /// Sealed messages to keep on the server (see [`crate::kept`]).
    pub kept: Vec<crate::kept::Keep>,
}

/// Recipients of a message held in a quarantine area.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hold {
    /// Who.
    pub recipients: Vec<String>,
    /// The area (made with the default retention if it does not exist).
    pub area: String,
    /// The rule that held it.
    pub rule: String,
    /// Why (what matched).
    pub reason: String,
    /// The message's subject, for queries.
    pub subject: String,
}

/// Which errored messages an operation covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErroredFilter {
    /// One message.
    pub id: Option<String>,
    /// Received at or after (Unix seconds).
    pub since: Option<u64>,
    /// Received before (Unix seconds).
    pub until: Option<u64>,
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop took it.
    Delivered(String),
    /// Try again at `retry_at`.
    Deferred {
        /// Unix seconds.
        retry_at: u64,
        /// Why.
        reply: String,
    },
    /// Refused for good (a notification goes to the sender).
    Bounced(String),
}
/// The next hop a recipient is routed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// The internal mail server (`delivery.internal`).
    Internal,
    /// The way out (`delivery.external`).
    External,
    /// A host a policy rule hands the message off to.
    Handoff {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// A route name the store does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown next hop {0:?}")]
pub struct UnknownRoute(pub String);

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Internal => f.write_str("internal"),
            Route::External => f.write_str("external"),
            Route::Handoff { host, port } => write!(f, "handoff:{host}:{port}"),
        }
    }
}

impl std::str::FromStr for Route {
    type Err = UnknownRoute;

    fn from_str(s: &str) -> Result<Self, UnknownRoute> {
        match s {
            "internal" => Ok(Route::Internal),
            "external" => Ok(Route::External),
            _ => s
                .strip_prefix("handoff:")
                .and_then(|target| target.rsplit_once(':'))
                .and_then(|(host, port)| {
                    let port = port.parse().ok()?;
                    (!host.is_empty()).then(|| Route::Handoff {
                        host: host.to_string(),
                        port,
                    })
                })
                .ok_or_else(|| UnknownRoute(s.to_string())),
        }
    }
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Accepted, waiting for the policy loop.
    Received,
    /// Claimed by the policy loop.
    Processing,
    /// Decided: its recipients are being delivered (or wait, or are held).
    Queued,
    /// All its recipients went into transformed copies, which are messages of their own.
    Transformed,
    /// Done, and at least one recipient took it.
    Delivered,
    /// Done, and no recipient took it.
    Bounced,
    /// Deleted (by the policy, or by the administrator).
    Deleted,
}

/// Where one recipient of a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientState {
    /// Not decided yet.
    New,
    /// Routed, waiting for its first attempt.
    Pending,
    /// An attempt failed for now; it is tried again.
    Deferred,
    /// Waiting for a key (the errored queue).
    Errored,
    /// Held in a quarantine area.
    Quarantined,
    /// Went into a transformed copy, which carries it on.
    Split,
    /// The next hop took it.
    Delivered,
    /// Refused for good, or given up on.
    Bounced,
    /// Dropped by the policy or the administrator.
    Deleted,
}

/// A state name the store does not know (a database written by a newer Postern).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

macro_rules! state_names {
    ($t:ty { $($v:ident => $n:literal),+ $(,)? }) => {
        impl $t {
            /// The state's name, as the CLI and the console show it.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $n),+ }
            }
        }

        impl std::str::FromStr for $t {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s { $($n => Ok(Self::$v),)+ other => Err(UnknownState(other.to_string())) }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

state_names!(MessageState {
    Received => "received",
    Processing => "processing",
    Queued => "queued",
    Transformed => "transformed",
    Delivered => "delivered",
    Bounced => "bounced",
    Deleted => "deleted",
});

state_names!(RecipientState {
    New => "new",
    Pending => "pending",
    Deferred => "deferred",
    Errored => "errored",
    Quarantined => "quarantined",
    Split => "split",
    Delivered => "delivered",
    Bounced => "bounced",
    Deleted => "deleted",
});
