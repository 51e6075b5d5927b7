//! A full spool under a transformation: sealing, sealing a large message to keep, opening, and
//! keeping a forwarded sealed message all fail as something to retry (the errored queue), never
//! as a fault of the message (the exception rules); and they leave no file behind. A damaged
//! sealed message is still the message's fault.
//!
//! Needs root: the spool lies on a small tmpfs mounted for the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use envelope::{
    Address, DecapsCache, EncapsCache, Epoch, Identity, MasterKeys, MasterSecretKey, PublicParams,
};
use mime::MimeSettings;
use store::{Body, Spool};
use transform::MarkKey;
use transform::{Decrypt, Encrypt, Original, TransformError};
use zeroize::Zeroizing;

struct Keys {
    master: MasterKeys,
    params: Arc<PublicParams>,
    epoch: Epoch,
}

impl Keys {
    fn new() -> Keys {
        let master = MasterKeys::new(vec![MasterSecretKey::generate(
            &mut rand::thread_rng(),
            1_700_000_000,
        )])
        .unwrap();
        Keys {
            params: Arc::new(master.public_params()),
            master,
            epoch: Epoch::new(2026, 11).unwrap(),
        }
    }

    fn identity(&self, a: &str) -> Identity {
        Identity::new(Address::parse(a).unwrap(), self.epoch)
    }

    fn encrypt_job(&self, original: &Body, to: &str, keep_until: Option<u64>) -> Encrypt {
        let signer = self.master.newest().extract_signing_key(
            &self.identity("alice@corp.example"),
            &mut rand::thread_rng(),
        );
        let settings = MimeSettings {
            keep_above_bytes: 100 * 1024,
            ..MimeSettings::default()
        };
        Encrypt {
            original: Arc::new(Original::read(original).unwrap()),
            recipients: vec![Address::parse(to).unwrap()],
            epoch: self.epoch,
            sender: Some(Address::parse("alice@corp.example").unwrap()),
            signer: Arc::new(signer),
            mark: Arc::new(MarkKey::new(Zeroizing::new([7u8; 32]))),
            params: self.params.clone(),
            encaps: Arc::new(EncapsCache::new(16)),
            settings: Arc::new(settings),
            hostname: "gw.corp.example".into(),
            keep_until,
        }
    }

    fn decrypt_job(&self, email: &Body, to: &str) -> Decrypt {
        let key = self
            .master
            .newest()
            .extract_decryption_key(&self.identity(to), &mut rand::thread_rng());
        Decrypt {
            source: email.clone(),
            outer: transform::read_head(email).unwrap(),
            located: transform::locate(email).unwrap(),
            key: Arc::new(key),
            params: self.params.clone(),
            decaps: Arc::new(DecapsCache::new(16)),
            settings: Arc::new(MimeSettings::default()),
            hostname: "gw.corp.example".into(),
        }
    }
}

/// A plain message of about `size` bytes, held outside the small disk.
fn plain_message(size: usize) -> Body {
    let mut m =
        b"From: alice@corp.example\r\nTo: bob@partner.example\r\nSubject: disk\r\n\r\n".to_vec();
    let mut n = 0u64;
    while m.len() < size {
        n += 1;
        m.extend_from_slice(
            format!("line {n} of a message that does not compress to nothing\r\n").as_bytes(),
        );
    }
    Body::from_bytes(m)
}

/// Files left in the spool's `incoming/`.
fn left_in_spool(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("incoming"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn assert_retry(what: &str, e: &TransformError) {
    assert!(
        e.is_transient(),
        "{what} on a full disk is treated as a fault of the message: {e} ({e:?})"
    );
}

#[test]
fn a_full_spool_makes_every_transformation_a_failure_to_retry() {
    let keys = Keys::new();
    let outside = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let disk = testkit::SmallDisk::mount(tmp.path(), "1m");
    let root = disk.path().join("spool");
    let spool = Spool::open(&root).unwrap();

    // Made while there is room: an encrypted email, outside the small disk.
    let plain = plain_message(1536 * 1024);
    let made = transform::encrypt(
        &keys.encrypt_job(&plain, "bob@partner.example", None),
        &Spool::open(&outside.path().join("spool")).unwrap(),
    )
    .unwrap();
    let email = Body::from_bytes(made.email.body().to_vec().unwrap());

    disk.fill();

    // Sealing into an encrypted email: the sealer's own writes fail.
    let e = transform::encrypt(
        &keys.encrypt_job(&plain, "bob@partner.example", None),
        &spool,
    )
    .unwrap_err();
    assert_retry("sealing", &e);
    assert!(matches!(e, TransformError::Seal(_)), "{e:?}");
    // Sealing a large message into the file the gateway keeps.
    let e = transform::encrypt(
        &keys.encrypt_job(&plain, "bob@partner.example", Some(u64::MAX / 2)),
        &spool,
    )
    .unwrap_err();
    assert_retry("sealing a message to keep", &e);
    // Opening (a large message goes through a scratch file).
    let e =
        transform::decrypt(&keys.decrypt_job(&email, "bob@partner.example"), &spool).unwrap_err();
    assert_retry("opening", &e);
    // Keeping a forwarded sealed message (forward to decrypt).
    let located = transform::locate(&email).unwrap();
    let e = transform::keep_sealed(&located, &spool).unwrap_err();
    assert_retry("keeping a forwarded message", &e);

    assert_eq!(
        left_in_spool(&root),
        Vec::<String>::new(),
        "files left behind"
    );
}

#[test]
fn a_damaged_sealed_message_is_still_the_message_s_fault() {
    let keys = Keys::new();
    let outside = tempfile::tempdir().unwrap();
    let spool = Spool::open(&outside.path().join("spool")).unwrap();
    let plain = plain_message(8 * 1024);
    let made = transform::encrypt(
        &keys.encrypt_job(&plain, "bob@partner.example", None),
        &spool,
    )
    .unwrap();
    let mut text = made.email.body().to_vec().unwrap();
    // A full base64 line of the sealed message, in the middle, changed but still base64.
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, w) in text.windows(2).enumerate() {
        if w == b"\r\n" {
            let line = &text[start..i];
            if line.len() == 76
                && line
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"+/".contains(c))
            {
                lines.push(start);
            }
            start = i + 2;
        }
    }
    assert!(lines.len() > 10, "no base64 lines found");
    let at = lines[lines.len() / 2] + 10;
    text[at] = if text[at] == b'A' { b'B' } else { b'A' };
    let email = Body::from_bytes(text);
    let job = match transform::locate(&email) {
        Ok(_) => keys.decrypt_job(&email, "bob@partner.example"),
        Err(e) => {
            assert!(!e.is_transient(), "{e}");
            return;
        }
    };
    let e = transform::decrypt(&job, &spool).unwrap_err();
    assert!(!e.is_transient(), "{e} ({e:?})");
    // Not sealed to this recipient: no retry opens it.
    let job = keys.decrypt_job(&email, "carol@partner.example");
    let e = transform::decrypt(&job, &spool).unwrap_err();
    assert!(!e.is_transient(), "{e} ({e:?})");
}
