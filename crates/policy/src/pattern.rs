//! Sender and recipient patterns: `anyone` (or `*`), an address, a glob such as `*@corp.example`
//! or `*@*.corp.example`, or a regular expression written `re:...`. Matching ignores case.

use regex::Regex;

/// A compiled address pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Matches every address, the null sender included.
    Anyone,
    /// One address.
    Exact(String),
    /// A glob or a regular expression.
    Regex(Regex),
}

impl Pattern {
    /// Reads a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty pattern matches nothing; use \"anyone\"".into());
        }
        if t == "*" || t.eq_ignore_ascii_case("anyone") {
            return Ok(Pattern::Anyone);
        }
        if let Some(re) = t.strip_prefix("re:") {
            return crate::eval::build_regex(&format!("(?i){re}"))
                .map(Pattern::Regex)
                .map_err(|e| format!("{t:?}: {e}"));
        }
        if t.contains('*') {
            let mut re = String::from("(?i)^");
            for (i, piece) in t.split('*').enumerate() {
                if i > 0 {
                    re.push_str(".*");
                }
                re.push_str(&regex::escape(piece));
            }
            re.push('$');
            return crate::eval::build_regex(&re)
                .map(Pattern::Regex)
                .map_err(|e| format!("{t:?}: {e}"));
        }
        if !t.contains('@') {
            return Err(format!(
                "{t:?} is not an address; write *@{t} for a whole domain"
            ));
        }
        Ok(Pattern::Exact(t.to_lowercase()))
    }

    /// Whether `address` (an envelope address; empty for the null sender) matches.
    pub fn matches(&self, address: &str) -> bool {
        match self {
            Pattern::Anyone => true,
            Pattern::Exact(a) => address.eq_ignore_ascii_case(a) || address.to_lowercase() == *a,
            Pattern::Regex(r) => r.is_match(address),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn patterns_match_as_an_administrator_expects() {
        let cases: &[(&str, &str, bool)] = &[
            ("anyone", "", true),
            ("*", "bob@x.example", true),
            ("*@corp.example", "Alice@CORP.example", true),
            ("*@corp.example", "alice@sub.corp.example", false),
            ("*@corp.example", "alice@corp.example.evil", false),
            ("*@*.corp.example", "alice@sub.corp.example", true),
            ("alice@corp.example", "ALICE@corp.example", true),
            ("alice@corp.example", "alice2@corp.example", false),
            ("re:^(alice|bob)@corp\\.example$", "Bob@corp.example", true),
            (
                "re:^(alice|bob)@corp\\.example$",
                "carol@corp.example",
                false,
            ),
        ];
        for (p, a, want) in cases {
            assert_eq!(Pattern::parse(p).unwrap().matches(a), *want, "{p} vs {a}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        assert!(Pattern::parse("").unwrap_err().contains("anyone"));
        assert!(
            Pattern::parse("corp.example")
                .unwrap_err()
                .contains("*@corp.example")
        );
        assert!(Pattern::parse("re:(").is_err());
    }
}
