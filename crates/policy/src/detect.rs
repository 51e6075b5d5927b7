//! Built-in detectors for sensitive numbers (payment cards, US SSNs, IBANs)
//! in decoded text.
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

/// Luhn (ISO/IEC 7812-1) check, used by card numbers to reject typos and
/// random digit strings. Empty input or any non-digit byte is invalid.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (k, &c) in digits.iter().rev().enumerate() {
        if !c.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(c - b'0');
        if k % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum = (sum + d) % 10;
    }
    sum == 0
}

/// ISO 13616 / ISO 7064 mod-97 check of a compact, upper-case IBAN.
///
/// Also checks the shape (country letters, check digits 02–98, alphanumeric
/// BBAN, 15–34 characters) and, for common countries, the exact length,
/// because mod-97 alone lets roughly 1 in 97 random strings through.
pub fn iban_valid(iban: &[u8]) -> bool {
    let n = iban.len();
    if !(15..=34).contains(&n) {
        return false;
    }
    let (head, bban) = iban.split_at(4);
    let [c0, c1, d0, d1] = *head else {
        return false;
    };
    if !(c0.is_ascii_uppercase() && c1.is_ascii_uppercase()) {
        return false;
    }
    if !(d0.is_ascii_digit() && d1.is_ascii_digit()) {
        return false;
    }
    // ISO 7064 MOD 97-10 only ever produces check digits 02..=98.
    let check = (d0 - b'0') * 10 + (d1 - b'0');
    if !(2..=98).contains(&check) {
        return false;
    }
    if !bban
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return false;
    }
    if let Some(expected) = iban_country_len([c0, c1])
        && expected != n
    {
        return false;
    }
    // Move the first four characters to the end, letters become 10..=35,
    // and the whole number must be 1 modulo 97.
    let mut r = 0u32;
    for &c in bban.iter().chain(head.iter()) {
        r = if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    r == 1
}

