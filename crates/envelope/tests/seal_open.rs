//! Sealing and opening as a user sees it: the bytes come back, the right people can open, the
//! wrong ones are told why, and the caches save the expensive step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::{Fixture, addr, epoch, message};
use envelope::{
    DecapsCache, EncapsCache, Epoch, InvalidSignature, MasterKeys, MasterSecretKey, OpenError,
    Opener, SealError, SealOptions, Sealer, Verdict,
};

const SEGMENT: usize = 64 * 1024;

#[test]
fn every_size_comes_back_byte_for_byte_for_every_recipient() {
    let mut f = Fixture::new(1);
    let alice = f.signing_key("alice@corp.example", epoch());
    let to = [
        "bob@partner.example",
        "carol@other.example",
        "dave@partner.example",
    ];
    let keys: Vec<_> = to.iter().map(|a| f.decryption_key(a, epoch())).collect();
    let sizes = [
        0,
        1,
        SEGMENT - 1,
        SEGMENT,
        SEGMENT + 1,
        2 * SEGMENT,
        3 * SEGMENT + 5,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let plain = message(size, i as u8);
        let sealed = f.seal(&alice, &to, &plain);
        for key in &keys {
            let mut out = Vec::new();
            let opened = Opener::new(&f.params)
                .open(key, &sealed[..], &mut out)
                .unwrap();
            assert_eq!(out, plain, "size {size}");
            assert_eq!(opened.plaintext_bytes, size as u64);
            assert_eq!(
                opened.verdict,
                Verdict::Valid {
                    signer: alice.identity().clone(),
                    default_sender: false
                }
            );
            assert_eq!(opened.header.sender, addr("alice@corp.example"));
        }
    }
}

#[test]
fn addresses_are_normalized_before_sealing_and_duplicates_collapse() {
    let mut f = Fixture::new(2);
    let alice = f.signing_key("alice@corp.example", epoch());
    let bob = f.decryption_key("bob@partner.example", epoch());
    let sealed = f.seal(
        &alice,
        &["  Bob@PARTNER.example", "bob@partner.example"],
        b"hi",
    );
    let header = envelope::read_header(&sealed[..]).unwrap();
    assert_eq!(header.recipient_list(), "bob@partner.example");
    let mut out = Vec::new();
    Opener::new(&f.params)
        .open(&bob, &sealed[..], &mut out)
        .unwrap();
    assert_eq!(out, b"hi");
}

