//! The settings the console edits. Changes made there are kept in `console.toml` in the data
//! directory and read over the configuration file at every start (the CLI's too): they survive
//! restarts, and the file the administrator wrote is never rewritten.
//!
//! Only the fields listed in [`SECTIONS`] (the seed's SMTP and MIMEBuilder screens, and a few
//! more) may appear in `console.toml`; anything else there is an error naming the key.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use toml::{Table, Value};
use web::config_form::{Change, ConfigEditor, Field, Kind, SaveError, Section, posted};

use crate::config::Config;
use crate::files;

/// The console's changes, in the data directory.
pub const FILE: &str = "console.toml";

/// One field of the form.
struct Spec {
    key: &'static str,
    label: &'static str,
    help: &'static str,
    kind: Kind,
    choices: &'static [&'static str],
    /// Empty means "not set" (a default, or a value derived from other settings).
    optional: bool,
}

const fn spec(key: &'static str, label: &'static str, help: &'static str, kind: Kind) -> Spec {
    Spec {
        key,
        label,
        help,
        kind,
        choices: &[],
        optional: false,
    }
}

/// A field that may be empty: not set.
const fn optional(key: &'static str, label: &'static str, help: &'static str, kind: Kind) -> Spec {
    Spec {
        optional: true,
        ..spec(key, label, help, kind)
    }
}

/// The form: the seed's SMTP and MIMEBuilder fields, in its order, and the neighbours an
/// administrator changes with them.
const SECTIONS: &[(&str, &[Spec])] = &[
    (
        "SMTP",
        &[
            spec(
                "smtp.listen",
                "Incoming messages address",
                "address:port the policy listener accepts mail on",
                Kind::Text,
            ),
            spec(
                "smtp.require_auth",
                "Require authentication",
                "clients outside the relay networks must log in (users are set in the configuration file)",
                Kind::Flag,
            ),
            optional(
                "delivery.internal",
                "Internal messages host",
                "host:port, or maildir:/path; empty: the recipient domain's MX",
                Kind::Text,
            ),
            optional(
                "delivery.external",
                "External messages host",
                "host:port; empty: the recipient domain's MX",
                Kind::Text,
            ),
            Spec {
                choices: &["opportunistic", "required", "off"],
                ..spec(
                    "delivery.starttls",
                    "STARTTLS to the next hops",
                    "opportunistic: when offered",
                    Kind::Choice,
                )
            },
            spec(
                "gateway.use_default_sender",
                "Use default sender?",
                "sign as the default sender when the sender's own key cannot be had",
                Kind::Flag,
            ),
            optional(
                "gateway.default_sender",
                "Default sender address",
                "empty: postmaster@ the first internal domain",
                Kind::Text,
            ),
            optional(
                "smtp.hostname",
                "Host name",
                "in the greeting and in links; empty: this machine's name",
                Kind::Text,
            ),
            spec(
                "smtp.internal_domains",
                "Internal domains",
                "one per line: mail from them is encrypted, mail to them decrypted",
                Kind::List,
            ),
            spec(
                "smtp.client_networks",
                "Relay networks",
                "one per line (CIDR): clients that may send without logging in",
                Kind::List,
            ),
            spec(
                "smtp.max_message_size",
                "Largest message (bytes)",
                "larger messages are refused with 552",
                Kind::Number,
            ),
        ],
    ),
    (
        "MIMEBuilder",
        &[
            spec(
                "mime.add_encryption_header",
                "Add encryption X-Header",
                "",
                Kind::Flag,
            ),
            spec(
                "mime.encryption_header",
                "Encryption X-Header",
                "added to encrypted email",
                Kind::Text,
            ),
            spec(
                "mime.add_decryption_header",
                "Add decryption X-Header",
                "",
                Kind::Flag,
            ),
            spec(
                "mime.decryption_header",
                "Decryption X-Header",
                "added to decrypted email; must differ from the encryption X-Header",
                Kind::Text,
            ),
            spec(
                "mime.add_decryption_notice",
                "Add decryption notice",
                "",
                Kind::Flag,
            ),
            spec(
                "mime.decryption_notice",
                "Decryption notice",
                "put at the top of a decrypted message's text",
                Kind::Long,
            ),
            spec(
                "mime.error_on_verification_failure",
                "Error on verification failure",
                "off: deliver with a warning header",
                Kind::Flag,
            ),
            spec(
                "mime.encrypted_notice",
                "Encrypted message notice",
                "the body of an encrypted email",
                Kind::Long,
            ),
            spec(
                "mime.meeting_request_notice",
                "Encrypted meeting request email message",
                "the body when the original is a meeting request",
                Kind::Long,
            ),
            Spec {
                choices: &["zero-download"],
                ..spec(
                    "mime.outgoing_envelope",
                    "Encrypt outgoing messages to",
                    "",
                    Kind::Choice,
                )
            },
            optional(
                "mime.reader_url",
                "Reader address",
                "where \"Open my email\" leads; empty: follows web.listen",
                Kind::Text,
            ),
            optional(
                "mime.replace_subject",
                "Replace the subject with",
                "empty: encrypted email keeps its subject",
                Kind::Text,
            ),
            spec(
                "mime.keep_above_bytes",
                "Keep messages larger than (bytes) on the gateway",
                "their email carries a link to the reader",
                Kind::Number,
            ),
            spec(
                "mime.kept_days",
                "Days a large message is kept",
                "",
                Kind::Number,
            ),
        ],
    ),
];

