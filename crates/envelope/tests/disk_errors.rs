//! A disk that fails under the sealer or the opener is a failure to retry, never a verdict on
//! the message: a full disk must not make mail look unencryptable or undecryptable, while a
//! damaged sealed message or a wrong key stays a failure no retry fixes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{self, Read, Write};

use common::{Fixture, addr, epoch, message};
use envelope::{OpenError, Opener, SealError, SealOptions, Sealer, io_is_transient};

/// ENOSPC, as the kernel reports a full disk.
fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// Takes `room` bytes, then fails as a full disk does.
struct FullDisk {
    room: usize,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(enospc());
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Gives `good` bytes, then fails as a dying disk does (EIO).
struct BadSector<'a> {
    good: &'a [u8],
}

impl Read for BadSector<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.good.is_empty() {
            return Err(io::Error::from_raw_os_error(5));
        }
        let n = buf.len().min(self.good.len());
        buf[..n].copy_from_slice(&self.good[..n]);
        self.good = &self.good[n..];
        Ok(n)
    }
}

fn options(to: &str) -> SealOptions {
    SealOptions {
        recipients: vec![addr(to)],
        epoch: epoch(),
        sender: None,
    }
}

#[test]
fn a_full_disk_under_the_sealer_is_a_failure_to_retry() {
    let mut f = Fixture::new(40);
    let alice = f.signing_key("alice@corp.example", epoch());
    let plain = message(300 * 1024, 1);
    let e = Sealer::new(&f.params)
        .seal(
            &alice,
            &options("bob@partner.example"),
            &plain[..],
            FullDisk { room: 100 * 1024 },
        )
        .unwrap_err();
    assert!(matches!(e, SealError::Io(_)), "{e}");
    assert!(e.is_transient(), "ENOSPC while sealing: {e}");

    // A plaintext that cannot be read (EIO) is the disk's fault too.
    let e = Sealer::new(&f.params)
        .seal(
            &alice,
            &options("bob@partner.example"),
            BadSector {
                good: &plain[..70_000],
            },
            Vec::new(),
        )
        .unwrap_err();
    assert!(e.is_transient(), "EIO while sealing: {e}");

    // No recipient: no retry helps.
    let none = SealOptions {
        recipients: Vec::new(),
        epoch: epoch(),
        sender: None,
    };
    let e = Sealer::new(&f.params)
        .seal(&alice, &none, &plain[..], Vec::new())
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
}

#[test]
fn a_full_disk_under_the_opener_is_a_failure_to_retry_and_damage_is_not() {
    let mut f = Fixture::new(41);
    let alice = f.signing_key("alice@corp.example", epoch());
    let bob = f.decryption_key("bob@partner.example", epoch());
    let carol = f.decryption_key("carol@partner.example", epoch());
    let plain = message(300 * 1024, 2);
    let sealed = f.seal(&alice, &["bob@partner.example"], &plain);

    let e = Opener::new(&f.params)
        .open(&bob, &sealed[..], FullDisk { room: 1000 })
        .unwrap_err();
    assert!(e.is_transient(), "ENOSPC while opening: {e}");
    let e = Opener::new(&f.params)
        .open(
            &bob,
            BadSector {
                good: &sealed[..100_000],
            },
            Vec::new(),
        )
        .unwrap_err();
    assert!(e.is_transient(), "EIO while opening: {e}");

    // What no retry fixes: a damaged message, a cut one, a wrong key.
    let mut damaged = sealed.clone();
    let at = damaged.len() - 1000;
    damaged[at] ^= 1;
    let e = Opener::new(&f.params)
        .open(&bob, &damaged[..], Vec::new())
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let e = Opener::new(&f.params)
        .open(&bob, &sealed[..sealed.len() / 2], Vec::new())
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let e = Opener::new(&f.params)
        .open(&carol, &sealed[..], Vec::new())
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(matches!(e, OpenError::NotARecipient { .. }), "{e}");
}

#[test]
fn io_errors_are_judged_by_what_failed() {
    assert!(io_is_transient(&enospc()));
    // EDQUOT and EIO, and an error that wraps one.
    assert!(io_is_transient(&io::Error::from_raw_os_error(122)));
    assert!(io_is_transient(&io::Error::other(
        io::Error::from_raw_os_error(5)
    )));
    assert!(io_is_transient(&io::Error::new(
        io::ErrorKind::InvalidData,
        io::Error::from_raw_os_error(28)
    )));
    // Bytes that are not what they should be.
    assert!(!io_is_transient(&io::Error::new(
        io::ErrorKind::InvalidData,
        "not base64"
    )));
    assert!(!io_is_transient(&io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "cut short"
    )));
}
