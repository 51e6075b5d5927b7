//! A small filesystem for full-disk tests: a tmpfs mounted on a directory (the tests run as
//! root), filled on demand, unmounted when dropped, a failing test included.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a given size on a directory.
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`"256k"`, `"48m"`) on `dir`, made if missing. Panics with
    /// advice when it cannot: the test needs root.
    pub fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status();
        assert!(
            matches!(status, Ok(st) if st.success()),
            "this test needs root and tmpfs: `mount -t tmpfs -o size={size}` on {} failed ({status:?})",
            dir.display()
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes a ballast file until the disk refuses more; returns its path (remove it to give
    /// the room back).
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("ballast");
        let mut f =
            std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for chunk in [1024 * 1024, 4096, 512] {
            let bytes = vec![0u8; chunk];
            while f.write_all(&bytes).is_ok() {}
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|st| st.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
