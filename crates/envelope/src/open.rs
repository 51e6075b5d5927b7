//! Opening: a sealed message in, the original bytes and a signature verdict out.
//!
//! Plaintext is written as segments authenticate, so memory stays bounded; the message as a
//! whole is authentic only when [`Opener::open`] returns `Ok`. A caller that must not expose a
//! partial plaintext (the CLI's `--out`, a mail queue) writes to a temporary place and commits on
//! `Ok` only.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::cache::{DecapsCache, decaps};
use crate::error::OpenError;
use crate::header::{CT_BYTES, Header};
use crate::identity::Identity;
use crate::keys::{DecryptionKey, KeyId, PublicParams, ibs_identity};
use crate::seal::fill;
use crate::stream::{
    FINAL_SEGMENT_BYTES, PayloadCipher, SIGNATURE_BYTES, TAG_BYTES, unwrap_data_key,
};

/// Who signed an opened message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The signature verifies for `signer`.
    Valid {
        /// The signing identity.
        signer: Identity,
        /// True when the signer is the sending gateway's default sender, not the sender.
        default_sender: bool,
    },
    /// The signature does not verify; the content must not be attributed to `claimed`.
    Invalid {
        /// The identity the header names as signer.
        claimed: Identity,
        /// Why it does not verify.
        reason: InvalidSignature,
    },
}

impl Verdict {
    /// True for a signature that verifies.
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid { .. })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Valid {
                signer,
                default_sender: false,
            } => write!(f, "signed by {}", signer.address),
            Verdict::Valid {
                signer,
                default_sender: true,
            } => write!(f, "signed by the default sender {}", signer.address),
            Verdict::Invalid { claimed, reason } => write!(
                f,
                "INVALID signature: claims to be signed by {}, but {reason}",
                claimed.address
            ),
        }
    }
}

/// Why a signature does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidSignature {
    /// The signature does not match the header and content.
    Mismatch,
    /// The signer's master key is not in the public parameters.
    UnknownMasterKey(KeyId),
}

impl std::fmt::Display for InvalidSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidSignature::Mismatch => f.write_str("the signature does not match the message"),
            InvalidSignature::UnknownMasterKey(id) => {
                write!(f, "its master key {id} is not in the public parameters")
            }
        }
    }
}

/// What an open produced, besides the plaintext.
#[derive(Clone, Debug)]
pub struct Opened {
    /// The authenticated header.
    pub header: Header,
    /// The signature verdict.
    pub verdict: Verdict,
    /// Bytes of plaintext written.
    pub plaintext_bytes: u64,
}

/// Opens sealed messages.
#[derive(Clone, Copy, Debug)]
pub struct Opener<'a> {
    params: &'a PublicParams,
    cache: Option<&'a DecapsCache>,
}

/// Reads only the header: who sent a sealed message and to whom. Nothing in it is authenticated
/// until the message is opened.
pub fn read_header<R: Read>(mut input: R) -> Result<Header, OpenError> {
    Header::read(&mut input).map(|(h, _)| h)
}

impl<'a> Opener<'a> {
    /// An opener that verifies signatures against `params`.
    pub fn new(params: &'a PublicParams) -> Self {
        Opener {
            params,
            cache: None,
        }
    }

