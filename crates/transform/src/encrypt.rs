//! Sealing a message into its encrypted email: the original read once, sealed for each copy's
//! recipients, and the sealed message either carried in `encrypted_message.htm` or kept on the
//! gateway behind a link when it is large.

use std::io::{self, BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;

use envelope::{Address, EncapsCache, Epoch, PublicParams, SealOptions, Sealer, SigningKey};
use mime::MimeSettings;
use store::{Body, Finished, Spool};

use crate::mark::{Digesting, MarkKey};

use crate::error::TransformError;

/// Largest header section read (a longer one is not a header an MUA wrote).
pub const MAX_HEAD: usize = 1024 * 1024;

/// Largest message read whole when its sealed message cannot be streamed (an MTA re-encoded
/// the attachment) or a notice must go into its body.
pub(crate) const MAX_IN_MEMORY: u64 = 64 * 1024 * 1024;

/// Plaintext smaller than this is opened into memory rather than a scratch file.
pub(crate) const SMALL: u64 = 1024 * 1024;

/// The header section at the start of a message.
pub fn read_head(body: &Body) -> io::Result<Vec<u8>> {
    let mut reader = BufReader::new(body.open()?);
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
    pub body: Body,
    /// Its header section.
    pub head: Vec<u8>,
    /// True when it carries a meeting request.
    pub meeting: bool,
}

impl Original {
    /// Reads the header section and looks for a calendar part.
    pub fn read(body: &Body) -> io::Result<Original> {
        Original::with_head(body, read_head(body)?)
    }

    /// Looks for a calendar part in the message whose header section is `head` (already read).
    pub fn with_head(body: &Body, head: Vec<u8>) -> io::Result<Original> {
        Ok(Original {
            body: body.clone(),
            head,
            meeting: mime::is_meeting_request(BufReader::new(body.open()?))?,
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
    let size = original.body.len();
    let mut file = original.body.open()?;
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
