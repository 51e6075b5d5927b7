//! Notification templates (minijinja): the built-in ones, checking an edited one, rendering.

use minijinja::Environment;
use serde::Serialize;

use crate::model::Template;

/// Names of the built-in templates.
pub const NAMES: &[&str] = &["quarantined", "deleted", "exception", "notice"];

/// The built-in template called `name`.
pub fn builtin(name: &str) -> Option<Template> {
    let (subject, body) = match name {
        "quarantined" => (
            "Message held: {{ subject }}",
            "A message was held in quarantine by {{ hostname }}.\n\n\
             From:       {{ sender }}\n\
             To:         {{ recipients | join(\", \") }}\n\
             Subject:    {{ subject }}\n\
             Rule:       {{ rule }}\n\
             Area:       {{ area }}\n\
             Reason:     {{ reason }}\n\
             Queue id:   {{ queue_id }}\n\n\
             Ask your administrator to release it if it should be delivered.\n",
        ),
        "deleted" => (
            "Message not delivered: {{ subject }}",
            "A message was deleted by {{ hostname }} and will not be delivered.\n\n\
             From:       {{ sender }}\n\
             To:         {{ recipients | join(\", \") }}\n\
             Subject:    {{ subject }}\n\
             Rule:       {{ rule }}\n\
             Reason:     {{ reason }}\n",
        ),
        "exception" => (
            "Encrypted message held: {{ subject }}",
            "{{ hostname }} could not process an encrypted message for you and has held it.\n\n\
             From:       {{ sender }}\n\
             To:         {{ recipients | join(\", \") }}\n\
             Subject:    {{ subject }}\n\
             Reason:     {{ reason }}\n\
             Area:       {{ area }}\n\
             Queue id:   {{ queue_id }}\n\n\
             Your administrator can reprocess it once the cause is fixed.\n",
        ),
        "notice" => (
            "Policy notice: {{ subject }}",
            "The rule \"{{ rule }}\" on {{ hostname }} matched a message.\n\n\
             From:       {{ sender }}\n\
             To:         {{ recipients | join(\", \") }}\n\
             Subject:    {{ subject }}\n",
        ),
        _ => return None,
    };
    Some(Template {
        subject: subject.into(),
        body: body.into(),
    })
}

/// What a template may use.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Context {
    /// Envelope sender (empty for `<>`).
    pub sender: String,
    /// The recipients concerned.
    pub recipients: Vec<String>,
    /// The message's subject.
    pub subject: String,
    /// The rule that acted.
    pub rule: String,
    /// The quarantine area, if any.
    pub area: String,
    /// Why.
    pub reason: String,
    /// The message's queue id.
    pub queue_id: String,
    /// This gateway's host name.
    pub hostname: String,
    /// When (RFC 2822).
    pub date: String,
}

/// Checks that both parts of a template parse; the error names the part.
pub fn check(t: &Template) -> Result<(), (&'static str, String)> {
    let env = Environment::new();
    env.template_from_str(&t.subject)
        .map_err(|e| ("subject", e.to_string()))?;
    env.template_from_str(&t.body)
        .map_err(|e| ("body", e.to_string()))?;
    Ok(())
}

/// Renders a template: (subject on one line, body).
pub fn render(t: &Template, ctx: &Context) -> Result<(String, String), String> {
    let env = Environment::new();
    let subject = env
        .render_str(&t.subject, ctx)
        .map_err(|e| format!("subject: {e}"))?;
    let body = env
        .render_str(&t.body, ctx)
        .map_err(|e| format!("body: {e}"))?;
    let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok((subject, body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn builtin_templates_render_the_facts() {
        for name in NAMES {
            let t = builtin(name).unwrap();
            let ctx = Context {
                sender: "alice@corp.example".into(),
                recipients: vec!["bob@partner.example".into(), "carol@partner.example".into()],
                subject: "Q3\nnumbers".into(),
                rule: "Card numbers".into(),
                area: "Finance".into(),
                reason: "3 card numbers".into(),
                queue_id: "abc".into(),
                hostname: "gw.corp.example".into(),
                date: String::new(),
            };
            let (subject, body) = render(&t, &ctx).unwrap();
            assert!(subject.contains("Q3 numbers"), "{name}: {subject}");
            assert!(!subject.contains('\n'));
            assert!(
                body.contains("bob@partner.example, carol@partner.example"),
                "{name}"
            );
        }
    }

    #[test]
    fn a_broken_template_names_its_part() {
        let t = Template {
            subject: "ok".into(),
            body: "{% if %}".into(),
        };
        assert_eq!(check(&t).unwrap_err().0, "body");
    }
}
