//! Reading a policy file. Each list, rule, condition, action and template is read on its own,
//! so that an error names where it is (`rule 3 "Name"`) and the field as the administrator wrote
//! it (`conditions[1].on`), with the value and, for fixed choices, the choices.

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::{Action, Condition, Exceptions, List, Policy, PolicyError, Rule, Template, one_line};

impl Policy {
    /// Parses and validates a policy file. Each rule is read on its own, so an error names it.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let value: Table = toml::from_str(text)
            .map_err(|e| PolicyError::new("policy", "syntax", one_line(&e.to_string())))?;
        let mut policy = Policy::default();
        for (key, item) in value {
            match key.as_str() {
                "rule" => {
                    for (i, item) in array_of_tables(item, "rule")?.into_iter().enumerate() {
                        let place = describe_item(&item, "rule", i);
                        check_parts::<Action>(&place, &item, "actions", "do")?;
                        check_parts::<Condition>(&place, &item, "conditions", "on")?;
                        policy.rules.push(read::<Rule>(&place, item, "", "rule")?);
                    }
                }
                "list" => {
                    for (i, item) in array_of_tables(item, "list")?.into_iter().enumerate() {
                        let place = describe_item(&item, "list", i);
                        policy.lists.push(read::<List>(&place, item, "", "list")?);
                    }
                }
                "exceptions" => {
                    check_parts::<Action>("exceptions", &item, "encryption", "do")?;
                    check_parts::<Action>("exceptions", &item, "decryption", "do")?;
                    policy.exceptions = read::<Exceptions>("exceptions", item, "", "exceptions")?;
                }
                "templates" => {
                    let table = item.as_table().cloned().ok_or_else(|| {
                        PolicyError::new("policy", "templates", "must be a table")
                    })?;
                    for (name, t) in table {
                        let place = format!("template {name:?}");
                        let t = read::<Template>(&place, t, "", "template")?;
                        policy.templates.insert(name, t);
                    }
                }
                other => {
                    return Err(PolicyError::new(
                        "policy",
                        other,
                        "unknown section (known: rule, list, exceptions, templates)",
                    ));
                }
            }
        }
        policy.rules.sort_by_key(|r| r.order);
        policy.validate()?;
        Ok(policy)
    }
}

/// The `[[kind]]` sections of the file.
fn array_of_tables(item: Value, kind: &str) -> Result<Vec<Value>, PolicyError> {
    match item {
        Value::Array(items) => Ok(items),
        _ => Err(PolicyError::new(
            "policy",
            kind,
            format!("must be an array of tables [[{kind}]]"),
        )),
    }
}

/// `rule 2 "Name"` from a rule's raw table, for errors found before it parses.
fn describe_item(item: &Value, kind: &str, index: usize) -> String {
    let name = item.get("name").and_then(|v| v.as_str());
    match (kind, item.get("order").and_then(|v| v.as_integer()), name) {
        ("rule", Some(o), Some(n)) => format!("rule {o} {n:?}"),
        ("rule", Some(o), None) => format!("rule {o}"),
        (_, _, Some(n)) => format!("{kind} {n:?}"),
        _ => format!("{kind} #{} in the file", index + 1),
    }
}

/// Reads each element of `item[key]` (tables tagged by `tag`) on its own, so that an error
/// names its index.
fn check_parts<T: DeserializeOwned>(
    place: &str,
    item: &Value,
    key: &str,
    tag: &str,
) -> Result<(), PolicyError> {
    let Some(parts) = item.get(key).and_then(|v| v.as_array()) else {
        return Ok(());
    };
    for (i, part) in parts.iter().enumerate() {
        read::<T>(place, part.clone(), tag, "").map_err(|mut e| {
            e.field = match e.field.as_str() {
                "" => format!("{key}[{i}]"),
                f => format!("{key}[{i}].{f}"),
            };
            e
        })?;
    }
    Ok(())
}

/// Reads `value` as a `T` (a table tagged by `tag`, unless it is empty); an error names the
/// field that made it fail, or `whole` when no one field did.
fn read<T: DeserializeOwned>(
    place: &str,
    value: Value,
    tag: &str,
    whole: &str,
) -> Result<T, PolicyError> {
    let table = value.as_table().cloned();
    value.try_into().map_err(|e: toml::de::Error| {
        let message = e.message().to_string();
        let (field, message) = table
            .and_then(|t| culprit::<T>(&t, tag, &message))
            .or_else(|| named_field(&message).map(|f| (f, message.clone())))
            .unwrap_or_else(|| (whole.to_string(), message));
        PolicyError::new(place, field, one_line(&message))
    })
}

/// The field of `table` that reading it as a `T` fails on (with `error`), and why. Serde reads
/// a tagged table whole before it looks at the fields, and its errors then name none; so the
/// tag is read alone, then each field alone with the tag (the first to fail for another reason
/// than a missing field is the one), then the table without each field in turn (the one
/// without which it reads, or lacks only that field, is the one).
fn culprit<T: DeserializeOwned>(table: &Table, tag: &str, error: &str) -> Option<(String, String)> {
    let tagged = table.get(tag).map(|t| (tag.to_string(), t.clone()));
    if !tag.is_empty() && tagged.is_none() {
        return Some((tag.to_string(), format!("missing field `{tag}`")));
    }
    let reads = |probe: Table| Value::Table(probe).try_into::<T>().map(|_| ());
    let alone = |field: Option<(&String, &Value)>| {
        let mut probe: Table = tagged.clone().into_iter().collect();
        probe.extend(field.map(|(k, v)| (k.clone(), v.clone())));
        match reads(probe) {
            Err(e) if !e.message().starts_with("missing field") => Some(e.message().to_string()),
            _ => None,
        }
    };
    if let Some(why) = tagged.as_ref().and_then(|_| alone(None)) {
        return Some((tag.to_string(), why));
    }
    let fields = || table.iter().filter(|(k, _)| k.as_str() != tag);
    fields()
        .find_map(|(k, v)| alone(Some((k, v))).map(|why| (k.clone(), why)))
        .or_else(|| {
            fields().find_map(|(k, _)| {
                let mut without = table.clone();
                without.remove(k);
                match reads(without) {
                    Ok(()) => Some((k.clone(), error.to_string())),
                    Err(e) if e.message() == format!("missing field `{k}`") => {
                        Some((k.clone(), error.to_string()))
                    }
                    Err(_) => None,
                }
            })
        })
}

/// The field a serde message names (`unknown field `x``, `missing field `x``).
fn named_field(message: &str) -> Option<String> {
    message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .map(str::to_string)
}
