//! Files the CLI writes: whole or not at all, with the permissions their contents deserve.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tempfile::NamedTempFile;

/// Reads a whole file, naming it (and what it should hold) on failure.
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// A file being written next to its final path; it appears there only on [`Pending::commit`].
pub struct Pending {
    temp: BufWriter<NamedTempFile>,
    target: std::path::PathBuf,
    overwrite: bool,
}

impl Pending {
    /// Starts writing `target` with permissions `mode`.
    pub fn create(target: &Path, mode: u32, overwrite: bool) -> Result<Self> {
        if !overwrite && target.exists() {
            bail!("{} exists; refusing to overwrite it", target.display());
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let temp = NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set permissions on a file in {}", dir.display()))?;
        Ok(Pending {
            temp: BufWriter::with_capacity(256 * 1024, temp),
            target: target.to_path_buf(),
            overwrite,
        })
    }

    /// The writer for the contents.
    pub fn writer(&mut self) -> &mut BufWriter<NamedTempFile> {
        &mut self.temp
    }

    /// Flushes, syncs and moves the file into place.
    pub fn commit(self) -> Result<()> {
        let target = self.target;
        let temp = self
            .temp
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", target.display()))?;
        temp.as_file()
            .sync_all()
            .with_context(|| format!("cannot write {}", target.display()))?;
        let placed = if self.overwrite {
            temp.persist(&target).map(|_| ())
        } else {
            temp.persist_noclobber(&target).map(|_| ())
        };
        placed.with_context(|| format!("cannot create {}", target.display()))?;
        if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Make the new name durable too; not every file system allows opening a directory.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write_new(target: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<()> {
    let mut pending = Pending::create(target, mode, overwrite)?;
    pending
        .writer()
        .write_all(bytes)
        .with_context(|| format!("cannot write {}", target.display()))?;
    pending.commit()
}
