//! `postern serve`: runs the gateway's components in one process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clock::{SharedClock, SystemClock};
use keyserver::KeyServer;
use rand::RngCore;
use rand::rngs::OsRng;
use store::keyserver::Store;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::ServeArgs;
use crate::config::Config;
use crate::files;

mod key_server;
mod mail;
mod metrics;

use key_server::start_keyserver;
use mail::start_mail;

/// The components `serve` can run.
pub const COMPONENTS: &[&str] = &["smtp", "keyserver"];

/// The generated passphrase file, for a key server started with no configuration.
pub const GENERATED_PASSPHRASE: &str = "passphrase";

pub fn serve(args: &ServeArgs) -> Result<()> {
    crate::logging::init();
    let file = crate::config_file(args.config.as_deref());
    let (config, over) =
        crate::console_config::load_reporting(file.as_deref(), args.data_dir.as_deref())?;
    if !over.is_empty() {
        tracing::info!(
            "{} (saved in the console) sets {} over the configuration file",
            config.data_dir.join(crate::console_config::FILE).display(),
            over.join(", ")
        );
    }
    let editor = crate::console_config::Editor::new(file, &config)?;
    let components: Vec<String> = match &args.components {
        Some(list) => list.split(',').map(|c| c.trim().to_string()).collect(),
        None => COMPONENTS.iter().map(|c| c.to_string()).collect(),
    };
    for c in &components {
        if !COMPONENTS.contains(&c.as_str()) {
            bail!(
                "--components: unknown component {c:?} (known: {})",
                COMPONENTS.join(", ")
            );
        }
    }
    // The process's one clock: every part that reads the time is given it.
    let clock: SharedClock = match std::env::var_os("POSTERN_FAKE_NOW") {
        Some(fake) => {
            let fake: u64 = fake
                .to_str()
                .and_then(|s| s.parse().ok())
                .context("POSTERN_FAKE_NOW must be Unix seconds")?;
            tracing::warn!(
                "POSTERN_FAKE_NOW is set: this process runs at Unix time {fake} (for tests only)"
            );
            Arc::new(SystemClock::starting_at(fake))
        }
        None => SystemClock::shared(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config, components, Arc::new(editor), clock))
}

async fn run(
    config: Config,
    components: Vec<String>,
    editor: Arc<crate::console_config::Editor>,
    clock: SharedClock,
) -> Result<()> {
    config.check_plain_http()?;
    create_private_dir(&config.data_dir)?;
    let caps = connection_caps(&config);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut app = axum::Router::new();
    let mut background = tokio::task::JoinSet::new();
    let keyserver_store = if components.iter().any(|c| c == "keyserver") {
        Some(
            Store::open(&config.keyserver_db())
                .await
                .with_context(|| format!("cannot open {}", config.keyserver_db().display()))?,
        )
    } else {
        None
    };
    // The key server first, then the web listener (which serves it) bound, then SMTP: the
    // first message accepted finds its keys ready instead of waiting in the errored queue.
    let keyserver = match keyserver_store {
        Some(store) => Some(start_keyserver(&config, store, clock.clone()).await?),
        None => None,
    };
    if let Some(server) = &keyserver {
        app = app.merge(keyserver::router(server.clone()));
    }
    let tcp = TcpListener::bind(config.web.listen)
        .await
        .with_context(|| format!("cannot listen on web.listen = {}", config.web.listen))?;
    let mut mail_tasks = Vec::new();
    if components.iter().any(|c| c == "smtp") {
        let (router, tasks) = start_mail(
            &config,
            &caps,
            stop.clone(),
            keyserver.as_ref().map(|k| k.store()),
            keyserver.as_ref().map(|k| k.relay()),
            editor,
            clock,
        )
        .await?;
        app = app.merge(router);
        mail_tasks = tasks;
    }
    let local = tcp.local_addr()?;
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let reader = &config.mime.reader_url;
    if !config.web.listen.ip().is_loopback()
        && (reader.contains("://127.")
            || reader.contains("://localhost")
            || reader.contains("://[::1]"))
    {
        tracing::warn!(
            "mime.reader_url is {reader}, this machine's loopback: recipients elsewhere cannot open their mail there; set mime.reader_url to the reader's public address"
        );
    }
    let host = reader
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    if !host.contains('.') && !host.starts_with('[') && host != "localhost" {
        tracing::warn!(
            "mime.reader_url is {reader}: {host} is not a full domain name, so recipients elsewhere may not reach it; set mime.reader_url or smtp.hostname"
        );
    }
    if config.web.allow_plain_http && reader.starts_with("http://") {
        tracing::warn!(
            "mime.reader_url is {reader}, plain HTTP, while web.allow_plain_http says a TLS proxy is in front: set mime.reader_url to the proxy's https address, since links in mail last for days"
        );
    }
    tracing::info!("the reader's address in encrypted email: {reader}");
    let tls = match (&config.web.tls_cert, &config.web.tls_key) {
        (Some(cert), Some(key)) => {
            tracing::info!("web (reader, console, key server API, /metrics) on https://{local}");
            Some(keyserver::tls::acceptor(cert, key)?)
        }
        _ => {
            tracing::info!("web (reader, console, key server API, /metrics) on http://{local}");
            None
        }
    };
    for t in mail_tasks {
        background.spawn(t);
    }
    web::listener::serve(tcp, tls, app, config.web.limits(caps.web), stop.clone()).await;
    signal.abort();
    while background.join_next().await.is_some() {}
    tracing::info!("stopped; the queue is kept");
    Ok(())
}

/// Connections each listener may hold, within the process's file handles.
struct Caps {
    policy: usize,
    bypass: usize,
    web: usize,
}

/// Raises the open-file limit to the hard limit and shares it out between the listeners,
/// keeping a reserve for the rest of the process, so that a flood on one listener can neither
/// take another's connections nor the files and databases the mail path needs.
fn connection_caps(config: &Config) -> Caps {
    let smtp = config.smtp.max_connections;
    let bypass = if config.smtp.bypass_listen.is_some() {
        smtp
    } else {
        0
    };
    let wanted = [smtp, bypass, config.web.max_connections];
    let limit = match admission::files::raise_limit() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    let shared = admission::files::share(limit, &wanted);
    if shared != wanted {
        tracing::warn!(
            "the open-file limit ({limit}) is too low for smtp.max_connections ({smtp}, on each SMTP port) and web.max_connections ({}) beside a reserve of {}: the listeners take {} (policy), {} (bypass) and {} (web) connections; raise the limit (ulimit -n, LimitNOFILE=) to lift this",
            config.web.max_connections,
            admission::files::RESERVE,
            shared[0],
            shared[1],
            shared[2],
        );
    } else {
        tracing::debug!("open-file limit {limit}");
    }
    Caps {
        policy: shared[0],
        bypass: shared[1].max(1),
        web: shared[2],
    }
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The gateway's host name: `smtp.hostname`, else the machine's.
fn hostname(config: &Config) -> String {
    config
        .smtp
        .hostname
        .clone()
        .unwrap_or_else(crate::config::machine_name)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}
