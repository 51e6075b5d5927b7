//! What a condition or rule can answer when a limit cut the scan of a message: yes, no, or
//! unsure because the answer depends on what was not read. Content found stays found (more text
//! only adds matches), so only "not found (enough)" becomes unsure, and a cut can never make
//! Postern less careful: an unsure rule applies when it would hold the message back or encrypt
//! it, and does not apply otherwise.

use crate::model::{Action, Rule};

/// A three-valued answer (Kleene logic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Yes,
    No,
    /// The part of the message that was read does not decide it.
    Unsure,
}

impl Verdict {
    pub(crate) fn from_bool(b: bool) -> Verdict {
        if b { Verdict::Yes } else { Verdict::No }
    }

    /// The answer of the negated test: unsure stays unsure.
    pub(crate) fn negate(self, not: bool) -> Verdict {
        match (self, not) {
            (Verdict::Yes, true) => Verdict::No,
            (Verdict::No, true) => Verdict::Yes,
            (v, _) => v,
        }
    }
}

/// Whether a rule whose conditions are unsure applies: yes when its deciding action keeps the
/// content from leaving as it is (quarantine, delete, encrypt), no for every other rule (what
/// was read decides, and a rule that lets mail through more freely is not applied on a guess).
pub(crate) fn applies_when_unsure(rule: &Rule) -> bool {
    matches!(
        rule.terminal(),
        Some(Action::Quarantine { .. } | Action::Delete | Action::Encrypt)
    )
}
