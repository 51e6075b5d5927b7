//! `postern policy ...` and `postern quarantine ...`: the content policy stored with the queue
//! (changes apply to the next message the running gateway processes) and the quarantine areas.

use anyhow::{Context, Result, bail};
use policy::{Compiled, Facts, MessageView, Policy};
use store::{QuarantineFilter, QuarantineOp};

use crate::out::{out, outln};
use crate::queue_cmd::{open, parse_time};
use crate::{PolicyCommand, QuarantineCommand, QuarantineFilterArgs, QuarantineSelection};

pub fn policy(cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Test {
            message,
            from,
            to,
            file,
            config,
        } => return test(&message, &from, &to, file.as_deref(), &config),
        PolicyCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let p = Policy::from_toml(&text)
                .with_context(|| format!("{} is not valid", file.display()))?;
            outln!("{}: ok ({} rules)", file.display(), p.rules.len())?;
            return Ok(());
        }
        _ => {}
    }
    crate::runtime()?.block_on(async {
        match cmd {
            PolicyCommand::List { config } => {
                let queue = open(&config).await?;
                let (policy, origin) = current(&queue).await?;
                outln!("{origin}")?;
                for r in &policy.rules {
                    let actions: Vec<String> = r.actions.iter().map(policy::Action::describe).collect();
                    outln!(
                        "{:>5}  {:<8} {:<8}  {}  → {}",
                        r.order,
                        if r.enabled { "enabled" } else { "disabled" },
                        format!("{:?}", r.direction).to_lowercase(),
                        r.name,
                        actions.join(", ")
                    )?;
                }
                let describe = |a: &[policy::Action]| a.iter().map(policy::Action::describe).collect::<Vec<_>>().join(", ");
                outln!("Encryption Exception → {}", describe(&policy.exceptions.encryption))?;
                outln!("Unable to decrypt    → {}", describe(&policy.exceptions.decryption))?;
            }
            PolicyCommand::Export { config } => {
                let queue = open(&config).await?;
                let (policy, origin) = current(&queue).await?;
                out!("# {origin}\n{}", policy.to_toml())?;
            }
            PolicyCommand::Import { file, author, config } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                // Everything is checked before anything changes.
                let policy = Policy::from_toml(&text)
                    .with_context(|| format!("{} is not valid; nothing changed", file.display()))?;
                Compiled::new(policy.clone())
                    .with_context(|| format!("{} is not valid; nothing changed", file.display()))?;
                let queue = open(&config).await?;
                let author = author
                    .or_else(|| std::env::var("USER").ok())
                    .unwrap_or_else(|| "cli".into());
                let known: Vec<String> =
                    queue.areas().await?.into_iter().map(|a| a.name).collect();
                let areas = policy.areas();
                let version = queue.save_policy(&text, &author, &areas).await?;
                audit(
                    &queue,
                    "policy.save",
                    &format!("version {version}: imported {} by {author}", file.display()),
                )
                .await;
                for area in areas.iter().filter(|a| !known.iter().any(|k| k == *a)) {
                    eprintln!("made quarantine area {area} (retention 30 days)");
                }
                eprintln!(
                    "policy version {version} stored ({} rules); the gateway applies it to the next message",
                    policy.rules.len()
                );
            }
            PolicyCommand::Test { .. } | PolicyCommand::Check { .. } => {}
        }
        Ok(())
    })
}

async fn current(queue: &store::Queue) -> Result<(Policy, String)> {
    match queue.current_policy().await? {
        Some(stored) => {
            let p = Policy::from_toml(&stored.text).context("the stored policy is not valid")?;
            Ok((
                p,
                format!(
                    "policy version {} imported by {} at {}",
                    stored.version,
                    stored.author,
                    crate::keyserver_cmd::format_time(stored.created_at)
                ),
            ))
        }
        None => Ok((
            Policy::default_policy().context("the built-in policy does not load")?,
            "the built-in default policy (none imported)".to_string(),
        )),
    }
}

/// `postern policy test`: each rule evaluated for each recipient, and what would be done.
fn test(
    message: &std::path::Path,
    from: &str,
    to: &[String],
    file: Option<&std::path::Path>,
    config: &crate::ConfigArgs,
) -> Result<()> {
    let loaded = config.load()?;
    let (policy, origin) = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            (
                Policy::from_toml(&text)
                    .with_context(|| format!("{} is not valid", f.display()))?,
                format!("policy file {}", f.display()),
            )
        }
        None => crate::runtime()?.block_on(async {
            let queue = open(config).await?;
            current(&queue).await
        })?,
    };
    let compiled = Compiled::new(policy)?;
    let raw =
        std::fs::read(message).with_context(|| format!("cannot read {}", message.display()))?;
    let body = store::Body::from_bytes(raw.clone());
    let head = transform::read_head(&body)?;
    let encrypted =
        mime::is_encrypted(&mime::headers::fields(&head)) && transform::locate(&body).is_ok();
    let internal: Vec<String> = loaded
        .smtp
        .internal_domains
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    let view = MessageView::parse_with(&raw, &loaded.gateway.scan_limits());
    let eval = compiled.evaluate(
        &view,
        &Facts {
            sender: from,
            recipients: to,
            recipient_count: to.len(),
            internal_domains: &internal,
            encrypted,
            skip_rule: None,
        },
    );
    outln!("{origin}; internal domains: {}", internal.join(", "))?;
    outln!(
        "message: {} bytes, subject {:?}, {} attachment(s){}",
        view.size,
        view.subject,
        view.attachments.len(),
        if encrypted {
            ", an encrypted email"
        } else {
            ""
        }
    )?;
    if let Some(cut) = eval.cut {
        outln!("the scan was cut ({cut}); what follows was not read")?;
    }
    let mut last = String::new();
    for step in &eval.trace {
        if step.recipient != last {
            outln!("\n{}:", step.recipient)?;
            last = step.recipient.clone();
        }
        outln!(
            "  {:>5} {:<40} {}  {}",
            step.order,
            step.rule,
            if step.matched { "MATCH" } else { "  -  " },
            step.why
        )?;
    }
    outln!("\nresult:")?;
    for g in &eval.groups {
        let mut actions: Vec<String> = g.actions.iter().map(|(_, a)| a.describe()).collect();
        actions.push(g.terminal.describe());
        outln!(
            "  {} → {} (rule: {})",
            g.recipients.join(", "),
            actions.join(", "),
            g.rule.as_deref().unwrap_or("none; delivered as it is")
        )?;
    }
    Ok(())
}

