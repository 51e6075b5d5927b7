//! Master keys, public parameters and user keys, with their compact versioned encodings.
//!
//! One *master key* is an IBE key pair (CGWKV, for encryption) and an IBS key pair
//! (Galindo–Garcia, for signatures) under one [`KeyId`]. Several master keys can coexist: new
//! seals use the newest, old messages still open with keys of the master key they name.
//!
//! Every encoding starts with `PSTK`, a format version and a kind byte, so that a file handed to
//! the wrong command is named for what it is. Parsing an IBE public key costs milliseconds: parse
//! once and keep the value.

use std::fmt;

use ibe::Compress;
use ibe::Derive;
use ibe::kem::IBKEM;
use ibe::kem::cgw_kv::{self, CGWKV};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::identity::{Address, Epoch, Identity};
use crate::wire::{Cursor, put_short_bytes};

const MAGIC: &[u8; 4] = b"PSTK";
const VERSION: u8 = 1;

const KIND_PUBLIC: u8 = 1;
const KIND_DECRYPT: u8 = 2;
const KIND_SIGN: u8 = 3;
const KIND_MASTER: u8 = 4;

const IBS_PK_BYTES: usize = ibs::gg::PK_BYTES;
const IBS_SK_BYTES: usize = ibs::gg::SK_BYTES;
const IBS_USK_BYTES: usize = ibs::gg::USK_BYTES;

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_PUBLIC => "public parameters file",
        KIND_DECRYPT => "decryption key",
        KIND_SIGN => "signing key",
        KIND_MASTER => "master secret key",
        _ => "key of an unknown kind",
    }
}

fn expect_header(c: &mut Cursor<'_>, kind: u8) -> Result<(), KeyError> {
    let expected = kind_name(kind);
    if c.take(4) != Some(MAGIC.as_slice()) {
        return Err(KeyError::NotAKey { expected });
    }
    let version = c.u8().ok_or(KeyError::Length(expected))?;
    if version != VERSION {
        return Err(KeyError::UnsupportedVersion(version));
    }
    let found = c.u8().ok_or(KeyError::Length(expected))?;
    if found != kind {
        return Err(KeyError::WrongKind {
            expected,
            found: kind_name(found),
        });
    }
    Ok(())
}

fn put_header(out: &mut Vec<u8>, kind: u8) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind);
}

/// Which master key a key or a message belongs to: the first 8 bytes of a SHA-256 over the
/// master public keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    fn of(ibe_pk: &[u8], ibs_pk: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"postern/v1/key-id")
            .chain_update(ibe_pk)
            .chain_update(ibs_pk)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyError;

    /// Parses the 16 hex digits that `Display` writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 16 || !bytes.iter().all(u8::is_ascii_hexdigit) {
            return Err(KeyError::Corrupt("key id"));
        }
        let mut id = [0u8; 8];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| KeyError::Corrupt("key id"))?;
            id[i] = u8::from_str_radix(text, 16).map_err(|_| KeyError::Corrupt("key id"))?;
        }
        Ok(KeyId(id))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

fn ibe_identity(identity: &Identity) -> <CGWKV as IBKEM>::Id {
    <CGWKV as IBKEM>::Id::derive(&identity.derivation_input("enc"))
}

pub(crate) fn ibs_identity(identity: &Identity) -> ibs::gg::Identity {
    ibs::gg::Identity::from(identity.derivation_input("sig"))
}

/// The public half of one master key, parsed.
#[derive(Clone, Debug)]
pub struct MasterPublicKey {
    id: KeyId,
    created: u64,
    pub(crate) ibe: cgw_kv::PublicKey,
    pub(crate) ibs: ibs::gg::PublicKey,
}

impl MasterPublicKey {
    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// When the key was made, in seconds since the Unix epoch.
    pub fn created(&self) -> u64 {
        self.created
    }

