//! One policy rule as a form: fields, and rows of conditions and actions, to and from the
//! policy file's `[[rule]]`. Going through the file's form keeps one set of names and one
//! validation (the policy crate's) for the console, the CLI and imported files.

use policy::{Policy, Rule};
use serde::Serialize;
use toml::{Table, Value};

/// What a condition can examine, as the policy file names it, with words for the form.
pub const TARGETS: &[(&str, &str)] = &[
    ("subject", "Subject"),
    ("body", "Body text"),
    ("header", "A header (name below)"),
    ("attachment_name", "Attachment name"),
    ("attachment_type", "Attachment type"),
    ("attachment_content", "Attachment content"),
    ("size", "Message size (bytes)"),
    ("recipient_count", "Number of recipients"),
    ("encrypted", "Is encrypted"),
];

/// What an action can do, as the policy file names it, with words for the form.
pub const ACTIONS: &[(&str, &str)] = &[
    ("encrypt", "Encrypt"),
    ("decrypt", "Decrypt"),
    ("decrypt_scan_reencrypt", "Decrypt, scan, encrypt again"),
    ("pass", "Deliver as it is"),
    ("quarantine", "Quarantine (area)"),
    ("delete", "Delete"),
    ("handoff", "Hand off (host, port)"),
    ("change_recipient", "Change recipient (to)"),
    ("archive", "Archive a copy (to)"),
    ("notify", "Notify (to, template)"),
    ("add_header", "Add header (name, value)"),
    ("tag_subject", "Tag subject (tag)"),
];

/// A condition row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConditionRow {
    /// What is examined; empty: an unused row.
    pub on: String,
    /// The header's name, for `header`.
    pub header: String,
    /// A named expression list.
    pub list: String,
    /// Keywords, one per line.
    pub keywords: String,
    /// Keywords match case-sensitively.
    pub case_sensitive: bool,
    /// Regular expressions, one per line.
    pub regex: String,
    /// Built-in detectors, one per line.
    pub builtin: String,
    /// Occurrences needed.
    pub threshold: String,
    /// Lower bound, for sizes and counts.
    pub min: String,
    /// Upper bound.
    pub max: String,
    /// Holds when the test does not.
    pub not: bool,
}

/// An action row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActionRow {
    /// What it does; empty: an unused row.
    pub kind: String,
    /// Quarantine area.
    pub area: String,
    /// Hand-off host.
    pub host: String,
    /// Hand-off port.
    pub port: String,
    /// Addresses (change recipient: one per line; archive and notify: one).
    pub to: String,
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
    /// Subject tag.
    pub tag: String,
    /// Notification template.
    pub template: String,
}

/// A rule as the form shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleForm {
    /// Order number.
    pub order: String,
    /// Name.
    pub name: String,
    /// On or off.
    pub enabled: bool,
    /// inbound, outbound or any.
    pub direction: String,
    /// Sender patterns, one per line.
    pub senders: String,
    /// Recipient patterns, one per line.
    pub recipients: String,
    /// all or any.
    pub match_: String,
    /// Conditions, with unused rows at the end.
    pub conditions: Vec<ConditionRow>,
    /// Actions, with unused rows at the end.
    pub actions: Vec<ActionRow>,
}

fn text(t: &Table, key: &str) -> String {
    t.get(key)
        .map_or(String::new(), crate::config_form::value_text)
}

fn flag(t: &Table, key: &str) -> bool {
    matches!(t.get(key), Some(Value::Boolean(true)))
}

fn tables<'a>(t: &'a Table, key: &str) -> impl Iterator<Item = &'a Table> {
    t.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_table)
}

/// The non-empty lines of `s`: trimmed (addresses, patterns, names), or kept as typed
/// (keywords and expressions, whose spaces are part of what they match).
fn lines(s: &str, trim: bool) -> Vec<Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Value::String(if trim { l.trim() } else { l }.to_string()))
        .collect()
}

/// `key` set to the lines of `s`, unless there are none.
fn put_lines(t: &mut Table, key: &str, s: &str, trim: bool) {
    let l = lines(s, trim);
    if !l.is_empty() {
        t.insert(key.into(), Value::Array(l));
    }
}

