//! The policy's view of a message holds at most its limits (parts, nesting, decoded text), says
//! when a limit cut the scan, and a cut scan never lets a content rule be dodged: what was not
//! read may hold what a quarantine, delete or encrypt rule looks for, and is never taken as
//! proof for a rule that would let the message through more freely.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use policy::{Action, Compiled, Cut, Facts, Limits, MessageView, Policy};

/// A multipart/mixed message of `parts` tiny text parts; part `at` says `secret` instead.
fn many_parts(parts: usize, at: usize, secret: &str) -> Vec<u8> {
    let mut m = b"From: a@partner.example\r\nTo: b@corp.example\r\nSubject: many parts\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        .to_vec();
    for i in 0..parts {
        let text = if i == at {
            secret.to_string()
        } else {
            format!("part {i}")
        };
        m.extend(format!("--b\r\nContent-Type: text/plain\r\n\r\n{text}\r\n").as_bytes());
    }
    m.extend(b"--b--\r\n");
    m
}

const CARD: &str = "card 4111 1111 1111 1111";

#[test]
fn a_view_of_100000_parts_holds_at_most_the_part_limit() {
    let raw = many_parts(100_000, 99_999, CARD);
    assert!(raw.len() > 3_000_000);
    let view = MessageView::parse(&raw);
    assert_eq!(view.cut, Some(Cut::Parts(1000)));
    // The root multipart and 999 text parts: the first 999 texts, nothing after.
    assert_eq!(
        view.body.matches("part ").count(),
        999,
        "{}",
        view.body.len()
    );
    assert!(view.body.contains("part 998") && !view.body.contains("part 999"));
    assert!(!view.body.contains("4111"));
    assert_eq!(view.size, raw.len() as u64, "the size still counts in full");
    assert_eq!(view.subject, "many parts", "the header section is read");

    let limits = Limits {
        max_parts: 10,
        ..Limits::default()
    };
    let view = MessageView::parse_with(&raw, &limits);
    assert_eq!(view.cut, Some(Cut::Parts(10)));
    assert_eq!(view.body.matches("part ").count(), 9);

    // Within the limit, nothing is cut.
    let small = many_parts(50, 40, CARD);
    let view = MessageView::parse(&small);
    assert_eq!(view.cut, None);
    assert!(view.body.contains("4111"));
}

#[test]
fn nesting_past_the_limit_is_not_read() {
    let mut raw = b"From: a@partner.example\r\nSubject: deep\r\nMIME-Version: 1.0\r\n".to_vec();
    for d in 0..40 {
        raw.extend(
            format!(
                "Content-Type: multipart/mixed; boundary=d{d}\r\n\r\n--d{d}\r\n\
                 Content-Type: text/plain\r\n\r\nlevel {d}\r\n--d{d}\r\n"
            )
            .as_bytes(),
        );
    }
    raw.extend(format!("Content-Type: text/plain\r\n\r\n{CARD}\r\n").as_bytes());
    let view = MessageView::parse(&raw);
    assert_eq!(view.cut, Some(Cut::Depth(20)));
    assert!(view.body.contains("level 19"), "{}", view.body);
    assert!(!view.body.contains("level 20") && !view.body.contains("4111"));

    let shallow = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    let view = MessageView::parse_with(&raw, &shallow);
    assert_eq!(view.cut, Some(Cut::Depth(3)));
    assert!(view.body.contains("level 2") && !view.body.contains("level 3"));
}

#[test]
fn decoded_text_is_capped() {
    let line = "abcdefghij".repeat(7) + "\r\n";
    let body = line.repeat(3000); // 216 kB
    let raw = format!(
        "From: a@partner.example\r\nSubject: long\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n{body}\
--b\r\nContent-Type: text/plain; name=notes.txt\r\nContent-Disposition: attachment; filename=notes.txt\r\n\r\n\
{CARD}\r\n--b--\r\n"
    );
    let limits = Limits {
        max_text_bytes: 64 * 1024,
        ..Limits::default()
    };
    let view = MessageView::parse_with(raw.as_bytes(), &limits);
    assert_eq!(view.cut, Some(Cut::Text(64 * 1024)));
    let text: usize = view.body.len()
        + view
            .attachments
            .iter()
            .map(|a| a.text.as_deref().map_or(0, str::len))
            .sum::<usize>();
    assert!(text <= 64 * 1024, "{text} bytes of text kept");
    // The attachment past the cap is still listed by name and type, without its text.
    assert_eq!(view.attachments.len(), 1);
    assert_eq!(view.attachments[0].name, "notes.txt");
    assert!(
        !view.attachments[0]
            .text
            .as_deref()
            .unwrap_or("")
            .contains("4111")
    );

    let view = MessageView::parse(raw.as_bytes());
    assert_eq!(view.cut, None, "the default cap is far above 216 kB");
}