#[test]
fn the_wrong_key_is_refused_with_a_reason() {
    let mut f = Fixture::new(3);
    let alice = f.signing_key("alice@corp.example", epoch());
    let sealed = f.seal(&alice, &["bob@partner.example"], b"secret");

    let eve = f.decryption_key("eve@partner.example", epoch());
    let err = Opener::new(&f.params)
        .open(&eve, &sealed[..], Vec::new())
        .unwrap_err();
    assert!(matches!(err, OpenError::NotARecipient { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the key is for eve@partner.example (2026-11), but the message is for bob@partner.example (2026-11)"
    );

    // Bob's key for another month does not open November's message.
    let october = f.decryption_key("bob@partner.example", Epoch::new(2026, 10).unwrap());
    let err = Opener::new(&f.params)
        .open(&october, &sealed[..], Vec::new())
        .unwrap_err();
    assert!(matches!(err, OpenError::NotARecipient { .. }));

    // A key from another key server (another master key).
    let mut other = Fixture::new(4);
    let foreign = other.decryption_key("bob@partner.example", epoch());
    let err = Opener::new(&f.params)
        .open(&foreign, &sealed[..], Vec::new())
        .unwrap_err();
    assert!(matches!(err, OpenError::WrongMasterKey { .. }));

    let err = Opener::new(&f.params)
        .open(&eve, &b"From: someone\r\n\r\nnot sealed"[..], Vec::new())
        .unwrap_err();
    assert!(matches!(err, OpenError::NotSealed));
}

#[test]
fn a_default_sender_signature_is_reported_as_such() {
    let mut f = Fixture::new(5);
    let gateway = f.signing_key("postmaster@corp.example", epoch());
    let bob = f.decryption_key("bob@partner.example", epoch());
    let options = SealOptions {
        recipients: vec![addr("bob@partner.example")],
        epoch: epoch(),
        sender: Some(addr("alice@corp.example")),
    };
    let mut sealed = Vec::new();
    Sealer::new(&f.params)
        .seal(&gateway, &options, &b"hello"[..], &mut sealed)
        .unwrap();
    let opened = Opener::new(&f.params)
        .open(&bob, &sealed[..], Vec::new())
        .unwrap();
    assert_eq!(opened.header.sender, addr("alice@corp.example"));
    assert_eq!(
        opened.verdict.to_string(),
        "signed by the default sender postmaster@corp.example"
    );
}

#[test]
fn a_signature_that_does_not_verify_is_reported_invalid() {
    let mut f = Fixture::new(6);
    let bob = f.decryption_key("bob@partner.example", epoch());

    // A key file relabelled from Mallory to Alice is refused when it is read...
    let mallory = f.signing_key("mallory@corp.example", epoch());
    let alice = f.signing_key("alice12@corp.example", epoch());
    let mut forged = mallory.to_bytes().to_vec();
    let at = forged.windows(7).position(|w| w == b"mallory").unwrap();
    forged[at..at + 7].copy_from_slice(b"alice12");
    assert!(envelope::SigningKey::from_bytes(&forged).is_err());
    // ...and one that also carries Alice's embedded identity signs nothing that verifies.
    let n = forged.len();
    forged[n - 32..].copy_from_slice(&alice.to_bytes()[n - 32..]);
    let forged = envelope::SigningKey::from_bytes(&forged).unwrap();
    let sealed = f.seal(&forged, &["bob@partner.example"], b"pay this invoice");
    let mut out = Vec::new();
    let opened = Opener::new(&f.params)
        .open(&bob, &sealed[..], &mut out)
        .unwrap();
    assert_eq!(
        opened.verdict,
        Verdict::Invalid {
            claimed: forged.identity().clone(),
            reason: InvalidSignature::Mismatch
        }
    );
    assert!(opened.verdict.to_string().starts_with("INVALID signature"));

    // A reader whose parameters lack the signer's master key cannot call it valid.
    let sealed = f.seal(&alice, &["bob@partner.example"], b"hello");
    let mut rng = rand::thread_rng();
    let mut unrelated = MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, 1)]).unwrap();
    // Decapsulation needs no public key, so the message opens; the signature cannot verify.
    unrelated.push(MasterSecretKey::generate(&mut rng, 2));
    let opened = Opener::new(&unrelated.public_params())
        .open(&bob, &sealed[..], Vec::new())
        .unwrap();
    assert_eq!(
        opened.verdict,
        Verdict::Invalid {
            claimed: alice.identity().clone(),
            reason: InvalidSignature::UnknownMasterKey(alice.key_id())
        }
    );

    // Sealing with a signing key whose master key the parameters lack is refused up front.
    let err = Sealer::new(&unrelated.public_params())
        .seal(
            &alice,
            &SealOptions {
                recipients: vec![addr("bob@partner.example")],
                epoch: epoch(),
                sender: None,
            },
            &b"x"[..],
            Vec::new(),
        )
        .unwrap_err();
    assert!(matches!(err, SealError::Key(_)), "{err}");
}

#[test]
fn old_master_keys_still_open_after_rotation() {
    let mut f = Fixture::new(7);
    let alice = f.signing_key("alice@corp.example", epoch());
    let bob_old = f.decryption_key("bob@partner.example", epoch());
    let old_sealed = f.seal(&alice, &["bob@partner.example"], b"before rotation");

    let mut rng = rand::thread_rng();
    f.master
        .push(MasterSecretKey::generate(&mut rng, 1_800_000_000));
    f.params = f.master.public_params();
    let bob_new = f.decryption_key("bob@partner.example", epoch());
    let new_sealed = f.seal(&alice, &["bob@partner.example"], b"after rotation");

    let mut out = Vec::new();
    Opener::new(&f.params)
        .open(&bob_old, &old_sealed[..], &mut out)
        .unwrap();
    assert_eq!(out, b"before rotation");
    let mut out = Vec::new();
    let opened = Opener::new(&f.params)
        .open(&bob_new, &new_sealed[..], &mut out)
        .unwrap();
    assert_eq!(out, b"after rotation");
    // Alice's signing key is from the old master key and still verifies.
    assert!(opened.verdict.is_valid());
    assert!(matches!(
        Opener::new(&f.params).open(&bob_old, &new_sealed[..], Vec::new()),
        Err(OpenError::WrongMasterKey { .. })
    ));
}

