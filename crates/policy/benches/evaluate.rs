//! Policy evaluation time: a 50-rule policy using every condition kind and all built-in lists,
//! on a 4 KB and a 1 MB message (parse included, as the gateway pays it per message).

use criterion::{Criterion, criterion_group, criterion_main};
use policy::{Compiled, Facts, MessageView, Policy};

/// 50 rules: 48 that scan and do not match (so every one is evaluated), one that matches on
/// the built-ins and encrypts, one catch-all. `scripts/bench-policy.sh` imports the same file
/// into a running gateway.
const FIFTY_RULES: &str = include_str!("fifty-rules.toml");

/// A message of about `size` bytes whose every line is `line`, and one valid card number at
/// the very end (so the matching rule scans everything).
fn message(size: usize, line: &str) -> Vec<u8> {
    let mut m = String::from(
        "From: alice@corp.example\r\nTo: bob@partner.example\r\nSubject: Quarterly figures\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    while m.len() + line.len() < size {
        m.push_str(line);
    }
    m.push_str("Card: 5555 5555 5555 4444\r\n");
    m.into_bytes()
}

/// Prose, as `postern bench smtp` sends it (the end-to-end runs).
const PROSE: &str =
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
/// The worst case for the detectors: every line full of numbers that almost pass.
const NUMBERS: &str = "Order 4111 1111 1111 1112 shipped to 123-45-0000, ref DE00 3704 0044 0532 0130 00; thanks.\r\n";

fn bench(c: &mut Criterion) {
    let policy = Policy::from_toml(FIFTY_RULES).unwrap_or_default();
    assert_eq!(policy.rules.len(), 50);
    let compiled = match Compiled::new(policy) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let domains = vec!["corp.example".to_string()];
    let recipients = vec!["bob@partner.example".to_string()];
    for (name, size, line) in [
        ("4KB prose", 4 * 1024, PROSE),
        ("1MB prose", 1024 * 1024, PROSE),
        ("4KB of numbers", 4 * 1024, NUMBERS),
        ("1MB of numbers", 1024 * 1024, NUMBERS),
    ] {
        let raw = message(size, line);
        let facts = Facts {
            sender: "alice@corp.example",
            recipients: &recipients,
            recipient_count: 1,
            internal_domains: &domains,
            encrypted: false,
            skip_rule: None,
        };
        let check = compiled.evaluate(&MessageView::parse(&raw), &facts);
        assert_eq!(check.groups[0].rule.as_deref(), Some("sensitive"));
        let text = String::from_utf8_lossy(&raw).into_owned();
        for builtin in policy::Builtin::ALL {
            c.bench_function(
                &format!("detect {} alone, {name} message", builtin.name()),
                |b| b.iter(|| builtin.count(&text, usize::MAX)),
            );
        }
        c.bench_function(&format!("parse only, {name} message"), |b| {
            b.iter(|| MessageView::parse(&raw))
        });
        c.bench_function(&format!("evaluate 50 rules, {name} message"), |b| {
            b.iter(|| compiled.decide(&MessageView::parse(&raw), &facts))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
