//! Expressions (keywords, regular expressions, built-in detectors with a threshold) and the named
//! lists that let several rules share one.

use serde::{Deserialize, Serialize};

use super::{is_false, is_one, one};

/// Keywords, regular expressions and built-in detectors; the text matches when the number of
/// occurrences found reaches `threshold`. Lists and text conditions carry these fields directly.
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
    /// Whether it has no keyword, regex or detector.
    pub fn is_empty(&self) -> bool {
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
