//! Payment card numbers (ISO/IEC 7812): the shapes issuers print, and the Luhn check.

use super::scan::{Buf, digit_run, end_ok, is_alnum_at, same, slice, start_ok};

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
#[inline]
pub(super) fn card_at(b: &[u8], i: usize) -> (bool, usize) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Builtin;
    use crate::detect::tests::check;

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
}