fn specs() -> impl Iterator<Item = &'static Spec> {
    SECTIONS.iter().flat_map(|(_, fields)| fields.iter())
}

/// The value at a dotted key.
fn get<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let (section, name) = key.split_once('.')?;
    table.get(section)?.as_table()?.get(name)
}

/// Sets or removes the value at a dotted key; a section left empty is removed.
fn set(table: &mut Table, key: &str, value: Option<Value>) {
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

fn read_table(path: &Path, what: &str) -> Result<Table> {
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
fn merged(base: &Table, overlay: &Table) -> Table {
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

fn parse_table(table: &Table) -> Result<Config> {
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

/// A value as the form shows it: flags as "on" or empty, lists one per line.
fn form_value(v: Option<&Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::Boolean(b)) => if *b { "on" } else { "" }.to_string(),
        Some(other) => web::config_form::value_text(other),
    }
}

/// A value as a sentence shows it.
fn shown(spec: &Spec, v: Option<&Value>) -> String {
    match (v, &spec.kind) {
        (Some(Value::Boolean(b)), _) => if *b { "on" } else { "off" }.to_string(),
        (None, _) => "(not set)".into(),
        (Some(_), Kind::List) => form_value(v).replace('\n', ", "),
        _ => form_value(v),
    }
}

/// The last line of an error: TOML's own messages end with the reason, after a quote of the
/// generated text that means nothing to the administrator.
fn reason(e: &anyhow::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Whether a saved value is the one posted: text is compared as the form sends it back
/// (trimmed, with plain line ends), so a notice written with a final newline is not a change.
fn same(saved: Option<&Value>, posted: &Value) -> bool {
    match (saved, posted) {
        (Some(Value::String(a)), Value::String(b)) => a.replace("\r\n", "\n").trim() == b,
        (a, b) => a == Some(b),
    }
}

/// A posted value as the configuration's type; `None`: not set.
fn parse_value(spec: &Spec, text: &str) -> Result<Option<Value>, String> {
    let named = |problem: String| format!("{} ({}): {problem}", spec.label, spec.key);
    if spec.kind == Kind::Flag {
        return Ok(Some(Value::Boolean(text == "on")));
    }
    let text = text.replace("\r\n", "\n");
    let text = text.trim();
    if text.is_empty() && spec.optional {
        return Ok(None);
    }
    Ok(Some(match spec.kind {
        Kind::Number => {
            let n: i64 = text
                .parse()
                .map_err(|_| named(format!("{text:?} is not a whole number")))?;
            if n < 0 {
                return Err(named("must not be negative".into()));
            }
            Value::Integer(n)
        }
        Kind::List => Value::Array(
            text.split(['\n', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Choice => {
            if !spec.choices.contains(&text) {
                return Err(named(format!(
                    "{text:?} is not one of {}",
                    spec.choices.join(", ")
                )));
            }
            Value::String(text.to_string())
        }
        Kind::Text if text.contains('\n') => {
            return Err(named("must be one line".into()));
        }
        _ => Value::String(text.to_string()),
    }))
}

/// The console's editor over the configuration file and `console.toml`.
pub struct Editor {
    file: Option<PathBuf>,
    data_dir: PathBuf,
    running: Table,
    /// One save at a time: each reads, changes and writes `console.toml`.
    lock: Mutex<()>,
}

impl Editor {
    /// An editor for the gateway started with `running` from `file` (none: the defaults).
    pub fn new(file: Option<PathBuf>, running: &Config) -> Result<Self> {
        Ok(Editor {
            file,
            data_dir: running.data_dir.clone(),
            running: as_table(running)?,
            lock: Mutex::new(()),
        })
    }

    fn path(&self) -> PathBuf {
        self.data_dir.join(FILE)
    }

    fn base_table(&self) -> Result<Table> {
        match &self.file {
            Some(f) => read_table(f, "the configuration"),
            None => Ok(Table::new()),
        }
    }

    fn saved(&self) -> Result<Table> {
        as_table(&load(self.file.as_deref(), Some(&self.data_dir))?)
    }

    /// A fingerprint of what the form was made from: the configuration file and
    /// `console.toml`.
    fn fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if let Some(f) = &self.file {
            std::fs::read(f).ok().hash(&mut h);
        }
        std::fs::read(self.path()).ok().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    fn save_inner(
        &self,
        form: &[(String, String)],
        version: &str,
    ) -> Result<Vec<Change>, SaveError> {
        let invalid = |e: anyhow::Error| SaveError::Invalid(format!("{e:#}"));
        // Every field is posted: a form made before another save (or an edit of the file)
        // would put the old values back.
        if version != self.fingerprint() {
            return Err(SaveError::Stale);
        }
        let base = self.base_table().map_err(invalid)?;
        let path = self.path();
        let overlay = read_table(&path, "the console's settings").map_err(invalid)?;
        let saved = self.saved().map_err(invalid)?;
        let mut next = overlay.clone();
        let mut changes = Vec::new();
        for spec in specs() {
            // A field the form did not carry is left alone.
            let Some(posted) = posted(form, spec.key, &spec.kind) else {
                continue;
            };
            let value = parse_value(spec, posted).map_err(SaveError::Invalid)?;
            let Some(value) = value else {
                // Empty: not set, so the default applies. A value in the file cannot be
                // cleared from here (the file would still set it).
                if get(&base, spec.key).is_some() {
                    return Err(SaveError::Invalid(format!(
                        "{} ({}): it is set in the configuration file; to clear it, remove it there",
                        spec.label, spec.key
                    )));
                }
                if get(&overlay, spec.key).is_some() {
                    set(&mut next, spec.key, None);
                    changes.push(Change {
                        key: spec.key.into(),
                        value: String::new(),
                    });
                }
                continue;
            };
            if same(get(&saved, spec.key), &value) {
                continue;
            }
            // Only differences from the file are kept, so the file stays in charge of the rest.
            let keep = (!same(get(&base, spec.key), &value)).then(|| value.clone());
            set(&mut next, spec.key, keep);
            changes.push(Change {
                key: spec.key.into(),
                value: form_value(Some(&value)),
            });
        }
        if changes.is_empty() {
            return Ok(changes);
        }
        let named = |spec: &Spec, e: &anyhow::Error| {
            let why = reason(e);
            if why.contains(spec.key) {
                why
            } else {
                format!("{} ({}): {why}", spec.label, spec.key)
            }
        };
        if let Err(whole) = parse_table(&merged(&base, &next)) {
            // Each change alone, to name the field that caused it.
            for change in &changes {
                let Some(spec) = specs().find(|s| s.key == change.key) else {
                    continue;
                };
                let mut one = overlay.clone();
                set(&mut one, spec.key, get(&next, spec.key).cloned());
                if let Err(e) = parse_table(&merged(&base, &one)) {
                    return Err(SaveError::Invalid(named(spec, &e)));
                }
            }
            return Err(SaveError::Invalid(reason(&whole)));
        }
        self.write(&next).map_err(invalid)?;
        Ok(changes)
    }

    fn write(&self, overlay: &Table) -> Result<()> {
        let path = self.path();
        if overlay.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
                _ => Ok(()),
            };
        }
        let text = format!(
            "# Settings changed in the administration console, read over the configuration file\n\
             # at every start. Remove a line to go back to the file's value.\n\n{}",
            toml::to_string(overlay).context("cannot write the settings as TOML")?
        );
        files::write_new(&path, text.as_bytes(), 0o600, true)
    }
}

fn as_table(config: &Config) -> Result<Table> {
    match Value::try_from(config).context("cannot read the configuration as TOML")? {
        Value::Table(t) => Ok(t),
        _ => bail!("the configuration is not a table"),
    }
}

impl ConfigEditor for Editor {
    fn sections(&self) -> Result<Vec<Section>, String> {
        let saved = self.saved().map_err(|e| format!("{e:#}"))?;
        let overlay =
            read_table(&self.path(), "the console's settings").map_err(|e| format!("{e:#}"))?;
        Ok(SECTIONS
            .iter()
            .map(|(title, fields)| Section {
                title: (*title).to_string(),
                fields: fields
                    .iter()
                    .map(|spec| {
                        let value = get(&saved, spec.key);
                        let running = get(&self.running, spec.key);
                        Field {
                            key: spec.key.into(),
                            label: spec.label.into(),
                            help: spec.help.into(),
                            kind: spec.kind.clone(),
                            choices: spec.choices.iter().map(|c| (*c).to_string()).collect(),
                            value: form_value(value),
                            running: (running != value).then(|| shown(spec, running)),
                            from_console: get(&overlay, spec.key).is_some(),
                        }
                    })
                    .collect(),
            })
            .collect())
    }

    fn save(&self, form: &[(String, String)], version: &str) -> Result<Vec<Change>, SaveError> {
        let _one = match self.lock.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.save_inner(form, version)
    }

    fn version(&self) -> String {
        self.fingerprint()
    }

    fn location(&self) -> String {
        let over = match &self.file {
            Some(f) => format!("over the configuration file {}", f.display()),
            None => "over the built-in defaults (no configuration file)".into(),
        };
        format!(
            "Changes saved here are kept in {}, read {over} at every start. Other settings are in the configuration file (docs/configuration.md).",
            self.path().display()
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Saves as the page does, with the version the page was made with.
    fn save(editor: &Editor, form: &[(String, String)]) -> Result<Vec<Change>, String> {
        editor.save(form, &editor.version()).map_err(|e| match e {
            SaveError::Stale => "stale".to_string(),
            SaveError::Invalid(why) => why,
        })
    }

    /// The form as the page posts it unchanged: every field with its saved value.
    fn as_shown(editor: &Editor) -> Vec<(String, String)> {
        editor
            .sections()
            .unwrap()
            .into_iter()
            .flat_map(|s| s.fields)
            .flat_map(|f| match f.kind {
                Kind::Flag if f.value.is_empty() => vec![(f.key, String::new())],
                Kind::Flag => vec![(f.key.clone(), String::new()), (f.key, "on".into())],
                _ => vec![(f.key, f.value)],
            })
            .collect()
    }

    /// `shown` with `key` posted as `value` (a flag: its hidden "" and then "on").
    fn with(
        mut shown: Vec<(String, String)>,
        key: &str,
        value: Option<&str>,
    ) -> Vec<(String, String)> {
        shown.retain(|(k, _)| k != key);
        if value == Some("on") {
            shown.push((key.to_string(), String::new()));
        }
        if let Some(v) = value {
            shown.push((key.to_string(), v.to_string()));
        }
        shown
    }

    fn setup(file_text: &str) -> (tempfile::TempDir, PathBuf, Editor) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let file = dir.path().join("postern.toml");
        std::fs::write(&file, format!("data_dir = {:?}\n{file_text}", data)).unwrap();
        let running = load(Some(&file), None).unwrap();
        let editor = Editor::new(Some(file.clone()), &running).unwrap();
        (dir, file, editor)
    }

    #[test]
    fn a_saved_change_is_read_at_the_next_start_and_shown_as_pending_until_then() {
        let (_dir, file, editor) = setup("[mime]\nencryption_header = \"X-Corp-Encrypted\"\n");
        let shown = as_shown(&editor);
        assert!(save(&editor, &shown).unwrap().is_empty(), "nothing changed");
        assert!(!editor.path().exists(), "no file for no change");

        let posted = with(shown, "mime.encryption_header", Some("X-Acme-Encrypted"));
        let posted = with(posted, "mime.add_decryption_notice", Some("on"));
        let posted = with(
            posted,
            "smtp.internal_domains",
            Some("corp.example\r\nacme.example"),
        );
        let changes = save(&editor, &posted).unwrap();
        let keys: Vec<_> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "smtp.internal_domains",
                "mime.encryption_header",
                "mime.add_decryption_notice"
            ]
        );

        let next = load(Some(&file), None).unwrap();
        assert_eq!(next.mime.encryption_header, "X-Acme-Encrypted");
        assert!(next.mime.add_decryption_notice);
        assert_eq!(next.smtp.internal_domains, ["corp.example", "acme.example"]);
        // The administrator's file is untouched.
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .contains("X-Corp-Encrypted")
        );

        let fields: Vec<Field> = editor
            .sections()
            .unwrap()
            .into_iter()
            .flat_map(|s| s.fields)
            .collect();
        let header = fields
            .iter()
            .find(|f| f.key == "mime.encryption_header")
            .unwrap();
        assert_eq!(header.value, "X-Acme-Encrypted");
        assert_eq!(header.running.as_deref(), Some("X-Corp-Encrypted"));
        assert!(header.from_console);
        let listen = fields.iter().find(|f| f.key == "smtp.listen").unwrap();
        assert!(listen.running.is_none() && !listen.from_console);

        // Setting the file's value again takes the console's value away.
        let back = with(
            as_shown(&editor),
            "mime.encryption_header",
            Some("X-Corp-Encrypted"),
        );
        save(&editor, &back).unwrap();
        let overlay = std::fs::read_to_string(editor.path()).unwrap();
        assert!(!overlay.contains("encryption_header"), "{overlay}");
        assert!(overlay.contains("add_decryption_notice"), "{overlay}");
    }

    #[test]
    fn a_wrong_value_is_refused_naming_the_field_and_nothing_is_saved() {
        let (_dir, file, editor) = setup("");
        for (key, value, expect) in [
            (
                "smtp.listen",
                "not an address",
                "Incoming messages address (smtp.listen)",
            ),
            (
                "smtp.max_message_size",
                "ten",
                "\"ten\" is not a whole number",
            ),
            ("mime.kept_days", "-1", "must not be negative"),
            (
                "delivery.starttls",
                "sometimes",
                "is not one of opportunistic, required, off",
            ),
            (
                "mime.decryption_header",
                "X-Postern-Encrypted",
                "mime.decryption_header",
            ),
            (
                "mime.encryption_header",
                "Two words",
                "mime.encryption_header",
            ),
            (
                "smtp.client_networks",
                "10.0.0.0/33",
                "smtp.client_networks",
            ),
        ] {
            let posted = with(as_shown(&editor), key, Some(value));
            let err = save(&editor, &posted).unwrap_err();
            assert!(err.contains(expect), "{key} = {value:?}: {err}");
            assert!(!editor.path().exists(), "{key}: nothing saved");
        }
        assert_eq!(
            load(Some(&file), None).unwrap().smtp.listen,
            Config::default().smtp.listen
        );
    }

    #[test]
    fn a_value_from_the_file_cannot_be_cleared_here_but_the_consoles_own_can() {
        let (_dir, _file, editor) = setup("[mime]\nreplace_subject = \"Encrypted\"\n");
        let cleared = with(as_shown(&editor), "mime.replace_subject", Some(""));
        let err = save(&editor, &cleared).unwrap_err();
        assert!(err.contains("remove it there"), "{err}");

        let set = with(
            as_shown(&editor),
            "mime.reader_url",
            Some("https://mail.corp.example/read"),
        );
        save(&editor, &set).unwrap();
        let cleared = with(as_shown(&editor), "mime.reader_url", Some(""));
        assert_eq!(save(&editor, &cleared).unwrap().len(), 1);
        assert!(!editor.path().exists(), "the last console value removed");
    }

    #[test]
    fn console_toml_holds_only_console_settings() {
        let (_dir, file, editor) = setup("");
        std::fs::write(editor.path(), "[smtp]\nusers = []\n").unwrap();
        let err = format!("{:#}", load(Some(&file), None).unwrap_err());
        assert!(
            err.contains("smtp.users is not set from the console"),
            "{err}"
        );
        std::fs::write(editor.path(), "[mime]\nkept_days = \"many\"\n").unwrap();
        let err = format!("{:#}", load(Some(&file), None).unwrap_err());
        assert!(err.contains("console.toml"), "{err}");
    }

    #[test]
    fn a_form_made_before_another_change_is_refused_and_changes_nothing() {
        let (_dir, file, editor) = setup("");
        let old_version = editor.version();
        let old_form = as_shown(&editor);
        save(
            &editor,
            &with(as_shown(&editor), "mime.kept_days", Some("7")),
        )
        .unwrap();
        let stale = with(old_form.clone(), "mime.replace_subject", Some("Secure"));
        assert_eq!(editor.save(&stale, &old_version), Err(SaveError::Stale));
        // An edit of the configuration file makes the form stale too.
        let version = editor.version();
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str("[delivery]\nretry_initial_secs = 30\n");
        std::fs::write(&file, text).unwrap();
        assert_eq!(
            editor.save(&as_shown(&editor), &version),
            Err(SaveError::Stale)
        );
        let next = load(Some(&file), None).unwrap();
        assert_eq!(next.mime.kept_days, 7);
        assert_eq!(next.mime.replace_subject, None);
    }

    #[test]
    fn a_notice_written_on_several_lines_in_the_file_is_not_taken_for_a_change() {
        let (_dir, _file, editor) = setup(
            "[mime]\nencrypted_notice = \"\"\"\nYou have an encrypted message.\nOpen the attachment.\n\"\"\"\n",
        );
        // The browser sends text areas back with CRLF line ends.
        let posted: Vec<(String, String)> = as_shown(&editor)
            .into_iter()
            .map(|(k, v)| (k, v.replace('\n', "\r\n")))
            .collect();
        assert_eq!(save(&editor, &posted).unwrap(), []);
        assert!(!editor.path().exists());
    }

    #[test]
    fn a_key_set_in_the_file_and_the_console_cannot_be_cleared_here() {
        let (_dir, _file, editor) = setup("[mime]\nreplace_subject = \"Encrypted\"\n");
        save(
            &editor,
            &with(as_shown(&editor), "mime.replace_subject", Some("Secure")),
        )
        .unwrap();
        let err = save(
            &editor,
            &with(as_shown(&editor), "mime.replace_subject", Some("")),
        )
        .unwrap_err();
        assert!(err.contains("remove it there"), "{err}");
        assert!(
            std::fs::read_to_string(editor.path())
                .unwrap()
                .contains("Secure")
        );
    }
}
