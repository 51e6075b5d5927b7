//! The policy as an administrator writes it (TOML), and its validation.
//!
//! A policy file holds expression lists, ordered rules, the two exception rules and the
//! notification templates. Parsing reads each rule on its own, so an error names the rule and
//! the field; [`Policy::validate`] checks what the types cannot (orders unique, lists known,
//! regexes compile, one terminal action per rule, templates parse).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::detect::Builtin;

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

/// What part of the message a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A named header field (`header = "X-PP-ENCRYPTED"`), decoded; every occurrence.
    Header,
    /// The subject, decoded.
    Subject,
    /// The body text: every text part decoded (transfer encoding and charset), HTML as text.
    Body,
    /// Attachment file names.
    AttachmentName,
    /// Attachment content types (`application/pdf`).
    AttachmentType,
    /// The text of attachments whose content is text (decoded).
    AttachmentContent,
    /// The message's size in bytes (`min`, `max`).
    Size,
    /// The number of envelope recipients (`min`, `max`).
    RecipientCount,
    /// The message is an encrypted email with a sealed message this gateway can read.
    Encrypted,
}

/// One condition of a rule. Text targets use an expression (a named `list`, or inline
/// `keywords`, `regex`, `builtin`); `size` and `recipient_count` use `min`/`max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// What is examined.
    pub on: Target,
    /// The header's name, for `on = "header"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A named expression list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// Inline keywords (an anonymous list, as in [`Expressions`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Whether the inline keywords match case-sensitively.
    #[serde(default, skip_serializing_if = "is_false")]
    pub case_sensitive: bool,
    /// Inline regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regex: Vec<String>,
    /// Inline built-in detectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builtin: Vec<String>,
    /// Occurrences needed of the inline expressions.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub threshold: u32,
    /// Lower bound (inclusive), for sizes and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// Upper bound (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// The condition holds when the test does not.
    #[serde(default, skip_serializing_if = "is_false")]
    pub not: bool,
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

/// Keywords, regular expressions and built-in detectors; the text matches when the number of
/// occurrences found reaches `threshold`. Lists and conditions carry these fields directly.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expressions {
    /// Literal words or phrases.
    pub keywords: Vec<String>,
    /// Whether keywords match case-sensitively (regexes say so themselves: `(?i)`).
    pub case_sensitive: bool,
    /// Regular expressions (Rust `regex` syntax).
    pub regex: Vec<String>,
    /// Built-in detectors with validation: `card_number`, `us_ssn`, `iban`.
    pub builtin: Vec<String>,
    /// Occurrences needed (at least 1).
    pub threshold: u32,
}

impl Expressions {
    fn is_empty(&self) -> bool {
        self.keywords.is_empty() && self.regex.is_empty() && self.builtin.is_empty()
    }
}

/// A named expression list, shared by rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// The name rules use.
    pub name: String,
    /// Literal words or phrases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Whether keywords match case-sensitively.
    #[serde(default, skip_serializing_if = "is_false")]
    pub case_sensitive: bool,
    /// Regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regex: Vec<String>,
    /// Built-in detectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builtin: Vec<String>,
    /// Occurrences needed.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub threshold: u32,
}

impl List {
    /// Its expressions.
    pub fn expr(&self) -> Expressions {
        Expressions {
            keywords: self.keywords.clone(),
            case_sensitive: self.case_sensitive,
            regex: self.regex.clone(),
            builtin: self.builtin.clone(),
            threshold: self.threshold,
        }
    }
}

impl Condition {
    /// Its inline expressions.
    pub fn expr(&self) -> Expressions {
        Expressions {
            keywords: self.keywords.clone(),
            case_sensitive: self.case_sensitive,
            regex: self.regex.clone(),
            builtin: self.builtin.clone(),
            threshold: self.threshold,
        }
    }
}

/// Who a notification goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Recipient {
    /// The envelope sender.
    Sender,
    /// The recipients the rule decided for.
    Recipients,
    /// The administrator address of the gateway.
    Admin,
    /// Any address.
    Address(String),
}

