//! `postern queue list|show|retry|delete`: the mail queue, beside a running gateway or not.

use anyhow::{Context, Result};
use store::{MessageInfo, Queue};

use crate::{ConfigArgs, QueueCommand};

async fn open(config: &ConfigArgs) -> Result<Queue> {
    let config = config.load()?;
    let dir = config.queue_dir();
    Queue::open_admin(&dir)
        .await
        .with_context(|| format!("cannot open the queue in {}", dir.display()))
}

fn print_message(m: &MessageInfo, detail: bool) {
    let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
    println!(
        "{}  {}  {:?}  {} bytes  from {}  {}",
        m.id,
        m.state,
        m.source,
        m.size,
        sender,
        crate::keyserver_cmd::format_time(m.received_at)
    );
    if detail {
        if let Some(mid) = &m.message_id {
            println!("  Message-ID: {mid}");
        }
        for r in &m.recipients {
            println!(
                "  {}  {}  hop={}  attempts={}{}",
                r.address,
                r.state,
                r.hop.as_deref().unwrap_or("-"),
                r.attempts,
                r.last_reply
                    .as_deref()
                    .map(|x| format!("  last: {x}"))
                    .unwrap_or_default()
            );
        }
    }
}

pub fn run(cmd: QueueCommand) -> Result<()> {
    crate::runtime()?.block_on(async {
        match cmd {
            QueueCommand::List {
                state,
                limit,
                config,
            } => {
                let queue = open(&config).await?;
                for m in queue.list(state.as_deref(), limit).await? {
                    print_message(&m, false);
                }
            }
            QueueCommand::Show { id, config } => {
                let queue = open(&config).await?;
                print_message(&queue.show(&id).await?, true);
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
