//! `postern queue list|show|retry|delete`: the mail queue, beside a running gateway or not.

use anyhow::{Context, Result};
use store::{ErroredFilter, MessageInfo, Queue};

use crate::out::outln;
use crate::{ConfigArgs, ErroredCommand, QueueCommand};

pub async fn open(config: &ConfigArgs) -> Result<Queue> {
    let config = config.load()?;
    let dir = config.queue_dir();
    Queue::open_admin(&dir)
        .await
        .with_context(|| format!("cannot open the queue in {}", dir.display()))
}

fn print_message(m: &MessageInfo, detail: bool) -> std::io::Result<()> {
    let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
    outln!(
        "{}  {}  {:?}  {} bytes  from {}  {}",
        m.id,
        m.state,
        m.source,
        m.size,
        sender,
        crate::keyserver_cmd::format_time(m.received_at)
    )?;
    if detail {
        if let Some(mid) = &m.message_id {
            outln!("  Message-ID: {mid}")?;
        }
        if let Some(parent) = &m.parent {
            outln!("  copy of: {parent}")?;
        }
        if let Some(note) = &m.note {
            outln!("  {note}")?;
        }
        for r in &m.recipients {
            outln!(
                "  {}  {}  hop={}  attempts={}{}",
                r.address,
                r.state,
                r.hop
                    .as_ref()
                    .map_or_else(|| "-".to_string(), ToString::to_string),
                r.attempts,
                r.last_reply
                    .as_deref()
                    .map(|x| format!("  last: {x}"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

pub fn run(cmd: QueueCommand) -> Result<()> {
    crate::runtime()?.block_on(async {
        match cmd {
            QueueCommand::List {
                state,
                limit,
                config,
            } => {
                let state = state
                    .map(|s| s.parse::<store::MessageState>())
                    .transpose()
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "--state: {e} (one of received, processing, queued, transformed, delivered, bounced, deleted)"
                        )
                    })?;
                let queue = open(&config).await?;
                for m in queue.list(state, limit).await? {
                    print_message(&m, false)?;
                }
            }
            QueueCommand::Show { id, config } => {
                let queue = open(&config).await?;
                print_message(&queue.show(&id).await?, true)?;
            }
            QueueCommand::Retry { id, config } => {
                let queue = open(&config).await?;
                let n = queue.retry(&id).await?;
                eprintln!("{id}: {n} deferred recipient(s) will be tried now");
            }
            QueueCommand::Delete { id, config } => {
                let queue = open(&config).await?;
                queue.delete(&id).await?;
                eprintln!("{id}: deleted; it will not be delivered");
            }
        }
        Ok(())
    })
}

/// A time on the command line: a date (midnight UTC) or an RFC 3339 timestamp.
pub fn parse_time(flag: &str, text: &str) -> Result<u64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return u64::try_from(t.unix_timestamp())
            .map_err(|_| anyhow::anyhow!("{flag} {text:?}: before 1970"));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format)
        .map_err(|_| anyhow::anyhow!("{flag} {text:?}: expected YYYY-MM-DD or an RFC 3339 time"))?;
    u64::try_from(date.midnight().assume_utc().unix_timestamp())
        .map_err(|_| anyhow::anyhow!("{flag} {text:?}: before 1970"))
}

pub fn errored(cmd: ErroredCommand) -> Result<()> {
    crate::runtime()?.block_on(async {
        match cmd {
            ErroredCommand::List { limit, config } => {
                let queue = open(&config).await?;
                let list = queue.errored(&ErroredFilter::default(), limit).await?;
                for m in &list {
                    print_message(m, true)?;
                }
                eprintln!("{} message(s) in the errored queue", list.len());
            }
            ErroredCommand::Resend {
                id,
                all,
                since,
                until,
                config,
            } => {
                if id.is_none() && !all && since.is_none() && until.is_none() {
                    anyhow::bail!("say which messages: --id ID, --all, or --since/--until");
                }
                let filter = ErroredFilter {
                    id,
                    since: since.as_deref().map(|t| parse_time("--since", t)).transpose()?,
                    until: until.as_deref().map(|t| parse_time("--until", t)).transpose()?,
                };
                let queue = open(&config).await?;
                let list = queue.errored(&filter, u32::MAX).await?;
                if list.is_empty() {
                    if let Some(id) = &filter.id {
                        anyhow::bail!("{id} is not in the errored queue");
                    }
                    eprintln!("no errored messages match");
                    return Ok(());
                }
                let bar = indicatif::ProgressBar::new(list.len() as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} messages {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let mut recipients = 0;
                for m in &list {
                    let one = ErroredFilter {
                        id: Some(m.id.clone()),
                        ..ErroredFilter::default()
                    };
                    recipients += queue.requeue_errored(u64::MAX, &one).await?;
                    bar.inc(1);
                }
                bar.finish_and_clear();
                eprintln!(
                    "{} message(s), {recipients} recipient(s) sent back for processing; the gateway delivers them as soon as their keys can be had",
                    list.len()
                );
            }
        }
        Ok(())
    })
}
