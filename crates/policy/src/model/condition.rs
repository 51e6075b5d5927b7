//! Conditions: what part of the message a rule looks at, and the test made there. Each kind of
//! condition (`on = "..."`) is a variant holding only the fields that kind takes, so a field
//! written for another kind is refused by name when the file is read.

use serde::{Deserialize, Serialize};

use super::{Expressions, is_false, is_one, one};

/// What part of the message a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A named header field, decoded; every occurrence.
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
    /// The message's size in bytes.
    Size,
    /// The number of envelope recipients.
    RecipientCount,
    /// The message is an encrypted email with a sealed message this gateway can read.
    Encrypted,
}

impl Target {
    /// Whether the target is past the header section (the body or attachments): a scan cut
    /// short may not have read all of it.
    pub fn is_content(self) -> bool {
        matches!(
            self,
            Target::Body
                | Target::AttachmentName
                | Target::AttachmentType
                | Target::AttachmentContent
        )
    }
}

/// One condition of a rule, as the policy file writes it: `on` names the kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// A named header field (`header = "X-PP-ENCRYPTED"`), decoded; every occurrence.
    Header {
        /// The header field's name (any case).
        header: String,
        /// The test on its values.
        #[serde(flatten)]
        test: TextTest,
    },
    /// The subject, decoded.
    Subject(TextTest),
    /// The body text: every text part decoded (transfer encoding and charset), HTML as text.
    Body(TextTest),
    /// Attachment file names.
    AttachmentName(TextTest),
    /// Attachment content types (`application/pdf`).
    AttachmentType(TextTest),
    /// The text of attachments whose content is text (decoded).
    AttachmentContent(TextTest),
    /// The message's size in bytes.
    Size(Bounds),
    /// The number of envelope recipients.
    RecipientCount(Bounds),
    /// The message is an encrypted email with a sealed message this gateway can read.
    Encrypted {
        /// The condition holds when the message is not one.
        #[serde(default, skip_serializing_if = "is_false")]
        not: bool,
    },
}

/// The test of a text condition: a named `list`, or inline `keywords`, `regex` and `builtin`
/// (validation refuses both and neither).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTest {
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
    /// The condition holds when the text does not match.
    #[serde(default, skip_serializing_if = "is_false")]
    pub not: bool,
}

impl TextTest {
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

/// The test of a number (`size`, `recipient_count`): inclusive bounds, at least one given
/// (validation checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// Lower bound (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// Upper bound (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// The condition holds when the number is out of bounds.
    #[serde(default, skip_serializing_if = "is_false")]
    pub not: bool,
}

impl Bounds {
    /// Whether `n` is within the bounds (`not` aside).
    pub fn contains(&self, n: u64) -> bool {
        self.min.is_none_or(|lo| n >= lo) && self.max.is_none_or(|hi| n <= hi)
    }
}

impl Condition {
    /// What is examined.
    pub fn target(&self) -> Target {
        match self {
            Condition::Header { .. } => Target::Header,
            Condition::Subject(_) => Target::Subject,
            Condition::Body(_) => Target::Body,
            Condition::AttachmentName(_) => Target::AttachmentName,
            Condition::AttachmentType(_) => Target::AttachmentType,
            Condition::AttachmentContent(_) => Target::AttachmentContent,
            Condition::Size(_) => Target::Size,
            Condition::RecipientCount(_) => Target::RecipientCount,
            Condition::Encrypted { .. } => Target::Encrypted,
        }
    }

    /// The test of a text condition.
    pub fn text(&self) -> Option<&TextTest> {
        match self {
            Condition::Header { test, .. }
            | Condition::Subject(test)
            | Condition::Body(test)
            | Condition::AttachmentName(test)
            | Condition::AttachmentType(test)
            | Condition::AttachmentContent(test) => Some(test),
            Condition::Size(_) | Condition::RecipientCount(_) | Condition::Encrypted { .. } => None,
        }
    }

    /// The header's name, for `on = "header"`.
    pub fn header(&self) -> Option<&str> {
        match self {
            Condition::Header { header, .. } => Some(header),
            _ => None,
        }
    }

    /// The bounds of a `size` or `recipient_count` condition.
    pub fn bounds(&self) -> Option<&Bounds> {
        match self {
            Condition::Size(b) | Condition::RecipientCount(b) => Some(b),
            _ => None,
        }
    }

    /// The named list a text condition uses.
    pub fn list(&self) -> Option<&str> {
        self.text().and_then(|t| t.list.as_deref())
    }

    /// Whether the condition holds when its test does not (`not = true`).
    pub fn negated(&self) -> bool {
        match self {
            Condition::Size(b) | Condition::RecipientCount(b) => b.not,
            Condition::Encrypted { not } => *not,
            _ => self.text().is_some_and(|t| t.not),
        }
    }

    /// Its inline expressions (none for conditions on numbers and on encryption).
    pub fn expr(&self) -> Expressions {
        self.text().map(TextTest::expr).unwrap_or_default()
    }
}
