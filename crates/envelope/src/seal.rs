//! Sealing: a byte stream in, a sealed message out, in bounded memory.

use std::io::{ErrorKind, Read, Write};

use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cache::EncapsCache;
use crate::error::SealError;
use crate::header::{DEFAULT_SEGMENT_LOG2, FLAG_DEFAULT_SENDER, Header, MAX_RECIPIENTS, Recipient};
use crate::identity::{Address, Epoch, Identity};
use crate::keys::{KeyId, PublicParams, SigningKey};
use crate::stream::{PayloadCipher, TAG_BYTES, wrap_data_key};

/// What to seal for whom.
#[derive(Clone, Debug)]
pub struct SealOptions {
    /// Recipients; duplicates are sealed to once.
    pub recipients: Vec<Address>,
    /// The month of the recipients' keys.
    pub epoch: Epoch,
    /// The address the message is from. When it is not the signing key's own address, the
    /// signing key acts as the gateway's default sender and the header says so.
    pub sender: Option<Address>,
}

/// What a seal did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealReport {
    /// The master key the message is sealed under.
    pub key_id: KeyId,
    /// Bytes of plaintext read.
    pub plaintext_bytes: u64,
    /// Bytes of sealed message written.
    pub sealed_bytes: u64,
    /// New IBE encapsulations made (the rest came from the cache).
    pub encapsulations: usize,
}

/// Seals messages under the newest master key of some public parameters.
#[derive(Clone, Copy, Debug)]
pub struct Sealer<'a> {
    params: &'a PublicParams,
    cache: Option<&'a EncapsCache>,
    segment_log2: u8,
}

impl<'a> Sealer<'a> {
    /// A sealer that encapsulates afresh for every message.
    pub fn new(params: &'a PublicParams) -> Self {
        Sealer {
            params,
            cache: None,
            segment_log2: DEFAULT_SEGMENT_LOG2,
        }
    }

    /// Reuses encapsulations from `cache` (see [`crate::cache`]).
    pub fn with_cache(mut self, cache: &'a EncapsCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Seals `input` to `output`, with randomness from the operating system.
    pub fn seal<R: Read, W: Write>(
        &self,
        signer: &SigningKey,
        options: &SealOptions,
        input: R,
        output: W,
    ) -> Result<SealReport, SealError> {
        self.seal_with_rng(signer, options, input, output, &mut OsRng)
    }

    /// Seals with the given randomness; a seeded generator makes the output reproducible (the
    /// test vectors are made so).
    pub fn seal_with_rng<R: Read, W: Write, G: RngCore + CryptoRng>(
        &self,
        signer: &SigningKey,
        options: &SealOptions,
        mut input: R,
        mut output: W,
        rng: &mut G,
    ) -> Result<SealReport, SealError> {
        let mut recipients: Vec<Address> = Vec::with_capacity(options.recipients.len());
        for r in &options.recipients {
            if !recipients.contains(r) {
                recipients.push(r.clone());
            }
        }
        if recipients.is_empty() {
            return Err(SealError::NoRecipients);
        }
        if recipients.len() > MAX_RECIPIENTS {
            return Err(SealError::TooManyRecipients(recipients.len()));
        }
        // The recipient verifies with the signer's master key, so it must be published.
        self.params.get(signer.key_id())?;
        let mpk = self.params.newest();

        let mut data_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(data_key.as_mut());
        let mut encapsulations = 0;
        let mut slots = Vec::with_capacity(recipients.len());
        for address in recipients {
            let identity = Identity::new(address, options.epoch);
            let (kem_ct, shared_secret, fresh) = match self.cache {
                Some(cache) => cache.get_or_encaps(mpk, &identity, rng),
                None => {
                    let (ct, ss) = mpk.encaps(&identity, rng);
                    let mut bytes = [0u8; crate::header::CT_BYTES];
                    bytes.copy_from_slice(ibe::Compress::to_bytes(&ct).as_ref());
                    (bytes, ss, true)
                }
            };
            encapsulations += usize::from(fresh);
            let mut salt = [0u8; 16];
            rng.fill_bytes(&mut salt);
            let wrapped = wrap_data_key(&shared_secret, &salt, &identity, &data_key);
            slots.push(Recipient {
                address: identity.address,
                kem_ct,
                salt,
                wrapped,
            });
        }

        let sender = options
            .sender
            .clone()
            .unwrap_or_else(|| signer.identity().address.clone());
        let flags = if sender == signer.identity().address {
            0
        } else {
            FLAG_DEFAULT_SENDER
        };
        let header = Header {
            flags,
            segment_log2: self.segment_log2,
            epoch: options.epoch,
            kem_key_id: mpk.id(),
            sig_key_id: signer.key_id(),
            signer: signer.identity().clone(),
            sender,
            recipients: slots,
        };
        let header_bytes = header.encode();
        let header_digest: [u8; 32] = Sha256::digest(&header_bytes).into();
        output.write_all(&header_bytes)?;
        let cipher = PayloadCipher::new(&data_key, &header_digest);

        let segment = header.segment_size();
        let mut buf = vec![0u8; segment];
        let mut hasher = Sha256::new();
        let mut counter = 0u64;
        let mut plaintext_bytes = 0u64;
        let mut sealed_bytes = header_bytes.len() as u64;
        loop {
            let filled = fill(&mut input, &mut buf)?;
            if filled == 0 {
                break;
            }
            let chunk = &mut buf[..filled];
            hasher.update(&*chunk);
            let tag = cipher.seal(counter, false, chunk).map_err(too_long)?;
            output.write_all(chunk)?;
            output.write_all(&tag)?;
            counter += 1;
            plaintext_bytes += filled as u64;
            sealed_bytes += (filled + TAG_BYTES) as u64;
            if filled < segment {
                break;
            }
        }

        let plaintext_digest: [u8; 32] = hasher.finalize().into();
        let signature = ibs::gg::Signer::new()
            .chain(b"postern/v1/signature")
            .chain(header_digest)
            .chain(plaintext_digest)
            .sign(&signer.usk, rng);
        let mut last = bincode::serialize(&signature).unwrap_or_default();
        let tag = cipher.seal(counter, true, &mut last).map_err(too_long)?;
        output.write_all(&last)?;
        output.write_all(&tag)?;
        output.flush()?;
        sealed_bytes += (last.len() + TAG_BYTES) as u64;

        Ok(SealReport {
            key_id: mpk.id(),
            plaintext_bytes,
            sealed_bytes,
            encapsulations,
        })
    }
}

fn too_long(_: crate::stream::CounterOverflow) -> SealError {
    SealError::Io(std::io::Error::new(
        ErrorKind::InvalidInput,
        "the message is longer than a sealed message can hold",
    ))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn fill<R: Read>(input: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
