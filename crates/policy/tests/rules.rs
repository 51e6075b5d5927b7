//! Rule semantics, table-driven: order, terminal and accumulating actions, direction,
//! patterns, every condition kind, splitting of recipients, and validation errors that name
//! the rule and the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use policy::{Action, Compiled, Facts, MessageView, Policy};

const INTERNAL: &[&str] = &["corp.example"];

fn domains() -> Vec<String> {
    INTERNAL.iter().map(|d| d.to_string()).collect()
}

/// A small message with a header, an HTML alternative and a text attachment.
fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: alice@corp.example\r\nTo: bob@partner.example\r\nSubject: {subject}\r\n\
X-Scanner: clean\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n\
--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n\
--XX\r\nContent-Type: application/pdf; name=report.pdf\r\nContent-Disposition: attachment; filename=report.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n"
    )
    .into_bytes()
}

struct Case {
    what: &'static str,
    policy: &'static str,
    sender: &'static str,
    recipients: &'static [&'static str],
    subject: &'static str,
    body: &'static str,
    encrypted: bool,
    /// (recipients joined by ",", deciding rule or "-", terminal action description,
    /// non-terminal descriptions joined by "|").
    want: &'static [(&'static str, &'static str, &'static str, &'static str)],
}

fn run(case: &Case) {
    let policy = Policy::from_toml(case.policy).unwrap_or_else(|e| panic!("{}: {e}", case.what));
    let compiled = Compiled::new(policy).unwrap();
    let raw = message(case.subject, case.body);
    let view = MessageView::parse(&raw);
    let recipients: Vec<String> = case.recipients.iter().map(|r| r.to_string()).collect();
    let d = domains();
    let facts = Facts {
        sender: case.sender,
        recipients: &recipients,
        recipient_count: recipients.len(),
        internal_domains: &d,
        encrypted: case.encrypted,
        skip_rule: None,
    };
    let eval = compiled.evaluate(&view, &facts);
    // The gateway's path (matched steps only) decides the same.
    assert_eq!(
        compiled.decide(&view, &facts).groups,
        eval.groups,
        "{}",
        case.what
    );
    let got: Vec<(String, String, String, String)> = eval
        .groups
        .iter()
        .map(|g| {
            (
                g.recipients.join(","),
                g.rule.clone().unwrap_or_else(|| "-".into()),
                g.terminal.describe(),
                g.actions
                    .iter()
                    .map(|(_, a)| a.describe())
                    .collect::<Vec<_>>()
                    .join("|"),
            )
        })
        .collect();
    let want: Vec<(String, String, String, String)> = case
        .want
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(got, want, "{}\ntrace: {:#?}", case.what, eval.trace);
}

const ORDERED: &str = r#"
[[rule]]
order = 20
name = "second"
actions = [{ do = "encrypt" }]
[[rule]]
order = 10
name = "first"
conditions = [{ on = "subject", keywords = ["urgent"] }]
actions = [{ do = "delete" }]
"#;

const ACCUMULATE: &str = r#"
[[rule]]
order = 1
name = "tag"
conditions = [{ on = "body", keywords = ["confidential"] }]
actions = [{ do = "tag_subject", tag = "[SECURE]" }, { do = "add_header", name = "X-Class", value = "confidential" }]
[[rule]]
order = 2
name = "archive"
actions = [{ do = "archive", to = "archive@corp.example" }]
[[rule]]
order = 3
name = "encrypt"
actions = [{ do = "encrypt" }]
[[rule]]
order = 4
name = "never reached"
actions = [{ do = "notify", to = "admin", template = "notice" }]
"#;

const DIRECTIONS: &str = r#"
[[rule]]
order = 1
name = "in"
direction = "inbound"
actions = [{ do = "decrypt" }]
[[rule]]
order = 2
name = "out"
direction = "outbound"
actions = [{ do = "encrypt" }]
"#;

const PATTERNS: &str = r#"
[[rule]]
order = 1
name = "from corp to partner"
senders = ["*@corp.example"]
recipients = ["*@partner.example", "re:^ceo@"]
actions = [{ do = "quarantine", area = "Legal" }]
"#;

const DISABLED: &str = r#"
[[rule]]
order = 1
name = "off"
enabled = false
actions = [{ do = "delete" }]
"#;

fn condition_policy(condition: &str) -> String {
    format!(
        "[[rule]]\norder = 1\nname = \"hit\"\nconditions = [{condition}]\nactions = [{{ do = \"delete\" }}]\n"
    )
}

