//! US Social Security Numbers: the dashed and spaced forms, and the numbers the SSA never issues.

use super::scan::{digit_run, end_ok, slice, start_ok};

/// Only the dashed or spaced forms are matched: nine bare digits are far too
/// common (order numbers, ZIP+4, phone fragments) to flag. A spaced SSN that
/// continues with more space-separated digits (`1 123 45 6789`) is taken to
/// be part of a longer number.
#[inline]
pub(super) fn ssn_at(b: &[u8], i: usize) -> (bool, usize) {
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

#[cfg(test)]
mod tests {
    use crate::detect::Builtin;
    use crate::detect::tests::check;

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
}
