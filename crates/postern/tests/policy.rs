//! The policy engine in the mail path, with a real gateway process (its key server in the same
//! process), real SMTP in and out, and the CLI and REST API an administrator uses:
//! a card number from corp.example is encrypted, a quarantine rule holds mail that is found by
//! a query and released or, after the rule is changed, reprocessed; a hand-off rule delivers to
//! its host:port; a delete rule drops and logs; a bad import changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::{Gateway, postern, s, text, wait_until};
use testkit::Recorded;

/// A call to the quarantine's REST API with curl, with the admin token when `token`.
fn api(gw: &Gateway, method: &str, path: &str, body: Option<&str>, token: bool) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{path}", gw.web);
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, &url]);
    if token {
        let t = fs::read_to_string(gw.data.join("admin.token")).unwrap();
        cmd.args(["-H", &format!("Authorization: Bearer {}", t.trim())]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = cmd.output().unwrap();
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = all.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// The audit log the console shows, newest first, as "actor action detail".
fn audit_log(gw: &Gateway) -> Vec<String> {
    let audit = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let queue = store::Queue::open_admin(&gw.data.join("queue"))
            .await
            .unwrap();
        queue.audit_log(50).await.unwrap()
    });
    audit
        .iter()
        .map(|e| format!("{} {} {}", e.actor, e.action, e.detail))
        .collect()
}

fn message(subject: &str, body: &str, extra: &str) -> String {
    format!(
        "From: alice@corp.example\nTo: bob@partner.example\nSubject: {subject}\n\
Message-ID: <{}@corp.example>\n{extra}MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}\n",
        subject.replace(' ', "-")
    )
}

fn next(rx: &Receiver<Recorded>, what: &str) -> Recorded {
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("nothing arrived: {what}"))
}

fn nothing(rx: &Receiver<Recorded>, within: Duration, what: &str) {
    if let Ok(m) = rx.recv_timeout(within) {
        panic!("{what}: but {:?} arrived", String::from_utf8_lossy(&m.data));
    }
}

const POLICY: &str = r#"
[[rule]]
order = 5
name = "Decrypt incoming"
direction = "inbound"
conditions = [{ on = "encrypted" }]
actions = [{ do = "decrypt" }]

[[rule]]
order = 10
name = "Hold payroll"
conditions = [{ on = "subject", keywords = ["payroll"] }]
actions = [
  { do = "quarantine", area = "HR" },
  { do = "notify", to = "admin", template = "quarantined" },
]

[[rule]]
order = 20
name = "Hand off to the partner relay"
recipients = ["*@handoff.example"]
actions = [{ do = "handoff", host = "127.0.0.1", port = HANDOFF_PORT }]

[[rule]]
order = 25
name = "Redirect the old domain"
recipients = ["*@old.example"]
actions = [
  { do = "tag_subject", tag = "[FWD]" },
  { do = "add_header", name = "X-Redirected", value = "old.example" },
  { do = "archive", to = "archive@corp.example" },
  { do = "change_recipient", to = ["new@partner.example"] },
]

[[rule]]
order = 30
name = "Drop spam"
conditions = [{ on = "header", header = "X-Spam-Flag", keywords = ["YES"] }]
actions = [{ do = "delete" }]

[[rule]]
order = 40
name = "Encrypt card numbers"
direction = "outbound"
senders = ["*@corp.example"]
conditions = [{ on = "body", builtin = ["card_number"] }]
actions = [{ do = "add_header", name = "X-Postern-Rule", value = "cards" }, { do = "encrypt" }]

[[rule]]
order = 1000
name = "Deliver the rest"
actions = [{ do = "pass" }]
"#;

