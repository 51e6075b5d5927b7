//! Identities: a normalized email address and an epoch (a UTC calendar month).
//!
//! A private key opens exactly one identity, so two spellings of one mailbox must normalize to the
//! same bytes: `" Alice@BÜCHER.example "` and `"alice@xn--bcher-kva.example"` are one identity.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{AddressError, EpochError};

/// Longest address accepted (RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its brackets).
pub const MAX_ADDRESS_LEN: usize = 254;
/// Longest local part accepted (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_LEN: usize = 64;

/// A normalized email address: trimmed, lower-cased, domain in IDNA ASCII form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(String);

impl Address {
    /// Normalizes and validates `input`; the error names what is wrong.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(AddressError::Empty);
        }
        let at = trimmed.rfind('@').ok_or(AddressError::MissingAt)?;
        let (local, domain) = (&trimmed[..at], &trimmed[at + 1..]);
        let local = normalize_local(local)?;
        let domain = normalize_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong(address.len()));
        }
        Ok(Address(address))
    }

    /// The normalized form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `@`, in ASCII form.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

fn normalize_local(local: &str) -> Result<String, AddressError> {
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    let lowered = local.to_lowercase();
    if lowered.len() > MAX_LOCAL_LEN {
        return Err(AddressError::LocalPartTooLong(lowered.len()));
    }
    if let Some(inner) = lowered.strip_prefix('"') {
        // Quoted string (RFC 5322 §3.2.4): printable characters, backslash escapes.
        let inner = inner
            .strip_suffix('"')
            .ok_or(AddressError::UnterminatedQuote)?;
        // `"john"@x` and `john@x` are one mailbox (RFC 5322 §3.4.1): drop needless quotes.
        if !inner.is_empty() && is_dot_atom(inner) {
            return Ok(inner.to_string());
        }
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next().ok_or(AddressError::UnterminatedQuote)?;
                }
                '"' => return Err(AddressError::InvalidLocalChar(c)),
                c if c.is_control() => return Err(AddressError::InvalidLocalChar(c)),
                _ => {}
            }
        }
        return Ok(lowered);
    }
    // Dot-atom (RFC 5322 §3.2.3), with UTF-8 allowed as RFC 6531 does.
    if lowered.starts_with('.') || lowered.ends_with('.') || lowered.contains("..") {
        return Err(AddressError::MisplacedDot);
    }
    if let Some(c) = lowered.chars().find(|c| !is_atext(*c) && *c != '.') {
        return Err(AddressError::InvalidLocalChar(c));
    }
    Ok(lowered)
}

fn is_dot_atom(s: &str) -> bool {
    !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.chars().all(|c| is_atext(c) || c == '.')
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
}

fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    if domain.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if domain.starts_with('[') {
        return Err(AddressError::AddressLiteral);
    }
    let ascii = idna::domain_to_ascii(domain)
        .map_err(|_| AddressError::InvalidDomain(domain.to_string()))?;
    if ascii.is_empty() || ascii.len() > 253 {
        return Err(AddressError::InvalidDomain(domain.to_string()));
    }
    for label in ascii.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(AddressError::InvalidDomain(domain.to_string()));
        }
    }
    Ok(ascii)
}

/// A UTC calendar month: the period one user key is valid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch {
    year: u16,
    month: u8,
}

impl Epoch {
    /// The epoch of year `year` (1970–9999) and month `month` (1–12).
    pub fn new(year: u16, month: u8) -> Result<Self, EpochError> {
        if !(1970..=9999).contains(&year) {
            return Err(EpochError::YearOutOfRange(year));
        }
        if !(1..=12).contains(&month) {
            return Err(EpochError::MonthOutOfRange(month));
        }
        Ok(Epoch { year, month })
    }

    /// The month that contains `secs` seconds after the Unix epoch, in UTC.
    pub fn from_unix(secs: u64) -> Self {
        let (year, month) = civil_year_month(secs / 86_400);
        Epoch {
            year: year.min(9999),
            month,
        }
    }

