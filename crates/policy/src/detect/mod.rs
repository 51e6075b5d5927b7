//! Built-in detectors for sensitive numbers (payment cards, US SSNs, IBANs)
//! in decoded text: the list of them here, one file per detector, and the
//! scanning they share in `scan`.
//!
//! Policies run many rules over large bodies, so every detector is a single
//! linear pass over the bytes with a fixed-size stack buffer per candidate:
//! no regex engine and no allocation. Each candidate must also pass the
//! number's own validation (Luhn, SSA issuance rules, ISO 13616 mod-97) so
//! that order numbers, phone numbers and the like do not trip a policy.
//!
//! Text is scanned as bytes; any non-ASCII byte is treated like punctuation,
//! i.e. it is a boundary and never part of a number.
//!
//! Boundary rule shared by all detectors: a candidate must not be glued to an
//! ASCII letter or digit on either side, nor joined to one by a dash
//! (`x-4111…`, `…1111-2`), because then it is part of a longer identifier.

mod card;
mod iban;
mod scan;
mod ssn;

pub use card::luhn_valid;
pub use iban::iban_valid;

use card::card_at;
use iban::iban_at;
use scan::scan;
use ssn::ssn_at;

/// A built-in expression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// Payment card numbers (PAN), 13–19 digits, Luhn-checked.
    CardNumber,
    /// US Social Security Numbers written `AAA-GG-SSSS` or `AAA GG SSSS`.
    UsSsn,
    /// International Bank Account Numbers, mod-97 checked.
    Iban,
}

impl Builtin {
    /// Every built-in, so docs and policy validation can list them.
    pub const ALL: [Builtin; 3] = [Builtin::CardNumber, Builtin::UsSsn, Builtin::Iban];

    /// Stable name used in policy files; changing it breaks existing policies.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::CardNumber => "card_number",
            Builtin::UsSsn => "us_ssn",
            Builtin::Iban => "iban",
        }
    }

    /// Strict inverse of [`Builtin::name`]; no aliases, so a typo in a policy
    /// is reported instead of silently matching something else.
    pub fn from_name(s: &str) -> Option<Builtin> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }

    /// Counts valid occurrences (the same number written twice counts twice).
    /// Stops as soon as `limit` is reached so that threshold rules do not
    /// scan the rest of a large body; the result is then exactly `limit`.
    pub fn count(self, text: &str, limit: usize) -> usize {
        let bytes = text.as_bytes();
        match self {
            Builtin::CardNumber => scan(bytes, limit, 0, card_at),
            Builtin::UsSsn => scan(bytes, limit, 0, ssn_at),
            // An IBAN's first digit comes after its two-letter country code.
            Builtin::Iban => scan(bytes, limit, 2, iban_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn check(builtin: Builtin, cases: &[(&str, usize)]) {
        for &(text, want) in cases {
            assert_eq!(
                builtin.count(text, usize::MAX),
                want,
                "{builtin:?} in {text:?}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.name()), Some(b));
        }
        assert_eq!(Builtin::from_name("credit_card"), None);
        assert_eq!(Builtin::from_name("IBAN"), None);
        assert_eq!(Builtin::from_name(""), None);
    }

    /// Deterministic xorshift so the test is reproducible without crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// 1 MB of words, digit runs and separators built so that no valid number
    /// can occur: digit runs never have length 2, 4 or 13+ (no SSN group, no
    /// card first group or bare PAN) and runs are never mixed letters+digits
    /// (no IBAN head).
    #[test]
    fn megabyte_of_noise() {
        const WORDS: &[&str] = &[
            "the", "invoice", "de", "gb", "IBAN", "card", "SSN", "from", "été", "Straße",
        ];
        const SEPS: &[&str] = &[" ", " ", " ", "-", ", ", ". ", "\n", " – ", "/", "é "];
        const LENS: &[usize] = &[1, 3, 5, 6, 7, 8, 9, 10, 11, 12];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut text = String::with_capacity(1 << 20);
        while text.len() < 1 << 20 {
            if rng.below(2) == 0 {
                text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            } else {
                let n = LENS[rng.below(LENS.len() as u64) as usize];
                for _ in 0..n {
                    text.push(char::from(b'0' + rng.below(10) as u8));
                }
            }
            text.push_str(SEPS[rng.below(SEPS.len() as u64) as usize]);
        }
        for b in Builtin::ALL {
            assert_eq!(b.count(&text, usize::MAX), 0, "{b:?}");
        }

        // Adversarial: digits, letters and separators in any order must not
        // panic, and the limit is honoured.
        let alphabet = b"0123456789 - AZaz\xc3\xa9";
        let mut noise = Vec::with_capacity(1 << 20);
        while noise.len() < 1 << 20 {
            noise.push(alphabet[rng.below(alphabet.len() as u64 - 2) as usize]);
        }
        let noise = String::from_utf8_lossy(&noise).into_owned();
        for b in Builtin::ALL {
            assert!(b.count(&noise, 5) <= 5);
        }
    }
}