impl TryFrom<String> for Recipient {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "sender" => Ok(Recipient::Sender),
            "recipients" => Ok(Recipient::Recipients),
            "admin" => Ok(Recipient::Admin),
            a if is_address(a) => Ok(Recipient::Address(s)),
            _ => Err(format!(
                "{s:?} is neither sender, recipients, admin nor an email address"
            )),
        }
    }
}

impl From<Recipient> for String {
    fn from(r: Recipient) -> String {
        match r {
            Recipient::Sender => "sender".into(),
            Recipient::Recipients => "recipients".into(),
            Recipient::Admin => "admin".into(),
            Recipient::Address(a) => a,
        }
    }
}

/// A plausible `local@domain` (the delivery path checks further).
pub fn is_address(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && domain.contains('.')
                && !a
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        }
        None => false,
    }
}

/// What a rule does. The first eight are terminal (the first matching rule with one decides);
/// the rest accumulate from every matching rule up to the deciding one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Deliver as it is.
    Pass,
    /// Encrypt to each recipient (an encrypted email passes as it is).
    Encrypt,
    /// Decrypt for recipients it is sealed to.
    Decrypt,
    /// Decrypt, run the policy on the plain message (its quarantine and delete decisions
    /// apply), and encrypt again for the others, signed by the default sender.
    DecryptScanReencrypt,
    /// Hold in a quarantine area.
    Quarantine {
        /// The area's name.
        area: String,
    },
    /// Drop (logged).
    Delete,
    /// Deliver to this SMTP server instead of the normal next hop.
    Handoff {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// Deliver to these addresses instead of the recipients.
    ChangeRecipient {
        /// The new recipients.
        to: Vec<String>,
    },
    /// Add a header field to what is delivered.
    AddHeader {
        /// Field name.
        name: String,
        /// Field value.
        value: String,
    },
    /// Put a tag in front of the subject (`[SECURE]`).
    TagSubject {
        /// The tag.
        tag: String,
    },
    /// Send a notification made from a template.
    Notify {
        /// Who gets it.
        to: Recipient,
        /// The template's name.
        template: String,
    },
    /// Deliver a copy, as received, to an archive address.
    Archive {
        /// The archive's address.
        to: String,
    },
}

impl Action {
    /// Whether this action decides the message (ends the rule walk).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Action::Pass
                | Action::Encrypt
                | Action::Decrypt
                | Action::DecryptScanReencrypt
                | Action::Quarantine { .. }
                | Action::Delete
                | Action::Handoff { .. }
                | Action::ChangeRecipient { .. }
        )
    }

    /// A short description for traces and notes.
    pub fn describe(&self) -> String {
        match self {
            Action::Pass => "pass".into(),
            Action::Encrypt => "encrypt".into(),
            Action::Decrypt => "decrypt".into(),
            Action::DecryptScanReencrypt => "decrypt, scan and encrypt again".into(),
            Action::Quarantine { area } => format!("quarantine to {area}"),
            Action::Delete => "delete".into(),
            Action::Handoff { host, port } => format!("hand off to {host}:{port}"),
            Action::ChangeRecipient { to } => format!("change recipient to {}", to.join(", ")),
            Action::AddHeader { name, value } => format!("add header {name}: {value}"),
            Action::TagSubject { tag } => format!("tag subject {tag:?}"),
            Action::Notify { to, template } => {
                format!("notify {} ({template})", String::from(to.clone()))
            }
            Action::Archive { to } => format!("archive a copy to {to}"),
        }
    }
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

    fn place(&self) -> String {
        format!("rule {} {:?}", self.order, self.name)
    }
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
pub const DEFAULT_POLICY: &str = include_str!("../default-policy.toml");

impl Policy {
    /// The default policy. (The embedded file is tested; the caller refuses to start rather
    /// than fall back to a policy that might let mail out in clear.)
    pub fn default_policy() -> Result<Policy, PolicyError> {
        Policy::from_toml(DEFAULT_POLICY)
    }

