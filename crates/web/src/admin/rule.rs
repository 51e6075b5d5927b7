//! One rule's editor: a form with a row per condition and action, or the rule as policy-file
//! text. A rule is checked in the policy in force (its lists, templates) and the policy as a
//! whole before it is stored.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use policy::{Policy, Rule};
use serde::{Deserialize, Serialize};

use super::policy::{check_version, current_policy, saved, store_policy};
use super::{Admin, Console, ConsoleError, field, page, page_refused};
use crate::page::Posted;
use crate::rule_form::{self, RuleForm};

/// One rule as the editor shows it: a policy file holding only that rule.
fn rule_toml(rule: &Rule) -> String {
    #[derive(Serialize)]
    struct One<'a> {
        rule: [&'a Rule; 1],
    }
    toml::to_string_pretty(&One { rule: [rule] }).unwrap_or_default()
}

/// What "Add a rule" starts from.
const NEW_RULE: &str = r#"[[rule]]
order = 100
name = "New rule"
enabled = true
direction = "outbound"
senders = ["*@corp.example"]

[[rule.conditions]]
on = "subject"
keywords = ["confidential"]

[[rule.actions]]
do = "quarantine"
area = "Review"
"#;

#[derive(Deserialize)]
pub(super) struct RuleQuery {
    order: Option<u32>,
    /// Show the policy file's text rather than the form.
    #[serde(default)]
    text: Option<String>,
}

/// The rule form page: the rule, and the names its fields may use.
#[derive(Serialize)]
struct RuleFormPage {
    original: Option<u32>,
    /// The policy version the page was made from.
    version: i64,
    form: RuleForm,
    targets: &'static [(&'static str, &'static str)],
    actions: &'static [(&'static str, &'static str)],
    builtins: Vec<&'static str>,
    lists: Vec<String>,
    templates: Vec<String>,
}