#[test]
fn the_second_message_to_a_recipient_reuses_the_encapsulation() {
    let mut f = Fixture::new(8);
    let alice = f.signing_key("alice@corp.example", epoch());
    let bob = f.decryption_key("bob@partner.example", epoch());
    let cache = EncapsCache::with_clock(16, || Epoch::new(2026, 11).unwrap());
    let options = SealOptions {
        recipients: vec![addr("bob@partner.example"), addr("carol@partner.example")],
        epoch: epoch(),
        sender: None,
    };
    let sealer = Sealer::new(&f.params).with_cache(&cache);
    let mut first = Vec::new();
    let r1 = sealer
        .seal(&alice, &options, &b"one"[..], &mut first)
        .unwrap();
    let mut second = Vec::new();
    let r2 = sealer
        .seal(&alice, &options, &b"two"[..], &mut second)
        .unwrap();
    assert_eq!(r1.encapsulations, 2);
    assert_eq!(r2.encapsulations, 0);
    assert_eq!(cache.len(), 2);

    let decaps = DecapsCache::with_clock(16, || Epoch::new(2026, 11).unwrap());
    let opener = Opener::new(&f.params).with_cache(&decaps);
    for (sealed, want) in [(&first, &b"one"[..]), (&second, &b"two"[..])] {
        let mut out = Vec::new();
        opener.open(&bob, &sealed[..], &mut out).unwrap();
        assert_eq!(out, want);
    }
    // Both messages share Bob's encapsulation, so one decapsulation serves both.
    assert_eq!(decaps.len(), 1);
}

static CLOCK: AtomicU32 = AtomicU32::new(2026 * 12 + 10);

fn test_clock() -> Epoch {
    let m = CLOCK.load(Ordering::SeqCst);
    Epoch::new((m / 12) as u16, (m % 12 + 1) as u8).unwrap()
}

#[test]
fn cached_encapsulations_end_with_their_month_and_the_cache_is_bounded() {
    let mut f = Fixture::new(9);
    let alice = f.signing_key("alice@corp.example", epoch());
    let cache = EncapsCache::with_clock(2, test_clock);
    assert_eq!(test_clock(), epoch());
    let seal = |to: &str, e: Epoch| {
        let options = SealOptions {
            recipients: vec![addr(to)],
            epoch: e,
            sender: None,
        };
        Sealer::new(&f.params)
            .with_cache(&cache)
            .seal(&alice, &options, &b"x"[..], Vec::new())
            .unwrap()
            .encapsulations
    };
    let december = epoch().next();
    assert_eq!(seal("bob@partner.example", epoch()), 1);
    assert_eq!(seal("bob@partner.example", december), 1); // prefetch-style: next month
    assert_eq!(seal("bob@partner.example", epoch()), 0);
    assert_eq!(seal("carol@partner.example", epoch()), 1); // evicts the least recently used
    assert_eq!(cache.len(), 2);
    assert_eq!(seal("bob@partner.example", december), 1);

    // The month turns: November's entries go, December's stay.
    CLOCK.store(2026 * 12 + 11, Ordering::SeqCst);
    assert_eq!(seal("bob@partner.example", december), 0);
    assert_eq!(cache.len(), 1);
    // Sealing for a month that is over still works but is never cached.
    assert_eq!(seal("bob@partner.example", epoch()), 1);
    assert_eq!(seal("bob@partner.example", epoch()), 1);
    assert_eq!(cache.len(), 1);
}
