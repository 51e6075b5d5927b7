//! SMTP AUTH users: Argon2 password hashes, checked in constant time per user, with the same
//! work done for unknown names so that timing does not reveal which names exist.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use subtle::ConstantTimeEq;

use crate::config::SmtpUser;

/// A hash to verify against when the name is unknown (same cost as a real one).
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Hc5y7qR8sS+V0n8oXJ3Jcx3ZlUS5M3g5zYkqT1WcE0Q";

/// True when `name` is a user and `password` is theirs.
pub fn verify(users: &[SmtpUser], name: &str, password: &[u8]) -> bool {
    let found = users
        .iter()
        .find(|u| bool::from(u.name.as_bytes().ct_eq(name.as_bytes())));
    let hash = found.map_or(DECOY, |u| u.password_hash.as_str());
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = Argon2::default().verify_password(password, &parsed).is_ok();
    ok && found.is_some()
}

/// Makes a PHC string for a password (for `postern smtp hash-password` and tests).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_password_only() {
        let users = vec![SmtpUser {
            name: "relay".into(),
            password_hash: hash_password("s3cret pass").unwrap(),
        }];
        assert!(verify(&users, "relay", b"s3cret pass"));
        assert!(!verify(&users, "relay", b"wrong"));
        assert!(!verify(&users, "nobody", b"s3cret pass"));
    }
}
