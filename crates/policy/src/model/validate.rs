//! Validation: what the types of a policy cannot say (orders unique, lists known, regexes
//! compile, one terminal action per rule, templates parse), each error naming its field.

use std::collections::HashSet;

use super::{Action, Condition, Expressions, Policy, PolicyError, is_address, is_area_name};
use crate::detect::Builtin;

impl Policy {
    /// Checks everything the types do not.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut names = HashSet::new();
        for list in &self.lists {
            let place = format!("list {:?}", list.name);
            if list.name.trim().is_empty() {
                return Err(PolicyError::new(&place, "name", "must not be empty"));
            }
            if !names.insert(list.name.as_str()) {
                return Err(PolicyError::new(&place, "name", "is used by two lists"));
            }
            if list.expr().is_empty() {
                return Err(PolicyError::new(
                    &place,
                    "keywords",
                    "a list needs keywords, regex or builtin entries",
                ));
            }
            check_expressions(&place, "", &list.expr())?;
        }
        let mut orders = HashSet::new();
        for rule in &self.rules {
            let place = rule.place();
            if rule.name.trim().is_empty() {
                return Err(PolicyError::new(&place, "name", "must not be empty"));
            }
            if !orders.insert(rule.order) {
                return Err(PolicyError::new(
                    &place,
                    "order",
                    "another rule has the same order number",
                ));
            }
            for (i, p) in rule.senders.iter().enumerate() {
                crate::pattern::Pattern::parse(p)
                    .map_err(|e| PolicyError::new(&place, format!("senders[{i}]"), e))?;
            }
            for (i, p) in rule.recipients.iter().enumerate() {
                crate::pattern::Pattern::parse(p)
                    .map_err(|e| PolicyError::new(&place, format!("recipients[{i}]"), e))?;
            }
            for (i, c) in rule.conditions.iter().enumerate() {
                self.check_condition(&place, i, c, &names)?;
            }
            self.check_actions(&place, "actions", &rule.actions)?;
        }
        self.check_actions("exceptions", "encryption", &self.exceptions.encryption)?;
        self.check_actions("exceptions", "decryption", &self.exceptions.decryption)?;
        for (name, t) in &self.templates {
            let place = format!("template {name:?}");
            crate::templates::check(t).map_err(|(field, e)| PolicyError::new(&place, field, e))?;
        }
        Ok(())
    }

    fn check_condition(
        &self,
        place: &str,
        i: usize,
        c: &Condition,
        lists: &HashSet<&str>,
    ) -> Result<(), PolicyError> {
        let field = |f: &str| format!("conditions[{i}].{f}");
        if let Some(h) = c.header()
            && (h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
        {
            return Err(PolicyError::new(
                place,
                field("header"),
                format!("{h:?} is not a header field name"),
            ));
        }
        if let Some(test) = c.text() {
            let inline = test.expr();
            match (&test.list, inline.is_empty()) {
                (None, true) => {
                    return Err(PolicyError::new(
                        place,
                        field("list"),
                        "a text condition needs a list, keywords, regex or builtin",
                    ));
                }
                (Some(_), false) => {
                    return Err(PolicyError::new(
                        place,
                        field("list"),
                        "use either a named list or inline expressions, not both",
                    ));
                }
                (Some(l), true) if !lists.contains(l.as_str()) => {
                    return Err(PolicyError::new(
                        place,
                        field("list"),
                        format!("no list is called {l:?}"),
                    ));
                }
                _ => {}
            }
            check_expressions(place, &format!("conditions[{i}]."), &inline)?;
        }
        if let Some(b) = c.bounds() {
            if b.min.is_none() && b.max.is_none() {
                return Err(PolicyError::new(
                    place,
                    field("min"),
                    "needs min, max or both",
                ));
            }
            if let (Some(lo), Some(hi)) = (b.min, b.max)
                && lo > hi
            {
                return Err(PolicyError::new(place, field("max"), "is below min"));
            }
        }
        Ok(())
    }

    fn check_actions(
        &self,
        place: &str,
        field: &str,
        actions: &[Action],
    ) -> Result<(), PolicyError> {
        if actions.is_empty() {
            return Err(PolicyError::new(place, field, "needs at least one action"));
        }
        let terminal = actions.iter().filter(|a| a.is_terminal()).count();
        if terminal > 1 {
            return Err(PolicyError::new(
                place,
                field,
                "has more than one terminal action (pass, encrypt, decrypt, decrypt_scan_reencrypt, quarantine, delete, handoff, change_recipient)",
            ));
        }
        if place == "exceptions"
            && actions.iter().any(|a| {
                matches!(
                    a,
                    Action::Encrypt | Action::Decrypt | Action::DecryptScanReencrypt
                )
            })
        {
            // What failed was exactly that; trying it again here could only fail again.
            return Err(PolicyError::new(
                place,
                field,
                "an exception rule cannot encrypt or decrypt (use quarantine, delete, pass, handoff or change_recipient)",
            ));
        }
        if place == "exceptions" && terminal == 0 {
            return Err(PolicyError::new(
                place,
                field,
                "an exception rule needs a terminal action (quarantine, delete, pass, handoff, change_recipient)",
            ));
        }
        for (i, a) in actions.iter().enumerate() {
            let f = |name: &str| format!("{field}[{i}].{name}");
            match a {
                Action::Quarantine { area } if !is_area_name(area) => {
                    return Err(PolicyError::new(
                        place,
                        f("area"),
                        format!(
                            "{area:?}: an area name is 1 to 64 letters, digits, '_', '-' or '.'"
                        ),
                    ));
                }
                Action::Handoff { host, port } => {
                    if host.trim().is_empty() || host.contains(char::is_whitespace) {
                        return Err(PolicyError::new(
                            place,
                            f("host"),
                            "must be a host name or address",
                        ));
                    }
                    if *port == 0 {
                        return Err(PolicyError::new(place, f("port"), "must be 1 to 65535"));
                    }
                }
                Action::ChangeRecipient { to } => {
                    if to.is_empty() {
                        return Err(PolicyError::new(
                            place,
                            f("to"),
                            "needs at least one address",
                        ));
                    }
                    if let Some(bad) = to.iter().find(|a| !is_address(a)) {
                        return Err(PolicyError::new(
                            place,
                            f("to"),
                            format!("{bad:?} is not an email address"),
                        ));
                    }
                }
                Action::Archive { to } if !is_address(to) => {
                    return Err(PolicyError::new(
                        place,
                        f("to"),
                        format!("{to:?} is not an email address"),
                    ));
                }
                Action::AddHeader { name, value } => {
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                        return Err(PolicyError::new(
                            place,
                            f("name"),
                            format!("{name:?} is not a header field name"),
                        ));
                    }
                    if value.contains(['\r', '\n']) {
                        return Err(PolicyError::new(place, f("value"), "must be one line"));
                    }
                }
                Action::TagSubject { tag }
                    if tag.contains(['\r', '\n']) || tag.trim().is_empty() =>
                {
                    return Err(PolicyError::new(
                        place,
                        f("tag"),
                        "must be one non-empty line",
                    ));
                }
                Action::Notify { template, .. } if self.template(template).is_none() => {
                    return Err(PolicyError::new(
                        place,
                        f("template"),
                        format!(
                            "no template is called {template:?} (built-in: {})",
                            crate::templates::NAMES.join(", ")
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn check_expressions(place: &str, prefix: &str, e: &Expressions) -> Result<(), PolicyError> {
    if e.threshold == 0 {
        return Err(PolicyError::new(
            place,
            format!("{prefix}threshold"),
            "must be at least 1",
        ));
    }
    if let Some(k) = e.keywords.iter().find(|k| k.is_empty()) {
        return Err(PolicyError::new(
            place,
            format!("{prefix}keywords"),
            format!("{k:?}: a keyword must not be empty"),
        ));
    }
    for (i, r) in e.regex.iter().enumerate() {
        crate::eval::build_regex(r).map_err(|err| {
            PolicyError::new(place, format!("{prefix}regex[{i}]"), super::one_line(&err))
        })?;
    }
    for (i, b) in e.builtin.iter().enumerate() {
        if Builtin::from_name(b).is_none() {
            let known: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
            return Err(PolicyError::new(
                place,
                format!("{prefix}builtin[{i}]"),
                format!("{b:?} is not a built-in list (known: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}
