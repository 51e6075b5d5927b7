//! The console's SMTP and MIMEBuilder configuration form. The binary, which alone knows the
//! configuration's types and rules, describes the fields and checks and saves what is posted;
//! this side only shows and posts them.

use serde::Serialize;

/// How a field is edited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One line of text.
    Text,
    /// A paragraph.
    Long,
    /// A whole number.
    Number,
    /// On or off.
    Flag,
    /// Several values, one per line (or separated by commas).
    List,
    /// One of `choices`.
    Choice,
}

/// One setting on the form.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    /// Its key in the configuration file, e.g. `smtp.listen`; the form field's name.
    pub key: String,
    /// What the administrator reads, e.g. "Incoming messages address".
    pub label: String,
    /// A line of help: the format, what empty means.
    pub help: String,
    /// How it is edited.
    pub kind: Kind,
    /// The values a choice allows.
    pub choices: Vec<String>,
    /// The value saved (what the next start uses), as the form shows it.
    pub value: String,
    /// The value the running gateway uses, when it differs from `value`.
    pub running: Option<String>,
    /// Whether the console set it (over the configuration file or the default).
    pub from_console: bool,
}

/// A titled group of fields.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// E.g. "SMTP".
    pub title: String,
    /// Its fields, in order.
    pub fields: Vec<Field>,
}

/// A setting a save changed, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: String,
    /// The new value as shown on the form.
    pub value: String,
}

/// Why a save was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveError {
    /// The settings changed since the form was made (another administrator, or the file).
    Stale,
    /// A value is wrong, or the settings cannot be read or written; the text names the field.
    Invalid(String),
}

/// Reads and saves the settings the console edits.
pub trait ConfigEditor: Send + Sync {
    /// The form, with the values saved now and those running.
    fn sections(&self) -> Result<Vec<Section>, String>;
    /// A fingerprint of the saved settings, carried by the form: a save from a form made
    /// before they changed is refused rather than putting old values back.
    fn version(&self) -> String;
    /// Checks a posted form (field name, value) as a whole, as the next start would, and saves
    /// it; an error names the field. Gives back what changed.
    fn save(&self, form: &[(String, String)], version: &str) -> Result<Vec<Change>, SaveError>;
    /// Where saved settings are kept, and how they relate to the configuration file.
    fn location(&self) -> String;
}

/// The value posted for `key`, `None` when the form did not carry it. A flag posts a hidden
/// "" and, when ticked, "on": it reads as "on" or "".
pub fn posted<'a>(form: &'a [(String, String)], key: &str, kind: &Kind) -> Option<&'a str> {
    let mut values = form
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str());
    let first = values.next()?;
    if *kind == Kind::Flag {
        let on = first == "on" || values.any(|v| v == "on");
        return Some(if on { "on" } else { "" });
    }
    Some(first)
}

/// Puts posted values into the form shown again after an error, so nothing typed is lost.
pub fn refill(sections: &mut [Section], form: &[(String, String)]) {
    for field in sections.iter_mut().flat_map(|s| s.fields.iter_mut()) {
        if let Some(v) = posted(form, &field.key, &field.kind) {
            field.value = v.to_string();
        }
    }
}

/// A configuration or policy value as a form field shows it: text as it is, a list one item per
/// line, anything else as TOML writes it.
pub fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}
