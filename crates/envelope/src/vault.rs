//! Master keys sealed at rest with a passphrase: Argon2id stretches the passphrase into an
//! AES-256-GCM key. Layout (all integers big-endian):
//!
//! ```text
//! "PSTV" | version=1 | kdf=1 (Argon2id v0x13) | m_cost KiB u32 | t_cost u32 | lanes u32
//!        | salt[16] | nonce[12] | AES-256-GCM(key, nonce, aad = everything before, master keys)
//! ```
//!
//! The Argon2 parameters travel in the file so that they can be raised later without breaking
//! old files; reading refuses parameters so large that a planted file could exhaust the machine.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::VaultError;
use crate::keys::MasterKeys;
use crate::wire::Cursor;

const MAGIC: &[u8; 4] = b"PSTV";
const VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;

/// Shortest passphrase accepted for new files.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Argon2id cost of new files: 64 MiB, 3 passes, 1 lane (RFC 9106 §4, second recommendation,
/// with one lane for two-core machines).
pub const DEFAULT_KDF: KdfParams = KdfParams {
    m_cost_kib: 64 * 1024,
    t_cost: 3,
    lanes: 1,
};

const MAX_M_COST_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_LANES: u32 = 16;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Parallel lanes.
    pub lanes: u32,
}

fn derive_key(
    passphrase: &[u8],
    salt: &[u8],
    kdf: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let params = Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.lanes, Some(32))
        .map_err(|e| VaultError::Kdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| VaultError::Kdf(e.to_string()))?;
    Ok(key)
}

/// Seals `keys` under `passphrase`.
pub fn seal_master_keys<R: RngCore + CryptoRng>(
    keys: &MasterKeys,
    passphrase: &str,
    kdf: KdfParams,
    rng: &mut R,
) -> Result<Vec<u8>, VaultError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(VaultError::WeakPassphrase(MIN_PASSPHRASE_CHARS));
    }
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut salt);
    rng.fill_bytes(&mut nonce);
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(KDF_ARGON2ID);
    out.extend_from_slice(&kdf.m_cost_kib.to_be_bytes());
    out.extend_from_slice(&kdf.t_cost.to_be_bytes());
    out.extend_from_slice(&kdf.lanes.to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let key = derive_key(passphrase.as_bytes(), &salt, kdf)?;
    let cipher = Aes256Gcm::new(key.as_ref().into());
    let plaintext = keys.to_bytes();
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: &out,
            },
        )
        .map_err(|_| VaultError::Format("encryption failed"))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a file made by [`seal_master_keys`].
pub fn open_master_keys(bytes: &[u8], passphrase: &str) -> Result<MasterKeys, VaultError> {
    let mut c = Cursor::new(bytes);
    if c.take(4) != Some(MAGIC.as_slice()) {
        return Err(VaultError::Format("it does not start with PSTV"));
    }
    if c.u8() != Some(VERSION) {
        return Err(VaultError::Format("unsupported version"));
    }
    if c.u8() != Some(KDF_ARGON2ID) {
        return Err(VaultError::Format("unsupported key derivation"));
    }
    let (Some(m_cost_kib), Some(t_cost), Some(lanes)) = (c.u32(), c.u32(), c.u32()) else {
        return Err(VaultError::Format("truncated"));
    };
    if m_cost_kib > MAX_M_COST_KIB || t_cost > MAX_T_COST || lanes > MAX_LANES {
        return Err(VaultError::Format("key derivation cost out of range"));
    }
    let (Some(salt), Some(nonce)) = (c.array::<16>(), c.array::<12>()) else {
        return Err(VaultError::Format("truncated"));
    };
    let kdf = KdfParams {
        m_cost_kib,
        t_cost,
        lanes,
    };
    let key = derive_key(passphrase.as_bytes(), &salt, kdf)?;
    let cipher = Aes256Gcm::new(key.as_ref().into());
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &bytes[HEADER_LEN..],
                    aad: &bytes[..HEADER_LEN],
                },
            )
            .map_err(|_| VaultError::WrongPassphrase)?,
    );
    Ok(MasterKeys::from_bytes(&plaintext)?)
}

const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 4 + 4 + 16 + 12;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterSecretKey;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const CHEAP: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        lanes: 1,
    };

    #[test]
    fn seals_and_opens_with_the_right_passphrase_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let keys = MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, 1)]).unwrap();
        let sealed = seal_master_keys(&keys, "correct horse battery", CHEAP, &mut rng).unwrap();
        let opened = open_master_keys(&sealed, "correct horse battery").unwrap();
        assert_eq!(opened.newest().public().id(), keys.newest().public().id());
        assert!(matches!(
            open_master_keys(&sealed, "wrong horse battery"),
            Err(VaultError::WrongPassphrase)
        ));
        let mut altered = sealed.clone();
        altered[8] ^= 1; // the memory cost, covered by the AAD
        assert!(open_master_keys(&altered, "correct horse battery").is_err());
        assert!(open_master_keys(&sealed[..20], "correct horse battery").is_err());
    }

    #[test]
    fn short_passphrases_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let keys = MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, 1)]).unwrap();
        assert!(matches!(
            seal_master_keys(&keys, "short", CHEAP, &mut rng),
            Err(VaultError::WeakPassphrase(12))
        ));
    }
}
