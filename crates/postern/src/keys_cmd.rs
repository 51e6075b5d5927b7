//! `postern keys ...`: the operator's offline key tools.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use envelope::vault::{self, DEFAULT_KDF};
use envelope::{Address, Epoch, Identity, MasterKeys, MasterSecretKey, PublicParams};
use rand::rngs::OsRng;

use crate::files;
use crate::out::outln;
use crate::passphrase;
use crate::{DirArgs, InitArgs, IssueArgs, KeyKind};

/// The passphrase-sealed master keys in a key directory.
pub const MASTER_FILE: &str = "master.sealed";
/// The public parameters in a key directory.
pub const PARAMS_FILE: &str = "params.pub";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(MASTER_FILE), dir.join(PARAMS_FILE))
}

pub fn init(args: &InitArgs) -> Result<()> {
    let (master_path, params_path) = paths(&args.dir);
    for existing in [&master_path, &params_path] {
        if existing.exists() {
            bail!(
                "{} already exists; refusing to overwrite existing keys",
                existing.display()
            );
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.dir)
        .with_context(|| format!("cannot create the key directory {}", args.dir.display()))?;
    let pass = passphrase::obtain(args.passphrase.passphrase_file.as_deref(), true)?;
    let keys = MasterKeys::new(vec![MasterSecretKey::generate(&mut OsRng, now())])?;
    save(&keys, &pass, &master_path, &params_path, false)?;
    outln!(
        "created master key {} in {}\npublic parameters: {}",
        keys.newest().public().id(),
        args.dir.display(),
        params_path.display()
    )?;
    Ok(())
}

fn save(
    keys: &MasterKeys,
    pass: &str,
    master_path: &Path,
    params_path: &Path,
    overwrite: bool,
) -> Result<()> {
    let sealed = vault::seal_master_keys(keys, pass, DEFAULT_KDF, &mut OsRng)?;
    files::write_new(master_path, &sealed, 0o600, overwrite)?;
    files::write_new(
        params_path,
        &keys.public_params().to_bytes(),
        0o644,
        overwrite,
    )
}

fn load(args_dir: &Path, file: Option<&Path>) -> Result<MasterKeys> {
    let (master_path, _) = paths(args_dir);
    let sealed = files::read(&master_path, "master key file")?;
    let pass = passphrase::obtain(file, false)?;
    vault::open_master_keys(&sealed, &pass)
        .with_context(|| format!("cannot open {}", master_path.display()))
}

pub fn issue(args: &IssueArgs) -> Result<()> {
    let address = Address::parse(&args.email).context("--email")?;
    let epoch = match &args.epoch {
        Some(text) => text.parse::<Epoch>().context("--epoch")?,
        None => Epoch::current(),
    };
    if !args.force && args.out.exists() {
        bail!(
            "{} exists; refusing to overwrite it (use --force)",
            args.out.display()
        );
    }
    let keys = load(&args.dir, args.passphrase.passphrase_file.as_deref())?;
    let master = keys.newest();
    let identity = Identity::new(address, epoch);
    let bytes = match args.kind {
        KeyKind::Decrypt => master
            .extract_decryption_key(&identity, &mut OsRng)
            .to_bytes(),
        KeyKind::Sign => master.extract_signing_key(&identity, &mut OsRng).to_bytes(),
    };
    files::write_new(&args.out, &bytes, 0o600, args.force)?;
    let kind = match args.kind {
        KeyKind::Decrypt => "decryption",
        KeyKind::Sign => "signing",
    };
    eprintln!(
        "issued the {kind} key of {identity} under master key {} to {}",
        master.public().id(),
        args.out.display()
    );
    Ok(())
}

pub fn rotate(args: &DirArgs) -> Result<()> {
    let (master_path, params_path) = paths(&args.dir);
    let mut keys = load(&args.dir, args.passphrase.passphrase_file.as_deref())?;
    let created = now().max(keys.newest().public().created() + 1);
    keys.push(MasterSecretKey::generate(&mut OsRng, created));
    let pass = passphrase::obtain(args.passphrase.passphrase_file.as_deref(), false)?;
    save(&keys, &pass, &master_path, &params_path, true)?;
    outln!(
        "added master key {}; new messages are sealed under it, older keys still open old ones",
        keys.newest().public().id()
    )?;
    Ok(())
}

pub fn list(args: &DirArgs) -> Result<()> {
    let (_, params_path) = paths(&args.dir);
    let params = PublicParams::from_bytes(&files::read(&params_path, "public parameters")?)
        .with_context(|| format!("cannot read {}", params_path.display()))?;
    let newest = params.newest().id();
    for key in params.keys() {
        let mark = if key.id() == newest { "  (newest)" } else { "" };
        let month = Epoch::from_unix(key.created());
        outln!("{}  created {month}{mark}", key.id())?;
    }
    Ok(())
}
