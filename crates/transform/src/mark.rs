//! The gateway's mark on the encrypted email it makes: an HMAC-SHA256, under a secret only this
//! gateway holds, of the SHA-256 of the sealed message. `encrypted_message.htm` carries it
//! beside the sealed message.
//!
//! The header of a sealed message (its sender and recipients) is not authenticated until a
//! recipient opens it, and anyone can write one. Forward to decrypt answers to an address the
//! header names, so without the mark a stranger could have the gateway mail any address, from
//! the gateway's own domain, about a message it never sealed. With it, the gateway answers only
//! for sealed messages it made itself.

use std::io::{self, Write};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The name of the secret in the store.
pub const SECRET_NAME: &str = "gateway-mark";

/// What the HMAC covers before the digest, so that the key serves no other purpose.
const CONTEXT: &[u8] = b"postern/v1/gateway-mark";

/// The key of the mark.
pub struct MarkKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MarkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MarkKey(..)")
    }
}

impl MarkKey {
    /// The key made from the gateway's stored secret.
    pub fn new(secret: Zeroizing<[u8; 32]>) -> Self {
        MarkKey(secret)
    }

    fn tag(&self, digest: &[u8; 32]) -> [u8; 32] {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..])
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(CONTEXT);
        mac.update(digest);
        mac.finalize().into_bytes().into()
    }

    /// The mark of the sealed message whose SHA-256 is `digest`: 64 hex digits.
    pub fn mark(&self, digest: &[u8; 32]) -> String {
        self.tag(digest)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// True when `claimed` is the mark of the sealed message whose SHA-256 is `digest`,
    /// compared in constant time.
    pub fn verify(&self, digest: &[u8; 32], claimed: &str) -> bool {
        let expected = self.mark(digest);
        expected.len() == claimed.len() && bool::from(expected.as_bytes().ct_eq(claimed.as_bytes()))
    }
}

/// A writer that passes everything on and keeps the SHA-256 of it.
#[derive(Debug)]
pub struct Digesting<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Digesting<W> {
    /// Writes to `inner`.
    pub fn new(inner: W) -> Self {
        Digesting {
            inner,
            hash: Sha256::new(),
        }
    }

    /// The writer, and the SHA-256 of what went through.
    pub fn finish(self) -> (W, [u8; 32]) {
        (self.inner, self.hash.finalize().into())
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MarkKey {
        MarkKey::new(Zeroizing::new([byte; 32]))
    }

    #[test]
    fn a_mark_verifies_only_under_its_key_and_for_its_message() {
        let (_, digest) = {
            let mut d = Digesting::new(Vec::new());
            d.write_all(b"sealed bytes").unwrap();
            d.finish()
        };
        let mark = key(1).mark(&digest);
        assert_eq!(mark.len(), 64);
        assert!(key(1).verify(&digest, &mark));
        assert!(!key(2).verify(&digest, &mark), "another gateway's key");
        let other: [u8; 32] = Sha256::digest(b"other bytes").into();
        assert!(!key(1).verify(&other, &mark), "another message");
        assert!(!key(1).verify(&digest, &mark[..63]));
        assert!(!key(1).verify(&digest, ""));
    }

    #[test]
    fn the_digest_is_of_what_was_written() {
        let mut d = Digesting::new(Vec::new());
        d.write_all(b"abc").unwrap();
        d.write_all(b"def").unwrap();
        let (inner, digest) = d.finish();
        assert_eq!(inner, b"abcdef");
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(b"abcdef")));
    }
}
