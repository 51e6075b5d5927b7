//! SMTP AUTH users: Argon2 password hashes ([`store::accounts`]), the user found in constant
//! time per name, and the same work done for unknown names so that timing does not reveal which
//! names exist.

use subtle::ConstantTimeEq;

use crate::config::SmtpUser;

/// True when `name` is a user and `password` is theirs.
pub fn verify(users: &[SmtpUser], name: &str, password: &[u8]) -> bool {
    let found = users
        .iter()
        .find(|u| bool::from(u.name.as_bytes().ct_eq(name.as_bytes())));
    store::accounts::verify_password(found.map(|u| u.password_hash.as_str()), password)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn right_password_only() {
        let users = vec![SmtpUser {
            name: "relay".into(),
            password_hash: store::accounts::hash_password("s3cret pass").unwrap(),
        }];
        assert!(verify(&users, "relay", b"s3cret pass"));
        assert!(!verify(&users, "relay", b"wrong"));
        assert!(!verify(&users, "nobody", b"s3cret pass"));
    }
}
