//! `postern seal`, `postern open` and `postern inspect`.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use envelope::{
    Address, DecryptionKey, Epoch, Opener, PublicParams, SealOptions, Sealer, SigningKey,
};

use crate::files::{self, Pending};
use crate::out::outln;
use crate::{InspectArgs, OpenArgs, SealArgs};

fn load_params(path: &Path) -> Result<PublicParams> {
    PublicParams::from_bytes(&files::read(path, "public parameters")?)
        .with_context(|| format!("--params {}", path.display()))
}

fn input(path: Option<&Path>) -> Result<Box<dyn Read>> {
    Ok(match path {
        Some(p) => Box::new(BufReader::with_capacity(
            256 * 1024,
            File::open(p).with_context(|| format!("cannot read --in {}", p.display()))?,
        )),
        None => Box::new(io::stdin().lock()),
    })
}

pub fn seal(args: &SealArgs) -> Result<()> {
    let recipients = args
        .to
        .iter()
        .map(|a| Address::parse(a).with_context(|| format!("--to {a:?}")))
        .collect::<Result<Vec<_>>>()?;
    let epoch = match &args.epoch {
        Some(text) => text.parse::<Epoch>().context("--epoch")?,
        None => Epoch::current(),
    };
    let sender = args
        .from
        .as_deref()
        .map(|a| Address::parse(a).with_context(|| format!("--from {a:?}")))
        .transpose()?;
    let params = load_params(&args.params)?;
    let signer = SigningKey::from_bytes(&files::read(&args.sign_key, "signing key")?)
        .with_context(|| format!("--sign-key {}", args.sign_key.display()))?;
    let options = SealOptions {
        recipients,
        epoch,
        sender,
    };
    let sealer = Sealer::new(&params);
    let reader = input(args.input.as_deref())?;
    match &args.out {
        Some(path) => {
            let mut out = Pending::create(path, 0o644, true)?;
            sealer.seal(&signer, &options, reader, out.writer())?;
            out.commit()?;
        }
        None => {
            let stdout = crate::out::stdout();
            sealer.seal(
                &signer,
                &options,
                reader,
                BufWriter::with_capacity(256 * 1024, stdout),
            )?;
        }
    }
    Ok(())
}

pub fn open(args: &OpenArgs) -> Result<()> {
    let mut reader = input(args.input.as_deref())?;
    let (key, params) = match (&args.key, &args.params) {
        (Some(key), Some(params)) => (load_key(key)?, load_params(params)?),
        (key, params) => {
            // Find a recipient's key in the local cache: read the header, keeping its bytes
            // so that the opener still sees the whole message.
            let mut recording = Recording {
                inner: reader,
                seen: Vec::new(),
            };
            let header = envelope::read_header(&mut recording)?;
            reader = Box::new(io::Cursor::new(recording.seen).chain(recording.inner));
            let (cached_key, cached_params) = from_cache(args.cache.as_deref(), &header)?;
            let key = match key {
                Some(path) => load_key(path)?,
                None => cached_key.with_context(|| {
                    format!(
                        "no cached key for {} in {} (run `postern keys fetch`, or pass --key)",
                        header.recipient_list(),
                        header.epoch
                    )
                })?,
            };
            let params = match params {
                Some(path) => load_params(path)?,
                None => cached_params.context(
                    "no public parameters in the key cache (run `postern keys fetch`, or pass --params)",
                )?,
            };
            (key, params)
        }
    };
    let opener = Opener::new(&params);
    // The plaintext goes to a temporary file first, so nothing reaches --out or standard output
    // unless the whole message authenticates.
    let (opened, spool) = match &args.out {
        Some(path) => {
            let mut out = Pending::create(path, 0o600, true)?;
            let opened = opener.open(&key, reader, out.writer())?;
            (opened, Spool::File(out))
        }
        None => {
            let mut temp =
                BufWriter::new(tempfile::tempfile().context("cannot create a temporary file")?);
            let opened = opener.open(&key, reader, &mut temp)?;
            let temp = temp.into_inner().map_err(|e| e.into_error())?;
            (opened, Spool::Stdout(temp))
        }
    };
    if !opened.verdict.is_valid() && !args.allow_invalid_signature {
        bail!(
            "{}; nothing was written (--allow-invalid-signature writes it anyway)",
            opened.verdict
        );
    }
    match spool {
        Spool::File(out) => out.commit()?,
        Spool::Stdout(mut temp) => {
            temp.rewind()?;
            let mut stdout = crate::out::stdout();
            io::copy(&mut temp, &mut stdout).context("cannot write to standard output")?;
            stdout.flush()?;
        }
    }
    eprintln!("postern: {}", opened.verdict);
    Ok(())
}

fn load_key(path: &Path) -> Result<DecryptionKey> {
    DecryptionKey::from_bytes(&files::read(path, "decryption key")?)
        .with_context(|| format!("--key {}", path.display()))
}

/// The first recipient's decryption key for the message's month, and the public parameters,
/// from the cache of `keys fetch`.
fn from_cache(
    dir: Option<&Path>,
    header: &envelope::Header,
) -> Result<(Option<DecryptionKey>, Option<PublicParams>)> {
    let dir = crate::cache_dir(dir)?;
    crate::runtime()?.block_on(async {
        let cache = keys::KeyCache::open_dir(&dir)
            .await
            .with_context(|| format!("cannot open the key cache in {}", dir.display()))?;
        let epoch = header.epoch.to_string();
        let key_id = header.kem_key_id.to_string();
        let mut key = None;
        for r in &header.recipients {
            if let Some(bytes) = cache
                .get(
                    r.address.as_str(),
                    &epoch,
                    keys::KeyKind::Decrypt,
                    Some(&key_id),
                )
                .await?
            {
                key = Some(DecryptionKey::from_bytes(&bytes)?);
                break;
            }
        }
        let params = match cache.params().await? {
            Some(bytes) => Some(PublicParams::from_bytes(&bytes)?),
            None => None,
        };
        Ok((key, params))
    })
}

/// Keeps a copy of what is read, so that bytes read to look at the header can be read again.
struct Recording<R> {
    inner: R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

enum Spool {
    File(Pending),
    Stdout(File),
}

pub fn inspect(args: &InspectArgs) -> Result<()> {
    let mut reader = input(args.input.as_deref())?;
    let mut head = [0u8; 6];
    let n = read_up_to(&mut reader, &mut head)?;
    if head[..n].starts_with(b"PSTN") {
        let header = envelope::read_header(head[..n].chain(reader))?;
        outln!("sealed message (not yet authenticated)")?;
        outln!("from:        {}", header.sender)?;
        outln!(
            "signed as:   {} ({})",
            header.signer.address,
            header.signer.epoch
        )?;
        outln!("recipients:  {}", header.recipient_list())?;
        outln!("month:       {}", header.epoch)?;
        outln!("master key:  {}", header.kem_key_id)?;
        return Ok(());
    }
    let mut rest = head[..n].to_vec();
    reader.take(64 * 1024).read_to_end(&mut rest)?;
    outln!("{}", envelope::keys::describe(&rest))?;
    Ok(())
}

fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
