//! The blocking half of a transformation: file in, file out, crypto in between. Run on the
//! blocking thread pool; each function streams, so memory stays bounded for large messages
//! (except when a notice must be put inside a body, which needs the message parsed).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use envelope::{
    Address, DecapsCache, DecryptionKey, EncapsCache, Epoch, Header, OpenError, Opener,
    PublicParams, SealError, SealOptions, Sealer, SigningKey, Verdict,
};
use mime::{MimeSettings, Signature};
use store::{Finished, Spool};

use sha2::Digest as _;

use crate::mark::{Digesting, MarkKey};

/// Largest header section read (a longer one is not a header an MUA wrote).
pub const MAX_HEAD: usize = 1024 * 1024;

/// Largest message read whole when its sealed message cannot be streamed (an MTA re-encoded
/// the attachment) or a notice must go into its body.
const MAX_IN_MEMORY: u64 = 64 * 1024 * 1024;

/// Plaintext smaller than this is opened into memory rather than a scratch file.
const SMALL: u64 = 1024 * 1024;

/// Why a transformation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// The spool (a full disk).
    #[error("spool: {0}")]
    Io(#[from] io::Error),
    /// No sealed message could be read from the email.
    #[error("{0}")]
    NotSealed(#[from] mime::ReadError),
    /// Sealing failed.
    #[error("cannot seal: {0}")]
    Seal(#[from] SealError),
    /// Opening failed.
    #[error("cannot open the sealed message: {0}")]
    Open(#[from] OpenError),
    /// Too large to handle in memory.
    #[error("the message is too large to read whole ({0} bytes)")]
    TooLarge(u64),
}

impl TransformError {
    /// True when the same transformation may succeed later: the disk failed (full, a quota, a
    /// device error), wherever in the chain its error came up. Such a failure waits in the
    /// errored queue; only a fault of the message or its keys goes to an exception rule.
    pub fn is_transient(&self) -> bool {
        match self {
            TransformError::Io(e) | TransformError::NotSealed(mime::ReadError::Io(e)) => {
                envelope::io_is_transient(e)
            }
            TransformError::Seal(e) => e.is_transient(),
            TransformError::Open(e) => e.is_transient(),
            TransformError::NotSealed(
                mime::ReadError::NotFound
                | mime::ReadError::Truncated
                | mime::ReadError::Damaged(_),
            )
            | TransformError::TooLarge(_) => false,
        }
    }
}

/// The header section at the start of a message file.
pub fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut head = Vec::with_capacity(4096);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" || head.len() > MAX_HEAD {
            break;
        }
    }
    Ok(head)
}

/// What the encrypted email is built from, read once per message however many sealed copies
/// it gets.
pub struct Original {
    /// The message.
    pub path: PathBuf,
    /// Its header section.
    pub head: Vec<u8>,
    /// True when it carries a meeting request.
    pub meeting: bool,
}

impl Original {
    /// Reads the header section and looks for a calendar part.
    pub fn read(path: &Path) -> io::Result<Original> {
        Original::with_head(path, read_head(path)?)
    }

    /// Looks for a calendar part in the message whose header section is `head` (already read).
    pub fn with_head(path: &Path, head: Vec<u8>) -> io::Result<Original> {
        Ok(Original {
            path: path.to_path_buf(),
            head,
            meeting: mime::is_meeting_request(BufReader::new(File::open(path)?))?,
        })
    }
}

/// Everything an encryption needs.
pub struct Encrypt {
    /// The message.
    pub original: Arc<Original>,
    /// Who it is sealed to.
    pub recipients: Vec<Address>,
    /// The month of their keys.
    pub epoch: Epoch,
    /// The sender (the signer is its key, or the default sender's).
    pub sender: Option<Address>,
    /// The signing key.
    pub signer: Arc<SigningKey>,
    /// The key of the gateway's mark on the sealed message.
    pub mark: Arc<MarkKey>,
    /// Public parameters.
    pub params: Arc<PublicParams>,
    /// Shared encapsulations.
    pub encaps: Arc<EncapsCache>,
    /// MIMEBuilder settings.
    pub settings: Arc<MimeSettings>,
    /// The encryption X-header's value.
    pub hostname: String,
    /// Until when (Unix seconds) a message above `settings.keep_above_bytes` keeps its sealed
    /// message on the gateway; `None` always carries it in the email.
    pub keep_until: Option<u64>,
}

/// An encrypted email, and the sealed message the gateway keeps for it when it is too large to
/// carry (recorded with the decision: [`store::Decision::kept`]).
#[derive(Debug)]
pub struct Encrypted {
    /// The encrypted email.
    pub email: Finished,
    /// The sealed message kept on the gateway; the email links to it.
    pub kept: Option<store::Keep>,
}

/// Seals `job.source` into a new encrypted email in the spool (fsynced). A `Bcc` field in the
/// original is left out of what is sealed, so that no recipient learns of a blind copy.
pub fn encrypt(job: &Encrypt, spool: &Spool) -> Result<Encrypted, TransformError> {
    let original = &job.original;
    let size = std::fs::metadata(&original.path)?.len();
    let mut file = File::open(&original.path)?;
    file.seek(SeekFrom::Start(original.head.len() as u64))?;
    let plain = Cursor::new(mime::headers::without_fields(&original.head, &["Bcc"])).chain(file);
    let options = SealOptions {
        recipients: job.recipients.clone(),
        epoch: job.epoch,
        sender: job.sender.clone(),
    };
    if let Some(until) = job.keep_until
        && size > job.settings.keep_above_bytes
    {
        return encrypt_kept(job, spool, plain, &options, until);
    }
    let wrapper = mime::wrapper(
        &original.head,
        original.meeting,
        &job.settings,
        &job.hostname,
    );
    let mut out = spool.create()?;
    let written = (|| -> Result<(), TransformError> {
        out.append(&wrapper.head)?;
        let mut b64 = Digesting::new(mime::Base64Lines::new(&mut out));
        Sealer::new(&job.params).with_cache(&job.encaps).seal(
            &job.signer,
            &options,
            BufReader::with_capacity(64 * 1024, plain),
            &mut b64,
        )?;
        let (b64, digest) = b64.finish();
        b64.finish()?;
        out.append(&wrapper.tail(Some(&job.mark.mark(&digest))))?;
        Ok(())
    })();
    match written {
        Ok(()) => Ok(Encrypted {
            email: out.finish()?,
            kept: None,
        }),
        Err(e) => {
            out.discard();
            Err(e)
        }
    }
}

