//! Test vectors pin format version 1: the committed files must still open to the expected bytes,
//! and the fixed seed must still reproduce them exactly.
//!
//! To make them anew after a deliberate format change (with a new version number):
//! `POSTERN_WRITE_VECTORS=1 cargo test -p envelope --test vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use envelope::vault::{self, DEFAULT_KDF};
use envelope::{
    Address, DecryptionKey, Epoch, Identity, MasterKeys, MasterSecretKey, Opener, PublicParams,
    SealOptions, Sealer, Verdict,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const SEED: [u8; 32] = *b"postern envelope test vectors v1";
const PASSPHRASE: &str = "test vector passphrase";
const CREATED: u64 = 1_793_491_200; // 2026-11-01T00:00:00Z

const PLAINTEXT: &[u8] = b"From: Alice <alice@corp.example>\r\n\
To: Bob <bob@partner.example>, carol@partner.example\r\n\
Subject: Quarterly figures\r\n\
Date: Tue, 24 Nov 2026 09:00:00 +0000\r\n\
Message-ID: <vector-1@corp.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Bob, Carol: the figures are attached in spirit. \xe2\x82\xac 1,234.56\r\n";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

struct Vectors {
    files: Vec<(&'static str, Vec<u8>)>,
}

fn generate() -> Vectors {
    let mut rng = ChaCha20Rng::from_seed(SEED);
    let master = MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, CREATED)]).unwrap();
    let epoch = Epoch::new(2026, 11).unwrap();
    let id = |a: &str| Identity::new(Address::parse(a).unwrap(), epoch);
    let msk = master.newest();
    let alice_sign = msk.extract_signing_key(&id("alice@corp.example"), &mut rng);
    let bob = msk.extract_decryption_key(&id("bob@partner.example"), &mut rng);
    let carol = msk.extract_decryption_key(&id("carol@partner.example"), &mut rng);
    let params = master.public_params();
    let options = SealOptions {
        recipients: vec![
            Address::parse("bob@partner.example").unwrap(),
            Address::parse("carol@partner.example").unwrap(),
        ],
        epoch,
        sender: None,
    };
    let mut sealed = Vec::new();
    Sealer::new(&params)
        .seal_with_rng(&alice_sign, &options, PLAINTEXT, &mut sealed, &mut rng)
        .unwrap();
    let vault = vault::seal_master_keys(&master, PASSPHRASE, DEFAULT_KDF, &mut rng).unwrap();
    Vectors {
        files: vec![
            ("params.pub", params.to_bytes()),
            ("alice-2026-11.sign", alice_sign.to_bytes().to_vec()),
            ("bob-2026-11.decrypt", bob.to_bytes().to_vec()),
            ("carol-2026-11.decrypt", carol.to_bytes().to_vec()),
            ("message.eml", PLAINTEXT.to_vec()),
            ("message.sealed", sealed),
            ("master.sealed", vault),
        ],
    }
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("test vector {name}: {e}"))
}

#[test]
fn committed_vectors_still_open_to_the_expected_bytes() {
    let params = PublicParams::from_bytes(&read("params.pub")).unwrap();
    let sealed = read("message.sealed");
    for who in ["bob-2026-11.decrypt", "carol-2026-11.decrypt"] {
        let key = DecryptionKey::from_bytes(&read(who)).unwrap();
        let mut out = Vec::new();
        let opened = Opener::new(&params)
            .open(&key, &sealed[..], &mut out)
            .unwrap();
        assert_eq!(out, read("message.eml"), "{who}");
        assert_eq!(out, PLAINTEXT);
        match opened.verdict {
            Verdict::Valid {
                signer,
                default_sender: false,
            } => assert_eq!(signer.address.as_str(), "alice@corp.example"),
            other => panic!("{who}: {other}"),
        }
    }
    let master = vault::open_master_keys(&read("master.sealed"), PASSPHRASE).unwrap();
    assert_eq!(master.public_params().to_bytes(), read("params.pub"));
}

#[test]
fn the_fixed_seed_reproduces_the_committed_vectors() {
    let vectors = generate();
    if std::env::var_os("POSTERN_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        for (name, bytes) in &vectors.files {
            std::fs::write(dir().join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in &vectors.files {
        assert!(
            read(name) == *bytes,
            "{name} no longer matches what seed {SEED:?} produces: the format changed"
        );
    }
}