    /// Parses and validates a policy file. Each rule is read on its own, so an error names it.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let value: toml::Table = toml::from_str(text)
            .map_err(|e| PolicyError::new("policy", "syntax", one_line(&e.to_string())))?;
        let mut policy = Policy::default();
        for (key, item) in value {
            match key.as_str() {
                "rule" => {
                    let items = item.as_array().cloned().ok_or_else(|| {
                        PolicyError::new("policy", "rule", "must be an array of tables [[rule]]")
                    })?;
                    for (i, item) in items.into_iter().enumerate() {
                        let place = describe_item(&item, "rule", i);
                        check_parts::<Action>(&place, &item, "actions")?;
                        check_parts::<Condition>(&place, &item, "conditions")?;
                        let rule: Rule = item
                            .try_into()
                            .map_err(|e: toml::de::Error| field_error(&place, &e))?;
                        policy.rules.push(rule);
                    }
                }
                "list" => {
                    let items = item.as_array().cloned().ok_or_else(|| {
                        PolicyError::new("policy", "list", "must be an array of tables [[list]]")
                    })?;
                    for (i, item) in items.into_iter().enumerate() {
                        let place = describe_item(&item, "list", i);
                        let list: List = item
                            .try_into()
                            .map_err(|e: toml::de::Error| field_error(&place, &e))?;
                        policy.lists.push(list);
                    }
                }
                "exceptions" => {
                    policy.exceptions = item
                        .try_into()
                        .map_err(|e: toml::de::Error| field_error("exceptions", &e))?;
                }
                "templates" => {
                    let table = item.as_table().cloned().ok_or_else(|| {
                        PolicyError::new("policy", "templates", "must be a table")
                    })?;
                    for (name, t) in table {
                        let place = format!("template {name:?}");
                        let t: Template = t
                            .try_into()
                            .map_err(|e: toml::de::Error| field_error(&place, &e))?;
                        policy.templates.insert(name, t);
                    }
                }
                other => {
                    return Err(PolicyError::new(
                        "policy",
                        other,
                        "unknown section (known: rule, list, exceptions, templates)",
                    ));
                }
            }
        }
        policy.rules.sort_by_key(|r| r.order);
        policy.validate()?;
        Ok(policy)
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