    pub(crate) fn encaps<R: RngCore + CryptoRng>(
        &self,
        identity: &Identity,
        rng: &mut R,
    ) -> (cgw_kv::CipherText, Zeroizing<[u8; 32]>) {
        let (ct, ss) = CGWKV::encaps(&self.ibe, &ibe_identity(identity), rng);
        (ct, Zeroizing::new(ss.0))
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(self.ibe.to_bytes().as_ref());
        out.extend_from_slice(&ibs_public_bytes(&self.ibs));
    }

    fn read(c: &mut Cursor<'_>) -> Result<Self, KeyError> {
        const WHAT: &str = "public parameters file";
        let id = KeyId(c.array().ok_or(KeyError::Length(WHAT))?);
        let created = c.u64().ok_or(KeyError::Length(WHAT))?;
        let ibe_bytes: [u8; cgw_kv::PK_BYTES] = c.array().ok_or(KeyError::Length(WHAT))?;
        let ibs_bytes: [u8; IBS_PK_BYTES] = c.array().ok_or(KeyError::Length(WHAT))?;
        if KeyId::of(&ibe_bytes, &ibs_bytes) != id {
            return Err(KeyError::Corrupt(WHAT));
        }
        let ibe = Option::from(cgw_kv::PublicKey::from_bytes(&ibe_bytes))
            .ok_or(KeyError::Corrupt(WHAT))?;
        let ibs = bincode::deserialize(&ibs_bytes).map_err(|_| KeyError::Corrupt(WHAT))?;
        Ok(MasterPublicKey {
            id,
            created,
            ibe,
            ibs,
        })
    }
}

fn ibs_public_bytes(pk: &ibs::gg::PublicKey) -> Vec<u8> {
    bincode::serialize(pk).unwrap_or_default()
}

/// The public parameters: every master public key, oldest first. Sealing needs only these.
#[derive(Clone, Debug)]
pub struct PublicParams {
    keys: Vec<MasterPublicKey>,
}

impl PublicParams {
    /// Builds parameters from master public keys (at least one).
    pub fn new(mut keys: Vec<MasterPublicKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoMasterKey);
        }
        keys.sort_by_key(|k| k.created);
        Ok(PublicParams { keys })
    }

    /// The master key new messages are sealed under.
    pub fn newest(&self) -> &MasterPublicKey {
        // `new` and `from_bytes` guarantee at least one key.
        &self.keys[self.keys.len() - 1]
    }

    /// The master public key with this id.
    pub fn get(&self, id: KeyId) -> Result<&MasterPublicKey, KeyError> {
        self.keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(KeyError::UnknownKeyId(id))
    }

    /// All master public keys, oldest first.
    pub fn keys(&self) -> &[MasterPublicKey] {
        &self.keys
    }

    /// The encoding written to `params.pub`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, KIND_PUBLIC);
        out.extend_from_slice(&(self.keys.len() as u16).to_be_bytes());
        for key in &self.keys {
            key.write(&mut out);
        }
        out
    }

    /// Parses and checks public parameters (milliseconds per master key: keep the result).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        const WHAT: &str = "public parameters file";
        let mut c = Cursor::new(bytes);
        expect_header(&mut c, KIND_PUBLIC)?;
        let count = c.u16().ok_or(KeyError::Length(WHAT))?;
        let keys = (0..count)
            .map(|_| MasterPublicKey::read(&mut c))
            .collect::<Result<Vec<_>, _>>()?;
        if !c.is_empty() {
            return Err(KeyError::Length(WHAT));
        }
        PublicParams::new(keys)
    }
}

/// One master secret key with its public half. Only the key server and `postern keys` hold it.
pub struct MasterSecretKey {
    public: MasterPublicKey,
    // The `ibe` crate's parsed keys have no zeroizing drop; its serialized form does (see
    // `MasterKeys::to_bytes`), and the key server keeps this value for as short a time as it can.
    ibe: cgw_kv::SecretKey,
    ibs: ibs::gg::SecretKey,
}