/// Most rows of each kind a posted rule may have.
pub const MAX_ROWS: usize = 200;

/// Checks a rule (the policy file's `[[rule]]` table) as part of `policy`, whose lists and
/// templates it may name, as an import would check it.
pub fn check_in(policy: &Policy, rule: Table) -> Result<Rule, String> {
    let mut file: Table = toml::from_str(&policy.to_toml())
        .map_err(|e| format!("the policy in force cannot be read: {e}"))?;
    file.insert("rule".into(), Value::Array(vec![Value::Table(rule)]));
    let text = toml::to_string(&file).map_err(|e| format!("the rule cannot be written: {e}"))?;
    let checked = Policy::from_toml(&text).map_err(|e| e.to_string())?;
    checked
        .rules
        .into_iter()
        .next()
        .ok_or_else(|| "the form did not make a rule".to_string())
}

fn put_text(t: &mut Table, key: &str, s: &str) {
    let s = s.trim();
    if !s.is_empty() {
        t.insert(key.into(), Value::String(s.to_string()));
    }
}

fn put_number(t: &mut Table, key: &str, s: &str, place: &str) -> Result<(), String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(());
    }
    let n: i64 = s
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("{place}{key}: {s:?} is not a whole number"))?;
    t.insert(key.into(), Value::Integer(n));
    Ok(())
}

impl RuleForm {
    /// A stored rule, for editing.
    pub fn from_rule(rule: &Rule) -> RuleForm {
        let t = match Value::try_from(rule) {
            Ok(Value::Table(t)) => t,
            _ => Table::new(),
        };
        let conditions = tables(&t, "conditions")
            .map(|c| ConditionRow {
                on: text(c, "on"),
                header: text(c, "header"),
                list: text(c, "list"),
                keywords: text(c, "keywords"),
                case_sensitive: flag(c, "case_sensitive"),
                regex: text(c, "regex"),
                builtin: text(c, "builtin"),
                threshold: text(c, "threshold"),
                min: text(c, "min"),
                max: text(c, "max"),
                not: flag(c, "not"),
            })
            .collect();
        let actions = tables(&t, "actions")
            .map(|a| ActionRow {
                kind: text(a, "do"),
                area: text(a, "area"),
                host: text(a, "host"),
                port: text(a, "port"),
                to: text(a, "to"),
                name: text(a, "name"),
                value: text(a, "value"),
                tag: text(a, "tag"),
                template: text(a, "template"),
            })
            .collect();
        RuleForm {
            order: text(&t, "order"),
            name: text(&t, "name"),
            enabled: flag(&t, "enabled"),
            direction: text(&t, "direction"),
            senders: text(&t, "senders"),
            recipients: text(&t, "recipients"),
            match_: text(&t, "match"),
            conditions,
            actions,
        }
    }

