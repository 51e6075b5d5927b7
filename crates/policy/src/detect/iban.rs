//! International Bank Account Numbers (ISO 13616): compact and paper formats, country lengths
//! and the mod-97 check.

use super::scan::{Buf, alnum_run, end_ok, slice, start_ok, upper};

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

/// Accepted shapes (case-insensitive):
/// * compact: one alphanumeric run of 15–34 characters;
/// * grouped: groups of 4 separated by single spaces, the last group 1–4
///   characters (the ISO 13616 "paper format").
///
/// For grouped text the longest prefix (ending at a group boundary) that
/// validates wins, so a following 4-letter word (`… 1332 from`) does not
/// hide an IBAN whose length is a multiple of 4.
#[inline]
pub(super) fn iban_at(b: &[u8], i: usize) -> (bool, usize) {
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
    use crate::detect::Builtin;
    use crate::detect::tests::check;

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
}