impl fmt::Debug for MasterSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterSecretKey")
            .field("id", &self.public.id)
            .finish_non_exhaustive()
    }
}

impl MasterSecretKey {
    /// Makes a new master key; `created` (Unix seconds) orders it among the others.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R, created: u64) -> Self {
        let (ibe_pk, ibe_sk) = CGWKV::setup(rng);
        let (ibs_pk, ibs_sk) = ibs::gg::setup(rng);
        let id = KeyId::of(ibe_pk.to_bytes().as_ref(), &ibs_public_bytes(&ibs_pk));
        MasterSecretKey {
            public: MasterPublicKey {
                id,
                created,
                ibe: ibe_pk,
                ibs: ibs_pk,
            },
            ibe: ibe_sk,
            ibs: ibs_sk,
        }
    }

    /// The public half.
    pub fn public(&self) -> &MasterPublicKey {
        &self.public
    }

    /// Extracts the key that opens messages sealed to `identity`.
    pub fn extract_decryption_key<R: RngCore + CryptoRng>(
        &self,
        identity: &Identity,
        rng: &mut R,
    ) -> DecryptionKey {
        let usk = CGWKV::extract_usk(
            Some(&self.public.ibe),
            &self.ibe,
            &ibe_identity(identity),
            rng,
        );
        DecryptionKey {
            key_id: self.public.id,
            identity: identity.clone(),
            usk,
        }
    }

    /// Extracts the key that signs as `identity`.
    pub fn extract_signing_key<R: RngCore + CryptoRng>(
        &self,
        identity: &Identity,
        rng: &mut R,
    ) -> SigningKey {
        let usk = ibs::gg::keygen(&self.ibs, &ibs_identity(identity), rng);
        SigningKey {
            key_id: self.public.id,
            identity: identity.clone(),
            usk,
        }
    }
}

/// All master secret keys of one key server, oldest first.
#[derive(Debug)]
pub struct MasterKeys {
    keys: Vec<MasterSecretKey>,
}

impl MasterKeys {
    /// Wraps master keys (at least one).
    pub fn new(mut keys: Vec<MasterSecretKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoMasterKey);
        }
        keys.sort_by_key(|k| k.public.created);
        Ok(MasterKeys { keys })
    }

    /// The master key that new user keys are extracted from.
    pub fn newest(&self) -> &MasterSecretKey {
        &self.keys[self.keys.len() - 1]
    }

    /// The master key with this id.
    pub fn get(&self, id: KeyId) -> Result<&MasterSecretKey, KeyError> {
        self.keys
            .iter()
            .find(|k| k.public.id == id)
            .ok_or(KeyError::UnknownKeyId(id))
    }

    /// Adds a newer master key (rotation); older ones stay so that old messages still open.
    pub fn push(&mut self, key: MasterSecretKey) {
        self.keys.push(key);
        self.keys.sort_by_key(|k| k.public.created);
    }

    /// The public parameters that go with these keys.
    pub fn public_params(&self) -> PublicParams {
        PublicParams {
            keys: self.keys.iter().map(|k| k.public.clone()).collect(),
        }
    }

    /// The secret encoding; seal it with [`crate::vault`] before it touches a disk.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        put_header(&mut out, KIND_MASTER);
        out.extend_from_slice(&(self.keys.len() as u16).to_be_bytes());
        for key in &self.keys {
            key.public.write(&mut out);
            out.extend_from_slice(Zeroizing::new(key.ibe.to_bytes()).as_ref());
            let ibs = Zeroizing::new(bincode::serialize(&key.ibs).unwrap_or_default());
            out.extend_from_slice(&ibs);
        }
        out
    }

    /// Parses the secret encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        const WHAT: &str = "master secret key";
        let mut c = Cursor::new(bytes);
        expect_header(&mut c, KIND_MASTER)?;
        let count = c.u16().ok_or(KeyError::Length(WHAT))?;
        let mut keys = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let public = MasterPublicKey::read(&mut c)?;
            let ibe_bytes = Zeroizing::new(
                c.array::<{ cgw_kv::SK_BYTES }>()
                    .ok_or(KeyError::Length(WHAT))?,
            );
            let ibe = Option::from(cgw_kv::SecretKey::from_bytes(&ibe_bytes))
                .ok_or(KeyError::Corrupt(WHAT))?;
            let ibs_bytes = c.take(IBS_SK_BYTES).ok_or(KeyError::Length(WHAT))?;
            let ibs = bincode::deserialize(ibs_bytes).map_err(|_| KeyError::Corrupt(WHAT))?;
            keys.push(MasterSecretKey { public, ibe, ibs });
        }
        if !c.is_empty() {
            return Err(KeyError::Length(WHAT));
        }
        MasterKeys::new(keys)
    }
}

