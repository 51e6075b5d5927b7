//! The reader's cost of showing a message: `render::view` (parse, ammonia on the HTML, the
//! attachment list) against parsing alone, over the shared corpus (`POSTERN_CORPUS` or
//! `../shared/corpus/eml`), in the same run. The ratio is the result: these machines are noisy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};

fn corpus() -> Vec<Vec<u8>> {
    let root = std::env::var("POSTERN_CORPUS").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/eml"),
        PathBuf::from,
    );
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "eml") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no .eml files under {}", root.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn bench(c: &mut Criterion) {
    let messages = corpus();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let views: Vec<_> = messages
        .iter()
        .filter_map(|m| web::render::view(m, "/read/m/0", false).ok())
        .collect();
    let html = views.iter().filter(|v| v.html.is_some()).count();
    eprintln!(
        "corpus: {} messages, {bytes} bytes; {} shown, {html} of them with HTML",
        messages.len(),
        views.len()
    );
    let mut g = c.benchmark_group("corpus");
    g.throughput(criterion::Throughput::Bytes(bytes as u64));
    g.bench_function("parse (baseline)", |b| {
        b.iter(|| {
            for m in &messages {
                std::hint::black_box(mail_parser::MessageParser::default().parse(&m[..]));
            }
        });
    });
    g.bench_function("reader view", |b| {
        b.iter(|| {
            for m in &messages {
                let _ = std::hint::black_box(web::render::view(m, "/read/m/0", false));
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