    /// A posted form: fields by name, rows as `c<N>.<field>` and `a<N>.<field>`; a row
    /// ticked `remove` is left out.
    pub fn from_posted(form: &[(String, String)]) -> Result<RuleForm, String> {
        let get = |key: &str| {
            form.iter()
                .find(|(k, _)| k == key)
                .map_or(String::new(), |(_, v)| v.clone())
        };
        let on = |key: &str| form.iter().any(|(k, v)| k == key && v == "on");
        let rows = |prefix: char| {
            form.iter()
                .filter_map(|(k, _)| {
                    let (row, _) = k.strip_prefix(prefix)?.split_once('.')?;
                    row.parse::<usize>().ok()
                })
                .max()
                .map_or(0, |n| n + 1)
        };
        if rows('c') > MAX_ROWS || rows('a') > MAX_ROWS {
            return Err(format!(
                "a rule has at most {MAX_ROWS} conditions and {MAX_ROWS} actions"
            ));
        }
        let conditions = (0..rows('c'))
            .filter(|i| !on(&format!("c{i}.remove")))
            .map(|i| {
                let f = |name: &str| get(&format!("c{i}.{name}"));
                ConditionRow {
                    on: f("on"),
                    header: f("header"),
                    list: f("list"),
                    keywords: f("keywords"),
                    case_sensitive: on(&format!("c{i}.case_sensitive")),
                    regex: f("regex"),
                    builtin: f("builtin"),
                    threshold: f("threshold"),
                    min: f("min"),
                    max: f("max"),
                    not: on(&format!("c{i}.not")),
                }
            })
            .filter(|c| !c.on.is_empty())
            .collect();
        let actions = (0..rows('a'))
            .filter(|i| !on(&format!("a{i}.remove")))
            .map(|i| {
                let f = |name: &str| get(&format!("a{i}.{name}"));
                ActionRow {
                    kind: f("do"),
                    area: f("area"),
                    host: f("host"),
                    port: f("port"),
                    to: f("to"),
                    name: f("name"),
                    value: f("value"),
                    tag: f("tag"),
                    template: f("template"),
                }
            })
            .filter(|a| !a.kind.is_empty())
            .collect();
        Ok(RuleForm {
            order: get("order"),
            name: get("name"),
            enabled: on("enabled"),
            direction: get("direction"),
            senders: get("senders"),
            recipients: get("recipients"),
            match_: get("match"),
            conditions,
            actions,
        })
    }

    /// The form with `n` unused rows of each kind at the end, for adding.
    pub fn with_blank_rows(mut self, n: usize) -> RuleForm {
        self.conditions
            .extend(std::iter::repeat_n(ConditionRow::default(), n));
        self.actions
            .extend(std::iter::repeat_n(ActionRow::default(), n));
        self
    }

    /// The rule as one `[[rule]]` of a policy file.
    pub fn to_toml(&self) -> Result<String, String> {
        let mut file = Table::new();
        file.insert(
            "rule".into(),
            Value::Array(vec![Value::Table(self.to_table()?)]),
        );
        toml::to_string(&file).map_err(|e| format!("the rule cannot be written: {e}"))
    }