    /// Remembers decapsulations in `cache`.
    pub fn with_cache(mut self, cache: &'a DecapsCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Opens `input` with `key`, writing the plaintext to `output` as it authenticates.
    pub fn open<R: Read, W: Write>(
        &self,
        key: &DecryptionKey,
        mut input: R,
        mut output: W,
    ) -> Result<Opened, OpenError> {
        let (header, raw) = Header::read(&mut input)?;
        if key.key_id() != header.kem_key_id {
            return Err(OpenError::WrongMasterKey {
                key: key.key_id(),
                message: header.kem_key_id,
            });
        }
        let me = key.identity();
        let slot = header
            .recipients
            .iter()
            .find(|r| r.address == me.address && header.epoch == me.epoch)
            .ok_or_else(|| OpenError::NotARecipient {
                key_for: me.to_string(),
                recipients: header.recipient_list(),
                epoch: header.epoch.to_string(),
            })?;
        let data_key = self
            .unwrap(key, &slot.kem_ct, &slot.salt, &slot.wrapped)
            .ok_or(OpenError::KeyMismatch)?;
        let header_digest: [u8; 32] = Sha256::digest(&raw).into();
        let cipher = PayloadCipher::new(&data_key, &header_digest);

        let segment = header.segment_size();
        let full = segment + TAG_BYTES;
        let window = full + FINAL_SEGMENT_BYTES;
        // One byte more than a full segment and the final segment: when that much is buffered,
        // the first `full` bytes cannot be the last data segment.
        let mut buf = vec![0u8; window + 1];
        let mut len = 0;
        let mut counter = 0u64;
        let mut hasher = Sha256::new();
        let mut plaintext_bytes = 0u64;
        loop {
            len += fill(&mut input, &mut buf[len..])?;
            if len > window {
                let (body, rest) = buf.split_at_mut(segment);
                if !cipher.open(counter, false, body, &rest[..TAG_BYTES]) {
                    return Err(OpenError::Tampered(counter));
                }
                hasher.update(&*body);
                output.write_all(body)?;
                plaintext_bytes += segment as u64;
                counter += 1;
                buf.copy_within(full..len, 0);
                len -= full;
                continue;
            }
            // The input has ended: what is left is at most one short data segment and the final.
            if len < FINAL_SEGMENT_BYTES {
                return Err(OpenError::Truncated);
            }
            let data = len - FINAL_SEGMENT_BYTES;
            if data > 0 {
                if data <= TAG_BYTES {
                    return Err(OpenError::Truncated);
                }
                let (body, rest) = buf.split_at_mut(data - TAG_BYTES);
                if !cipher.open(counter, false, body, &rest[..TAG_BYTES]) {
                    return Err(OpenError::Tampered(counter));
                }
                hasher.update(&*body);
                output.write_all(body)?;
                plaintext_bytes += body.len() as u64;
                counter += 1;
            }
            let (sig, tag) = buf[data..len].split_at_mut(SIGNATURE_BYTES);
            if !cipher.open(counter, true, sig, tag) {
                return Err(OpenError::Tampered(counter));
            }
            output.flush()?;
            let plaintext_digest: [u8; 32] = hasher.finalize().into();
            let verdict = self.verify(&header, &header_digest, &plaintext_digest, sig);
            return Ok(Opened {
                header,
                verdict,
                plaintext_bytes,
            });
        }
    }

    fn unwrap(
        &self,
        key: &DecryptionKey,
        ct: &[u8; CT_BYTES],
        salt: &[u8; 16],
        wrapped: &[u8; 48],
    ) -> Option<zeroize::Zeroizing<[u8; 32]>> {
        let identity = key.identity();
        if let Some(ss) = self.cache.and_then(|c| c.get(key, ct))
            && let Some(dk) = unwrap_data_key(&ss, salt, identity, wrapped)
        {
            return Some(dk);
        }
        let ss = decaps(key, ct)?;
        let dk = unwrap_data_key(&ss, salt, identity, wrapped)?;
        if let Some(cache) = self.cache {
            cache.put(key, ct, ss);
        }
        Some(dk)
    }

    fn verify(
        &self,
        header: &Header,
        header_digest: &[u8; 32],
        plaintext_digest: &[u8; 32],
        sig: &[u8],
    ) -> Verdict {
        let claimed = header.signer.clone();
        let mpk = match self.params.get(header.sig_key_id) {
            Ok(mpk) => mpk,
            Err(_) => {
                return Verdict::Invalid {
                    claimed,
                    reason: InvalidSignature::UnknownMasterKey(header.sig_key_id),
                };
            }
        };
        let valid = bincode::deserialize::<ibs::gg::Signature>(sig).is_ok_and(|sig| {
            ibs::gg::Verifier::new()
                .chain(b"postern/v1/signature")
                .chain(header_digest)
                .chain(plaintext_digest)
                .verify(&mpk.ibs, &sig, &ibs_identity(&claimed))
        });
        if valid {
            // Derived, not taken from the header's flag: a sender other than the signer is only
            // vouched for by the signer as a default sender, whatever the flag says.
            Verdict::Valid {
                default_sender: header.sender != claimed.address,
                signer: claimed,
            }
        } else {
            Verdict::Invalid {
                claimed,
                reason: InvalidSignature::Mismatch,
            }
        }
    }
}