/// Seals a large message into a file the gateway keeps, and makes the encrypted email that
/// links to it.
fn encrypt_kept(
    job: &Encrypt,
    spool: &Spool,
    plain: impl Read,
    options: &SealOptions,
    until: u64,
) -> Result<Encrypted, TransformError> {
    let mut sealed = spool.create()?;
    let made = Sealer::new(&job.params)
        .with_cache(&job.encaps)
        .seal(
            &job.signer,
            options,
            BufReader::with_capacity(64 * 1024, plain),
            &mut sealed,
        )
        .map_err(TransformError::from);
    let sealed = match made {
        Ok(_) => sealed.finish()?,
        Err(e) => {
            sealed.discard();
            return Err(e);
        }
    };
    let token = store::kept::new_token();
    let email = mime::linked(
        &job.original.head,
        job.original.meeting,
        &job.settings,
        &job.hostname,
        &kept_link(&job.settings.reader_url, &token),
        &day_text(until),
    );
    let written = spool.create().and_then(|mut out| match out.append(&email) {
        Ok(()) => out.finish(),
        Err(e) => {
            out.discard();
            Err(e)
        }
    });
    match written {
        Ok(email) => Ok(Encrypted {
            email,
            kept: Some(store::Keep {
                token_hash: store::kept::token_hash(&token),
                file: sealed,
                kind: store::KeptKind::Large,
                forwarder: None,
                expires_at: until,
            }),
        }),
        Err(e) => {
            sealed.discard();
            Err(e.into())
        }
    }
}

/// The reader's address for a kept sealed message.
pub fn kept_link(reader_url: &str, token: &str) -> String {
    format!("{}/kept/{token}", reader_url.trim_end_matches('/'))
}

/// A time as a day and hour people read the same everywhere: `2026-12-24 10:00 UTC`.
pub fn day_text(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Days to a civil date (the proleptic Gregorian calendar; algorithm by Howard Hinnant,
    // "chrono-Compatible Low-Level Date Algorithms").
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// The sealed message inside an encrypted email: streamed as Postern writes it, or read whole
/// when the attachment was re-encoded on the way.
#[derive(Debug)]
enum Sealed {
    Stream(PathBuf),
    /// The sealed message, and the gateway's mark found after it.
    Whole(Vec<u8>, Option<String>),
}

impl Sealed {
    fn locate(path: &Path) -> Result<Sealed, TransformError> {
        let mut probe = mime::SealedReader::new(BufReader::new(File::open(path)?));
        let mut first = [0u8; 1];
        match probe.read(&mut first) {
            Ok(_) => Ok(Sealed::Stream(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let len = std::fs::metadata(path)?.len();
                if len > MAX_IN_MEMORY {
                    return Err(TransformError::TooLarge(len));
                }
                let bytes = std::fs::read(path)?;
                let (sealed, mark) = mime::sealed_and_mark_from_mime(&bytes)?;
                Ok(Sealed::Whole(sealed, mark))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn reader(&self) -> Result<Box<dyn Read + '_>, TransformError> {
        Ok(match self {
            Sealed::Stream(p) => Box::new(mime::SealedReader::new(BufReader::with_capacity(
                64 * 1024,
                File::open(p)?,
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
        Sealed::Stream(p) => {
            let mut r =
                mime::SealedReader::new(BufReader::with_capacity(64 * 1024, File::open(p)?));
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
            if std::fs::metadata(p)?.len() > MAX_IN_MEMORY {
                return Ok(false);
            }
            let (_, mark) = mime::sealed_and_mark_from_mime(&std::fs::read(p)?)?;
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
pub fn keep_copy(path: &Path, spool: &Spool) -> Result<(Finished, Header), TransformError> {
    let header = envelope::read_header(BufReader::new(File::open(path)?))?;
    let mut out = spool.create()?;
    let copied = File::open(path).and_then(|mut f| io::copy(&mut f, &mut out));
    match copied {
        Ok(_) => Ok((out.finish()?, header)),
        Err(e) => {
            out.discard();
            Err(e.into())
        }
    }
}

/// Finds the sealed message in the encrypted email at `path` and reads its header.
pub fn locate(path: &Path) -> Result<Located, TransformError> {
    let sealed = Sealed::locate(path)?;
    let header = envelope::read_header(sealed.reader()?)?;
    Ok(Located { header, sealed })
}

/// Everything a decryption needs.
pub struct Decrypt {
    /// The encrypted email.
    pub source: PathBuf,
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
    let size = std::fs::metadata(&job.source)?.len();
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
                io::copy(&mut File::open(f.path())?, &mut out)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_written_as_people_read_them() {
        assert_eq!(day_text(0), "1970-01-01 00:00 UTC");
        assert_eq!(day_text(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(day_text(1_795_513_800), "2026-11-24 09:50 UTC");
    }
}