#[test]
fn rule_semantics() {
    let cases = [
        Case {
            what: "rules run by order number, not file order",
            policy: ORDERED,
            sender: "alice@corp.example",
            recipients: &["bob@partner.example"],
            subject: "URGENT: read",
            body: "hi",
            encrypted: false,
            want: &[("bob@partner.example", "first", "delete", "")],
        },
        Case {
            what: "a rule whose conditions fail is passed over",
            policy: ORDERED,
            sender: "alice@corp.example",
            recipients: &["bob@partner.example"],
            subject: "lunch",
            body: "hi",
            encrypted: false,
            want: &[("bob@partner.example", "second", "encrypt", "")],
        },
        Case {
            what: "non-terminal actions of earlier rules accumulate; the first terminal ends the walk",
            policy: ACCUMULATE,
            sender: "alice@corp.example",
            recipients: &["bob@partner.example"],
            subject: "plan",
            body: "this is CONFIDENTIAL",
            encrypted: false,
            want: &[(
                "bob@partner.example",
                "encrypt",
                "encrypt",
                "tag subject \"[SECURE]\"|add header X-Class: confidential|archive a copy to archive@corp.example",
            )],
        },
        Case {
            what: "no rule decides: the message passes",
            policy: DISABLED,
            sender: "alice@corp.example",
            recipients: &["bob@partner.example"],
            subject: "x",
            body: "y",
            encrypted: false,
            want: &[("bob@partner.example", "-", "pass", "")],
        },
        Case {
            what: "direction is per recipient, and recipients decided differently split",
            policy: DIRECTIONS,
            sender: "alice@corp.example",
            recipients: &[
                "bob@partner.example",
                "carol@corp.example",
                "dan@partner.example",
            ],
            subject: "x",
            body: "y",
            encrypted: false,
            want: &[
                (
                    "bob@partner.example,dan@partner.example",
                    "out",
                    "encrypt",
                    "",
                ),
                ("carol@corp.example", "in", "decrypt", ""),
            ],
        },
        Case {
            what: "sender and recipient patterns: globs, regex, case",
            policy: PATTERNS,
            sender: "Alice@CORP.example",
            recipients: &[
                "bob@partner.example",
                "ceo@other.example",
                "eve@other.example",
            ],
            subject: "x",
            body: "y",
            encrypted: false,
            want: &[
                (
                    "bob@partner.example,ceo@other.example",
                    "from corp to partner",
                    "quarantine to Legal",
                    "",
                ),
                ("eve@other.example", "-", "pass", ""),
            ],
        },
        Case {
            what: "a sender outside the pattern does not match",
            policy: PATTERNS,
            sender: "mallory@partner.example",
            recipients: &["bob@partner.example"],
            subject: "x",
            body: "y",
            encrypted: false,
            want: &[("bob@partner.example", "-", "pass", "")],
        },
    ];
    for case in &cases {
        run(case);
    }
}