    /// The current month, by the system clock.
    pub fn current() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Epoch::from_unix(secs)
    }

    /// The first second of the month, in seconds since the Unix epoch.
    pub fn start_unix(self) -> u64 {
        // Days from 1970-01-01 to the first of the month ("days from civil", Howard Hinnant).
        let (y, m) = (i64::from(self.year), i64::from(self.month));
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        u64::try_from(days).unwrap_or(0) * 86_400
    }

    /// The year, 1970–9999.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, 1–12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The month after this one.
    pub fn next(self) -> Self {
        if self.month == 12 {
            Epoch {
                year: (self.year + 1).min(9999),
                month: 1,
            }
        } else {
            Epoch {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month before this one (January 1970 has none and returns itself).
    pub fn previous(self) -> Self {
        match (self.year, self.month) {
            (1970, 1) => self,
            (y, 1) => Epoch {
                year: y - 1,
                month: 12,
            },
            (y, m) => Epoch {
                year: y,
                month: m - 1,
            },
        }
    }

    pub(crate) fn to_bytes(self) -> [u8; 3] {
        let y = self.year.to_be_bytes();
        [y[0], y[1], self.month]
    }

    pub(crate) fn from_bytes(b: [u8; 3]) -> Result<Self, EpochError> {
        Epoch::new(u16::from_be_bytes([b[0], b[1]]), b[2])
    }
}

/// Days since 1970-01-01 to (year, month), proleptic Gregorian (the "civil from days" method
/// described by Howard Hinnant, `chrono`-compatible results).
fn civil_year_month(days: u64) -> (u16, u8) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (u16::try_from(year).unwrap_or(u16::MAX), month as u8)
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Epoch {
    type Err = EpochError;

    /// Accepts exactly `YYYY-MM`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let shaped =
            b.len() == 7 && b[4] == b'-' && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit);
        if !shaped {
            return Err(EpochError::Format(s.chars().take(40).collect()));
        }
        let year: u16 = s[..4]
            .parse()
            .map_err(|_| EpochError::Format(s.to_string()))?;
        let month: u8 = s[5..]
            .parse()
            .map_err(|_| EpochError::Format(s.to_string()))?;
        Epoch::new(year, month)
    }
}

/// What a key opens: one address for one month.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The normalized address.
    pub address: Address,
    /// The month.
    pub epoch: Epoch,
}

impl Identity {
    /// Pairs an address with an epoch.
    pub fn new(address: Address, epoch: Epoch) -> Self {
        Identity { address, epoch }
    }

    /// The bytes the IBE and IBS schemes hash into an identity. The purpose label keeps the
    /// decryption identity and the signing identity of one mailbox apart.
    pub(crate) fn derivation_input(&self, purpose: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.address.as_str().len());
        out.extend_from_slice(b"postern/v1/");
        out.extend_from_slice(purpose.as_bytes());
        out.push(0);
        out.extend_from_slice(self.epoch.to_string().as_bytes());
        out.push(0);
        out.extend_from_slice(self.address.as_str().as_bytes());
        out
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_whitespace_and_idna() {
        let a = Address::parse("  Alice.Smith@BÜCHER.Example \n").unwrap();
        assert_eq!(a.as_str(), "alice.smith@xn--bcher-kva.example");
        assert_eq!(
            a,
            Address::parse("alice.smith@xn--bcher-kva.example").unwrap()
        );
        assert_eq!(a.domain(), "xn--bcher-kva.example");
    }

