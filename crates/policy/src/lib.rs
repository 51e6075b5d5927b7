//! Postern's content policy: ordered rules with conditions on the message and actions, the
//! two exception rules, expression lists with validated built-in detectors, and notification
//! templates. Pure: it reads bytes given to it and returns decisions, so it can be tested and
//! dry-run (`postern policy test`) exactly as the gateway runs it.
//!
//! A policy is a TOML file ([`Policy::from_toml`]); [`Compiled::evaluate`] decides for each
//! recipient: the first matching rule with a terminal action decides, non-terminal actions of
//! the matching rules before it accumulate, and recipients decided alike form one group.

pub mod detect;
pub mod eval;
pub mod limits;
mod matcher;
pub mod message;
pub mod model;
pub mod pattern;
pub mod templates;
mod verdict;

pub use detect::Builtin;
pub use eval::{Compiled, Decided, Evaluation, Facts, Step, is_internal};
pub use limits::{Cut, Limits};
pub use message::{Attachment, MessageView};
pub use model::{
    Action, Bounds, Condition, Direction, Exceptions, List, Match, Policy, PolicyError, Recipient,
    Rule, Target, Template, TextTest, is_area_name,
};