    /// Checks everything the types do not.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut names = HashSet::new();
        for list in &self.lists {
            let place = format!("list {:?}", list.name);
            if list.name.trim().is_empty() {
                return Err(PolicyError::new(&place, "name", "must not be empty"));
            }
            if !names.insert(list.name.as_str()) {
                return Err(PolicyError::new(&place, "name", "is used by two lists"));
            }
            if list.expr().is_empty() {
                return Err(PolicyError::new(
                    &place,
                    "keywords",
                    "a list needs keywords, regex or builtin entries",
                ));
            }
            check_expressions(&place, "", &list.expr())?;
        }
        let mut orders = HashSet::new();
        for rule in &self.rules {
            let place = rule.place();
            if rule.name.trim().is_empty() {
                return Err(PolicyError::new(&place, "name", "must not be empty"));
            }
            if !orders.insert(rule.order) {
                return Err(PolicyError::new(
                    &place,
                    "order",
                    "another rule has the same order number",
                ));
            }
            for (i, p) in rule.senders.iter().enumerate() {
                crate::pattern::Pattern::parse(p)
                    .map_err(|e| PolicyError::new(&place, format!("senders[{i}]"), e))?;
            }
            for (i, p) in rule.recipients.iter().enumerate() {
                crate::pattern::Pattern::parse(p)
                    .map_err(|e| PolicyError::new(&place, format!("recipients[{i}]"), e))?;
            }
            for (i, c) in rule.conditions.iter().enumerate() {
                self.check_condition(&place, i, c, &names)?;
            }
            self.check_actions(&place, "actions", &rule.actions)?;
        }
        self.check_actions("exceptions", "encryption", &self.exceptions.encryption)?;
        self.check_actions("exceptions", "decryption", &self.exceptions.decryption)?;
        for (name, t) in &self.templates {
            let place = format!("template {name:?}");
            crate::templates::check(t).map_err(|(field, e)| PolicyError::new(&place, field, e))?;
        }
        Ok(())
    }

    fn check_condition(
        &self,
        place: &str,
        i: usize,
        c: &Condition,
        lists: &HashSet<&str>,
    ) -> Result<(), PolicyError> {
        let field = |f: &str| format!("conditions[{i}].{f}");
        let textual = !matches!(
            c.on,
            Target::Size | Target::RecipientCount | Target::Encrypted
        );
        match (c.on, &c.header) {
            (Target::Header, None) => {
                return Err(PolicyError::new(
                    place,
                    field("header"),
                    "on = \"header\" needs the header's name",
                ));
            }
            (Target::Header, Some(h))
                if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':') =>
            {
                return Err(PolicyError::new(
                    place,
                    field("header"),
                    format!("{h:?} is not a header field name"),
                ));
            }
            (Target::Header, Some(_)) => {}
            (_, Some(_)) => {
                return Err(PolicyError::new(
                    place,
                    field("header"),
                    "only for on = \"header\"",
                ));
            }
            _ => {}
        }
        if textual {
            match (&c.list, c.expr().is_empty()) {
                (None, true) => {
                    return Err(PolicyError::new(
                        place,
                        field("list"),
                        "a text condition needs a list, keywords, regex or builtin",
                    ));
                }
                (Some(_), false) => {
                    return Err(PolicyError::new(
                        place,
                        field("list"),
                        "use either a named list or inline expressions, not both",
                    ));
                }
                (Some(l), true) if !lists.contains(l.as_str()) => {
                    return Err(PolicyError::new(
                        place,
                        field("list"),
                        format!("no list is called {l:?}"),
                    ));
                }
                _ => {}
            }
            check_expressions(place, &format!("conditions[{i}]."), &c.expr())?;
            if c.min.is_some() || c.max.is_some() {
                return Err(PolicyError::new(
                    place,
                    field("min"),
                    "min and max are for size and recipient_count",
                ));
            }
        } else {
            if c.list.is_some() || !c.expr().is_empty() {
                return Err(PolicyError::new(
                    place,
                    field("list"),
                    "expressions are for text conditions",
                ));
            }
            let bounded = c.min.is_some() || c.max.is_some();
            if c.on == Target::Encrypted && bounded {
                return Err(PolicyError::new(
                    place,
                    field("min"),
                    "on = \"encrypted\" takes no bounds",
                ));
            }
            if c.on != Target::Encrypted && !bounded {
                return Err(PolicyError::new(
                    place,
                    field("min"),
                    "needs min, max or both",
                ));
            }
            if let (Some(lo), Some(hi)) = (c.min, c.max)
                && lo > hi
            {
                return Err(PolicyError::new(place, field("max"), "is below min"));
            }
        }
        Ok(())
    }

    fn check_actions(
        &self,
        place: &str,
        field: &str,
        actions: &[Action],
    ) -> Result<(), PolicyError> {
        if actions.is_empty() {
            return Err(PolicyError::new(place, field, "needs at least one action"));
        }
        let terminal = actions.iter().filter(|a| a.is_terminal()).count();
        if terminal > 1 {
            return Err(PolicyError::new(
                place,
                field,
                "has more than one terminal action (pass, encrypt, decrypt, decrypt_scan_reencrypt, quarantine, delete, handoff, change_recipient)",
            ));
        }
        if place == "exceptions"
            && actions.iter().any(|a| {
                matches!(
                    a,
                    Action::Encrypt | Action::Decrypt | Action::DecryptScanReencrypt
                )
            })
        {
            // What failed was exactly that; trying it again here could only fail again.
            return Err(PolicyError::new(
                place,
                field,
                "an exception rule cannot encrypt or decrypt (use quarantine, delete, pass, handoff or change_recipient)",
            ));
        }
        if place == "exceptions" && terminal == 0 {
            return Err(PolicyError::new(
                place,
                field,
                "an exception rule needs a terminal action (quarantine, delete, pass, handoff, change_recipient)",
            ));
        }
        for (i, a) in actions.iter().enumerate() {
            let f = |name: &str| format!("{field}[{i}].{name}");
            match a {
                Action::Quarantine { area } if !is_area_name(area) => {
                    return Err(PolicyError::new(
                        place,
                        f("area"),
                        format!(
                            "{area:?}: an area name is 1 to 64 letters, digits, '_', '-' or '.'"
                        ),
                    ));
                }
                Action::Handoff { host, port } => {
                    if host.trim().is_empty() || host.contains(char::is_whitespace) {
                        return Err(PolicyError::new(
                            place,
                            f("host"),
                            "must be a host name or address",
                        ));
                    }
                    if *port == 0 {
                        return Err(PolicyError::new(place, f("port"), "must be 1 to 65535"));
                    }
                }
                Action::ChangeRecipient { to } => {
                    if to.is_empty() {
                        return Err(PolicyError::new(
                            place,
                            f("to"),
                            "needs at least one address",
                        ));
                    }
                    if let Some(bad) = to.iter().find(|a| !is_address(a)) {
                        return Err(PolicyError::new(
                            place,
                            f("to"),
                            format!("{bad:?} is not an email address"),
                        ));
                    }
                }
                Action::Archive { to } if !is_address(to) => {
                    return Err(PolicyError::new(
                        place,
                        f("to"),
                        format!("{to:?} is not an email address"),
                    ));
                }
                Action::AddHeader { name, value } => {
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                        return Err(PolicyError::new(
                            place,
                            f("name"),
                            format!("{name:?} is not a header field name"),
                        ));
                    }
                    if value.contains(['\r', '\n']) {
                        return Err(PolicyError::new(place, f("value"), "must be one line"));
                    }
                }
                Action::TagSubject { tag }
                    if tag.contains(['\r', '\n']) || tag.trim().is_empty() =>
                {
                    return Err(PolicyError::new(
                        place,
                        f("tag"),
                        "must be one non-empty line",
                    ));
                }
                Action::Notify { template, .. } if self.template(template).is_none() => {
                    return Err(PolicyError::new(
                        place,
                        f("template"),
                        format!(
                            "no template is called {template:?} (built-in: {})",
                            crate::templates::NAMES.join(", ")
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether `name` can name a quarantine area.
pub fn is_area_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn check_expressions(place: &str, prefix: &str, e: &Expressions) -> Result<(), PolicyError> {
    if e.threshold == 0 {
        return Err(PolicyError::new(
            place,
            format!("{prefix}threshold"),
            "must be at least 1",
        ));
    }
    if let Some(k) = e.keywords.iter().find(|k| k.is_empty()) {
        return Err(PolicyError::new(
            place,
            format!("{prefix}keywords"),
            format!("{k:?}: a keyword must not be empty"),
        ));
    }
    for (i, r) in e.regex.iter().enumerate() {
        crate::eval::build_regex(r).map_err(|err| {
            PolicyError::new(place, format!("{prefix}regex[{i}]"), one_line(&err))
        })?;
    }
    for (i, b) in e.builtin.iter().enumerate() {
        if Builtin::from_name(b).is_none() {
            let known: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
            return Err(PolicyError::new(
                place,
                format!("{prefix}builtin[{i}]"),
                format!("{b:?} is not a built-in list (known: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

/// `rule 2 "Name"` from a rule's raw table, for errors found before it parses.
fn describe_item(item: &toml::Value, kind: &str, index: usize) -> String {
    let name = item.get("name").and_then(|v| v.as_str());
    match (kind, item.get("order").and_then(|v| v.as_integer()), name) {
        ("rule", Some(o), Some(n)) => format!("rule {o} {n:?}"),
        ("rule", Some(o), None) => format!("rule {o}"),
        (_, _, Some(n)) => format!("{kind} {n:?}"),
        _ => format!("{kind} #{} in the file", index + 1),
    }
}

/// Reads each element of `item[key]` on its own, so that an error names its index.
fn check_parts<T: serde::de::DeserializeOwned>(
    place: &str,
    item: &toml::Value,
    key: &str,
) -> Result<(), PolicyError> {
    let Some(parts) = item.get(key).and_then(|v| v.as_array()) else {
        return Ok(());
    };
    for (i, part) in parts.iter().enumerate() {
        if let Err(e) = part.clone().try_into::<T>() {
            let inner = field_error(place, &e);
            let field = match inner.field.as_str() {
                "value" if inner.message.contains("variant") => format!("{key}[{i}].do"),
                "value" => format!("{key}[{i}]"),
                f => format!("{key}[{i}].{f}"),
            };
            return Err(PolicyError::new(place, field, inner.message));
        }
    }
    Ok(())
}

/// A serde error as a field error: the field when serde names one.
fn field_error(place: &str, e: &toml::de::Error) -> PolicyError {
    let message = one_line(e.message());
    let field = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .unwrap_or("value")
        .to_string();
    PolicyError::new(place, field, message)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
