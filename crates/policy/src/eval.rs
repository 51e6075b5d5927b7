//! Evaluation: the rules walked in order for each recipient, the first terminal action deciding,
//! the non-terminal actions of earlier matching rules accumulating. Recipients decided alike
//! share one group; each group becomes one copy of the message.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use crate::limits::Cut;
use crate::matcher::{Counted, Text};
use crate::message::MessageView;
use crate::model::{Action, Condition, Direction, Match, Policy, PolicyError, Rule, Target};
use crate::pattern::Pattern;
use crate::verdict::{Verdict, applies_when_unsure};

pub use crate::matcher::{Matcher, build_regex};

#[derive(Debug)]
struct CompiledCondition {
    spec: Condition,
    matcher: Option<Arc<Matcher>>,
}

#[derive(Debug)]
struct CompiledRule {
    rule: Rule,
    senders: Vec<Pattern>,
    recipients: Vec<Pattern>,
    conditions: Vec<CompiledCondition>,
}

/// A validated policy with its patterns and expressions compiled.
#[derive(Debug)]
pub struct Compiled {
    policy: Policy,
    rules: Vec<CompiledRule>,
    reads_content: bool,
}

/// What the gateway knows about a message besides its content.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// The envelope recipients to decide for.
    pub recipients: &'a [String],
    /// All envelope recipients of the message (for `recipient_count`).
    pub recipient_count: usize,
    /// The gateway's domains (lower case).
    pub internal_domains: &'a [String],
    /// The message is an encrypted email whose sealed message this gateway can read.
    pub encrypted: bool,
    /// A rule to skip (the one that quarantined a released message).
    pub skip_rule: Option<&'a str>,
}

/// The actions decided for some recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Who.
    pub recipients: Vec<String>,
    /// The rule whose terminal action decided (`None`: no rule did; the message passes).
    pub rule: Option<String>,
    /// The deciding action.
    pub terminal: Action,
    /// Non-terminal actions, with the rule each came from, in rule order.
    pub actions: Vec<(String, Action)>,
}

/// One rule looked at for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The recipient.
    pub recipient: String,
    /// The rule's order number.
    pub order: u32,
    /// The rule's name.
    pub rule: String,
    /// Whether it matched.
    pub matched: bool,
    /// Why (what matched, or why not).
    pub why: String,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Recipients grouped by what is done to them, in the order of their first recipient.
    pub groups: Vec<Decided>,
    /// Every rule looked at, for `postern policy test`.
    pub trace: Vec<Step>,
    /// Set when a limit cut the scan of the message (see [`MessageView::cut`]); content
    /// conditions then decided as described in docs/policy.md ("Limits").
    pub cut: Option<Cut>,
}

impl Compiled {
    /// Validates and compiles `policy`.
    pub fn new(policy: Policy) -> Result<Compiled, PolicyError> {
        policy.validate()?;
        let err = |place: String, field: String, message: String| PolicyError {
            place,
            field,
            message,
        };
        let mut lists = HashMap::new();
        for l in &policy.lists {
            let m = Matcher::new(&l.expr(), format!("list {}", l.name))
                .map_err(|e| err(format!("list {:?}", l.name), "regex".into(), e))?;
            lists.insert(l.name.clone(), Arc::new(m));
        }
        let mut rules = Vec::new();
        let mut sorted = policy.rules.clone();
        sorted.sort_by_key(|r| r.order);
        for rule in sorted {
            let place = format!("rule {} {:?}", rule.order, rule.name);
            let parse = |list: &[String], field: &str| -> Result<Vec<Pattern>, PolicyError> {
                list.iter()
                    .enumerate()
                    .map(|(i, p)| {
                        Pattern::parse(p)
                            .map_err(|e| err(place.clone(), format!("{field}[{i}]"), e))
                    })
                    .collect()
            };
            let senders = parse(&rule.senders, "senders")?;
            let recipients = parse(&rule.recipients, "recipients")?;
            let mut conditions = Vec::new();
            for (i, c) in rule.conditions.iter().enumerate() {
                let inline = c.expr();
                let matcher = match c.list() {
                    Some(name) => lists.get(name).cloned(),
                    None if !inline.is_empty() => Some(Arc::new(
                        Matcher::new(&inline, "inline".into())
                            .map_err(|e| err(place.clone(), format!("conditions[{i}].regex"), e))?,
                    )),
                    None => None,
                };
                conditions.push(CompiledCondition {
                    spec: c.clone(),
                    matcher,
                });
            }
            rules.push(CompiledRule {
                rule,
                senders,
                recipients,
                conditions,
            });
        }
        let reads_content = rules
            .iter()
            .filter(|r| r.rule.enabled)
            .any(|r| r.conditions.iter().any(|c| c.spec.target().is_content()));
        Ok(Compiled {
            policy,
            rules,
            reads_content,
        })
    }

