//! A small key server in memory, from a fixed seed, for the envelope tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use envelope::{
    Address, DecryptionKey, Epoch, Identity, MasterKeys, MasterSecretKey, PublicParams,
    SealOptions, Sealer, SigningKey,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

pub struct Fixture {
    pub master: MasterKeys,
    pub params: PublicParams,
    pub rng: ChaCha20Rng,
}

pub fn epoch() -> Epoch {
    Epoch::new(2026, 11).unwrap()
}

pub fn addr(a: &str) -> Address {
    Address::parse(a).unwrap()
}

impl Fixture {
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let master =
            MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, 1_700_000_000)]).unwrap();
        let params = master.public_params();
        Fixture {
            master,
            params,
            rng,
        }
    }

    pub fn decryption_key(&mut self, a: &str, epoch: Epoch) -> DecryptionKey {
        self.master
            .newest()
            .extract_decryption_key(&Identity::new(addr(a), epoch), &mut self.rng)
    }

    pub fn signing_key(&mut self, a: &str, epoch: Epoch) -> SigningKey {
        self.master
            .newest()
            .extract_signing_key(&Identity::new(addr(a), epoch), &mut self.rng)
    }

    pub fn seal(&mut self, signer: &SigningKey, to: &[&str], plaintext: &[u8]) -> Vec<u8> {
        let options = SealOptions {
            recipients: to.iter().map(|a| addr(a)).collect(),
            epoch: epoch(),
            sender: None,
        };
        let mut out = Vec::new();
        Sealer::new(&self.params)
            .seal_with_rng(signer, &options, plaintext, &mut out, &mut self.rng)
            .unwrap();
        out
    }
}

/// Deterministic bytes that look nothing like a repeating pattern.
pub fn message(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
