//! `postern keys token|audit|fetch`: the key server's administration and the desktop client.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use envelope::{Address, Epoch};
use keys::{ClientConfig, KeyCache, KeyClient, KeyKind};
use store::keyserver::Store;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::out::outln;
use crate::{AuditArgs, ConfigArgs, FetchArgs, TokenCommand};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn open_store(config: &ConfigArgs) -> Result<Store> {
    let config = config.load()?;
    let path = config.keyserver_db();
    if !path.exists() {
        bail!(
            "no key server database at {} (run `postern serve` once, or pass --data-dir)",
            path.display()
        );
    }
    Store::open(&path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))
}

/// A domain as the key server compares it: IDNA ASCII, lower case.
fn normalize_domain(domain: &str) -> Result<String> {
    let probe = Address::parse(&format!("x@{}", domain.trim()))
        .map_err(|e| anyhow::anyhow!("--domain {domain:?}: {e}"))?;
    Ok(probe.domain().to_string())
}

pub fn token(cmd: TokenCommand) -> Result<()> {
    crate::runtime()?.block_on(async {
        match cmd {
            TokenCommand::Create {
                name,
                domains,
                config,
            } => {
                if name.trim().is_empty() {
                    bail!("--name must not be empty");
                }
                let domains = domains
                    .iter()
                    .map(|d| normalize_domain(d))
                    .collect::<Result<Vec<_>>>()?;
                let store = open_store(&config).await?;
                let token = store.create_token(name.trim(), &domains, now()).await?;
                eprintln!(
                    "created token {:?} for {}; it is shown only this once:",
                    name.trim(),
                    domains.join(", ")
                );
                outln!("{}", token.as_str())?;
            }
            TokenCommand::List { config } => {
                let store = open_store(&config).await?;
                for t in store.list_tokens().await? {
                    let state = match t.revoked {
                        Some(at) => format!("revoked {}", format_time(at)),
                        None => "active".to_string(),
                    };
                    outln!(
                        "{}\t{}\tcreated {}\t{state}",
                        t.name,
                        t.domains.join(","),
                        format_time(t.created)
                    )?;
                }
            }
            TokenCommand::Revoke { name, config } => {
                let store = open_store(&config).await?;
                if !store.revoke_token(&name, now()).await? {
                    bail!("--name {name:?}: no active token has that name");
                }
                eprintln!("revoked token {name:?}; it no longer works");
            }
        }
        Ok(())
    })
}

pub fn format_time(secs: u64) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| secs.to_string())
}

fn parse_date(text: &str) -> Result<u64> {
    let format = format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format)
        .map_err(|_| anyhow::anyhow!("--since {text:?}: expected a date as YYYY-MM-DD"))?;
    Ok(u64::try_from(date.midnight().assume_utc().unix_timestamp()).unwrap_or(0))
}

pub fn audit(args: &AuditArgs) -> Result<()> {
    let since = args.since.as_deref().map(parse_date).transpose()?;
    let email = args
        .email
        .as_deref()
        .map(|e| Address::parse(e).map_err(|err| anyhow::anyhow!("--email {e:?}: {err}")))
        .transpose()?;
    crate::runtime()?.block_on(async {
        let store = open_store(&args.config).await?;
        let rows = store
            .audit_log(email.as_ref().map(Address::as_str), since)
            .await?;
        let mut out = crate::out::stdout();
        for r in rows {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                format_time(r.at),
                r.actor,
                r.client,
                r.address.as_deref().unwrap_or("-"),
                r.epoch.as_deref().unwrap_or("-"),
                r.kind.as_deref().unwrap_or("-"),
                r.outcome
            )?;
        }
        Ok(())
    })
}

pub fn fetch(args: &FetchArgs) -> Result<()> {
    let address = Address::parse(&args.email)
        .map_err(|e| anyhow::anyhow!("--email {:?}: {e}", args.email))?;
    let dir = crate::cache_dir(args.cache.as_deref())?;
    crate::runtime()?.block_on(async {
        let cache = KeyCache::open_dir(&dir)
            .await
            .with_context(|| format!("cannot open the key cache in {}", dir.display()))?;
        let mut config = ClientConfig::new(args.server.clone());
        config.ca_file = args.ca_file.clone();
        let client = KeyClient::new(config, Some(cache))?;
        let started = client.login_start(address.as_str()).await?;
        eprint!(
            "A code was sent to {address}; it is valid for {} minutes.\nCode: ",
            started.expires_in / 60
        );
        std::io::stderr().flush()?;
        let code = read_code()?;
        client.login_verify(address.as_str(), &code).await?;
        client.params().await?;
        let this_month = Epoch::current();
        let mut got = Vec::new();
        for (epoch, kind) in [
            (this_month, KeyKind::Decrypt),
            (this_month.previous(), KeyKind::Decrypt),
            (this_month, KeyKind::Sign),
        ] {
            client.key_bytes(&address, epoch, kind).await?;
            got.push(format!("{} {epoch}", kind.as_str()));
        }
        eprintln!(
            "stored {} keys of {address} in {} ({})",
            got.len(),
            dir.display(),
            got.join(", ")
        );
        Ok(())
    })
}

fn read_code() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let code = rpassword::read_password().context("cannot read the code")?;
        return Ok(code.trim().to_string());
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the code")?;
    let code = line.trim().to_string();
    if code.is_empty() {
        bail!("no code was entered");
    }
    Ok(code)
}
