//! Expressions made ready to count: keywords, regexes and built-in detectors over the texts of a
//! message, stopping at the threshold, with detector counts shared between rules.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;

use regex::Regex;

use crate::detect::Builtin;
use crate::model::Expressions;

/// Compiles a regular expression with limits, so that a policy cannot make the gateway spend
/// unbounded memory on one.
pub fn build_regex(text: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(text)
        .size_limit(1 << 20)
        .dfa_size_limit(4 << 20)
        .build()
        .map_err(|e| e.to_string())
}

/// An expression list ready to count matches.
#[derive(Debug)]
pub struct Matcher {
    keywords: Vec<(String, memchr::memmem::Finder<'static>)>,
    case_sensitive: bool,
    regexes: Vec<Regex>,
    builtins: Vec<Builtin>,
    pub(crate) threshold: usize,
    pub(crate) label: String,
}

impl Matcher {
    pub(crate) fn new(e: &Expressions, label: String) -> Result<Matcher, String> {
        Ok(Matcher {
            keywords: e
                .keywords
                .iter()
                .map(|k| {
                    let k = if e.case_sensitive {
                        k.clone()
                    } else {
                        k.to_lowercase()
                    };
                    let finder = memchr::memmem::Finder::new(k.as_bytes()).into_owned();
                    (k, finder)
                })
                .collect(),
            case_sensitive: e.case_sensitive,
            regexes: e
                .regex
                .iter()
                .map(|r| build_regex(r))
                .collect::<Result<_, _>>()?,
            builtins: e
                .builtin
                .iter()
                .filter_map(|b| Builtin::from_name(b))
                .collect(),
            threshold: e.threshold.max(1) as usize,
            label,
        })
    }

    /// Counts occurrences in `texts`, stopping at the threshold; returns the count and what
    /// was found (names of keywords and detectors, never the matched text: it may be a card
    /// number, and traces end up in logs).
    pub(crate) fn count<'t>(&self, texts: &[Text<'t>], explain: bool) -> (usize, Vec<String>) {
        let mut total = 0;
        let mut found: Vec<String> = Vec::new();
        let mut note = |what: &dyn Fn() -> String, n: usize, total: &mut usize| {
            if n > 0 {
                *total += n;
                if explain {
                    found.push(if n == 1 {
                        what()
                    } else {
                        format!("{} ×{n}", what())
                    });
                }
            }
        };
        for t in texts {
            for (k, finder) in &self.keywords {
                if total >= self.threshold {
                    break;
                }
                let hay = if self.case_sensitive {
                    t.raw
                } else {
                    t.lower()
                };
                let n = finder
                    .find_iter(hay.as_bytes())
                    .take(self.threshold - total)
                    .count();
                note(&|| format!("keyword {k:?}"), n, &mut total);
            }
            for r in &self.regexes {
                if total >= self.threshold {
                    break;
                }
                let n = r.find_iter(t.raw).take(self.threshold - total).count();
                note(&|| format!("regex {:?}", r.as_str()), n, &mut total);
            }
            for b in &self.builtins {
                if total >= self.threshold {
                    break;
                }
                let n = t.builtin(*b).min(self.threshold - total);
                note(&|| b.name().to_string(), n, &mut total);
            }
        }
        (total, found)
    }
}

/// Built-in counts already made, by (text, detector): many rules scan the same body for the
/// same numbers, and a detector reads every byte.
pub(crate) type Counted = RefCell<HashMap<(usize, usize, Builtin), usize>>;

/// A text and, made when first needed, its lower-case form.
pub(crate) struct Text<'t> {
    pub(crate) raw: &'t str,
    pub(crate) lower: &'t OnceCell<String>,
    pub(crate) counted: &'t Counted,
}

impl<'t> Text<'t> {
    fn lower(&self) -> &'t str {
        self.lower.get_or_init(|| self.raw.to_lowercase())
    }

    /// How many numbers `b` finds in the whole text (counted once per evaluation).
    fn builtin(&self, b: Builtin) -> usize {
        let key = (self.raw.as_ptr() as usize, self.raw.len(), b);
        if let Some(n) = self.counted.borrow().get(&key) {
            return *n;
        }
        let n = b.count(self.raw, usize::MAX);
        self.counted.borrow_mut().insert(key, n);
        n
    }
}
