//! Opening an encrypted email: the sealed message found in it (streamed, or read whole when an
//! MTA re-encoded the attachment), the gateway's mark checked, and the original restored byte
//! for byte with the decryption header and notice.

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;

use envelope::{DecapsCache, DecryptionKey, Header, Opener, PublicParams, Verdict};
use mime::{MimeSettings, Signature};
use store::{Body, Finished, Spool};

use sha2::Digest as _;

use crate::mark::{Digesting, MarkKey};

use crate::encrypt::{MAX_HEAD, MAX_IN_MEMORY, SMALL};
use crate::error::TransformError;

/// The sealed message inside an encrypted email: streamed as Postern writes it, or read whole
/// when the attachment was re-encoded on the way.
#[derive(Debug)]
enum Sealed {
    Stream(Body),
    /// The sealed message, and the gateway's mark found after it.
    Whole(Vec<u8>, Option<String>),
}

impl Sealed {
    fn locate(body: &Body) -> Result<Sealed, TransformError> {
        let mut probe = mime::SealedReader::new(BufReader::new(body.open()?));
        let mut first = [0u8; 1];
        match probe.read(&mut first) {
            Ok(_) => Ok(Sealed::Stream(body.clone())),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let len = body.len();
                if len > MAX_IN_MEMORY {
                    return Err(TransformError::TooLarge(len));
                }
                let bytes = body.to_vec()?;
                let (sealed, mark) = mime::sealed_and_mark_from_mime(&bytes)?;
                Ok(Sealed::Whole(sealed, mark))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn reader(&self) -> Result<Box<dyn Read + '_>, TransformError> {
        Ok(match self {
            Sealed::Stream(b) => Box::new(mime::SealedReader::new(BufReader::with_capacity(
                64 * 1024,
                b.open()?,
            ))),
            Sealed::Whole(b, _) => Box::new(&b[..]),
        })
    }
}

/// A sealed message found in an encrypted email, with its header (who signed it, to whom,
/// which month and master key); found once, then opened without looking for it again.
#[derive(Debug)]
pub struct Located {
    /// The header. Nothing in it is authenticated until the message is opened.
    pub header: Header,
    sealed: Sealed,
}

/// True when the sealed message of `located` carries this gateway's mark: this gateway made
/// the encrypted email it came in. Reads the sealed message through once.
pub fn made_here(located: &Located, key: &MarkKey) -> Result<bool, TransformError> {
    match &located.sealed {
        Sealed::Stream(b) => {
            let mut r = mime::SealedReader::new(BufReader::with_capacity(64 * 1024, b.open()?));
            let mut d = Digesting::new(io::sink());
            io::copy(&mut r, &mut d)?;
            let (_, digest) = d.finish();
            if let Some(mark) = r.mark() {
                return Ok(key.verify(&digest, &mark));
            }
            // The page's lines may have been re-encoded (quoted-printable) around base64
            // lines that were not: read the mark as MIME sees it. It must be the mark of the
            // sealed message streamed (the one whose header was checked and is kept), not of
            // another that MIME finds first.
            if b.len() > MAX_IN_MEMORY {
                return Ok(false);
            }
            let (_, mark) = mime::sealed_and_mark_from_mime(&b.to_vec()?)?;
            Ok(mark.is_some_and(|m| key.verify(&digest, &m)))
        }
        Sealed::Whole(b, mark) => {
            let digest: [u8; 32] = sha2::Sha256::digest(b).into();
            Ok(mark.as_deref().is_some_and(|m| key.verify(&digest, m)))
        }
    }
}

/// Copies the sealed message of `located` into a new spool file (fsynced), to be kept.
pub fn keep_sealed(located: &Located, spool: &Spool) -> Result<Finished, TransformError> {
    let mut out = spool.create()?;
    let copied = located
        .sealed
        .reader()
        .and_then(|mut r| Ok(io::copy(&mut r, &mut out)?));
    match copied {
        Ok(_) => Ok(out.finish()?),
        Err(e) => {
            out.discard();
            Err(e)
        }
    }
}

/// Copies a kept sealed message into a new spool file (fsynced) and reads its header.
pub fn keep_copy(kept: &Body, spool: &Spool) -> Result<(Finished, Header), TransformError> {
    let header = envelope::read_header(BufReader::new(kept.open()?))?;
    let mut out = spool.create()?;
    let copied = kept.open().and_then(|mut f| io::copy(&mut f, &mut out));
    match copied {
        Ok(_) => Ok((out.finish()?, header)),
        Err(e) => {
            out.discard();
            Err(e.into())
        }
    }
}

/// Finds the sealed message in the encrypted email `body` and reads its header.
pub fn locate(body: &Body) -> Result<Located, TransformError> {
    let sealed = Sealed::locate(body)?;
    let header = envelope::read_header(sealed.reader()?)?;
    Ok(Located { header, sealed })
}

/// Everything a decryption needs.
pub struct Decrypt {
    /// The encrypted email.
    pub source: Body,
    /// Its header section (its trace fields go on the restored message).
    pub outer: Vec<u8>,
    /// Its sealed message.
    pub located: Located,
    /// The recipient's key.
    pub key: Arc<DecryptionKey>,
    /// Public parameters (the signer's master key).
    pub params: Arc<PublicParams>,
    /// Shared decapsulations.
    pub decaps: Arc<DecapsCache>,
    /// MIMEBuilder settings.
    pub settings: Arc<MimeSettings>,
    /// The decryption X-header's value.
    pub hostname: String,
}

/// The verdict as recorded in a decrypted message.
pub fn signature(verdict: &Verdict) -> Signature {
    match verdict {
        Verdict::Valid {
            signer,
            default_sender: false,
        } => Signature::Sender(signer.address.to_string()),
        Verdict::Valid {
            signer,
            default_sender: true,
        } => Signature::DefaultSender(signer.address.to_string()),
        Verdict::Invalid { claimed, reason } => Signature::Invalid {
            claimed: claimed.address.to_string(),
            reason: reason.to_string(),
        },
    }
}

/// Opens an encrypted email into a new message in the spool (fsynced): the original, byte for
/// byte, under the decryption X-header, the verdict and the trace fields of the way.
pub fn decrypt(job: &Decrypt, spool: &Spool) -> Result<(Finished, Signature), TransformError> {
    let sealed = &job.located.sealed;
    let opener = Opener::new(&job.params).with_cache(&job.decaps);
    let guarded = mime::Guard::new(&job.settings, &job.hostname);
    let size = job.source.len();
    let in_memory = size < SMALL || job.settings.add_decryption_notice;
    if in_memory && size > MAX_IN_MEMORY {
        return Err(TransformError::TooLarge(size));
    }

    // The plaintext goes somewhere private first: only an authenticated whole is used.
    enum Plain {
        Memory(Vec<u8>),
        Scratch(Finished),
    }
    let (plain, opened) = if in_memory {
        let mut filter = mime::HeaderFilter::guarding(Vec::new(), guarded, MAX_HEAD);
        let opened = opener.open(&job.key, sealed.reader()?, &mut filter)?;
        let mut bytes = filter.finish()?;
        if job.settings.add_decryption_notice {
            bytes = mime::add_notice(&bytes, &job.settings.decryption_notice);
        }
        (Plain::Memory(bytes), opened)
    } else {
        let mut scratch = spool.create()?;
        let result = (|| -> Result<_, TransformError> {
            let mut filter = mime::HeaderFilter::guarding(&mut scratch, guarded, MAX_HEAD);
            let opened = opener.open(&job.key, sealed.reader()?, &mut filter)?;
            filter.finish()?;
            Ok(opened)
        })();
        match result {
            Ok(opened) => (Plain::Scratch(scratch.finish_unsynced()?), opened),
            Err(e) => {
                scratch.discard();
                return Err(e);
            }
        }
    };
    let verdict = signature(&opened.verdict);
    let prefix = mime::decryption_prefix(&job.outer, &job.settings, &job.hostname, &verdict);
    let mut out = spool.create()?;
    let written = (|| -> io::Result<()> {
        out.append(&prefix)?;
        match &plain {
            Plain::Memory(b) => out.append(b)?,
            Plain::Scratch(f) => {
                io::copy(&mut f.body().open()?, &mut out)?;
            }
        }
        out.flush()
    })();
    if let Plain::Scratch(f) = plain {
        f.discard();
    }
    match written {
        Ok(()) => Ok((out.finish()?, verdict)),
        Err(e) => {
            out.discard();
            Err(e.into())
        }
    }
}
