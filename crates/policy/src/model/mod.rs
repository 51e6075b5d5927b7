//! The policy as an administrator writes it (TOML): expression lists, ordered rules with their
//! conditions and actions, the two exception rules and the notification templates.
//!
//! Reading a file ([`Policy::from_toml`], in `load`) takes each rule, condition and action on its
//! own, so that an error names the rule and the field as written; [`Policy::validate`] (in
//! `validate`) checks what the types cannot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod action;
mod condition;
mod list;
mod load;
mod rule;
mod validate;

pub use action::{Action, Recipient, is_address, is_area_name};
pub use condition::{Bounds, Condition, Target, TextTest};
pub use list::{Expressions, List};
pub use rule::{Direction, Match, Rule};

/// Why a policy was refused: where (a rule, a list, a template) and which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {field}: {message}")]
pub struct PolicyError {
    /// `rule 3 "Encrypt card numbers"`, `list "cards"`, `template "quarantined"`, `policy`.
    pub place: String,
    /// The field, e.g. `conditions[1].regex`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl PolicyError {
    fn new(place: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            place: place.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A notification template (minijinja). Variables: `sender`, `recipients`, `subject`, `rule`,
/// `area`, `reason`, `queue_id`, `hostname`, `date`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The notification's subject.
    pub subject: String,
    /// Its plain-text body.
    pub body: String,
}

/// What happens when encryption or decryption fails in a way no retry will fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exceptions {
    /// "Encryption Exception": a key refused, an address that cannot be encrypted to.
    #[serde(default = "default_exception")]
    pub encryption: Vec<Action>,
    /// "Unable to decrypt": a damaged sealed message, a signature that does not verify.
    #[serde(default = "default_exception")]
    pub decryption: Vec<Action>,
}

/// The seed's default: quarantine to `Encryption_Quarantine` and tell the original recipient.
fn default_exception() -> Vec<Action> {
    vec![
        Action::Quarantine {
            area: "Encryption_Quarantine".into(),
        },
        Action::Notify {
            to: Recipient::Recipients,
            template: "exception".into(),
        },
    ]
}

impl Default for Exceptions {
    fn default() -> Self {
        Exceptions {
            encryption: default_exception(),
            decryption: default_exception(),
        }
    }
}

/// A whole policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Policy {
    /// Named expression lists.
    #[serde(default, rename = "list", skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<List>,
    /// The rules (kept sorted by order).
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// The exception rules.
    #[serde(default)]
    pub exceptions: Exceptions,
    /// Notification templates by name (the built-in ones unless replaced).
    #[serde(default)]
    pub templates: BTreeMap<String, Template>,
}

/// The policy used when none was imported: the seed's two built-in policies and delivery of
/// everything else.
pub const DEFAULT_POLICY: &str = include_str!("../../default-policy.toml");

impl Policy {
    /// The default policy. (The embedded file is tested; the caller refuses to start rather
    /// than fall back to a policy that might let mail out in clear.)
    pub fn default_policy() -> Result<Policy, PolicyError> {
        Policy::from_toml(DEFAULT_POLICY)
    }

    /// The policy as a file `from_toml` reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The template called `name`: the policy's own, else the built-in one.
    pub fn template(&self, name: &str) -> Option<Template> {
        self.templates
            .get(name)
            .cloned()
            .or_else(|| crate::templates::builtin(name))
    }

    /// The quarantine areas the rules and exception rules name, each once, in order.
    pub fn areas(&self) -> Vec<&str> {
        let mut areas: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|r| &r.actions)
            .chain(&self.exceptions.encryption)
            .chain(&self.exceptions.decryption)
            .filter_map(|a| match a {
                Action::Quarantine { area } => Some(area.as_str()),
                _ => None,
            })
            .collect();
        areas.sort_unstable();
        areas.dedup();
        areas
    }
}