    /// Whether any enabled rule looks past the header section (body or attachments): when
    /// none does, the gateway gives it a view of the header section alone, and a large message
    /// is not read whole for nothing.
    pub fn reads_content(&self) -> bool {
        self.reads_content
    }

    /// The policy it was made from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decides for each of `facts.recipients`, with a trace of every rule looked at (for
    /// `postern policy test`).
    pub fn evaluate(&self, message: &MessageView, facts: &Facts<'_>) -> Evaluation {
        self.run(message, facts, true)
    }

    /// Decides as [`Compiled::evaluate`] does, tracing only the rules that matched: what the
    /// gateway needs, without describing every rule that did not.
    pub fn decide(&self, message: &MessageView, facts: &Facts<'_>) -> Evaluation {
        self.run(message, facts, false)
    }

    fn run(&self, message: &MessageView, facts: &Facts<'_>, full: bool) -> Evaluation {
        let scan = Scan::new(message);
        let mut verdicts: Vec<Option<(Verdict, String)>> = vec![None; self.rules.len()];
        let mut groups: Vec<Decided> = Vec::new();
        let mut trace = Vec::new();
        for recipient in facts.recipients {
            let direction = if is_internal(recipient, facts.internal_domains) {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let mut actions: Vec<(String, Action)> = Vec::new();
            let mut decided: Option<(String, Action)> = None;
            for (i, r) in self.rules.iter().enumerate() {
                let rule = &r.rule;
                let mut step = |matched: bool, why: &dyn Fn() -> String| {
                    if full || matched {
                        trace.push(Step {
                            recipient: recipient.clone(),
                            order: rule.order,
                            rule: rule.name.clone(),
                            matched,
                            why: why(),
                        })
                    }
                };
                if !rule.enabled {
                    step(false, &|| "disabled".into());
                    continue;
                }
                if facts.skip_rule == Some(rule.name.as_str()) {
                    step(false, &|| {
                        "skipped: the message was released from this rule".into()
                    });
                    continue;
                }
                if rule.direction != Direction::Any && rule.direction != direction {
                    step(false, &|| {
                        format!("direction: the recipient's copy is {direction:?}").to_lowercase()
                    });
                    continue;
                }
                if !r.senders.is_empty() && !r.senders.iter().any(|p| p.matches(facts.sender)) {
                    step(false, &|| {
                        format!("sender {:?} matches no sender pattern", facts.sender)
                    });
                    continue;
                }
                if !r.recipients.is_empty() && !r.recipients.iter().any(|p| p.matches(recipient)) {
                    step(false, &|| {
                        "the recipient matches no recipient pattern".into()
                    });
                    continue;
                }
                let (verdict, why) = verdicts[i]
                    .get_or_insert_with(|| {
                        // Without a full trace, only a matching rule's reason is worded.
                        let quick = conditions_hold(r, &scan, facts, full);
                        if quick.0 != Verdict::No && !full {
                            conditions_hold(r, &scan, facts, true)
                        } else {
                            quick
                        }
                    })
                    .clone();
                let (holds, why) = match (verdict, message.cut) {
                    (Verdict::Unsure, Some(cut)) if applies_when_unsure(rule) => (
                        true,
                        format!("{why}; the scan was cut ({cut}), and what was not read may match"),
                    ),
                    (Verdict::Unsure, Some(cut)) => (
                        false,
                        format!(
                            "{why}; the scan was cut ({cut}): not applied on what was not read, \
                             as this rule would not hold the message back"
                        ),
                    ),
                    (v, _) => (v == Verdict::Yes, why),
                };
                if !holds {
                    step(false, &|| why.clone());
                    continue;
                }
                let terminal = rule.terminal().cloned();
                let done: Vec<String> = rule.actions.iter().map(Action::describe).collect();
                step(true, &|| format!("{why} → {}", done.join(", ")));
                for a in &rule.actions {
                    if !a.is_terminal() {
                        actions.push((rule.name.clone(), a.clone()));
                    }
                }
                if let Some(t) = terminal {
                    decided = Some((rule.name.clone(), t));
                    break;
                }
            }
            let (rule, terminal) = match decided {
                Some((name, t)) => (Some(name), t),
                None => (None, Action::Pass),
            };
            match groups
                .iter_mut()
                .find(|g| g.rule == rule && g.terminal == terminal && g.actions == actions)
            {
                Some(g) => g.recipients.push(recipient.clone()),
                None => groups.push(Decided {
                    recipients: vec![recipient.clone()],
                    rule,
                    terminal,
                    actions,
                }),
            }
        }
        Evaluation {
            groups,
            trace,
            cut: message.cut,
        }
    }
}

/// Whether `address` is in one of the internal `domains`: the one test of "internal" that the
/// SMTP server (relaying), the pipeline (direction, signing keys) and the rules share.
pub fn is_internal(address: &str, domains: &[String]) -> bool {
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
}

/// The message's texts, with their lower-case forms made on demand.
struct Scan<'m> {
    message: &'m MessageView,
    subject: OnceCell<String>,
    body: OnceCell<String>,
    headers: Vec<OnceCell<String>>,
    names: Vec<OnceCell<String>>,
    types: Vec<OnceCell<String>>,
    contents: Vec<OnceCell<String>>,
    counted: Counted,
}

