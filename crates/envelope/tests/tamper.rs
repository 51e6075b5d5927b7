//! Untrusted input: every altered, truncated or extended sealed message is rejected with an
//! error, nothing panics, and nothing but authentic plaintext is ever written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, epoch, message};
use envelope::{DecapsCache, DecryptionKey, OpenError, Opener, PublicParams};
use proptest::prelude::*;

struct Case {
    params: PublicParams,
    bob: DecryptionKey,
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

fn case(size: usize) -> Case {
    let mut f = Fixture::new(42);
    let alice = f.signing_key("alice@corp.example", epoch());
    let bob = f.decryption_key("bob@partner.example", epoch());
    let plain = message(size, 7);
    let sealed = f.seal(
        &alice,
        &["carol@partner.example", "bob@partner.example"],
        &plain,
    );
    Case {
        params: f.params,
        bob,
        plain,
        sealed,
    }
}

/// Opens `bytes`; returns the error, after checking that whatever was written before it is a
/// prefix of the real plaintext (segments are released only once authenticated).
fn must_fail(c: &Case, opener: &Opener<'_>, bytes: &[u8], what: &str) -> OpenError {
    let mut out = Vec::new();
    let result = opener.open(&c.bob, bytes, &mut out);
    assert!(
        c.plain.starts_with(&out),
        "{what}: unauthenticated plaintext was written"
    );
    match result {
        Ok(_) => panic!("{what}: an altered message opened"),
        Err(e) => e,
    }
}

#[test]
fn one_flipped_bit_at_every_97th_byte_is_rejected() {
    // Three full segments and a short one, so flips land in every part of the format.
    let c = case(3 * 64 * 1024 + 1234);
    let cache = DecapsCache::new(16);
    let opener = Opener::new(&c.params).with_cache(&cache);
    let mut out = Vec::new();
    opener.open(&c.bob, &c.sealed[..], &mut out).unwrap();
    assert_eq!(out, c.plain);

    let mut checked = 0;
    let mut bytes = c.sealed.clone();
    for pos in (0..bytes.len()).step_by(97) {
        let bit = 1u8 << (pos % 8);
        bytes[pos] ^= bit;
        must_fail(&c, &opener, &bytes, &format!("bit flip at byte {pos}"));
        bytes[pos] ^= bit;
        checked += 1;
    }
    assert_eq!(checked, c.sealed.len().div_ceil(97));
}

#[test]
fn truncated_and_extended_messages_are_rejected() {
    let c = case(2 * 64 * 1024 + 500);
    let opener = Opener::new(&c.params);
    let header_len = c.sealed.len() - (c.plain.len() + 3 * 16 + 112);
    let n = c.sealed.len();
    let cuts = [
        0,
        1,
        4,
        header_len / 2,
        header_len - 1,
        header_len,
        header_len + 1,
        header_len + 64 * 1024 + 16, // exactly after the first segment
        header_len + 64 * 1024 + 17,
        header_len + 2 * (64 * 1024 + 16), // every full segment, nothing after
        n - 112 - 1,
        n - 112, // everything but the final segment
        n - 1,
    ];
    for cut in cuts {
        let err = must_fail(&c, &opener, &c.sealed[..cut], &format!("cut at {cut}"));
        if cut < 4 {
            assert!(matches!(err, OpenError::NotSealed), "cut at {cut}: {err}");
        }
    }
    let mut extended = c.sealed.clone();
    extended.push(0);
    must_fail(&c, &opener, &extended, "one byte appended");
    let mut doubled = c.sealed.clone();
    doubled.extend_from_slice(&c.sealed[header_len..]);
    must_fail(&c, &opener, &doubled, "segments repeated");

    // Two full segments swapped.
    let seg = 64 * 1024 + 16;
    let mut swapped = c.sealed.clone();
    let (a, b) = (header_len, header_len + seg);
    let first = swapped[a..a + seg].to_vec();
    swapped.copy_within(b..b + seg, a);
    swapped[b..b + seg].copy_from_slice(&first);
    let err = must_fail(&c, &opener, &swapped, "segments swapped");
    assert!(matches!(err, OpenError::Tampered(0)), "{err}");
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Append { bytes: Vec<u8> },
}

fn apply(m: &Mutation, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let n = v.len();
    match m {
        Mutation::Flip { at, mask } => v[at % n] ^= mask,
        Mutation::Truncate { at } => v.truncate(at % n),
        Mutation::Insert { at, bytes } => {
            let at = at % n;
            v.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(n);
            v.drain(at..end);
        }
        Mutation::Append { bytes } => v.extend_from_slice(bytes),
    }
    v
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..300).prop_map(|(at, len)| Mutation::Delete { at, len }),
        prop::collection::vec(any::<u8>(), 1..200).prop_map(|bytes| Mutation::Append { bytes }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn mutated_messages_never_open_and_never_panic(
        mutations in prop::collection::vec(mutation(), 1..4)
    ) {
        thread_local! {
            static CASE: Case = case(64 * 1024 + 300);
            static CACHE: DecapsCache = DecapsCache::new(64);
        }
        CASE.with(|c| CACHE.with(|cache| {
            let mut bytes = c.sealed.clone();
            for m in &mutations {
                bytes = apply(m, &bytes);
                if bytes.is_empty() { break; }
            }
            let opener = Opener::new(&c.params).with_cache(cache);
            let mut out = Vec::new();
            let result = opener.open(&c.bob, &bytes[..], &mut out);
            prop_assert!(c.plain.starts_with(&out));
            if bytes == c.sealed {
                prop_assert!(result.is_ok());
            } else {
                prop_assert!(result.is_err(), "mutations {:?} opened", mutations);
            }
            Ok(())
        }))?;
    }

    #[test]
    fn arbitrary_bytes_after_the_magic_never_panic(tail in prop::collection::vec(any::<u8>(), 0..4096)) {
        thread_local! { static CASE: Case = case(10); }
        CASE.with(|c| {
            let mut bytes = b"PSTN\x01\x01\x00\x10".to_vec();
            bytes.extend_from_slice(&tail);
            let _ = envelope::read_header(&bytes[..]);
            prop_assert!(Opener::new(&c.params).open(&c.bob, &bytes[..], Vec::new()).is_err());
            Ok(())
        })?;
    }
}
