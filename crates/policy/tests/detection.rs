//! The built-in lists found where a user puts them: plain text, HTML, quoted-printable and
//! base64 attachments; and never on numbers that fail their check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use policy::{Compiled, Facts, MessageView, Policy};

/// Which built-in finds something in `raw`: a policy with one rule per built-in, scanning
/// body and attachment content.
fn found(raw: &[u8]) -> Vec<&'static str> {
    let mut hits = Vec::new();
    for builtin in ["card_number", "us_ssn", "iban"] {
        let text = format!(
            "[[rule]]\norder = 1\nname = \"{builtin}\"\nmatch = \"any\"\n\
conditions = [{{ on = \"body\", builtin = [\"{builtin}\"] }}, {{ on = \"attachment_content\", builtin = [\"{builtin}\"] }}]\n\
actions = [{{ do = \"delete\" }}]\n"
        );
        let compiled = Compiled::new(Policy::from_toml(&text).unwrap()).unwrap();
        let recipients = vec!["bob@partner.example".to_string()];
        let domains = vec!["corp.example".to_string()];
        let eval = compiled.evaluate(
            &MessageView::parse(raw),
            &Facts {
                sender: "alice@corp.example",
                recipients: &recipients,
                recipient_count: 1,
                internal_domains: &domains,
                encrypted: false,
                skip_rule: None,
            },
        );
        if eval.groups[0].rule.is_some() {
            hits.push(builtin);
        }
    }
    hits
}

fn plain(body: &str) -> Vec<u8> {
    format!("From: a@corp.example\r\nTo: b@partner.example\r\nSubject: s\r\n\r\n{body}\r\n")
        .into_bytes()
}

fn html(body: &str) -> Vec<u8> {
    format!(
        "From: a@corp.example\r\nTo: b@partner.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Details:</p><table><tr><td>{body}</td></tr></table></body></html>\r\n"
    )
    .into_bytes()
}

/// A quoted-printable body in Latin-1, with the number broken across a soft line break.
fn quoted_printable(number: &str) -> Vec<u8> {
    let (a, b) = number.split_at(number.len() / 2);
    format!(
        "From: a@corp.example\r\nTo: b@partner.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
Gr=FC=DFe, hier die Nummer: {a}=\r\n{b} =E2=80=94 danke\r\n"
    )
    .into_bytes()
}

fn base64_attachment(content: &str) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(content.as_bytes());
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: a@corp.example\r\nTo: b@partner.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"=b\"\r\n\r\n--=b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
--=b\r\nContent-Type: text/csv; name=\"export.csv\"\r\nContent-Disposition: attachment; filename=\"export.csv\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--=b--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

/// The number in each place a user puts one.
fn carriers(number: &str) -> [(&'static str, Vec<u8>); 4] {
    [
        ("plain", plain(&format!("Please use {number} today."))),
        ("html", html(&format!("<b>{number}</b>"))),
        ("quoted-printable", quoted_printable(number)),
        (
            "base64 attachment",
            base64_attachment(&format!("name,number\nalice,{number}\n")),
        ),
    ]
}

#[test]
fn valid_numbers_are_found_in_every_encoding() {
    let valid: &[(&str, &str)] = &[
        ("card_number", "4111 1111 1111 1111"),
        ("card_number", "5555-5555-5555-4444"),
        ("card_number", "378282246310005"),
        ("us_ssn", "123-45-6789"),
        ("iban", "DE89 3704 0044 0532 0130 00"),
        ("iban", "GB82WEST12345698765432"),
    ];
    for (kind, number) in valid {
        for (carrier, raw) in carriers(number) {
            assert_eq!(found(&raw), vec![*kind], "{number} in {carrier}");
        }
    }
}

#[test]
fn numbers_failing_their_check_are_not_found() {
    let invalid = [
        "4111 1111 1111 1112",         // Luhn fails
        "5555-5555-5555-4445",         // Luhn fails
        "000-12-3456",                 // area 000 never issued
        "666-12-3456",                 // area 666 never issued
        "912-45-6789",                 // areas 900-999 never issued
        "123-00-6789",                 // group 00
        "123-45-0000",                 // serial 0000
        "DE89 3704 0044 0532 0130 01", // mod-97 fails
        "GB82WEST12345698765433",      // mod-97 fails
        "Order 2024-11-24, call 555-123-4567, invoice 12345678901234567890",
    ];
    for number in invalid {
        for (carrier, raw) in carriers(number) {
            assert!(
                found(&raw).is_empty(),
                "{number} in {carrier}: {:?}",
                found(&raw)
            );
        }
    }
}

#[test]
fn corpus_messages_parse_and_evaluate() {
    // Varied messages: the view never fails, and the default policy decides for each.
    let compiled = Compiled::new(Policy::default_policy().unwrap()).unwrap();
    let domains = vec!["corp.example".to_string()];
    let recipients = vec![
        "bob@partner.example".to_string(),
        "carol@corp.example".to_string(),
    ];
    let mut n = 0;
    for sample in testkit::corpus() {
        let raw = sample.bytes;
        let name = &sample.name;
        let eval = compiled.evaluate(
            &MessageView::parse(&raw),
            &Facts {
                sender: "alice@corp.example",
                recipients: &recipients,
                recipient_count: 2,
                internal_domains: &domains,
                encrypted: false,
                skip_rule: None,
            },
        );
        assert_eq!(eval.groups.len(), 2, "{name}");
        assert_eq!(eval.groups[0].terminal, policy::Action::Encrypt, "{name}");
        assert_eq!(eval.groups[1].terminal, policy::Action::Pass, "{name}");
        n += 1;
    }
    assert!(n > 50);
}