impl<'m> Scan<'m> {
    fn new(message: &'m MessageView) -> Self {
        let n = message.attachments.len();
        Scan {
            message,
            subject: OnceCell::new(),
            body: OnceCell::new(),
            headers: (0..message.headers.len())
                .map(|_| OnceCell::new())
                .collect(),
            names: (0..n).map(|_| OnceCell::new()).collect(),
            types: (0..n).map(|_| OnceCell::new()).collect(),
            contents: (0..n).map(|_| OnceCell::new()).collect(),
            counted: RefCell::new(HashMap::new()),
        }
    }

    fn texts(&self, c: &Condition) -> Vec<Text<'_>> {
        let m = self.message;
        let counted = &self.counted;
        match c.target() {
            Target::Subject => vec![Text {
                raw: &m.subject,
                lower: &self.subject,
                counted,
            }],
            Target::Body => vec![Text {
                raw: &m.body,
                lower: &self.body,
                counted,
            }],
            Target::Header => {
                let name = c.header().unwrap_or_default();
                m.headers
                    .iter()
                    .zip(&self.headers)
                    .filter(|((n, _), _)| n.eq_ignore_ascii_case(name))
                    .map(|((_, v), lower)| Text {
                        raw: v,
                        lower,
                        counted,
                    })
                    .collect()
            }
            Target::AttachmentName => m
                .attachments
                .iter()
                .zip(&self.names)
                .map(|(a, lower)| Text {
                    raw: &a.name,
                    lower,
                    counted,
                })
                .collect(),
            Target::AttachmentType => m
                .attachments
                .iter()
                .zip(&self.types)
                .map(|(a, lower)| Text {
                    raw: &a.content_type,
                    lower,
                    counted,
                })
                .collect(),
            Target::AttachmentContent => m
                .attachments
                .iter()
                .zip(&self.contents)
                .filter_map(|(a, lower)| {
                    a.text.as_deref().map(|raw| Text {
                        raw,
                        lower,
                        counted,
                    })
                })
                .collect(),
            Target::Size | Target::RecipientCount | Target::Encrypted => Vec::new(),
        }
    }
}

