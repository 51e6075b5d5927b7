//! Seal and open at 1 KB, 1 MB and 25 MB for 1, 5 and 20 recipients, with cold and warm IBE
//! caches, beside a baseline of the bare primitives measured in the same run (machines here are
//! noisy: compare ratios, not absolute numbers). Results and how to read them: BENCHMARKS.md.
//!
//! `cargo bench -p envelope --bench seal_open`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use envelope::{
    Address, DecapsCache, DecryptionKey, EncapsCache, Epoch, Identity, MasterKeys, MasterSecretKey,
    Opener, PublicParams, SealOptions, Sealer, SigningKey,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

const SIZES: [(usize, &str); 3] = [(1024, "1KB"), (1 << 20, "1MB"), (25 << 20, "25MB")];
const RECIPIENTS: [usize; 3] = [1, 5, 20];

struct Setup {
    params: PublicParams,
    signer: SigningKey,
    first_recipient: DecryptionKey,
    epoch: Epoch,
}

fn setup() -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let master = MasterKeys::new(vec![MasterSecretKey::generate(&mut rng, 1)]).unwrap();
    let epoch = Epoch::current();
    let id = |a: &str| Identity::new(Address::parse(a).unwrap(), epoch);
    Setup {
        params: master.public_params(),
        signer: master
            .newest()
            .extract_signing_key(&id("alice@corp.example"), &mut rng),
        first_recipient: master
            .newest()
            .extract_decryption_key(&id("r0@partner.example"), &mut rng),
        epoch,
    }
}

fn options(s: &Setup, n: usize) -> SealOptions {
    SealOptions {
        recipients: (0..n)
            .map(|i| Address::parse(&format!("r{i}@partner.example")).unwrap())
            .collect(),
        epoch: s.epoch,
        sender: None,
    }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn bench_baseline(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(10);
    let data = payload(25 << 20);
    g.throughput(Throughput::Bytes(data.len() as u64));
    let aead = Aes256Gcm::new(&[7u8; 32].into());
    g.bench_function("aes256gcm_64k_segments/25MB", |b| {
        let mut buf = data.clone();
        b.iter(|| {
            for (i, chunk) in buf.chunks_mut(64 * 1024).enumerate() {
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
                aead.encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", chunk)
                    .unwrap();
            }
        })
    });
    g.bench_function("sha256/25MB", |b| b.iter(|| Sha256::digest(&data)));
    g.finish();
}

fn bench_seal(c: &mut Criterion) {
    let s = setup();
    for (size, label) in SIZES {
        let mut g = c.benchmark_group(format!("seal/{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(if size > 1 << 20 { 5 } else { 3 }));
        g.sample_size(if size > 1 << 20 { 10 } else { 30 });
        let data = payload(size);
        for n in RECIPIENTS {
            let opts = options(&s, n);
            g.bench_with_input(BenchmarkId::new("cold", n), &n, |b, _| {
                let sealer = Sealer::new(&s.params);
                b.iter(|| {
                    sealer
                        .seal(&s.signer, &opts, &data[..], std::io::sink())
                        .unwrap()
                })
            });
            let cache = EncapsCache::new(1024);
            let sealer = Sealer::new(&s.params).with_cache(&cache);
            sealer
                .seal(&s.signer, &opts, &b""[..], std::io::sink())
                .unwrap();
            g.bench_with_input(BenchmarkId::new("warm", n), &n, |b, _| {
                b.iter(|| {
                    sealer
                        .seal(&s.signer, &opts, &data[..], std::io::sink())
                        .unwrap()
                })
            });
        }
        g.finish();
    }
}

fn bench_open(c: &mut Criterion) {
    let s = setup();
    for (size, label) in SIZES {
        let mut g = c.benchmark_group(format!("open/{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(if size > 1 << 20 { 5 } else { 3 }));
        g.sample_size(if size > 1 << 20 { 10 } else { 30 });
        let data = payload(size);
        for n in RECIPIENTS {
            let mut sealed = Vec::new();
            Sealer::new(&s.params)
                .seal(&s.signer, &options(&s, n), &data[..], &mut sealed)
                .unwrap();
            g.bench_with_input(BenchmarkId::new("cold", n), &n, |b, _| {
                let opener = Opener::new(&s.params);
                b.iter(|| {
                    opener
                        .open(&s.first_recipient, &sealed[..], std::io::sink())
                        .unwrap()
                })
            });
            let cache = DecapsCache::new(1024);
            let opener = Opener::new(&s.params).with_cache(&cache);
            opener
                .open(&s.first_recipient, &sealed[..], std::io::sink())
                .unwrap();
            g.bench_with_input(BenchmarkId::new("warm", n), &n, |b, _| {
                b.iter(|| {
                    opener
                        .open(&s.first_recipient, &sealed[..], std::io::sink())
                        .unwrap()
                })
            });
        }
        g.finish();
    }
}

/// The case the amortized IBE exists for: a 4 KB message to one recipient.
fn bench_small(c: &mut Criterion) {
    let s = setup();
    let data = payload(4096);
    let opts = options(&s, 1);
    let mut g = c.benchmark_group("seal/4KB");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("cold/1", |b| {
        let sealer = Sealer::new(&s.params);
        b.iter(|| {
            sealer
                .seal(&s.signer, &opts, &data[..], std::io::sink())
                .unwrap()
        })
    });
    let cache = EncapsCache::new(16);
    let sealer = Sealer::new(&s.params).with_cache(&cache);
    g.bench_function("warm/1", |b| {
        b.iter(|| {
            sealer
                .seal(&s.signer, &opts, &data[..], std::io::sink())
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_baseline, bench_small, bench_seal, bench_open);
criterion_main!(benches);
