//! A policy that does not load says where: the rule (or list, template, exceptions), the field
//! as the administrator wrote it, the value and, for a field with fixed choices, the choices.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use policy::Policy;

/// A rule numbered 3 with `body` inserted before its actions (`do = "pass"` unless it has its
/// own).
fn rule(body: &str) -> String {
    let actions = if body.contains("actions") {
        ""
    } else {
        "actions = [{ do = \"pass\" }]\n"
    };
    format!("[[rule]]\norder = 3\nname = \"r\"\n{body}\n{actions}")
}

/// (policy, place, field, words the message must contain)
fn cases() -> Vec<(String, &'static str, &'static str, Vec<&'static str>)> {
    let r = "rule 3 \"r\"";
    vec![
        // The kind of condition, misspelt: named as `on`, with what was written and the choices.
        (
            rule(
                "conditions = [{ on = \"body\", keywords = [\"x\"] }, { on = \"subjekt\", keywords = [\"x\"] }]",
            ),
            r,
            "conditions[1].on",
            vec!["subjekt", "subject", "attachment_name", "encrypted"],
        ),
        (
            rule("conditions = [{ keywords = [\"x\"] }]"),
            r,
            "conditions[0].on",
            vec!["missing"],
        ),
        (
            rule("conditions = [{ on = 5, keywords = [\"x\"] }]"),
            r,
            "conditions[0].on",
            vec!["5"],
        ),
        // The kind of action.
        (
            rule("actions = [{ do = \"pass\" }, { do = \"explode\" }]"),
            r,
            "actions[1].do",
            vec!["explode", "quarantine", "tag_subject"],
        ),
        (
            rule("actions = [{ area = \"x\" }]"),
            r,
            "actions[0].do",
            vec!["missing"],
        ),
        // Fields of the rule with fixed choices.
        (
            rule("direction = \"sideways\""),
            r,
            "direction",
            vec!["sideways", "inbound", "outbound", "any"],
        ),
        (
            rule("match = \"some\""),
            r,
            "match",
            vec!["some", "all", "any"],
        ),
        (rule("enabled = \"yes\""), r, "enabled", vec!["boolean"]),
        (
            rule("senders = \"a@corp.example\""),
            r,
            "senders",
            vec!["sequence"],
        ),
        (
            "[[rule]]\norder = \"first\"\nname = \"r\"\nactions = [{ do = \"pass\" }]\n".into(),
            "rule \"r\"",
            "order",
            vec!["first"],
        ),
        // Sizes and counts that are not numbers, or not whole and positive.
        (
            rule("conditions = [{ on = \"size\", min = \"big\" }]"),
            r,
            "conditions[0].min",
            vec!["big"],
        ),
        (
            rule("conditions = [{ on = \"size\", min = 1, max = -1 }]"),
            r,
            "conditions[0].max",
            vec!["-1"],
        ),
        (
            rule("conditions = [{ on = \"recipient_count\", max = 2.5 }]"),
            r,
            "conditions[0].max",
            vec!["2.5"],
        ),
        (
            rule("conditions = [{ on = \"size\", min = 10, max = 5 }]"),
            r,
            "conditions[0].max",
            vec!["below"],
        ),
        (
            rule("conditions = [{ on = \"size\" }]"),
            r,
            "conditions[0].min",
            vec!["min"],
        ),
        (
            rule("conditions = [{ on = \"body\", keywords = [\"x\"], threshold = \"two\" }]"),
            r,
            "conditions[0].threshold",
            vec!["two"],
        ),
        (
            rule("conditions = [{ on = \"body\", keywords = \"x\" }]"),
            r,
            "conditions[0].keywords",
            vec!["sequence"],
        ),
        // A field the kind of condition does not take is named as written.
        (
            rule("conditions = [{ on = \"size\", min = 1, keywords = [\"x\"] }]"),
            r,
            "conditions[0].keywords",
            vec!["keywords"],
        ),
        (
            rule("conditions = [{ on = \"encrypted\", min = 1 }]"),
            r,
            "conditions[0].min",
            vec!["min"],
        ),
        (
            rule("conditions = [{ on = \"subject\", header = \"X-A\", keywords = [\"x\"] }]"),
            r,
            "conditions[0].header",
            vec!["header"],
        ),
        (
            rule("conditions = [{ on = \"header\", keywords = [\"x\"] }]"),
            r,
            "conditions[0].header",
            vec!["header"],
        ),
        (
            rule("conditions = [{ on = \"body\", keyword = [\"x\"] }]"),
            r,
            "conditions[0].keyword",
            vec!["keyword"],
        ),
        // Regexes that do not compile, inline and in a list.
        (
            rule("conditions = [{ on = \"body\", regex = ['a', '('] }]"),
            r,
            "conditions[0].regex[1]",
            vec!["unclosed"],
        ),
        (
            "[[list]]\nname = \"l\"\nregex = ['[z-a]']\n".into(),
            "list \"l\"",
            "regex[0]",
            vec!["invalid"],
        ),
        // Fields of actions.
        (
            rule("actions = [{ do = \"handoff\", host = \"mx.example\", port = 70000 }]"),
            r,
            "actions[0].port",
            vec!["70000"],
        ),
        (
            rule("actions = [{ do = \"notify\", to = \"nobody\", template = \"notice\" }]"),
            r,
            "actions[0].to",
            vec!["nobody"],
        ),
        (
            rule("actions = [{ do = \"quarantine\", area = \"x\", host = \"mx\" }]"),
            r,
            "actions[0].host",
            vec!["host"],
        ),
        (
            "[exceptions]\nencryption = [{ do = \"delete\" }, { do = \"quarantine\", area = 5 }]\n"
                .into(),
            "exceptions",
            "encryption[1].area",
            vec!["5"],
        ),
        (
            "[exceptions]\ndecryption = [{ do = \"shred\" }]\n".into(),
            "exceptions",
            "decryption[0].do",
            vec!["shred", "quarantine"],
        ),
        // Lists and templates.
        (
            "[[list]]\nname = \"l\"\nkeywords = [\"x\"]\nthreshold = -2\n".into(),
            "list \"l\"",
            "threshold",
            vec!["-2"],
        ),
        (
            "[templates.notice]\nsubject = 5\nbody = \"b\"\n".into(),
            "template \"notice\"",
            "subject",
            vec!["5"],
        ),
    ]
}

#[test]
fn an_error_names_the_field_as_written_and_the_value() {
    let mut wrong = Vec::new();
    for (text, place, field, words) in cases() {
        let e = Policy::from_toml(&text).expect_err(&text);
        let shown = e.to_string();
        let named = e.place == place && e.field == field;
        let says = words.iter().all(|w| e.message.contains(w));
        if !named || !says || !shown.starts_with(&format!("{place}: {field}: ")) {
            wrong.push(format!(
                "{text}\n  want {place}: {field}: (… {words:?} …)\n  got  {shown}"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n\n"));
}
