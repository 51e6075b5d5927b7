//! Configuration layering: the configuration file (or the defaults), then the console's
//! changes in `console.toml` over it, which may set only the fields of the table.

use std::path::Path;

use anyhow::{Context, Result, bail};
use toml::{Table, Value};

use super::fields::specs;
use crate::config::Config;

/// The console's changes, in the data directory.
pub const FILE: &str = "console.toml";

/// The value at a dotted key.
pub(super) fn get<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let (section, name) = key.split_once('.')?;
    table.get(section)?.as_table()?.get(name)
}

/// Sets or removes the value at a dotted key; a section left empty is removed.
pub(super) fn set(table: &mut Table, key: &str, value: Option<Value>) {
    let Some((section, name)) = key.split_once('.') else {
        return;
    };
    if let Some(v) = value {
        let entry = table
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        if let Value::Table(t) = entry {
            t.insert(name.to_string(), v);
        }
    } else if let Some(Value::Table(t)) = table.get_mut(section) {
        t.remove(name);
        if t.is_empty() {
            table.remove(section);
        }
    }
}

pub(super) fn read_table(path: &Path, what: &str) -> Result<Table> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("{what} {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Table::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {what} {}", path.display())),
    }
}

/// Refuses keys the console does not edit, so that `console.toml` cannot carry anything else.
fn check_keys(overlay: &Table, path: &Path) -> Result<()> {
    for (section, value) in overlay {
        let Some(fields) = value.as_table() else {
            bail!(
                "{}: {section} is not a section; only console settings belong here",
                path.display()
            );
        };
        for name in fields.keys() {
            let key = format!("{section}.{name}");
            if !specs().any(|s| s.key == key) {
                bail!(
                    "{}: {key} is not set from the console; set it in the configuration file and remove it here",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// `overlay`'s values put into `base`.
pub(super) fn merged(base: &Table, overlay: &Table) -> Table {
    let mut out = base.clone();
    for (section, fields) in overlay {
        if let Some(fields) = fields.as_table() {
            for (name, value) in fields {
                set(&mut out, &format!("{section}.{name}"), Some(value.clone()));
            }
        }
    }
    out
}

pub(super) fn parse_table(table: &Table) -> Result<Config> {
    Config::parse(&toml::to_string(table).context("cannot write the settings as TOML")?)
}

/// The configuration file (or the defaults), `data_dir` if given, then the console's changes.
pub fn load(file: Option<&Path>, data_dir: Option<&Path>) -> Result<Config> {
    load_reporting(file, data_dir).map(|(config, _)| config)
}

/// [`load`], and the keys `console.toml` set over the file (for the log and `config check`).
pub fn load_reporting(
    file: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<(Config, Vec<String>)> {
    let (base_table, base) = match file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the configuration {}", p.display()))?;
            let config = Config::parse(&text).with_context(|| format!("{}", p.display()))?;
            let table: Table = toml::from_str(&text).with_context(|| format!("{}", p.display()))?;
            (table, config)
        }
        None => (Table::new(), Config::default()),
    };
    let dir = data_dir.map_or_else(|| base.data_dir.clone(), Path::to_path_buf);
    let path = dir.join(FILE);
    let overlay = read_table(&path, "the console's settings")?;
    let mut config = if overlay.is_empty() {
        base
    } else {
        check_keys(&overlay, &path)?;
        parse_table(&merged(&base_table, &overlay)).with_context(|| {
            format!(
                "the console's settings in {} do not fit the configuration; correct or remove them",
                path.display()
            )
        })?
    };
    config.data_dir = dir;
    // check_keys has made sure every entry is a field in a section.
    let keys = overlay
        .iter()
        .filter_map(|(section, fields)| Some((section, fields.as_table()?)))
        .flat_map(|(section, fields)| fields.keys().map(move |k| format!("{section}.{k}")))
        .collect();
    Ok((config, keys))
}

pub(super) fn as_table(config: &Config) -> Result<Table> {
    match Value::try_from(config).context("cannot read the configuration as TOML")? {
        Value::Table(t) => Ok(t),
        _ => bail!("the configuration is not a table"),
    }
}