#[test]
fn policy_rules_decide_in_the_mail_path() {
    let dir = tempfile::tempdir().unwrap();
    let (external, out) = testkit::smtp_recorder_thread();
    let (handoff, handed) = testkit::smtp_recorder_thread();
    let gw = Gateway::start(dir.path(), external);

    // A bad policy is refused with the rule and the field named, and nothing changes.
    let bad = dir.path().join("bad.toml");
    fs::write(
        &bad,
        POLICY
            .replace("HANDOFF_PORT", &handoff.to_string())
            .replace("builtin = [\"card_number\"]", "builtin = [\"passport\"]"),
    )
    .unwrap();
    let refused = postern()
        .args(["policy", "import", s(&bad), "--config", s(&gw.config)])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = text(&refused);
    assert!(
        why.contains("rule 40 \"Encrypt card numbers\"")
            && why.contains("conditions[0].builtin[0]"),
        "{why}"
    );
    assert!(text(&gw.cli(&["policy", "list"])).contains("built-in default policy"));

    // The real policy, imported while the gateway runs: it applies to the next message.
    let file = dir.path().join("policy.toml");
    fs::write(&file, POLICY.replace("HANDOFF_PORT", &handoff.to_string())).unwrap();
    let imported = text(&gw.cli(&["policy", "import", s(&file), "--author", "ann"]));
    assert!(imported.contains("made quarantine area HR"), "{imported}");
    let listed = text(&gw.cli(&["policy", "list"]));
    assert!(
        listed.contains("imported by ann") && listed.contains("Encrypt card numbers"),
        "{listed}"
    );

    // A card number from corp.example leaves encrypted; the number does not cross.
    let card = message("Order", "Please charge 4111 1111 1111 1111 today.", "");
    gw.send("alice@corp.example", &["bob@partner.example"], &card);
    let m = next(&out, "the card-number message");
    let data = String::from_utf8_lossy(&m.data).to_string();
    assert!(data.contains("X-PP-ENCRYPTED: TRUE"), "{data}");
    assert!(!data.contains("4111"), "the card number crossed in clear");
    // A number failing Luhn is not a card: the rest are delivered as they are.
    let plain = message("Order two", "Reference 4111 1111 1111 1112.", "");
    gw.send("alice@corp.example", &["bob@partner.example"], &plain);
    let m = next(&out, "the plain message");
    let data = String::from_utf8_lossy(&m.data).to_string();
    assert!(
        data.contains("4111 1111 1111 1112") && !data.contains("X-PP-ENCRYPTED"),
        "{data}"
    );

    // `policy test` shows the rules looked at and the result, for the same message.
    let eml = dir.path().join("card.eml");
    fs::write(&eml, &card).unwrap();
    let tested = text(&gw.cli(&[
        "policy",
        "test",
        s(&eml),
        "--from",
        "alice@corp.example",
        "--to",
        "bob@partner.example",
    ]));
    assert!(
        tested.contains("Hold payroll") && tested.contains("MATCH"),
        "{tested}"
    );
    assert!(tested.contains("card_number"), "{tested}");
    assert!(
        tested.contains("bob@partner.example → add header X-Postern-Rule: cards, encrypt"),
        "{tested}"
    );

    // Quarantine: held, found by a query, the administrator told; released and delivered.
    gw.send(
        "alice@corp.example",
        &["bob@partner.example"],
        &message("March payroll", "Salaries attached.", ""),
    );
    wait_until(
        Duration::from_secs(30),
        "the payroll message is held",
        || text(&gw.cli(&["quarantine", "query", "--area", "HR"])).contains("March payroll"),
    );
    nothing(
        &out,
        Duration::from_secs(2),
        "a held message must not leave",
    );
    let query = text(&gw.cli(&[
        "quarantine",
        "query",
        "--sender",
        "alice",
        "--subject",
        "march",
    ]));
    assert!(
        query.contains("Hold payroll") && query.contains("bob@partner.example"),
        "{query}"
    );
    let id = query.split_whitespace().next().unwrap().to_string();
    wait_until(
        Duration::from_secs(30),
        "the administrator is notified",
        || {
            gw.delivered_text()
                .iter()
                .any(|n| n.contains("To: postmaster@corp.example") && n.contains("Area:       HR"))
        },
    );
    // The REST API sees the same, and refuses a request without the token.
    let (code, _) = api(&gw, "GET", "/api/v1/quarantine?area=HR", None, false);
    assert_eq!(code, 401);
    let (code, body) = api(
        &gw,
        "GET",
        "/api/v1/quarantine?area=HR&subject=payroll",
        None,
        true,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("March payroll"), "{body}");
    let (code, body) = api(
        &gw,
        "POST",
        "/api/v1/quarantine/release",
        Some("{\"ids\": \"x\"}"),
        true,
    );
    assert_eq!(code, 400, "{body}");

    gw.cli(&["quarantine", "release", "--id", &id]);
    let m = next(&out, "the released message");
    assert!(String::from_utf8_lossy(&m.data).contains("March payroll"));
    let left = text(&gw.cli(&["quarantine", "query", "--area", "HR"]));
    assert!(
        left.lines().any(|l| l == "0 held message(s) match"),
        "{left}"
    );
    // The command line's changes are in the audit log the console shows.
    let entries = audit_log(&gw);
    assert!(
        entries
            .iter()
            .any(|e| e.starts_with("cli policy.save version") && e.ends_with("by ann")),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e == "cli quarantine.release 1 message(s) of 1 named"),
        "{entries:?}"
    );

    // Reprocess after the rule changed: held under the old rule, delivered under the new one.
    gw.send(
        "alice@corp.example",
        &["bob@partner.example"],
        &message("April payroll", "Salaries attached.", ""),
    );
    wait_until(
        Duration::from_secs(30),
        "the second payroll message is held",
        || text(&gw.cli(&["quarantine", "query", "--area", "HR"])).contains("April payroll"),
    );
    let changed = POLICY
        .replace("HANDOFF_PORT", &handoff.to_string())
        .replace("keywords = [\"payroll\"]", "keywords = [\"bonus\"]");
    fs::write(&file, changed).unwrap();
    gw.cli(&["policy", "import", s(&file)]);
    // Through the REST API this time, on all results of a query at once.
    let (code, body) = api(
        &gw,
        "POST",
        "/api/v1/quarantine/reprocess",
        Some("{\"filter\": {\"area\": \"HR\"}}"),
        true,
    );
    assert_eq!((code, body.as_str()), (200, "{\"count\":1}"));
    let m = next(&out, "the reprocessed message");
    assert!(String::from_utf8_lossy(&m.data).contains("April payroll"));

    // Hand-off: delivered to the host:port the rule names, not the external next hop.
    gw.send(
        "alice@corp.example",
        &["carol@handoff.example"],
        &message("Hand me off", "Hello.", ""),
    );
    let m = next(&handed, "the handed-off message");
    assert_eq!(m.to, vec!["carol@handoff.example".to_string()]);
    nothing(
        &out,
        Duration::from_secs(1),
        "a handed-off message goes only to the hand-off host",
    );

    // "Unable to decrypt": a damaged sealed message will not open however often it is tried,
    // so the exception rule's default holds it in Encryption_Quarantine and tells the recipient.
    let damaged = "From: dave@partner.example\nTo: carol@corp.example\nSubject: Sealed for carol\n\
X-PP-ENCRYPTED: TRUE\nMIME-Version: 1.0\nContent-Type: text/plain\n\n\
-----BEGIN POSTERN SEALED MESSAGE-----\nUFNUTQBub3QgYSBzZWFsZWQgbWVzc2FnZQ==\n-----END POSTERN SEALED MESSAGE-----\n";
    gw.send("dave@partner.example", &["carol@corp.example"], damaged);
    wait_until(
        Duration::from_secs(30),
        "the damaged message is held",
        || {
            let q = text(&gw.cli(&["quarantine", "query", "--area", "Encryption_Quarantine"]));
            q.contains("Sealed for carol") && q.contains("Unable to decrypt")
        },
    );
    wait_until(Duration::from_secs(30), "the recipient is told", || {
        gw.delivered_text().iter().any(|n| {
            n.contains("To: carol@corp.example")
                && n.contains("Encrypted message held: Sealed for carol")
        })
    });
    assert!(
        !gw.delivered_text()
            .iter()
            .any(|n| n.contains("BEGIN POSTERN SEALED")),
        "the damaged message itself was delivered"
    );
    // Deleted through the REST API, which the audit log records as it does the console's and
    // the command line's changes (the reprocess above too).
    let (code, body) = api(
        &gw,
        "POST",
        "/api/v1/quarantine/delete",
        Some(
            "{\"filter\": {\"area\": \"Encryption_Quarantine\", \"subject\": \"Sealed for carol\"}}",
        ),
        true,
    );
    assert_eq!((code, body.as_str()), (200, "{\"count\":1}"));
    let entries = audit_log(&gw);
    for op in ["reprocess", "delete"] {
        assert!(
            entries
                .iter()
                .any(|e| e.starts_with(&format!("api quarantine.{op} 1 message(s) of 1 named"))),
            "{op}: {entries:?}"
        );
    }

    // One message, two fates: bob's copy passes as it is; dan's (old domain) goes to the new
    // address with its subject tagged and a header added, and the archive gets the original.
    gw.send(
        "alice@corp.example",
        &["bob@partner.example", "dan@old.example"],
        &message("Moving", "We moved.", ""),
    );
    let mut two = [
        next(&out, "a copy of the split message"),
        next(&out, "the other copy"),
    ];
    two.sort_by(|a, b| a.to.cmp(&b.to));
    assert_eq!(two[0].to, vec!["bob@partner.example".to_string()]);
    assert_eq!(two[1].to, vec!["new@partner.example".to_string()]);
    let (plain, moved) = (
        String::from_utf8_lossy(&two[0].data).to_string(),
        String::from_utf8_lossy(&two[1].data).to_string(),
    );
    assert!(
        plain.contains("Subject: Moving") && !plain.contains("X-Redirected"),
        "{plain}"
    );
    assert!(moved.contains("Subject: [FWD] Moving"), "{moved}");
    assert!(moved.contains("X-Redirected: old.example"), "{moved}");
    assert!(moved.contains("We moved."));
    wait_until(
        Duration::from_secs(30),
        "the archive gets the original",
        || {
            gw.delivered_text().iter().any(|m| {
                m.contains("Delivered-To: archive@corp.example")
                    && m.contains("Subject: Moving")
                    && !m.contains("[FWD]")
            })
        },
    );

    // A sender cannot forge the gateway's verdict: its own fields are removed from what is
    // delivered.
    let forged = "From: ceo@corp.example\nTo: carol@corp.example\nSubject: Wire the money\n\
X-Postern-Decrypted: gw.corp.example\nX-Postern-Signature: valid; signer=ceo@corp.example\n\n\
Please wire it today.\n";
    gw.send("mallory@evil.example", &["carol@corp.example"], forged);
    wait_until(
        Duration::from_secs(30),
        "the forged message is delivered",
        || {
            gw.delivered_text()
                .iter()
                .any(|m| m.contains("Wire the money"))
        },
    );
    let got = gw
        .delivered_text()
        .into_iter()
        .find(|m| m.contains("Wire the money"))
        .unwrap();
    assert!(!got.contains("X-Postern-Signature"), "{got}");
    assert!(!got.contains("X-Postern-Decrypted"), "{got}");
    assert!(got.contains("Please wire it today."));

    // Delete: dropped, logged, recorded.
    gw.send(
        "alice@corp.example",
        &["bob@partner.example"],
        &message("Cheap pills", "Buy now.", "X-Spam-Flag: YES\n"),
    );
    wait_until(Duration::from_secs(30), "the deletion is logged", || {
        gw.log().contains("deleted by policy")
    });
    nothing(
        &out,
        Duration::from_secs(2),
        "a deleted message must not leave",
    );
    let listed = text(&gw.cli(&["queue", "list", "--state", "deleted"]));
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.contains("alice@corp.example"))
            .count(),
        1,
        "{listed}"
    );
}