fn filter(args: &QuarantineFilterArgs) -> Result<QuarantineFilter> {
    Ok(QuarantineFilter {
        id: None,
        area: args.area.clone(),
        sender: args.sender.clone(),
        recipient: args.recipient.clone(),
        subject: args.subject.clone(),
        rule: args.rule.clone(),
        reason: args.reason.clone(),
        since: args
            .since
            .as_deref()
            .map(|t| parse_time("--since", t))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time("--until", t))
            .transpose()?,
    })
}

pub fn quarantine(cmd: QuarantineCommand) -> Result<()> {
    crate::runtime()?.block_on(async {
        match cmd {
            QuarantineCommand::Areas { config } => {
                let queue = open(&config).await?;
                for a in queue.areas().await? {
                    outln!("{:<32} {:>6} held  retention {} days", a.name, a.held, a.retention_secs / 86_400)?;
                }
            }
            QuarantineCommand::CreateArea { name, retention_days, config } => {
                if !policy::is_area_name(&name) {
                    bail!("NAME: an area name is 1 to 64 letters, digits, '_', '-' or '.'");
                }
                if retention_days == 0 || retention_days > 3650 {
                    bail!("--retention-days: must be 1 to 3650");
                }
                let queue = open(&config).await?;
                queue.create_area(&name, retention_days * 86_400).await?;
                audit(&queue, "area.create", &format!("{name}, retention {retention_days} days"))
                    .await;
                eprintln!("quarantine area {name}: retention {retention_days} days");
            }
            QuarantineCommand::DeleteArea { name, config } => {
                let queue = open(&config).await?;
                queue.delete_area(&name).await?;
                audit(&queue, "area.delete", &name).await;
                eprintln!("quarantine area {name} deleted");
            }
            QuarantineCommand::Query { filter: f, limit, config } => {
                let queue = open(&config).await?;
                let list = queue.quarantined(&filter(&f)?, limit).await?;
                for q in &list {
                    outln!(
                        "{:>6}  {}  {:<20} {}  from {}  to {}\n        subject: {}\n        rule: {}  reason: {}",
                        q.id,
                        crate::keyserver_cmd::format_time(q.at),
                        q.area,
                        q.message,
                        if q.sender.is_empty() { "<>" } else { &q.sender },
                        q.recipients.join(", "),
                        q.subject,
                        q.rule,
                        q.reason
                    )?;
                }
                eprintln!("{} held message(s) match", list.len());
            }
            QuarantineCommand::Release(sel) => act(sel, QuarantineOp::Release).await?,
            QuarantineCommand::Reprocess(sel) => act(sel, QuarantineOp::Reprocess).await?,
            QuarantineCommand::Delete(sel) => act(sel, QuarantineOp::Delete).await?,
        }
        Ok(())
    })
}

async fn act(sel: QuarantineSelection, op: QuarantineOp) -> Result<()> {
    let QuarantineSelection {
        ids,
        all,
        filter: f,
        config,
    } = sel;
    let f = &f;
    let queue = open(&config).await?;
    let ids = if ids.is_empty() {
        if !all {
            bail!(
                "say which messages: --id N (repeatable), or --all with query options (--area, --sender, ...)"
            );
        }
        queue
            .quarantined(&filter(f)?, u32::MAX)
            .await?
            .iter()
            .map(|q| q.id)
            .collect()
    } else {
        // An id that names nothing is a mistake (a typo, another gateway's id): say so, and do
        // nothing, rather than report "0 messages released" as if all were well.
        let known = queue.quarantine_entries(&ids).await?;
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !known.contains(id))
            .map(ToString::to_string)
            .collect();
        if !unknown.is_empty() {
            bail!(
                "no quarantine entry has id {} (`postern quarantine query` lists them); nothing was done",
                unknown.join(", ")
            );
        }
        ids
    };
    if ids.is_empty() {
        eprintln!("no held messages match");
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(ids.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} messages")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut n = 0;
    for chunk in ids.chunks(100) {
        n += queue.act_on_quarantined(op, chunk).await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let action = match op {
        QuarantineOp::Release => "quarantine.release",
        QuarantineOp::Reprocess => "quarantine.reprocess",
        QuarantineOp::Delete => "quarantine.delete",
    };
    audit(
        &queue,
        action,
        &format!("{n} message(s) of {} named", ids.len()),
    )
    .await;
    if n < ids.len() as u64 {
        eprintln!(
            "{} of the entries named were not held (already released or deleted)",
            ids.len() as u64 - n
        );
    }
    eprintln!("{n} message(s) {}", op.done());
    Ok(())
}

/// Writes the audit log entry of a change the CLI made. The change is done by then, so a
/// failure here is a warning, not an error: an error would invite running it again.
pub(crate) async fn audit(queue: &store::Queue, action: &str, detail: &str) {
    if let Err(e) = queue.audit("cli", action, detail).await {
        eprintln!("warning: done, but the audit log could not record it ({action}: {e})");
    }
}
