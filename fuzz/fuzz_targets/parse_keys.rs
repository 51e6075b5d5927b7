//! Feeds arbitrary bytes to every key parser and the passphrase vault: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = envelope::PublicParams::from_bytes(data);
    let _ = envelope::DecryptionKey::from_bytes(data);
    let _ = envelope::SigningKey::from_bytes(data);
    let _ = envelope::MasterKeys::from_bytes(data);
    // Large Argon2 costs in a planted file are refused before any work; keep inputs cheap here.
    if data.len() > 10 && data[6..10] == [0, 0, 0, 64] {
        let _ = envelope::vault::open_master_keys(data, "fuzz passphrase");
    }
});
