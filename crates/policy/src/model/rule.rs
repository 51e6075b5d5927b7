//! Rules: which recipients' copies a rule applies to, its conditions and its actions.

use serde::{Deserialize, Serialize};

use super::{Action, Condition, yes};

/// Which way a recipient's copy travels: to one of this gateway's users or out of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// To a recipient in an internal domain.
    Inbound,
    /// To a recipient outside the internal domains.
    Outbound,
    /// Either.
    #[default]
    Any,
}

/// Whether all or any of a rule's conditions must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// Every condition (and a rule with none always matches).
    #[default]
    All,
    /// At least one condition.
    Any,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Rules are evaluated by ascending order number.
    pub order: u32,
    /// Shown in traces, notes, the quarantine and notifications.
    pub name: String,
    /// A disabled rule is skipped.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Which recipients' copies it applies to.
    #[serde(default)]
    pub direction: Direction,
    /// Envelope sender patterns; empty means anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<String>,
    /// Recipient patterns; empty means anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// All or any of the conditions.
    #[serde(default, rename = "match")]
    pub match_: Match,
    /// Conditions on the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What it does.
    pub actions: Vec<Action>,
}

impl Rule {
    /// The rule's terminal action, if it has one.
    pub fn terminal(&self) -> Option<&Action> {
        self.actions.iter().find(|a| a.is_terminal())
    }

    pub(crate) fn place(&self) -> String {
        format!("rule {} {:?}", self.order, self.name)
    }
}
