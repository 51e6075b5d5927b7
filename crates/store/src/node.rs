//! Which node this process is. Claims and leases in the queue carry it, so that after a crash
//! a node takes back only its own work, and several nodes can share one database.

use std::io;
use std::path::Path;

use rand::RngCore;

/// The node of a queue opened without one (tests, tools).
pub const LOCAL: &str = "local";

/// The file in the data directory that keeps a generated node id.
pub const FILE: &str = "node-id";

/// Why a node id is refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    /// Empty, too long, or with other characters than letters, digits, `.`, `_` and `-`.
    #[error(
        "{0:?} is not a node id: use 1 to 64 letters, digits, '.', '_' or '-' (the host's name, for one)"
    )]
    Invalid(String),
    /// The file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
}

/// Checks a node id (from the configuration or the file).
pub fn check(id: &str) -> Result<(), NodeIdError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NodeIdError::Invalid(id.to_string()))
    }
}

/// The node id: `configured` when given, else the one kept in `data_dir`, made and kept there
/// on the first start.
pub fn load_or_make(data_dir: &Path, configured: Option<&str>) -> Result<String, NodeIdError> {
    if let Some(id) = configured {
        check(id)?;
        return Ok(id.to_string());
    }
    let path = data_dir.join(FILE);
    let shown = || path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            check(id)?;
            Ok(id.to_string())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut raw = [0u8; 6];
            rand::thread_rng().fill_bytes(&mut raw);
            let id = format!(
                "node-{}",
                raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            std::fs::create_dir_all(data_dir).map_err(|e| NodeIdError::Io(shown(), e))?;
            std::fs::write(&path, format!("{id}\n")).map_err(|e| NodeIdError::Io(shown(), e))?;
            Ok(id)
        }
        Err(e) => Err(NodeIdError::Io(shown(), e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_node_id_is_made_once_and_kept_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_make(dir.path(), None).unwrap();
        assert!(first.starts_with("node-"), "{first}");
        assert_eq!(load_or_make(dir.path(), None).unwrap(), first);
        assert_eq!(load_or_make(dir.path(), Some("gw-2")).unwrap(), "gw-2");
        for bad in ["", "a b", "x/y", &"n".repeat(65)] {
            let e = load_or_make(dir.path(), Some(bad)).unwrap_err();
            assert!(e.to_string().contains("not a node id"), "{e}");
        }
    }
}
