//! Feeds arbitrary bytes to the sealed-message parser and opener: nothing may panic, and
//! nothing but a genuine message may open.
#![no_main]

use std::sync::OnceLock;

use envelope::{
    Address, DecryptionKey, Epoch, Identity, MasterKeys, MasterSecretKey, Opener, PublicParams,
};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fn keys() -> &'static (PublicParams, DecryptionKey) {
    static KEYS: OnceLock<(PublicParams, DecryptionKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0);
        let master = MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, 1)])
            .unwrap_or_else(|_| std::process::abort());
        let epoch = Epoch::new(2026, 11).unwrap_or_else(|_| std::process::abort());
        let bob = Address::parse("bob@partner.example").unwrap_or_else(|_| std::process::abort());
        let key = master
            .newest()
            .extract_decryption_key(&Identity::new(bob, epoch), &mut rng);
        (master.public_params(), key)
    })
}

fuzz_target!(|data: &[u8]| {
    let (params, key) = keys();
    let _ = envelope::read_header(data);
    // Random bytes cannot carry a valid tag under Bob's key.
    if Opener::new(params).open(key, data, std::io::sink()).is_ok() {
        panic!("arbitrary input opened");
    }
});