#[test]
fn every_condition_kind() {
    // (what, condition, subject, body, encrypted, recipients, matches)
    let table: &[(&str, &str, &str, &str, bool, usize, bool)] = &[
        (
            "header keyword",
            r#"{ on = "header", header = "X-Scanner", keywords = ["clean"] }"#,
            "s",
            "b",
            false,
            1,
            true,
        ),
        (
            "header absent",
            r#"{ on = "header", header = "X-Other", keywords = ["clean"] }"#,
            "s",
            "b",
            false,
            1,
            false,
        ),
        (
            "header negated",
            r#"{ on = "header", header = "X-Other", keywords = ["clean"], not = true }"#,
            "s",
            "b",
            false,
            1,
            true,
        ),
        (
            "subject, case-insensitive",
            r#"{ on = "subject", keywords = ["invoice"] }"#,
            "Your INVOICE",
            "b",
            false,
            1,
            true,
        ),
        (
            "subject, case-sensitive",
            r#"{ on = "subject", keywords = ["invoice"], case_sensitive = true }"#,
            "Your INVOICE",
            "b",
            false,
            1,
            false,
        ),
        (
            "body regex",
            r#"{ on = "body", regex = ['\bproject\s+x\b'] }"#,
            "s",
            "about project   x today",
            false,
            1,
            true,
        ),
        (
            "body threshold not reached",
            r#"{ on = "body", keywords = ["secret"], threshold = 3 }"#,
            "s",
            "secret secret",
            false,
            1,
            false,
        ),
        (
            "body threshold reached",
            r#"{ on = "body", keywords = ["secret"], threshold = 3 }"#,
            "s",
            "secret secret secret",
            false,
            1,
            true,
        ),
        (
            "body card number",
            r#"{ on = "body", builtin = ["card_number"] }"#,
            "s",
            "card 4111 1111 1111 1111 exp 12/29",
            false,
            1,
            true,
        ),
        (
            "body card number failing Luhn",
            r#"{ on = "body", builtin = ["card_number"] }"#,
            "s",
            "card 4111 1111 1111 1112",
            false,
            1,
            false,
        ),
        (
            "attachment name",
            r#"{ on = "attachment_name", regex = ['(?i)\.pdf$'] }"#,
            "s",
            "b",
            false,
            1,
            true,
        ),
        (
            "attachment type",
            r#"{ on = "attachment_type", keywords = ["application/pdf"] }"#,
            "s",
            "b",
            false,
            1,
            true,
        ),
        (
            "attachment content (binary has none)",
            r#"{ on = "attachment_content", keywords = ["PDF"] }"#,
            "s",
            "b",
            false,
            1,
            false,
        ),
        (
            "size above",
            r#"{ on = "size", min = 100 }"#,
            "s",
            "b",
            false,
            1,
            true,
        ),
        (
            "size below",
            r#"{ on = "size", max = 100 }"#,
            "s",
            "b",
            false,
            1,
            false,
        ),
        (
            "recipient count",
            r#"{ on = "recipient_count", min = 2 }"#,
            "s",
            "b",
            false,
            2,
            true,
        ),
        (
            "recipient count too few",
            r#"{ on = "recipient_count", min = 2 }"#,
            "s",
            "b",
            false,
            1,
            false,
        ),
        (
            "encrypted",
            r#"{ on = "encrypted" }"#,
            "s",
            "b",
            true,
            1,
            true,
        ),
        (
            "not encrypted",
            r#"{ on = "encrypted" }"#,
            "s",
            "b",
            false,
            1,
            false,
        ),
    ];
    for (what, condition, subject, body, encrypted, count, matches) in table {
        let policy = Policy::from_toml(&condition_policy(condition))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let compiled = Compiled::new(policy).unwrap();
        let raw = message(subject, body);
        let view = MessageView::parse(&raw);
        let recipients: Vec<String> = (0..*count)
            .map(|i| format!("r{i}@partner.example"))
            .collect();
        let d = domains();
        let eval = compiled.evaluate(
            &view,
            &Facts {
                sender: "alice@corp.example",
                recipients: &recipients,
                recipient_count: recipients.len(),
                internal_domains: &d,
                encrypted: *encrypted,
                skip_rule: None,
            },
        );
        let quick = compiled.decide(
            &view,
            &Facts {
                sender: "alice@corp.example",
                recipients: &recipients,
                recipient_count: recipients.len(),
                internal_domains: &d,
                encrypted: *encrypted,
                skip_rule: None,
            },
        );
        assert_eq!(quick.groups, eval.groups, "{what}");
        let deleted = eval.groups[0].terminal == Action::Delete;
        assert_eq!(deleted, *matches, "{what}: {:#?}", eval.trace);
    }
}

#[test]
fn named_lists_and_any_match() {
    let policy = Policy::from_toml(
        r#"
[[list]]
name = "finance"
keywords = ["wire transfer", "swift"]
builtin = ["iban"]
threshold = 2

[[rule]]
order = 1
name = "finance"
match = "any"
conditions = [{ on = "subject", keywords = ["payroll"] }, { on = "body", list = "finance" }]
actions = [{ do = "quarantine", area = "Finance" }]
"#,
    )
    .unwrap();
    let compiled = Compiled::new(policy).unwrap();
    let d = domains();
    let recipients = vec!["x@partner.example".to_string()];
    let decide = |subject: &str, body: &str| {
        let raw = message(subject, body);
        let eval = compiled.evaluate(
            &MessageView::parse(&raw),
            &Facts {
                sender: "a@corp.example",
                recipients: &recipients,
                recipient_count: 1,
                internal_domains: &d,
                encrypted: false,
                skip_rule: None,
            },
        );
        eval.groups[0].terminal.describe()
    };
    assert_eq!(decide("payroll", "nothing"), "quarantine to Finance");
    assert_eq!(
        decide("hello", "wire transfer to DE89 3704 0044 0532 0130 00"),
        "quarantine to Finance"
    );
    assert_eq!(decide("hello", "wire transfer only"), "pass");
}

#[test]
fn skip_rule_is_honoured_for_a_released_message() {
    let policy = Policy::from_toml(PATTERNS).unwrap();
    let compiled = Compiled::new(policy).unwrap();
    let raw = message("s", "b");
    let d = domains();
    let recipients = vec!["bob@partner.example".to_string()];
    let eval = compiled.evaluate(
        &MessageView::parse(&raw),
        &Facts {
            sender: "alice@corp.example",
            recipients: &recipients,
            recipient_count: 1,
            internal_domains: &d,
            encrypted: false,
            skip_rule: Some("from corp to partner"),
        },
    );
    assert_eq!(eval.groups[0].terminal, Action::Pass);
    assert!(eval.trace[0].why.contains("released"));
}