impl RuleFormPage {
    fn new(policy: &Policy, version: i64, original: Option<u32>, form: RuleForm) -> Self {
        RuleFormPage {
            original,
            version,
            form,
            targets: rule_form::TARGETS,
            actions: rule_form::ACTIONS,
            builtins: policy::detect::Builtin::ALL
                .iter()
                .map(|b| b.name())
                .collect(),
            lists: policy.lists.iter().map(|l| l.name.clone()).collect(),
            templates: policy::templates::NAMES
                .iter()
                .map(|n| (*n).to_string())
                .chain(policy.templates.keys().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }
}

/// The rule as policy-file text.
#[derive(Serialize)]
struct RulePage {
    original: Option<u32>,
    text: String,
    /// The policy version the page was made from.
    version: i64,
}

/// `GET /admin/policy/rule`: rule `order` (none: a new one) as a form, or as text.
pub(super) async fn show(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(q): Query<RuleQuery>,
) -> Result<Response, ConsoleError> {
    let (policy, version) = current_policy(&c).await?;
    let rule = match q.order {
        Some(o) => match policy.rules.iter().find(|r| r.order == o) {
            Some(r) => r.clone(),
            None => {
                return Err(
                    ConsoleError::not_found(format!("There is no rule {o}.")).back("/admin/policy")
                );
            }
        },
        None => match Policy::from_toml(NEW_RULE) {
            Ok(p) if !p.rules.is_empty() => p.rules[0].clone(),
            _ => {
                return Err(ConsoleError::internal(
                    "The new rule's model does not parse",
                    "NEW_RULE",
                ));
            }
        },
    };
    if q.text.is_some() {
        return Ok(page(
            &admin,
            "policy",
            "admin/rule.html",
            None,
            RulePage {
                original: q.order,
                text: rule_toml(&rule),
                version,
            },
        ));
    }
    let form = RuleForm::from_rule(&rule).with_blank_rows(1);
    Ok(page(
        &admin,
        "policy",
        "admin/rule_form.html",
        None,
        RuleFormPage::new(&policy, version, q.order, form),
    ))
}

#[derive(Deserialize)]
pub(super) struct RuleText {
    csrf: String,
    #[serde(default)]
    original: Option<String>,
    text: String,
    #[serde(default)]
    version: String,
}

/// `POST /admin/policy/rule`: the rule as text, saved.
pub(super) async fn save_text(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<RuleText>,
) -> Result<Response, ConsoleError> {
    admin.check(&form.csrf)?;
    let original: Option<u32> = form.original.as_deref().and_then(|o| o.parse().ok());
    let (policy, version) = current_policy(&c).await?;
    check_version(&form.version, version)?;
    let again = |error: String| {
        Ok(page_refused(
            &admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy",
            "admin/rule.html",
            Some(error),
            RulePage {
                original,
                text: form.text.clone(),
                version,
            },
        ))
    };
    // One [[rule]] and nothing else, checked in the policy in force (its lists, templates).
    let mut file: toml::Table = match toml::from_str(&form.text) {
        Ok(t) => t,
        Err(e) => {
            let why = e.to_string();
            return again(format!(
                "policy: syntax: {}",
                why.lines().last().unwrap_or_default()
            ));
        }
    };
    let rule = match (file.remove("rule"), file.is_empty()) {
        (Some(toml::Value::Array(mut rules)), true) if rules.len() == 1 => rules.remove(0),
        _ => return again("give exactly one [[rule]] and nothing else".into()),
    };
    let toml::Value::Table(rule) = rule else {
        return again("give exactly one [[rule]] and nothing else".into());
    };
    let edited = match rule_form::check_in(&policy, rule) {
        Ok(r) => r,
        Err(e) => return again(e),
    };
    match put_rule(&c, &admin, policy, original, edited).await {
        Ok(v) => Ok(saved(v)),
        Err(e) => again(e),
    }
}

/// Puts `edited` in the policy in place of rule `original` (none: added), checks the whole
/// policy and stores it. The error is the administrator's to correct.
async fn put_rule(
    c: &Console,
    admin: &Admin,
    mut policy: Policy,
    original: Option<u32>,
    edited: Rule,
) -> Result<i64, String> {
    if let Some(o) = original {
        policy.rules.retain(|r| r.order != o);
    }
    if policy.rules.iter().any(|r| r.order == edited.order) {
        return Err(format!(
            "rule {}: order: another rule has order {}; choose a free number",
            edited.order, edited.order
        ));
    }
    let what = match original {
        Some(o) => format!("rule {o} edited as {} {:?}", edited.order, edited.name),
        None => format!("rule {} {:?} added", edited.order, edited.name),
    };
    policy.rules.push(edited);
    policy.rules.sort_by_key(|r| r.order);
    store_policy(c, admin, &policy, &what).await
}

/// `POST /admin/policy/rule/form`: the rule form, saved, or (`more`) shown again with more
/// rows.
pub(super) async fn save_form(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(fields): Posted<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    admin.check(&field(&fields, "csrf"))?;
    let original: Option<u32> = field(&fields, "original").parse().ok();
    let (policy, version) = current_policy(&c).await?;
    check_version(&field(&fields, "version"), version)?;
    let form = RuleForm::from_posted(&fields)
        .map_err(|e| ConsoleError::refused("This rule is too large", e))?;
    let again = |status: StatusCode, error: Option<String>, form: RuleForm| {
        Ok(page_refused(
            &admin,
            status,
            "policy",
            "admin/rule_form.html",
            error,
            RuleFormPage::new(&policy, version, original, form.with_blank_rows(1)),
        ))
    };
    if !field(&fields, "more").is_empty() {
        return again(StatusCode::OK, None, form.with_blank_rows(1));
    }
    let edited = match form
        .to_table()
        .and_then(|rule| rule_form::check_in(&policy, rule))
    {
        Ok(r) => r,
        Err(e) => return again(StatusCode::UNPROCESSABLE_ENTITY, Some(e), form),
    };
    match put_rule(&c, &admin, policy.clone(), original, edited).await {
        Ok(v) => Ok(saved(v)),
        Err(e) => again(StatusCode::UNPROCESSABLE_ENTITY, Some(e), form),
    }
}
