//! Secrets the gateway makes for itself: random, made once at first use, and kept in the
//! database so that they survive restarts and go with its backups.

use rand::RngCore;
use zeroize::Zeroizing;

use crate::queue::{Queue, QueueError};

/// How long each secret is.
pub const SECRET_BYTES: usize = 32;

impl Queue {
    /// The secret called `name`, made at random the first time it is asked for. Two processes
    /// asking at once get the same one: the first insert wins.
    pub async fn secret(&self, name: &str) -> Result<Zeroizing<[u8; SECRET_BYTES]>, QueueError> {
        let mut fresh = Zeroizing::new([0u8; SECRET_BYTES]);
        rand::thread_rng().fill_bytes(&mut fresh[..]);
        sqlx::query("INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)")
            .bind(name)
            .bind(&fresh[..])
            .execute(&self.pool)
            .await?;
        let stored: Zeroizing<Vec<u8>> = Zeroizing::new(
            sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        );
        let mut out = Zeroizing::new([0u8; SECRET_BYTES]);
        if stored.len() != SECRET_BYTES {
            return Err(QueueError::Refused(format!(
                "the stored secret {name} is {} bytes, not {SECRET_BYTES}",
                stored.len()
            )));
        }
        out.copy_from_slice(&stored);
        Ok(out)
    }
}
