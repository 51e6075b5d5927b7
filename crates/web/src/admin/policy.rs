//! The policy page: the rules in order, and the changes made from it (enable, disable, move,
//! delete). Every change is checked as an import would be, and refused when the page was made
//! from an older policy version.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use policy::{Compiled, Policy};
use serde::{Deserialize, Serialize};

use super::{Admin, Console, ConsoleError, Flash, page};
use crate::page::Posted;

/// The stored policy, or the built-in default, with its version (0: the default).
pub(super) async fn current_policy(c: &Console) -> Result<(Policy, i64), ConsoleError> {
    match c.gateway.queue.current_policy().await {
        Ok(Some(stored)) => Policy::from_toml(&stored.text)
            .map(|p| (p, stored.version))
            .map_err(|e| ConsoleError::internal("the stored policy does not load", e)),
        Ok(None) => Policy::default_policy()
            .map(|p| (p, 0))
            .map_err(|e| ConsoleError::internal("the built-in policy does not load", e)),
        Err(e) => Err(ConsoleError::internal("cannot read the policy", e)),
    }
}

/// Whether a form made from policy version `posted` may change the policy now at `current`:
/// rules are named by order numbers, which another change may have moved.
pub(super) fn check_version(posted: &str, current: i64) -> Result<(), ConsoleError> {
    if posted.trim().parse::<i64>().ok() == Some(current) {
        Ok(())
    } else {
        Err(ConsoleError::StalePolicy)
    }
}

/// Checks `policy` as a whole (as an import would), stores it with the areas it names, and
/// writes the audit log. The error is the administrator's to correct.
pub(super) async fn store_policy(
    c: &Console,
    admin: &Admin,
    policy: &Policy,
    what: &str,
) -> Result<i64, String> {
    let text = policy.to_toml();
    let checked = Policy::from_toml(&text).map_err(|e| e.to_string())?;
    Compiled::new(checked.clone()).map_err(|e| e.to_string())?;
    let version = c
        .gateway
        .queue
        .save_policy(&text, &format!("admin:{}", admin.name), &checked.areas())
        .await
        .map_err(|e| e.to_string())?;
    c.audit(admin, "policy.save", &format!("version {version}: {what}"))
        .await;
    Ok(version)
}

/// The policy page, saying which version was saved.
pub(super) fn saved(version: i64) -> Response {
    Redirect::to(&format!(
        "/admin/policy?done=Saved+as+policy+version+{version}"
    ))
    .into_response()
}

#[derive(Serialize)]
struct RuleRow {
    order: u32,
    name: String,
    enabled: bool,
    direction: String,
    senders: String,
    recipients: String,
    conditions: usize,
    actions: String,
}

#[derive(Serialize)]
struct PolicyPage {
    version: i64,
    rules: Vec<RuleRow>,
    encryption_exception: String,
    decryption_exception: String,
}

fn describe(actions: &[policy::Action]) -> String {
    actions
        .iter()
        .map(policy::Action::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

fn or_anyone(list: &[String]) -> String {
    if list.is_empty() {
        "anyone".into()
    } else {
        list.join(", ")
    }
}

/// `GET /admin/policy`.
pub(super) async fn show(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Query(flash): Query<Flash>,
) -> Result<Response, ConsoleError> {
    let (policy, version) = current_policy(&c).await?;
    let rules = policy
        .rules
        .iter()
        .map(|r| RuleRow {
            order: r.order,
            name: r.name.clone(),
            enabled: r.enabled,
            direction: format!("{:?}", r.direction).to_lowercase(),
            senders: or_anyone(&r.senders),
            recipients: or_anyone(&r.recipients),
            conditions: r.conditions.len(),
            actions: describe(&r.actions),
        })
        .collect();
    Ok(page(
        &admin,
        "policy",
        "admin/policy.html",
        flash.done,
        PolicyPage {
            version,
            rules,
            encryption_exception: describe(&policy.exceptions.encryption),
            decryption_exception: describe(&policy.exceptions.decryption),
        },
    ))
}

/// A change the policy page makes to one rule.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RuleChange {
    Enable,
    Disable,
    Up,
    Down,
    Delete,
}

impl RuleChange {
    const ALL: [RuleChange; 5] = [
        RuleChange::Enable,
        RuleChange::Disable,
        RuleChange::Up,
        RuleChange::Down,
        RuleChange::Delete,
    ];

    /// As the form names it (and the audit log records it).
    fn name(self) -> &'static str {
        match self {
            RuleChange::Enable => "enable",
            RuleChange::Disable => "disable",
            RuleChange::Up => "up",
            RuleChange::Down => "down",
            RuleChange::Delete => "delete",
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ChangeForm {
    csrf: String,
    order: u32,
    /// enable, disable, up, down or delete
    change: String,
    /// The policy version the page was made from.
    #[serde(default)]
    version: String,
}

/// `POST /admin/policy/change`.
pub(super) async fn change(
    State(c): State<Arc<Console>>,
    admin: Admin,
    Posted(form): Posted<ChangeForm>,
) -> Result<Response, ConsoleError> {
    admin.check(&form.csrf)?;
    let (mut policy, version) = current_policy(&c).await?;
    check_version(&form.version, version)?;
    let Some(i) = policy.rules.iter().position(|r| r.order == form.order) else {
        return Err(
            ConsoleError::not_found(format!("There is no rule {}.", form.order))
                .back("/admin/policy"),
        );
    };
    let Some(change) = RuleChange::ALL
        .into_iter()
        .find(|ch| ch.name() == form.change)
    else {
        return Err(ConsoleError::refused(
            "Unknown change",
            format!(
                "{:?} is not enable, disable, up, down or delete.",
                form.change
            ),
        ));
    };
    let name = policy.rules[i].name.clone();
    match change {
        RuleChange::Enable => policy.rules[i].enabled = true,
        RuleChange::Disable => policy.rules[i].enabled = false,
        RuleChange::Delete => {
            policy.rules.remove(i);
        }
        // Moving swaps order numbers with the neighbour, so every other number stays.
        RuleChange::Up | RuleChange::Down => {
            let j = if change == RuleChange::Up {
                i.checked_sub(1)
            } else {
                Some(i + 1).filter(|j| *j < policy.rules.len())
            };
            if let Some(j) = j {
                let (a, b) = (policy.rules[i].order, policy.rules[j].order);
                policy.rules[i].order = b;
                policy.rules[j].order = a;
                policy.rules.sort_by_key(|r| r.order);
            }
        }
    }
    let what = format!("rule {} {name:?}: {}", form.order, change.name());
    store_policy(&c, &admin, &policy, &what)
        .await
        .map(saved)
        .map_err(|e| ConsoleError::refused("The policy was not changed", e).back("/admin/policy"))
}