    #[test]
    fn rejects_bad_addresses_with_named_reason() {
        let cases: &[(&str, AddressError)] = &[
            ("", AddressError::Empty),
            ("   ", AddressError::Empty),
            ("alice.example", AddressError::MissingAt),
            ("@corp.example", AddressError::EmptyLocalPart),
            ("alice@", AddressError::EmptyDomain),
            ("a..b@corp.example", AddressError::MisplacedDot),
            (".a@corp.example", AddressError::MisplacedDot),
            ("a b@corp.example", AddressError::InvalidLocalChar(' ')),
            ("a(b@corp.example", AddressError::InvalidLocalChar('(')),
            ("a@[192.0.2.1]", AddressError::AddressLiteral),
            (
                "a@-bad.example",
                AddressError::InvalidDomain("-bad.example".into()),
            ),
            (
                "a@bad..example",
                AddressError::InvalidDomain("bad..example".into()),
            ),
            (
                "a@bad_domain.example",
                AddressError::InvalidDomain("bad_domain.example".into()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &Address::parse(input).unwrap_err(),
                expected,
                "input {input:?}"
            );
        }
        let long_local = format!("{}@corp.example", "a".repeat(65));
        assert_eq!(
            Address::parse(&long_local).unwrap_err(),
            AddressError::LocalPartTooLong(65)
        );
        let domain = format!("{0}.{0}.{0}.example", "b".repeat(60));
        let long = format!("{}@{domain}", "a".repeat(64));
        assert_eq!(
            Address::parse(&long).unwrap_err(),
            AddressError::TooLong(255)
        );
    }

    #[test]
    fn accepts_quoted_and_utf8_local_parts() {
        assert_eq!(
            Address::parse("\"John Doe\"@corp.example")
                .unwrap()
                .as_str(),
            "\"john doe\"@corp.example"
        );
        assert_eq!(
            Address::parse("\"John.Doe\"@corp.example").unwrap(),
            Address::parse("john.doe@corp.example").unwrap()
        );
        assert_eq!(
            Address::parse("Jürgen@corp.example").unwrap().as_str(),
            "jürgen@corp.example"
        );
        assert_eq!(
            Address::parse("\"unterminated@corp.example").unwrap_err(),
            AddressError::UnterminatedQuote
        );
    }

    #[test]
    fn epoch_from_timestamps() {
        assert_eq!(Epoch::from_unix(0).to_string(), "1970-01");
        // 2026-11-30T23:59:59Z and 2026-12-01T00:00:00Z.
        assert_eq!(Epoch::from_unix(1_796_083_199).to_string(), "2026-11");
        assert_eq!(Epoch::from_unix(1_796_083_200).to_string(), "2026-12");
        // 2024-02-29T12:00:00Z (leap day).
        assert_eq!(Epoch::from_unix(1_709_208_000).to_string(), "2024-02");
        assert_eq!(Epoch::from_unix(4_102_444_800).to_string(), "2100-01");
    }

    #[test]
    fn epoch_start_is_the_first_second_of_the_month() {
        assert_eq!(Epoch::new(1970, 1).unwrap().start_unix(), 0);
        assert_eq!(Epoch::new(2026, 12).unwrap().start_unix(), 1_796_083_200);
        assert_eq!(Epoch::new(2024, 3).unwrap().start_unix(), 1_709_251_200);
        for secs in [0, 1_709_251_199, 1_796_083_200, 4_102_444_799] {
            let e = Epoch::from_unix(secs);
            assert!(e.start_unix() <= secs && secs < e.next().start_unix());
        }
    }

    #[test]
    fn epoch_parsing_is_strict() {
        assert_eq!(
            "2026-11".parse::<Epoch>().unwrap(),
            Epoch::new(2026, 11).unwrap()
        );
        for bad in [
            "2026-1",
            "2026-13",
            "2026-00",
            "26-11",
            "2026/11",
            " 2026-11",
            "2026-11-01",
            "1969-12",
            "２０２６-11",
            "",
        ] {
            assert!(bad.parse::<Epoch>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn epoch_arithmetic() {
        let dec = Epoch::new(2026, 12).unwrap();
        assert_eq!(dec.next().to_string(), "2027-01");
        assert_eq!(dec.next().previous(), dec);
        assert!(dec < dec.next());
    }

    #[test]
    fn derivation_separates_purposes() {
        let id = Identity::new(
            Address::parse("a@b.example").unwrap(),
            Epoch::new(2026, 11).unwrap(),
        );
        assert_ne!(id.derivation_input("enc"), id.derivation_input("sig"));
    }
}