#[test]
fn errors_name_the_rule_and_the_field() {
    let table: &[(&str, &str, &str)] = &[
        (
            "[[rule]]\norder = 3\nname = \"bad\"\nactions = [{ do = \"explode\" }]\n",
            "rule 3 \"bad\"",
            "actions[0].do",
        ),
        (
            "[[rule]]\norder = 3\nname = \"bad\"\ncolour = 1\nactions = [{ do = \"pass\" }]\n",
            "rule 3 \"bad\"",
            "colour",
        ),
        (
            "[[rule]]\norder = 4\nname = \"re\"\nconditions = [{ on = \"body\", regex = ['('] }]\nactions = [{ do = \"pass\" }]\n",
            "rule 4 \"re\"",
            "conditions[0].regex[0]",
        ),
        (
            "[[rule]]\norder = 5\nname = \"two\"\nactions = [{ do = \"pass\" }, { do = \"delete\" }]\n",
            "rule 5 \"two\"",
            "actions",
        ),
        (
            "[[rule]]\norder = 6\nname = \"list\"\nconditions = [{ on = \"body\", list = \"nope\" }]\nactions = [{ do = \"pass\" }]\n",
            "rule 6 \"list\"",
            "conditions[0].list",
        ),
        (
            "[[rule]]\norder = 7\nname = \"hdr\"\nconditions = [{ on = \"header\", keywords = [\"x\"] }]\nactions = [{ do = \"pass\" }]\n",
            "rule 7 \"hdr\"",
            "conditions[0].header",
        ),
        (
            "[[rule]]\norder = 8\nname = \"port\"\nactions = [{ do = \"handoff\", host = \"mx\", port = 0 }]\n",
            "rule 8 \"port\"",
            "actions[0].port",
        ),
        (
            "[[rule]]\norder = 9\nname = \"area\"\nactions = [{ do = \"quarantine\", area = \"a b\" }]\n",
            "rule 9 \"area\"",
            "actions[0].area",
        ),
        (
            "[[rule]]\norder = 1\nname = \"a\"\nactions = [{ do = \"pass\" }]\n[[rule]]\norder = 1\nname = \"b\"\nactions = [{ do = \"pass\" }]\n",
            "rule 1 \"b\"",
            "order",
        ),
        (
            "[[rule]]\norder = 2\nname = \"bi\"\nconditions = [{ on = \"body\", builtin = [\"passport\"] }]\nactions = [{ do = \"pass\" }]\n",
            "rule 2 \"bi\"",
            "conditions[0].builtin[0]",
        ),
        (
            "[[rule]]\norder = 2\nname = \"who\"\nactions = [{ do = \"notify\", to = \"nobody\", template = \"notice\" }]\n",
            "rule 2 \"who\"",
            "actions[0].to",
        ),
        (
            "[[rule]]\norder = 2\nname = \"tpl\"\nactions = [{ do = \"notify\", to = \"admin\", template = \"missing\" }]\n",
            "rule 2 \"tpl\"",
            "actions[0].template",
        ),
        (
            "[templates.notice]\nsubject = \"x\"\nbody = \"{% if %}\"\n",
            "template \"notice\"",
            "body",
        ),
        (
            "[exceptions]\nencryption = [{ do = \"tag_subject\", tag = \"x\" }]\n",
            "exceptions",
            "encryption",
        ),
        (
            "[exceptions]\ndecryption = [{ do = \"decrypt\" }]\n",
            "exceptions",
            "decryption",
        ),
        (
            "[[rule]]\norder = 2\nname = \"pat\"\nsenders = [\"corp.example\"]\nactions = [{ do = \"pass\" }]\n",
            "rule 2 \"pat\"",
            "senders[0]",
        ),
    ];
    for (text, place, field) in table {
        let e = Policy::from_toml(text).expect_err(text);
        assert_eq!(
            (e.place.as_str(), e.field.as_str()),
            (*place, *field),
            "{text}\n→ {e}"
        );
    }
}

#[test]
fn the_default_policy_and_exports_round_trip() {
    let p = Policy::default_policy().unwrap();
    assert_eq!(p.rules.len(), 3);
    // The default policy needs only the header section: large mail is not read for it.
    assert!(!Compiled::new(p.clone()).unwrap().reads_content());
    let body =
        Policy::from_toml(&condition_policy(r#"{ on = "body", keywords = ["x"] }"#)).unwrap();
    assert!(Compiled::new(body).unwrap().reads_content());
    let again = Policy::from_toml(&p.to_toml()).unwrap();
    assert_eq!(again, p);
    for example in [
        include_str!("../../../docs/policy-seed-seven-rules.toml"),
        include_str!("../../../docs/policy-external-filter.toml"),
    ] {
        let p = Policy::from_toml(example).unwrap();
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
    }
}