/// IBAN lengths for common countries, from the SWIFT IBAN Registry (the
/// registration authority for ISO 13616). Countries not listed only get the
/// generic 15–34 range; extend from the registry, never from memory.
fn iban_country_len(country: [u8; 2]) -> Option<usize> {
    Some(match &country {
        b"AT" => 20,
        b"BE" => 16,
        b"CH" => 21,
        b"DE" => 22,
        b"ES" => 24,
        b"FR" => 27,
        b"GB" => 22,
        b"IT" => 27,
        b"NL" => 18,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Scanning machinery
// ---------------------------------------------------------------------------

/// Runs a matcher over every position where a number can start. A matcher
/// returns whether a valid number starts at `i` and where scanning resumes
/// (always moves forward).
///
/// Positions are skipped in a tight loop first: every number has a digit
/// `letters` bytes after its start, preceded by letters only (a card number
/// and an SSN start with a digit; an IBAN with two letters), and never starts
/// inside a run of letters and digits (every matcher refuses a candidate glued
/// to what precedes it). So words without digits are passed over whole, and a
/// megabyte of prose costs a fast search for digits.
fn scan(b: &[u8], limit: usize, letters: usize, at: fn(&[u8], usize) -> (bool, usize)) -> usize {
    let mut found = 0;
    let mut i = 0;
    while found < limit && i < b.len() {
        let Some(digit) = b
            .get(i..)
            .and_then(|rest| rest.iter().position(u8::is_ascii_digit))
            .map(|p| i + p)
        else {
            break;
        };
        let start = digit.saturating_sub(letters);
        let shaped = digit >= letters
            && start >= i
            && b.get(start..digit)
                .is_some_and(|l| l.iter().all(u8::is_ascii_alphabetic));
        let glued = start > 0 && b.get(start - 1).is_some_and(u8::is_ascii_alphanumeric);
        if !shaped || glued {
            // No number starts in this run of letters and digits.
            i = digit + alnum_run(b, digit).max(1);
            continue;
        }
        i = start;
        let (matched, next) = at(b, i);
        if matched {
            found += 1;
        }
        i = next.max(i + 1);
    }
    found
}

/// Fixed-capacity stack buffer; pushing past capacity fails instead of
/// panicking or allocating.
struct Buf<T: Copy + Default, const N: usize> {
    data: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> Buf<T, N> {
    fn new() -> Self {
        Self {
            data: [T::default(); N],
            len: 0,
        }
    }

    fn push(&mut self, v: T) -> bool {
        match self.data.get_mut(self.len) {
            Some(slot) => {
                *slot = v;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    fn as_slice(&self) -> &[T] {
        self.data.get(..self.len).unwrap_or(&[])
    }
}

impl<const N: usize> Buf<u8, N> {
    /// Appends all of `src` (mapped through `f`) or nothing if it would not fit.
    fn extend_map(&mut self, src: &[u8], f: fn(u8) -> u8) -> bool {
        if self.len + src.len() > N {
            return false;
        }
        src.iter().all(|&c| self.push(f(c)))
    }
}

fn same(c: u8) -> u8 {
    c
}

fn upper(c: u8) -> u8 {
    c.to_ascii_uppercase()
}

fn run_len(b: &[u8], i: usize, pred: fn(&u8) -> bool) -> usize {
    b.get(i..)
        .map_or(0, |s| s.iter().take_while(|c| pred(c)).count())
}

fn digit_run(b: &[u8], i: usize) -> usize {
    run_len(b, i, u8::is_ascii_digit)
}

fn alnum_run(b: &[u8], i: usize) -> usize {
    run_len(b, i, u8::is_ascii_alphanumeric)
}

fn slice(b: &[u8], from: usize, len: usize) -> &[u8] {
    b.get(from..from.saturating_add(len)).unwrap_or(&[])
}

fn is_alnum_at(b: &[u8], i: Option<usize>) -> bool {
    i.and_then(|i| b.get(i))
        .is_some_and(u8::is_ascii_alphanumeric)
}

/// True when the byte before `start` does not glue the candidate to a
/// preceding word or number (directly or through a dash).
fn start_ok(b: &[u8], start: usize) -> bool {
    let Some(p) = start.checked_sub(1) else {
        return true;
    };
    match b.get(p) {
        Some(c) if c.is_ascii_alphanumeric() => false,
        Some(b'-') => !is_alnum_at(b, p.checked_sub(1)),
        _ => true,
    }
}

/// True when the byte at `end` (one past the candidate) is a boundary.
fn end_ok(b: &[u8], end: usize) -> bool {
    match b.get(end) {
        Some(c) if c.is_ascii_alphanumeric() => false,
        Some(b'-') => !is_alnum_at(b, end.checked_add(1)),
        _ => true,
    }
}

// ---------------------------------------------------------------------------
// Card numbers
// ---------------------------------------------------------------------------

/// Accepted shapes:
/// * a bare run of 13–19 digits;
/// * a first group of exactly 4 digits followed by groups of 1–6 digits, all
///   joined by the same single separator (space or dash), 13–19 digits in
///   total (`4111 1111 1111 1111`, `3782-822463-10005`).
///
/// Mixed separators (`4111 1111-1111 1111`) are rejected: issuers print one
/// separator, and accepting mixtures mostly adds false positives. A grouped
/// token is judged as a whole, so `1234 4111 1111 1111 1111` (20 digits) is
/// not a card even though its tail is. A bare run followed by a space and more
/// digits is still a card, so lists like `4111111111111111 5555555555554444`
/// find both.
fn card_at(b: &[u8], i: usize) -> (bool, usize) {
    let first = digit_run(b, i);
    if first == 0 {
        return (false, i + 1);
    }
    let mut end = i + first;
    if !start_ok(b, i) || follows_iban_group(b, i) {
        return (false, end);
    }
    let mut digits: Buf<u8, 19> = Buf::new();
    let mut fits = digits.extend_map(slice(b, i, first), same);
    if first == 4
        && let Some(&sep) = b.get(end)
        && (sep == b' ' || sep == b'-')
    {
        while b.get(end) == Some(&sep) {
            let g = digit_run(b, end + 1);
            if g == 0 || g > 6 {
                break;
            }
            // Keep consuming an over-long token so it is skipped whole.
            fits = digits.extend_map(slice(b, end + 1, g), same) && fits;
            end += 1 + g;
        }
    }
    let ok = fits && end_ok(b, end) && card_digits_valid(digits.as_slice());
    (ok, end)
}

/// True when the candidate at `start` continues a grouped IBAN: it follows one space after a
/// four-character group that mixes letters and digits (`DE89 3704 0044 ...`), whose digit
/// groups could otherwise pass Luhn by chance.
fn follows_iban_group(b: &[u8], start: usize) -> bool {
    let Some(space) = start.checked_sub(1) else {
        return false;
    };
    if b.get(space) != Some(&b' ') || space < 4 {
        return false;
    }
    let group = slice(b, space - 4, 4);
    group.len() == 4
        && group.iter().all(u8::is_ascii_alphanumeric)
        && group.iter().any(u8::is_ascii_alphabetic)
        && group.iter().any(u8::is_ascii_digit)
        && !is_alnum_at(b, (space - 4).checked_sub(1))
}

/// Length per ISO/IEC 7812 (PANs are 13–19 digits); major-industry identifier
/// 2–6 covers Mastercard 2-series, Amex/Diners/JCB 3, Visa 4, Mastercard 5,
/// Discover/UnionPay/Maestro 6. A repeated single digit is a placeholder, not
/// a card, even when it happens to pass Luhn (e.g. 6666666666666).
fn card_digits_valid(d: &[u8]) -> bool {
    let Some(&first) = d.first() else {
        return false;
    };
    (13..=19).contains(&d.len())
        && (b'2'..=b'6').contains(&first)
        && !d.iter().all(|&c| c == first)
        && luhn_valid(d)
}

// ---------------------------------------------------------------------------
// US Social Security Numbers
// ---------------------------------------------------------------------------

/// Only the dashed or spaced forms are matched: nine bare digits are far too
/// common (order numbers, ZIP+4, phone fragments) to flag. A spaced SSN that
/// continues with more space-separated digits (`1 123 45 6789`) is taken to
/// be part of a longer number.
fn ssn_at(b: &[u8], i: usize) -> (bool, usize) {
    let run = digit_run(b, i);
    if run == 0 {
        return (false, i + 1);
    }
    let skip = i + run;
    if run != 3 || !start_ok(b, i) {
        return (false, skip);
    }
    let Some(&sep) = b.get(skip) else {
        return (false, skip);
    };
    if sep != b'-' && sep != b' ' {
        return (false, skip);
    }
    if digit_run(b, skip + 1) != 2 || b.get(skip + 3) != Some(&sep) || digit_run(b, skip + 4) != 4 {
        return (false, skip);
    }
    let end = skip + 8;
    if !end_ok(b, end) {
        return (false, skip);
    }
    if sep == b' ' {
        let digit_at = |j: Option<usize>| j.and_then(|j| b.get(j)).is_some_and(u8::is_ascii_digit);
        let before =
            i.checked_sub(1).and_then(|p| b.get(p)) == Some(&b' ') && digit_at(i.checked_sub(2));
        let after = b.get(end) == Some(&b' ') && digit_at(end.checked_add(1));
        if before || after {
            return (false, skip);
        }
    }
    let area = number(slice(b, i, 3));
    let group = number(slice(b, skip + 1, 2));
    let serial = number(slice(b, skip + 4, 4));
    (ssn_fields_valid(area, group, serial), end)
}

fn number(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |n, &c| {
        n.saturating_mul(10)
            .saturating_add(u32::from(c.wrapping_sub(b'0')))
    })
}

/// Per the Social Security Administration ("Social Security Number
/// Randomization", 2011, and POMS RM 10201.060): area numbers 000, 666 and
/// 900–999 are never issued, nor are group 00 or serial 0000.
fn ssn_fields_valid(area: u32, group: u32, serial: u32) -> bool {
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

// ---------------------------------------------------------------------------
// IBANs
// ---------------------------------------------------------------------------

/// Accepted shapes (case-insensitive):
/// * compact: one alphanumeric run of 15–34 characters;
/// * grouped: groups of 4 separated by single spaces, the last group 1–4
///   characters (the ISO 13616 "paper format").
///
/// For grouped text the longest prefix (ending at a group boundary) that
/// validates wins, so a following 4-letter word (`… 1332 from`) does not
/// hide an IBAN whose length is a multiple of 4.
fn iban_at(b: &[u8], i: usize) -> (bool, usize) {
    let Some(&c) = b.get(i) else {
        return (false, i + 1);
    };
    let run = alnum_run(b, i);
    if run == 0 {
        return (false, i + 1);
    }
    let skip = i + run;
    if !c.is_ascii_alphabetic() || !start_ok(b, i) {
        return (false, skip);
    }
    // Cheap shape test first: most words fail here.
    let head = slice(b, i, 4);
    let shaped = matches!(head, [a, b2, d0, d1]
        if a.is_ascii_alphabetic() && b2.is_ascii_alphabetic()
            && d0.is_ascii_digit() && d1.is_ascii_digit());
    if !shaped {
        return (false, skip);
    }
    let mut chars: Buf<u8, 34> = Buf::new();
    if run != 4 {
        let ok = (15..=34).contains(&run)
            && chars.extend_map(slice(b, i, run), upper)
            && end_ok(b, skip)
            && iban_valid(chars.as_slice());
        return (ok, skip);
    }
    chars.extend_map(head, upper);
    // (length so far, byte offset just past that group)
    let mut cuts: Buf<(usize, usize), 10> = Buf::new();
    let mut end = skip;
    let mut last = 4;
    while last == 4 && b.get(end) == Some(&b' ') {
        let g = alnum_run(b, end + 1);
        if g == 0 || g > 4 || !chars.extend_map(slice(b, end + 1, g), upper) {
            break;
        }
        end += 1 + g;
        last = g;
        if !cuts.push((chars.len, end)) {
            break;
        }
    }
    for &(len, e) in cuts.as_slice().iter().rev() {
        let candidate = chars.as_slice().get(..len).unwrap_or(&[]);
        if end_ok(b, e) && iban_valid(candidate) {
            return (true, e);
        }
    }
    (false, skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(builtin: Builtin, cases: &[(&str, usize)]) {
        for &(text, want) in cases {
            assert_eq!(
                builtin.count(text, usize::MAX),
                want,
                "{builtin:?} in {text:?}"
            );
        }
    }

    /// Replaces the last digit with the next one mod 10: Luhn always catches
    /// a single changed digit.
    fn bump_last_digit(s: &str) -> String {
        let mut out: Vec<u8> = s.as_bytes().to_vec();
        if let Some(pos) = out.iter().rposition(u8::is_ascii_digit) {
            out[pos] = b'0' + (out[pos] - b'0' + 1) % 10;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    const CARDS: &[&str] = &[
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555 5555 5555 4444",
        "3782 822463 10005",
        "6011-1111-1111-1117",
    ];

    #[test]
    fn names_round_trip() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.name()), Some(b));
        }
        assert_eq!(Builtin::from_name("credit_card"), None);
        assert_eq!(Builtin::from_name("IBAN"), None);
        assert_eq!(Builtin::from_name(""), None);
    }

    #[test]
    fn valid_cards_in_context() {
        for card in CARDS {
            let contexts = [
                card.to_string(),
                format!("Please charge {card} today."),
                format!("{card} is my card"),
                format!("my card is {card}"),
                format!("({card})."),
                format!("card:{card};"),
                format!("«{card}»"),
                format!("line one\n{card}\nline three"),
            ];
            for text in &contexts {
                assert_eq!(Builtin::CardNumber.count(text, 10), 1, "{text:?}");
            }
        }
    }

    #[test]
    fn luhn_failures_do_not_match() {
        for card in CARDS {
            let bad = bump_last_digit(card);
            assert_eq!(Builtin::CardNumber.count(&bad, 10), 0, "{bad:?}");
            let text = format!("number {bad} here");
            assert_eq!(Builtin::CardNumber.count(&text, 10), 0, "{text:?}");
        }
    }

    #[test]
    fn card_rejections() {
        check(
            Builtin::CardNumber,
            &[
                ("ab4111111111111111", 0),
                ("4111111111111111cd", 0),
                ("x4111-1111-1111-1111", 0),
                ("4111-1111-1111-1111-2", 0),
                ("1-4111-1111-1111-1111", 0),
                ("ref-4111111111111111", 0),
                ("1234 4111 1111 1111 1111", 0),
                ("41111111111111111111", 0),
                ("411111111111", 0),
                ("4111 1111 1111", 0),
                ("0000000000000", 0),
                ("6666666666666", 0),        // passes Luhn, but a placeholder
                ("4111 1111-1111 1111", 0),  // mixed separators rejected
                ("4111  1111 1111 1111", 0), // double space breaks grouping
                ("79927398713", 0),
                ("8888888888888888", 0), // Luhn-valid, implausible issuer
                ("", 0),
            ],
        );
    }

    #[test]
    fn multiple_cards_and_limit() {
        check(
            Builtin::CardNumber,
            &[
                ("4111111111111111 and 5555 5555 5555 4444", 2),
                ("4111111111111111 5555555555554444", 2),
                ("4111111111111111, 4111111111111111", 2),
                ("1234 4111111111111111", 1),
            ],
        );
        let three = "4111111111111111 5555555555554444 378282246310005";
        assert_eq!(Builtin::CardNumber.count(three, 3), 3);
        assert_eq!(Builtin::CardNumber.count(three, 2), 2);
        assert_eq!(Builtin::CardNumber.count(three, 1), 1);
        assert_eq!(Builtin::CardNumber.count(three, 0), 0);
    }

    #[test]
    fn ssn_cases() {
        check(
            Builtin::UsSsn,
            &[
                ("123-45-6789", 1),
                ("123 45 6789", 1),
                ("SSN: 123-45-6789.", 1),
                ("(123 45 6789)", 1),
                ("123-45-6789 and 234-56-7890", 2),
                ("000-12-3456", 0),
                ("666-12-3456", 0),
                ("900-12-3456", 0),
                ("999-12-3456", 0),
                ("123-00-4567", 0),
                ("123-45-0000", 0),
                ("123456789", 0),
                ("555-123-4567", 0),
                ("call 555 123 4567", 0),
                ("123-45 6789", 0),
                ("a123-45-6789", 0),
                ("123-45-6789b", 0),
                ("1123-45-6789", 0),
                ("123-45-67890", 0),
                ("9-123-45-6789", 0),
                ("123-45-6789-1", 0),
                ("1 123 45 6789", 0),
                ("123 45 6789 0", 0),
            ],
        );
        assert_eq!(Builtin::UsSsn.count("123-45-6789 234-56-7890", 1), 1);
    }

    /// Builds a valid IBAN for any country/BBAN, independently of `iban_valid`.
    fn with_check(country: &str, bban: &str) -> String {
        let rearranged = format!("{bban}{country}00");
        let mut r: u64 = 0;
        for c in rearranged.bytes() {
            let v = if c.is_ascii_digit() {
                u64::from(c - b'0')
            } else {
                u64::from(c - b'A') + 10
            };
            r = if v >= 10 {
                (r * 100 + v) % 97
            } else {
                (r * 10 + v) % 97
            };
        }
        format!("{country}{:02}{bban}", 98 - r)
    }

    #[test]
    fn iban_cases() {
        let de_23 = with_check("DE", "3704004405320130001");
        assert_eq!(de_23.len(), 23);
        let es = with_check("ES", "21000418450200051332");
        let es_grouped = format!(
            "{} {} {} {} {} {}",
            &es[0..4],
            &es[4..8],
            &es[8..12],
            &es[12..16],
            &es[16..20],
            &es[20..24]
        );
        let unknown = with_check("XK", "1212012345678906"); // not in the length table
        check(
            Builtin::Iban,
            &[
                ("GB82 WEST 1234 5698 7654 32", 1),
                ("GB82WEST12345698765432", 1),
                ("DE89370400440532013000", 1),
                ("DE89 3704 0044 0532 0130 00", 1),
                ("gb82 west 1234 5698 7654 32", 1),
                ("de89370400440532013000", 1),
                (
                    "Please pay to IBAN GB82 WEST 1234 5698 7654 32 by Friday.",
                    1,
                ),
                ("IBAN:DE89370400440532013000.", 1),
                (&format!("{es_grouped} from Madrid"), 1),
                (&unknown, 1),
                ("GB82 WEST 1234 5698 7654 32, DE89370400440532013000", 2),
                ("GB83 WEST 1234 5698 7654 32", 0),
                ("GB82WEST12345698765433", 0),
                ("DE88370400440532013000", 0),
                (&de_23, 0),
                ("xGB82WEST12345698765432", 0),
                ("GB82WEST12345698765432x", 0),
                ("1GB82WEST12345698765432", 0),
                ("GB82  WEST 1234 5698 7654 32", 0),
                ("GB82", 0),
                ("", 0),
            ],
        );
        assert_eq!(
            Builtin::Iban.count("DE89370400440532013000 GB82WEST12345698765432", 1),
            1
        );
    }

    #[test]
    fn luhn_unit() {
        let cases: &[(&[u8], bool)] = &[
            (b"79927398713", true),
            (b"79927398710", false),
            (b"4111111111111111", true),
            (b"4111111111111112", false),
            (b"0", true),
            (b"", false),
            (b"4111 1111", false),
            (b"12a", false),
        ];
        for &(digits, want) in cases {
            assert_eq!(
                luhn_valid(digits),
                want,
                "{:?}",
                String::from_utf8_lossy(digits)
            );
        }
    }

    #[test]
    fn iban_unit() {
        let cases: &[(&[u8], bool)] = &[
            (b"GB82WEST12345698765432", true),
            (b"DE89370400440532013000", true),
            (b"GB82WEST12345698765433", false),
            (b"gb82west12345698765432", false), // callers normalise case
            (b"GB82 WEST 1234 5698 7654 32", false), // callers strip spaces
            (b"DE8937040044053201300", false),  // DE must be 22
            (b"GB00WEST12345698765432", false),
            (b"G182WEST12345698765432", false),
            (b"GBX2WEST12345698765432", false),
            (b"GB82WEST1234569876543!", false),
            (b"GB82", false),
            (b"", false),
        ];
        for &(iban, want) in cases {
            assert_eq!(
                iban_valid(iban),
                want,
                "{:?}",
                String::from_utf8_lossy(iban)
            );
        }
        assert!(!iban_valid(
            with_check("DE", "3704004405320130001").as_bytes()
        ));
        assert!(iban_valid(with_check("XK", "1212012345678906").as_bytes()));
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