    /// The rule's table in the policy file's form, for the policy crate to check
    /// ([`check_in`]). Numbers that are not numbers are named here; everything else is the
    /// policy's to judge.
    pub fn to_table(&self) -> Result<Table, String> {
        let mut rule = Table::new();
        put_number(&mut rule, "order", &self.order, "")?;
        if !rule.contains_key("order") {
            return Err("order: give the rule an order number".into());
        }
        rule.insert("name".into(), Value::String(self.name.trim().to_string()));
        rule.insert("enabled".into(), Value::Boolean(self.enabled));
        put_text(&mut rule, "direction", &self.direction);
        put_lines(&mut rule, "senders", &self.senders, true);
        put_lines(&mut rule, "recipients", &self.recipients, true);
        put_text(&mut rule, "match", &self.match_);
        let mut conditions = Vec::new();
        for (i, c) in self.conditions.iter().enumerate() {
            let place = format!("conditions[{}].", i + 1);
            let mut t = Table::new();
            put_text(&mut t, "on", &c.on);
            put_text(&mut t, "header", &c.header);
            put_text(&mut t, "list", &c.list);
            put_lines(&mut t, "keywords", &c.keywords, false);
            if c.case_sensitive {
                t.insert("case_sensitive".into(), Value::Boolean(true));
            }
            put_lines(&mut t, "regex", &c.regex, false);
            put_lines(&mut t, "builtin", &c.builtin, true);
            put_number(&mut t, "threshold", &c.threshold, &place)?;
            put_number(&mut t, "min", &c.min, &place)?;
            put_number(&mut t, "max", &c.max, &place)?;
            if c.not {
                t.insert("not".into(), Value::Boolean(true));
            }
            conditions.push(Value::Table(t));
        }
        if !conditions.is_empty() {
            rule.insert("conditions".into(), Value::Array(conditions));
        }
        let mut actions = Vec::new();
        for (i, a) in self.actions.iter().enumerate() {
            let place = format!("actions[{}].", i + 1);
            let mut t = Table::new();
            put_text(&mut t, "do", &a.kind);
            // Only the fields the action takes: the others on the row may hold what was typed
            // for another kind.
            match a.kind.as_str() {
                "quarantine" => put_text(&mut t, "area", &a.area),
                "handoff" => {
                    put_text(&mut t, "host", &a.host);
                    put_number(&mut t, "port", &a.port, &place)?;
                }
                "change_recipient" => {
                    t.insert("to".into(), Value::Array(lines(&a.to, true)));
                }
                "archive" => put_text(&mut t, "to", &a.to),
                "notify" => {
                    put_text(&mut t, "to", &a.to);
                    put_text(&mut t, "template", &a.template);
                }
                "add_header" => {
                    put_text(&mut t, "name", &a.name);
                    put_text(&mut t, "value", &a.value);
                }
                "tag_subject" => put_text(&mut t, "tag", &a.tag),
                _ => {}
            }
            actions.push(Value::Table(t));
        }
        rule.insert("actions".into(), Value::Array(actions));
        Ok(rule)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const EVERYTHING: &str = r#"
[[list]]
name = "projects"
keywords = ["bluebird"]

[[rule]]
order = 7
name = "Everything a rule can say"
enabled = false
direction = "outbound"
senders = ["*@corp.example", "ceo@corp.example"]
recipients = ["*@partner.example"]
match = "any"

[[rule.conditions]]
on = "header"
header = "X-Class"
keywords = ["secret", " PO "]
case_sensitive = true

[[rule.conditions]]
on = "body"
list = "projects"
not = true

[[rule.conditions]]
on = "attachment_content"
regex = ['\b\d{3}-\d{2}-\d{4}\b']
builtin = ["card_number"]
threshold = 2

[[rule.conditions]]
on = "size"
min = 1000
max = 5000000

[[rule.actions]]
do = "add_header"
name = "X-Checked"
value = "yes"

[[rule.actions]]
do = "tag_subject"
tag = "[SECURE]"

[[rule.actions]]
do = "notify"
to = "admin"
template = "quarantined"

[[rule.actions]]
do = "archive"
to = "archive@corp.example"

[[rule.actions]]
do = "handoff"
host = "mx.partner.example"
port = 2525
"#;

    fn first_rule(text: &str) -> Rule {
        let policy = Policy::from_toml(text).expect("the policy parses");
        policy.rules[0].clone()
    }

    fn posted(form: &RuleForm) -> Vec<(String, String)> {
        let mut out = vec![
            ("order".to_string(), form.order.clone()),
            ("name".into(), form.name.clone()),
            ("direction".into(), form.direction.clone()),
            ("senders".into(), form.senders.replace('\n', "\r\n")),
            ("recipients".into(), form.recipients.clone()),
            ("match".into(), form.match_.clone()),
        ];
        if form.enabled {
            out.push(("enabled".into(), "on".into()));
        }
        for (i, c) in form.conditions.iter().enumerate() {
            for (k, v) in [
                ("on", &c.on),
                ("header", &c.header),
                ("list", &c.list),
                ("keywords", &c.keywords),
                ("regex", &c.regex),
                ("builtin", &c.builtin),
                ("threshold", &c.threshold),
                ("min", &c.min),
                ("max", &c.max),
            ] {
                out.push((format!("c{i}.{k}"), v.clone()));
            }
            if c.case_sensitive {
                out.push((format!("c{i}.case_sensitive"), "on".into()));
            }
            if c.not {
                out.push((format!("c{i}.not"), "on".into()));
            }
        }
        for (i, a) in form.actions.iter().enumerate() {
            for (k, v) in [
                ("do", &a.kind),
                ("area", &a.area),
                ("host", &a.host),
                ("port", &a.port),
                ("to", &a.to),
                ("name", &a.name),
                ("value", &a.value),
                ("tag", &a.tag),
                ("template", &a.template),
            ] {
                out.push((format!("a{i}.{k}"), v.clone()));
            }
        }
        out
    }

    /// The rule the form makes, checked in the policy of [`EVERYTHING`] (its list).
    fn rule_of(form: &RuleForm) -> Rule {
        let policy = Policy::from_toml(EVERYTHING).unwrap();
        check_in(&policy, form.to_table().unwrap()).unwrap()
    }

    #[test]
    fn every_field_of_a_rule_survives_the_form_and_back() {
        let rule = first_rule(EVERYTHING);
        let form = RuleForm::from_rule(&rule).with_blank_rows(2);
        assert_eq!(form.conditions.len(), 6);
        assert_eq!(form.conditions[1].list, "projects");
        assert_eq!(form.actions[4].port, "2525");
        // Posted as a browser posts it: blank rows, CRLF in text areas.
        let back = RuleForm::from_posted(&posted(&form)).unwrap();
        assert_eq!(back.conditions.len(), 4, "blank rows are dropped");
        let again = rule_of(&back);
        assert_eq!(again, rule);
        assert_eq!(
            again.conditions[0].expr().keywords,
            ["secret", " PO "],
            "a keyword's spaces are kept"
        );
    }

    #[test]
    fn a_rule_naming_a_list_or_template_is_checked_in_the_policy_that_has_them() {
        let form = RuleForm::from_rule(&first_rule(EVERYTHING));
        let without = Policy::default_policy().unwrap();
        let err = check_in(&without, form.to_table().unwrap()).unwrap_err();
        assert!(err.contains("projects"), "{err}");
        let with = Policy::from_toml(EVERYTHING).unwrap();
        assert_eq!(
            check_in(&with, form.to_table().unwrap()).unwrap().name,
            "Everything a rule can say"
        );
    }

    #[test]
    fn more_rows_than_a_rule_may_have_are_refused_not_cut() {
        let fields = vec![(format!("a{MAX_ROWS}.do"), "delete".to_string())];
        assert!(
            RuleForm::from_posted(&fields)
                .unwrap_err()
                .contains("at most")
        );
    }

    #[test]
    fn a_row_ticked_remove_is_left_out_and_fields_of_other_kinds_are_ignored() {
        let rule = first_rule(EVERYTHING);
        let mut fields = posted(&RuleForm::from_rule(&rule));
        fields.push(("c0.remove".into(), "on".into()));
        fields.push(("a1.remove".into(), "on".into()));
        // Typed for a hand-off, then switched to archive: the host is not the archive's.
        for (k, v) in &mut fields {
            if k == "a3.host" {
                *v = "ignored.example".into();
            }
        }
        let edited = rule_of(&RuleForm::from_posted(&fields).unwrap());
        assert_eq!(edited.conditions.len(), 3);
        assert_eq!(edited.conditions[0], rule.conditions[1]);
        assert_eq!(edited.actions.len(), 4);
        assert_eq!(edited.actions[1], rule.actions[2]);
        assert_eq!(
            edited.actions[2], rule.actions[3],
            "the archive has no host"
        );
    }

    #[test]
    fn numbers_that_are_not_numbers_are_named() {
        let mut form = RuleForm::from_rule(&first_rule(EVERYTHING));
        form.order = "five".into();
        assert_eq!(
            form.to_toml().unwrap_err(),
            "order: \"five\" is not a whole number"
        );
        form.order = String::new();
        assert!(form.to_toml().unwrap_err().contains("order number"));
        form.order = "5".into();
        form.conditions[3].min = "-1".into();
        assert_eq!(
            form.to_toml().unwrap_err(),
            "conditions[4].min: \"-1\" is not a whole number"
        );
        form.conditions[3].min = "1".into();
        form.actions[4].port = "smtp".into();
        assert!(form.to_toml().unwrap_err().starts_with("actions[5].port"));
    }

    #[test]
    fn a_quarantine_without_an_area_is_refused_by_the_policy_naming_the_field() {
        let form = RuleForm {
            order: "3".into(),
            name: "Hold".into(),
            actions: vec![ActionRow {
                kind: "quarantine".into(),
                ..ActionRow::default()
            }],
            ..RuleForm::default()
        };
        let err = Policy::from_toml(&form.to_toml().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("area"), "{err}");
    }
}
