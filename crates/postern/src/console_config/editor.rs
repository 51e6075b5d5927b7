//! The console's editor: the form made from the field table and the layers, and a save that
//! keeps in `console.toml` only what differs from the file, refusing a form made before
//! another change.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};
use toml::Table;
use web::config_form::{Change, ConfigEditor, Field, SaveError, Section, posted};

use super::fields::{SECTIONS, Spec, form_value, parse_value, same, shown, specs};
use super::layering::{FILE, as_table, get, load, merged, parse_table, read_table, set};
use crate::config::Config;
use crate::files;

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
    use web::config_form::Kind;

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
