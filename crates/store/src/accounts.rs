//! Accounts that sign in with a password: the console's administrators (only their password
//! hashes are kept) and the hashing both they and SMTP AUTH users are checked with (Argon2id, the
//! same work done for an unknown name, so that timing does not tell which names exist).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::queue::{Queue, QueueError, to_i64};

/// A hash to verify against when the name is unknown (same cost as a real one).
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Hc5y7qR8sS+V0n8oXJ3Jcx3ZlUS5M3g5zYkqT1WcE0Q";

/// Makes a PHC string for a password (`postern admin create`, `postern smtp hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// True when `password` matches `hash`, the stored hash of the name that signs in, or `None`
/// for a name that does not exist (checked against a decoy, so that it costs the same as a wrong
/// password, and always false). Slow on purpose: call it off the async threads.
pub fn verify_password(hash: Option<&str>, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(DECOY)) else {
        return false;
    };
    let ok = Argon2::default().verify_password(password, &parsed).is_ok();
    ok && hash.is_some()
}

impl Queue {
    /// Adds an administrator with an already-hashed password; refused when the name is taken.
    pub async fn create_admin(&self, name: &str, hash: &str) -> Result<(), QueueError> {
        let done = sqlx::query(
            "INSERT INTO admins (name, hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(hash)
        .bind(to_i64(self.clock.now()))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(QueueError::Refused(format!(
                "an administrator named {name:?} exists"
            )));
        }
        Ok(())
    }

    /// Replaces an administrator's password hash.
    pub async fn set_admin_password(&self, name: &str, hash: &str) -> Result<(), QueueError> {
        let done = sqlx::query("UPDATE admins SET hash = ?2 WHERE name = ?1")
            .bind(name)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(QueueError::NotFound(format!("administrator {name:?}")));
        }
        Ok(())
    }

    /// The password hash of administrator `name`.
    pub async fn admin_hash(&self, name: &str) -> Result<Option<String>, QueueError> {
        Ok(
            sqlx::query_scalar("SELECT hash FROM admins WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Administrator names, in order.
    pub async fn admins(&self) -> Result<Vec<String>, QueueError> {
        Ok(sqlx::query_scalar("SELECT name FROM admins ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn right_password_only() {
        let hash = hash_password("s3cret pass").unwrap();
        assert!(verify_password(Some(&hash), b"s3cret pass"));
        assert!(!verify_password(Some(&hash), b"wrong"));
        assert!(!verify_password(None, b"s3cret pass"));
        assert!(!verify_password(Some("not a hash"), b"s3cret pass"));
    }
}