fn target_name(c: &Condition) -> String {
    match c {
        Condition::Header { header, .. } => format!("header {header}"),
        _ => format!("{:?}", c.target())
            .chars()
            .flat_map(|ch| {
                if ch.is_ascii_uppercase() {
                    vec![' ', ch.to_ascii_lowercase()]
                } else {
                    vec![ch]
                }
            })
            .collect::<String>()
            .trim()
            .to_string(),
    }
}

/// Whether one condition holds, and why. A content condition that did not find what it looks
/// for is unsure when the scan was cut: it may be in what was not read.
fn condition_holds(
    c: &CompiledCondition,
    scan: &Scan<'_>,
    facts: &Facts<'_>,
    explain: bool,
) -> (Verdict, String) {
    let spec = &c.spec;
    let unread = scan.message.cut.is_some() && spec.target().is_content();
    let found = |holds: bool| {
        if holds || !unread {
            Verdict::from_bool(holds)
        } else {
            Verdict::Unsure
        }
    };
    if !explain {
        let holds = match (spec, &c.matcher) {
            (Condition::Size(b), _) => Verdict::from_bool(b.contains(scan.message.size)),
            (Condition::RecipientCount(b), _) => {
                Verdict::from_bool(b.contains(facts.recipient_count as u64))
            }
            (Condition::Encrypted { .. }, _) => Verdict::from_bool(facts.encrypted),
            (_, Some(m)) => found(m.count(&scan.texts(spec), false).0 >= m.threshold),
            (_, None) => Verdict::No,
        };
        return (holds.negate(spec.negated()), String::new());
    }
    let read = if unread { " in what was read" } else { "" };
    let what = target_name(spec);
    let (holds, why) = match spec {
        Condition::Size(b) => {
            let n = scan.message.size;
            (Verdict::from_bool(b.contains(n)), format!("size {n} bytes"))
        }
        Condition::RecipientCount(b) => {
            let n = facts.recipient_count as u64;
            (Verdict::from_bool(b.contains(n)), format!("{n} recipients"))
        }
        Condition::Encrypted { .. } => (
            Verdict::from_bool(facts.encrypted),
            if facts.encrypted {
                "an encrypted email"
            } else {
                "not an encrypted email"
            }
            .into(),
        ),
        _ => match &c.matcher {
            Some(m) => {
                let (n, names) = m.count(&scan.texts(spec), true);
                let source = if spec.list().is_some() {
                    format!(" ({})", m.label)
                } else {
                    String::new()
                };
                if n >= m.threshold {
                    (
                        Verdict::Yes,
                        format!("{what}{source}: {}", names.join(", ")),
                    )
                } else if n == 0 {
                    (found(false), format!("{what}{source}: nothing found{read}"))
                } else {
                    (
                        found(false),
                        format!("{what}{source}: {n} found{read}, {} needed", m.threshold),
                    )
                }
            }
            None => (Verdict::No, format!("{what}: no expressions")),
        },
    };
    if spec.negated() {
        (holds.negate(true), format!("not ({why})"))
    } else {
        (holds, why)
    }
}

/// Whether a rule's conditions hold (all or any), and why: a condition that settles the rule
/// (one that fails for `all`, one that holds for `any`) decides it, else an unsure one leaves
/// it unsure.
fn conditions_hold(
    r: &CompiledRule,
    scan: &Scan<'_>,
    facts: &Facts<'_>,
    explain: bool,
) -> (Verdict, String) {
    if r.conditions.is_empty() {
        return (Verdict::Yes, "no conditions".into());
    }
    let (settles, otherwise) = match r.rule.match_ {
        Match::All => (Verdict::No, Verdict::Yes),
        Match::Any => (Verdict::Yes, Verdict::No),
    };
    let mut reasons = Vec::new();
    let mut unsure = Vec::new();
    for c in &r.conditions {
        let (v, why) = condition_holds(c, scan, facts, explain);
        if v == settles {
            return (v, why);
        }
        if v == Verdict::Unsure {
            unsure.push(why);
        } else {
            reasons.push(why);
        }
    }
    if unsure.is_empty() {
        (otherwise, reasons.join("; "))
    } else {
        (Verdict::Unsure, unsure.join("; "))
    }
}
