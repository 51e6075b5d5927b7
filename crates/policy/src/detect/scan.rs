//! What every detector shares: the pass over the text that skips to where a number can start,
//! a fixed-size stack buffer, and the boundary rules (a number is not glued to a letter or
//! digit, directly or by a dash).

// The detectors call these per byte from their own files: `#[inline]` keeps them inlined
// there as when all were one file.

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
#[inline]
pub(super) fn scan(
    b: &[u8],
    limit: usize,
    letters: usize,
    at: fn(&[u8], usize) -> (bool, usize),
) -> usize {
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
pub(super) struct Buf<T: Copy + Default, const N: usize> {
    data: [T; N],
    pub(super) len: usize,
}

impl<T: Copy + Default, const N: usize> Buf<T, N> {
    pub(super) fn new() -> Self {
        Self {
            data: [T::default(); N],
            len: 0,
        }
    }

    pub(super) fn push(&mut self, v: T) -> bool {
        match self.data.get_mut(self.len) {
            Some(slot) => {
                *slot = v;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    pub(super) fn as_slice(&self) -> &[T] {
        self.data.get(..self.len).unwrap_or(&[])
    }
}

impl<const N: usize> Buf<u8, N> {
    /// Appends all of `src` (mapped through `f`) or nothing if it would not fit.
    pub(super) fn extend_map(&mut self, src: &[u8], f: fn(u8) -> u8) -> bool {
        if self.len + src.len() > N {
            return false;
        }
        src.iter().all(|&c| self.push(f(c)))
    }
}

#[inline]
pub(super) fn same(c: u8) -> u8 {
    c
}

#[inline]
pub(super) fn upper(c: u8) -> u8 {
    c.to_ascii_uppercase()
}

#[inline]
fn run_len(b: &[u8], i: usize, pred: fn(&u8) -> bool) -> usize {
    b.get(i..)
        .map_or(0, |s| s.iter().take_while(|c| pred(c)).count())
}

#[inline]
pub(super) fn digit_run(b: &[u8], i: usize) -> usize {
    run_len(b, i, u8::is_ascii_digit)
}

#[inline]
pub(super) fn alnum_run(b: &[u8], i: usize) -> usize {
    run_len(b, i, u8::is_ascii_alphanumeric)
}

#[inline]
pub(super) fn slice(b: &[u8], from: usize, len: usize) -> &[u8] {
    b.get(from..from.saturating_add(len)).unwrap_or(&[])
}

#[inline]
pub(super) fn is_alnum_at(b: &[u8], i: Option<usize>) -> bool {
    i.and_then(|i| b.get(i))
        .is_some_and(u8::is_ascii_alphanumeric)
}

/// True when the byte before `start` does not glue the candidate to a
/// preceding word or number (directly or through a dash).
#[inline]
pub(super) fn start_ok(b: &[u8], start: usize) -> bool {
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
#[inline]
pub(super) fn end_ok(b: &[u8], end: usize) -> bool {
    match b.get(end) {
        Some(c) if c.is_ascii_alphanumeric() => false,
        Some(b'-') => !is_alnum_at(b, end.checked_add(1)),
        _ => true,
    }
}
