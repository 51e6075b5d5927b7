//! `postern policy export` writes what `postern policy import` reads back, in the format
//! administrators keep in their files: pinned by a policy that uses every field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use policy::Policy;

const EVERY_FIELD: &str = include_str!("exports/every-field.toml");
const EVERY_FIELD_EXPORT: &str = include_str!("exports/every-field.export.toml");

#[test]
fn a_policy_with_every_field_exports_as_it_always_has() {
    let p = Policy::from_toml(EVERY_FIELD).unwrap();
    let kinds: HashSet<_> = p
        .rules
        .iter()
        .flat_map(|r| &r.conditions)
        .map(|c| c.target())
        .collect();
    assert_eq!(kinds.len(), 9, "the fixture has every kind of condition");
    assert_eq!(p.to_toml(), EVERY_FIELD_EXPORT);
    assert_eq!(Policy::from_toml(EVERY_FIELD_EXPORT).unwrap(), p);
}

/// The example policies of the documentation (the files and the policy blocks of
/// docs/policy.md), the default policy and the benchmark's.
fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("default".into(), policy::model::DEFAULT_POLICY.into()),
        (
            "docs/policy-seed-seven-rules.toml".into(),
            include_str!("../../../docs/policy-seed-seven-rules.toml").into(),
        ),
        (
            "docs/policy-external-filter.toml".into(),
            include_str!("../../../docs/policy-external-filter.toml").into(),
        ),
        (
            "benches/fifty-rules.toml".into(),
            include_str!("../benches/fifty-rules.toml").into(),
        ),
    ];
    let guide = include_str!("../../../docs/policy.md");
    for (i, block) in guide.split("```toml").skip(1).enumerate() {
        let block = block.split("```").next().unwrap_or_default();
        out.push((format!("docs/policy.md block {}", i + 1), block.into()));
    }
    out
}

#[test]
fn the_documented_policies_export_and_import_back_the_same() {
    let examples = examples();
    assert!(examples.len() >= 8, "the guide's examples are found");
    for (name, text) in examples {
        let p = Policy::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let exported = p.to_toml();
        let again = Policy::from_toml(&exported).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again, p, "{name}");
        assert_eq!(again.to_toml(), exported, "{name}");
    }
}
