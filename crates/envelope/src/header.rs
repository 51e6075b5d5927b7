//! The header of a sealed message: who sealed it, for whom, under which master key, and each
//! recipient's encapsulation and wrapped data key. `docs/envelope-format.md` is its reference.

use std::io::{self, Read};

use ibe::kem::cgw_kv;

use crate::error::OpenError;
use crate::identity::{Address, Epoch, Identity};
use crate::keys::KeyId;
use crate::wire::put_short_bytes;

pub(crate) const MAGIC: &[u8; 4] = b"PSTN";
pub(crate) const VERSION: u8 = 1;
/// CGWKV + HKDF-SHA256 + AES-256-GCM STREAM + Galindo–Garcia IBS.
pub(crate) const SUITE: u8 = 1;
pub(crate) const FLAG_DEFAULT_SENDER: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_DEFAULT_SENDER;

/// Most recipients one sealed message may have.
pub const MAX_RECIPIENTS: usize = 1000;
/// Segment sizes a reader accepts, as powers of two (4 KiB to 1 MiB): bounds a reader's memory.
pub(crate) const SEGMENT_LOG2_RANGE: std::ops::RangeInclusive<u8> = 12..=20;
/// The segment size new messages use (64 KiB).
pub(crate) const DEFAULT_SEGMENT_LOG2: u8 = 16;

pub(crate) const CT_BYTES: usize = cgw_kv::CT_BYTES;
pub(crate) const SALT_BYTES: usize = 16;
pub(crate) const WRAPPED_BYTES: usize = 32 + 16;

/// One recipient's slot: its identity's encapsulation and the data key wrapped for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The recipient's normalized address.
    pub address: Address,
    pub(crate) kem_ct: [u8; CT_BYTES],
    pub(crate) salt: [u8; SALT_BYTES],
    pub(crate) wrapped: [u8; WRAPPED_BYTES],
}

/// A parsed header. Everything in it is authenticated once the message has been opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub(crate) flags: u8,
    pub(crate) segment_log2: u8,
    /// The month the recipients' keys are for.
    pub epoch: Epoch,
    /// The master key the encapsulations are under.
    pub kem_key_id: KeyId,
    /// The master key the signing identity belongs to.
    pub sig_key_id: KeyId,
    /// The identity that signed.
    pub signer: Identity,
    /// The address the message claims to be from.
    pub sender: Address,
    /// The recipients, in the order sealed.
    pub recipients: Vec<Recipient>,
}

impl Header {
    /// True when the signer is the gateway's default sender rather than the sender itself.
    pub fn signed_by_default_sender(&self) -> bool {
        self.flags & FLAG_DEFAULT_SENDER != 0
    }

    pub(crate) fn segment_size(&self) -> usize {
        1 << self.segment_log2
    }

    /// The recipient addresses, comma-separated, for messages to people.
    pub fn recipient_list(&self) -> String {
        self.recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.recipients.len() * 320);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(SUITE);
        out.push(self.flags);
        out.push(self.segment_log2);
        out.extend_from_slice(&self.epoch.to_bytes());
        out.extend_from_slice(&self.kem_key_id.0);
        out.extend_from_slice(&self.sig_key_id.0);
        out.extend_from_slice(&self.signer.epoch.to_bytes());
        put_short_bytes(&mut out, self.signer.address.as_str().as_bytes());
        put_short_bytes(&mut out, self.sender.as_str().as_bytes());
        out.extend_from_slice(&(self.recipients.len() as u16).to_be_bytes());
        for r in &self.recipients {
            put_short_bytes(&mut out, r.address.as_str().as_bytes());
            out.extend_from_slice(&r.kem_ct);
            out.extend_from_slice(&r.salt);
            out.extend_from_slice(&r.wrapped);
        }
        out
    }

    /// Reads a header from the start of a sealed message, returning it and its exact bytes.
    pub(crate) fn read<R: Read>(input: &mut R) -> Result<(Header, Vec<u8>), OpenError> {
        let mut r = Recorder {
            input,
            raw: Vec::with_capacity(1024),
        };
        let magic: [u8; 4] = r.array().map_err(|e| match e {
            OpenError::Truncated => OpenError::NotSealed,
            other => other,
        })?;
        if &magic != MAGIC {
            return Err(OpenError::NotSealed);
        }
        let [version, suite, flags, segment_log2] = r.array()?;
        if version != VERSION {
            return Err(OpenError::UnsupportedVersion(version));
        }
        if suite != SUITE {
            return Err(OpenError::UnsupportedSuite(suite));
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(OpenError::Malformed("unknown flags are set"));
        }
        if !SEGMENT_LOG2_RANGE.contains(&segment_log2) {
            return Err(OpenError::Malformed("segment size out of range"));
        }
        let epoch = Epoch::from_bytes(r.array()?).map_err(|_| OpenError::Malformed("bad epoch"))?;
        let kem_key_id = KeyId(r.array()?);
        let sig_key_id = KeyId(r.array()?);
        let signer_epoch =
            Epoch::from_bytes(r.array()?).map_err(|_| OpenError::Malformed("bad signer epoch"))?;
        let signer = r.address()?;
        let sender = r.address()?;
        let count = usize::from(u16::from_be_bytes(r.array()?));
        if count == 0 || count > MAX_RECIPIENTS {
            return Err(OpenError::Malformed("recipient count out of range"));
        }
        let mut recipients = Vec::with_capacity(count);
        let mut seen = std::collections::HashSet::with_capacity(count);
        for _ in 0..count {
            let address = r.address()?;
            if !seen.insert(address.clone()) {
                return Err(OpenError::Malformed("a recipient is listed twice"));
            }
            recipients.push(Recipient {
                address,
                kem_ct: r.array()?,
                salt: r.array()?,
                wrapped: r.array()?,
            });
        }
        let header = Header {
            flags,
            segment_log2,
            epoch,
            kem_key_id,
            sig_key_id,
            signer: Identity::new(signer, signer_epoch),
            sender,
            recipients,
        };
        Ok((header, r.raw))
    }
}

/// Reads from the input and keeps every byte read, for the header digest.
struct Recorder<'a, R> {
    input: &'a mut R,
    raw: Vec<u8>,
}

impl<R: Read> Recorder<'_, R> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], OpenError> {
        let mut buf = [0u8; N];
        self.input.read_exact(&mut buf).map_err(eof_is_truncation)?;
        self.raw.extend_from_slice(&buf);
        Ok(buf)
    }

    fn address(&mut self) -> Result<Address, OpenError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        if len == 0 || len > crate::identity::MAX_ADDRESS_LEN {
            return Err(OpenError::Malformed("address length out of range"));
        }
        let start = self.raw.len();
        self.raw.resize(start + len, 0);
        self.input
            .read_exact(&mut self.raw[start..])
            .map_err(eof_is_truncation)?;
        let text = std::str::from_utf8(&self.raw[start..])
            .map_err(|_| OpenError::Malformed("address is not UTF-8"))?;
        let address = Address::parse(text).map_err(|_| OpenError::Malformed("invalid address"))?;
        if address.as_str() != text {
            return Err(OpenError::Malformed("address is not in normal form"));
        }
        Ok(address)
    }
}

pub(crate) fn eof_is_truncation(e: io::Error) -> OpenError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        OpenError::Truncated
    } else {
        OpenError::Io(e)
    }
}