fn read_identity(c: &mut Cursor<'_>, what: &'static str) -> Result<Identity, KeyError> {
    let epoch = Epoch::from_bytes(c.array().ok_or(KeyError::Length(what))?)
        .map_err(|_| KeyError::Corrupt(what))?;
    let addr = c.short_bytes().ok_or(KeyError::Length(what))?;
    let addr = std::str::from_utf8(addr).map_err(|_| KeyError::Corrupt(what))?;
    let address = Address::parse(addr).map_err(|_| KeyError::Corrupt(what))?;
    if address.as_str() != addr {
        return Err(KeyError::Corrupt(what));
    }
    Ok(Identity::new(address, epoch))
}

fn write_identity(out: &mut Vec<u8>, identity: &Identity) {
    out.extend_from_slice(&identity.epoch.to_bytes());
    put_short_bytes(out, identity.address.as_str().as_bytes());
}

/// A user's key that opens messages sealed to one identity (address and month).
pub struct DecryptionKey {
    key_id: KeyId,
    identity: Identity,
    pub(crate) usk: cgw_kv::UserSecretKey,
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("key_id", &self.key_id)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl DecryptionKey {
    /// The master key it was extracted from.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Whom it opens messages for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The secret encoding (for a key file or an encrypted cache).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        put_header(&mut out, KIND_DECRYPT);
        out.extend_from_slice(&self.key_id.0);
        write_identity(&mut out, &self.identity);
        out.extend_from_slice(Zeroizing::new(self.usk.to_bytes()).as_ref());
        out
    }

    /// Parses a decryption key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        const WHAT: &str = "decryption key";
        let mut c = Cursor::new(bytes);
        expect_header(&mut c, KIND_DECRYPT)?;
        let key_id = KeyId(c.array().ok_or(KeyError::Length(WHAT))?);
        let identity = read_identity(&mut c, WHAT)?;
        let usk_bytes = Zeroizing::new(
            c.array::<{ cgw_kv::USK_BYTES }>()
                .ok_or(KeyError::Length(WHAT))?,
        );
        if !c.is_empty() {
            return Err(KeyError::Length(WHAT));
        }
        let usk = Option::from(cgw_kv::UserSecretKey::from_bytes(&usk_bytes))
            .ok_or(KeyError::Corrupt(WHAT))?;
        Ok(DecryptionKey {
            key_id,
            identity,
            usk,
        })
    }
}

