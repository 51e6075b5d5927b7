//! Key derivation and the segmented AEAD (STREAM, Hoang–Reyhanitabar–Rogaway–Vizár 2015) that
//! carries the payload.
//!
//! Each segment is AES-256-GCM under the payload key with the nonce `0^7 ‖ counter (u32 BE) ‖
//! last (u8)`. The key is unique to the message, so nonces never repeat; the counter stops
//! reordering and the `last` flag on the final segment stops truncation.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::identity::Identity;

/// Bytes of an AES-GCM tag.
pub(crate) const TAG_BYTES: usize = 16;
/// The final segment holds the sender's signature.
pub(crate) const SIGNATURE_BYTES: usize = ibs::gg::SIG_BYTES;
/// The final segment on the wire.
pub(crate) const FINAL_SEGMENT_BYTES: usize = SIGNATURE_BYTES + TAG_BYTES;

const INFO_KEK: &[u8] = b"postern/v1/kek";
const INFO_PAYLOAD: &[u8] = b"postern/v1/payload";

fn hkdf(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expansion cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(salt), ikm).expand_multi_info(info, okm.as_mut());
    okm
}

fn kek(shared_secret: &[u8; 32], salt: &[u8], recipient: &Identity) -> Aes256Gcm {
    let epoch = recipient.epoch.to_string();
    let key = hkdf(
        shared_secret,
        salt,
        &[
            INFO_KEK,
            &[0],
            epoch.as_bytes(),
            &[0],
            recipient.address.as_str().as_bytes(),
        ],
    );
    Aes256Gcm::new(key.as_ref().into())
}

/// Wraps the data key for one recipient. The salt is fresh per message, so the key-encryption
/// key is too, even when the shared secret comes from the encapsulation cache.
pub(crate) fn wrap_data_key(
    shared_secret: &[u8; 32],
    salt: &[u8; 16],
    recipient: &Identity,
    data_key: &[u8; 32],
) -> [u8; 48] {
    let mut out = [0u8; 48];
    out[..32].copy_from_slice(data_key);
    let (body, tag_out) = out.split_at_mut(32);
    // AES-GCM encryption of 32 bytes cannot fail.
    if let Ok(tag) = kek(shared_secret, salt, recipient).encrypt_in_place_detached(
        Nonce::from_slice(&[0u8; 12]),
        b"",
        body,
    ) {
        tag_out.copy_from_slice(&tag);
    }
    out
}

/// Unwraps a data key; `None` when the shared secret is not the one it was wrapped with.
pub(crate) fn unwrap_data_key(
    shared_secret: &[u8; 32],
    salt: &[u8; 16],
    recipient: &Identity,
    wrapped: &[u8; 48],
) -> Option<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&wrapped[..32]);
    kek(shared_secret, salt, recipient)
        .decrypt_in_place_detached(
            Nonce::from_slice(&[0u8; 12]),
            b"",
            key.as_mut(),
            Tag::from_slice(&wrapped[32..]),
        )
        .ok()?;
    Some(key)
}

/// The payload AEAD of one message.
pub(crate) struct PayloadCipher {
    aead: Aes256Gcm,
}

/// The segment counter ran past 2^32 (256 TiB at the default segment size).
#[derive(Debug)]
pub(crate) struct CounterOverflow;

impl PayloadCipher {
    /// The payload key is bound to the exact header bytes: changing any header byte (a recipient,
    /// the sender, a flag) changes the key and every segment fails.
    pub(crate) fn new(data_key: &[u8; 32], header_digest: &[u8; 32]) -> Self {
        let key = hkdf(data_key, header_digest, &[INFO_PAYLOAD]);
        PayloadCipher {
            aead: Aes256Gcm::new(key.as_ref().into()),
        }
    }

    fn nonce(counter: u64, last: bool) -> Result<[u8; 12], CounterOverflow> {
        let counter = u32::try_from(counter).map_err(|_| CounterOverflow)?;
        let mut nonce = [0u8; 12];
        nonce[7..11].copy_from_slice(&counter.to_be_bytes());
        nonce[11] = u8::from(last);
        Ok(nonce)
    }

    /// Encrypts `buf` in place and returns its tag.
    pub(crate) fn seal(
        &self,
        counter: u64,
        last: bool,
        buf: &mut [u8],
    ) -> Result<[u8; TAG_BYTES], CounterOverflow> {
        let nonce = Self::nonce(counter, last)?;
        let tag = self
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", buf)
            .map_err(|_| CounterOverflow)?;
        Ok(tag.into())
    }

    /// Decrypts `buf` in place; false when the segment is not authentic at this position.
    pub(crate) fn open(&self, counter: u64, last: bool, buf: &mut [u8], tag: &[u8]) -> bool {
        let Ok(nonce) = Self::nonce(counter, last) else {
            return false;
        };
        tag.len() == TAG_BYTES
            && self
                .aead
                .decrypt_in_place_detached(
                    Nonce::from_slice(&nonce),
                    b"",
                    buf,
                    Tag::from_slice(tag),
                )
                .is_ok()
    }
}