const POLICY: &str = r#"
[[rule]]
order = 10
name = "Hold card numbers"
conditions = [{ on = "body", builtin = ["card_number"] }]
actions = [{ do = "quarantine", area = "Cards" }]

[[rule]]
order = 5
name = "Tag newsletters"
conditions = [{ on = "body", keywords = ["unsubscribe"] }]
actions = [{ do = "tag_subject", tag = "[NEWS]" }]

[[rule]]
order = 30
name = "Public mail leaves in clear"
direction = "outbound"
conditions = [{ on = "body", keywords = ["PUBLIC-RELEASE"] }]
actions = [{ do = "pass" }]

[[rule]]
order = 40
name = "Internal-only mail leaves in clear"
direction = "outbound"
conditions = [{ on = "body", keywords = ["confidential"], not = true }, { on = "subject", keywords = ["memo"] }]
actions = [{ do = "pass" }]

[[rule]]
order = 100
name = "Encrypt the rest"
direction = "outbound"
actions = [{ do = "encrypt" }]
"#;

fn decide(raw: &[u8], policy: &str) -> policy::Evaluation {
    let compiled = Compiled::new(Policy::from_toml(policy).unwrap()).unwrap();
    let view = MessageView::parse(raw);
    compiled.evaluate(
        &view,
        &Facts {
            sender: "alice@corp.example",
            recipients: &["bob@partner.example".to_string()],
            recipient_count: 1,
            internal_domains: &["corp.example".to_string()],
            encrypted: false,
            skip_rule: None,
        },
    )
}

/// A card number hidden past part 1,000 of 100,000 is not read; the quarantine rule, which
/// cannot tell it is not there, holds the message, and says why.
#[test]
fn a_cut_scan_does_not_dodge_a_quarantine_rule() {
    let eval = decide(&many_parts(100_000, 50_000, CARD), POLICY);
    assert_eq!(eval.cut, Some(Cut::Parts(1000)));
    assert_eq!(eval.groups.len(), 1);
    let g = &eval.groups[0];
    assert_eq!(g.rule.as_deref(), Some("Hold card numbers"));
    assert_eq!(
        g.terminal,
        Action::Quarantine {
            area: "Cards".into()
        }
    );
    let step = eval.trace.iter().find(|s| s.matched).unwrap();
    assert!(
        step.why.contains("the scan was cut") && step.why.contains("more than 1000 parts"),
        "{}",
        step.why
    );
    // A rule that only tags is not applied on a guess.
    assert!(g.actions.is_empty(), "{:?}", g.actions);
}

/// Without a quarantine rule, a keyword past the cut does not let the message out in clear:
/// the pass rules are not applied on what was not read, and the message is encrypted.
#[test]
fn a_cut_scan_does_not_open_a_pass_rule() {
    let policy = POLICY.replace(
        "actions = [{ do = \"quarantine\", area = \"Cards\" }]",
        "actions = [{ do = \"quarantine\", area = \"Cards\" }]\nenabled = false",
    );
    let raw = many_parts(100_000, 5_000, "PUBLIC-RELEASE");
    let eval = decide(&raw, &policy);
    assert_eq!(eval.groups[0].terminal, Action::Encrypt);
    assert_eq!(eval.groups[0].rule.as_deref(), Some("Encrypt the rest"));
    let pass = eval
        .trace
        .iter()
        .find(|s| s.rule == "Public mail leaves in clear")
        .unwrap();
    assert!(!pass.matched);
    assert!(pass.why.contains("not applied"), "{}", pass.why);

    // A negated content condition cannot be proved on a cut scan either.
    let memo = String::from_utf8(raw)
        .unwrap()
        .replace("Subject: many parts", "Subject: memo");
    let eval = decide(memo.as_bytes(), &policy);
    assert_eq!(eval.groups[0].terminal, Action::Encrypt);

    // Content found in what was read still decides as usual.
    let early = many_parts(100_000, 10, "PUBLIC-RELEASE");
    let eval = decide(&early, &policy);
    assert_eq!(eval.groups[0].terminal, Action::Pass);
    assert_eq!(
        eval.groups[0].rule.as_deref(),
        Some("Public mail leaves in clear")
    );
}
