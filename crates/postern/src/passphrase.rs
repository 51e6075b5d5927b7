//! Where the master key passphrase comes from: a file, `POSTERN_PASSPHRASE`, or the terminal.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

/// The environment variable holding the passphrase.
pub const ENV: &str = "POSTERN_PASSPHRASE";

/// Reads the passphrase. `confirm` asks twice at a terminal (for a new key file).
pub fn obtain(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(path) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the passphrase file {}", path.display()))?,
        );
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            bail!("the passphrase file {} is empty", path.display());
        }
        return Ok(Zeroizing::new(line.to_string()));
    }
    if let Ok(value) = std::env::var(ENV) {
        let value = Zeroizing::new(value);
        if value.is_empty() {
            bail!("{ENV} is set but empty");
        }
        return Ok(value);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: set {ENV}, pass --passphrase-file, or run at a terminal");
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Master key passphrase: ")
            .context("cannot read the passphrase")?,
    );
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat the passphrase: ")
                .context("cannot read the passphrase")?,
        );
        if *first != *second {
            bail!("the two passphrases differ");
        }
    }
    Ok(first)
}