/// A user's key that signs as one identity (address and month).
pub struct SigningKey {
    key_id: KeyId,
    identity: Identity,
    pub(crate) usk: ibs::gg::UserSecretKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The master key it was extracted from.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Whom it signs as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The secret encoding.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        put_header(&mut out, KIND_SIGN);
        out.extend_from_slice(&self.key_id.0);
        write_identity(&mut out, &self.identity);
        let usk = Zeroizing::new(bincode::serialize(&self.usk).unwrap_or_default());
        out.extend_from_slice(&usk);
        out
    }

    /// Parses a signing key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        const WHAT: &str = "signing key";
        let mut c = Cursor::new(bytes);
        expect_header(&mut c, KIND_SIGN)?;
        let key_id = KeyId(c.array().ok_or(KeyError::Length(WHAT))?);
        let identity = read_identity(&mut c, WHAT)?;
        let usk_bytes = c.take(IBS_USK_BYTES).ok_or(KeyError::Length(WHAT))?;
        if !c.is_empty() {
            return Err(KeyError::Length(WHAT));
        }
        let usk: ibs::gg::UserSecretKey =
            bincode::deserialize(usk_bytes).map_err(|_| KeyError::Corrupt(WHAT))?;
        // The key embeds the identity it signs as (its last 32 bytes); a file whose label says
        // otherwise has been edited.
        let embedded = bincode::serialize(&ibs_identity(&identity)).unwrap_or_default();
        if usk_bytes[IBS_USK_BYTES - 32..] != embedded[..] {
            return Err(KeyError::Corrupt(WHAT));
        }
        Ok(SigningKey {
            key_id,
            identity,
            usk,
        })
    }
}

/// What kind of Postern key file `bytes` holds, for messages that name it.
pub fn describe(bytes: &[u8]) -> &'static str {
    if bytes.len() >= 6 && &bytes[..4] == MAGIC {
        kind_name(bytes[5])
    } else {
        "not a Postern key"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn id(addr: &str) -> Identity {
        Identity::new(Address::parse(addr).unwrap(), Epoch::new(2026, 11).unwrap())
    }

    #[test]
    fn keys_round_trip_through_their_encodings() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let msk = MasterSecretKey::generate(&mut rng, 100);
        let master = MasterKeys::new(vec![msk]).unwrap();
        let again = MasterKeys::from_bytes(&master.to_bytes()).unwrap();
        assert_eq!(again.newest().public().id(), master.newest().public().id());

        let params = master.public_params();
        let parsed = PublicParams::from_bytes(&params.to_bytes()).unwrap();
        assert_eq!(parsed.newest().id(), params.newest().id());
        let key_id = params.newest().id();
        assert_eq!(key_id.to_string().parse::<KeyId>().unwrap(), key_id);
        assert!("xyz".parse::<KeyId>().is_err());

        let dk = master
            .newest()
            .extract_decryption_key(&id("a@b.example"), &mut rng);
        let dk2 = DecryptionKey::from_bytes(&dk.to_bytes()).unwrap();
        assert_eq!(dk2.identity(), dk.identity());
        assert_eq!(dk2.to_bytes(), dk.to_bytes());

        let sk = master
            .newest()
            .extract_signing_key(&id("a@b.example"), &mut rng);
        let sk2 = SigningKey::from_bytes(&sk.to_bytes()).unwrap();
        assert_eq!(sk2.to_bytes(), sk.to_bytes());
        assert_eq!(sk.to_bytes().len(), 4 + 2 + 8 + 3 + 2 + 11 + 96);
    }

    #[test]
    fn wrong_kind_is_named() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let master = MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, 1)]).unwrap();
        let sk = master
            .newest()
            .extract_signing_key(&id("a@b.example"), &mut rng);
        let err = DecryptionKey::from_bytes(&sk.to_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this is a signing key, not a decryption key"
        );
        let err = PublicParams::from_bytes(b"hello world").unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a Postern key file (expected public parameters file)"
        );
    }

    #[test]
    fn newest_master_key_wins_and_old_ones_stay() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut master = MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, 10)]).unwrap();
        let old = master.newest().public().id();
        master.push(MasterSecretKey::generate(&mut rng, 20));
        let params = master.public_params();
        assert_ne!(params.newest().id(), old);
        assert!(params.get(old).is_ok());
        assert_eq!(params.keys().len(), 2);
    }

    #[test]
    fn corrupt_public_params_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let master = MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, 1)]).unwrap();
        let mut bytes = master.public_params().to_bytes();
        let n = bytes.len();
        bytes[n - 40] ^= 1;
        assert!(PublicParams::from_bytes(&bytes).is_err());
        assert!(PublicParams::from_bytes(&bytes[..n - 1]).is_err());
    }
}
