//! The reader's cost of showing a message: `render::view` (parse, ammonia on the HTML, the
//! attachment list) against parsing alone, over testkit's generated messages (and the `.eml`
//! files below `POSTERN_CORPUS`, when set), in the same run. The ratio is the result: these
//! machines are noisy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};

/// The generated messages, and with them those of `POSTERN_CORPUS` when it names a directory.
fn corpus() -> Vec<Vec<u8>> {
    testkit::corpus().into_iter().map(|m| m.bytes).collect()
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
