//! `postern serve`: runs the gateway's components in one process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use envelope::vault::{self, DEFAULT_KDF};
use envelope::{MasterKeys, MasterSecretKey};
use keys::{KeyServer, Store, SystemClock};
use rand::RngCore;
use rand::rngs::OsRng;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::ServeArgs;
use crate::config::Config;
use crate::files;
use crate::keys_cmd::{MASTER_FILE, PARAMS_FILE};
use crate::passphrase;

/// The components `serve` can run.
pub const COMPONENTS: &[&str] = &["smtp", "keyserver"];

/// The generated passphrase file, for a key server started with no configuration.
pub const GENERATED_PASSPHRASE: &str = "passphrase";

pub fn serve(args: &ServeArgs) -> Result<()> {
    crate::logging::init();
    let mut config = crate::load_config(args.config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config, components))
}

async fn run(config: Config, components: Vec<String>) -> Result<()> {
    config.check_plain_http()?;
    create_private_dir(&config.data_dir)?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut app = axum::Router::new();
    let mut background = tokio::task::JoinSet::new();
    if components.iter().any(|c| c == "smtp") {
        let (router, tasks) = start_mail(&config, stop.clone()).await?;
        app = app.merge(router);
        for t in tasks {
            background.spawn(t);
        }
    }
    if components.iter().any(|c| c == "keyserver") {
        let master = open_or_create_master_keys(&config)?;
        let store = Store::open(&config.keyserver_db())
            .await
            .with_context(|| format!("cannot open {}", config.keyserver_db().display()))?;
        let sweeper = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(600)).await;
                let now = keys::Clock::now(&SystemClock);
                if let Err(e) = sweeper.sweep(now).await {
                    tracing::warn!(error = %e, "cannot sweep expired codes and sessions");
                }
            }
        });
        let server = KeyServer::new(
            master,
            store,
            config.keyserver.clone(),
            Arc::new(SystemClock),
        )?;
        app = app.merge(keys::router(server));
    }
    let tcp = TcpListener::bind(config.web.listen)
        .await
        .with_context(|| format!("cannot listen on web.listen = {}", config.web.listen))?;
    let local = tcp.local_addr()?;
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let web_stop = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.changed().await;
        }
    };
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    match (&config.web.tls_cert, &config.web.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = keys::tls::acceptor(cert, key)?;
            tracing::info!("web (key server API, /metrics) on https://{local}");
            // `tap_io` gives the TLS listener axum's ConnectInfo<SocketAddr>.
            let listener = axum::serve::ListenerExt::tap_io(
                keys::tls::TlsListener::new(tcp, acceptor)?,
                |_| {},
            );
            axum::serve(listener, service)
                .with_graceful_shutdown(web_stop)
                .await?;
        }
        _ => {
            tracing::info!("web (key server API, /metrics) on http://{local}");
            axum::serve(tcp, service)
                .with_graceful_shutdown(web_stop)
                .await?;
        }
    }
    signal.abort();
    while background.join_next().await.is_some() {}
    tracing::info!("stopped; the queue is kept");
    Ok(())
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts the SMTP listeners, the pipeline and the delivery workers; returns the `/metrics`
/// route and the tasks to wait for at shutdown.
async fn start_mail(
    config: &Config,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(axum::Router, Vec<Task>)> {
    use smtp::session::Shared;
    use std::sync::atomic::Ordering;

    let hostname = config.smtp.hostname.clone().unwrap_or_else(machine_name);
    let queue = store::Queue::open(&config.queue_dir())
        .await
        .with_context(|| format!("cannot open the queue in {}", config.queue_dir().display()))?;
    let metrics = Arc::new(smtp::metrics::Metrics::default());
    let hops = config.next_hops()?;
    let deliverer = smtp::deliver::Deliverer::new(
        queue.clone(),
        config.delivery.clone(),
        hops.clone(),
        hostname.clone(),
        metrics.clone(),
    );
    let pipeline = smtp::pipeline::Pipeline::new(
        queue.clone(),
        config.smtp.internal_domains.clone(),
        deliverer.wake.clone(),
    );
    let tls = smtp::server::tls_acceptor(
        config.smtp.tls_cert.as_deref(),
        config.smtp.tls_key.as_deref(),
        &hostname,
    )?;
    let mut tasks: Vec<Task> = Vec::new();
    let grace = Duration::from_secs(30);
    let mut listeners = vec![(config.smtp.listen, store::Source::Policy)];
    if let Some(bypass) = config.smtp.bypass_listen {
        listeners.push((bypass, store::Source::Bypass));
    }
    for (addr, source) in listeners {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for SMTP on {addr}"))?;
        let wake = pipeline.wake.clone();
        let m = metrics.clone();
        let shared = Arc::new(Shared {
            config: config.smtp.clone(),
            hostname: hostname.clone(),
            queue: queue.clone(),
            tls: tls.clone(),
            source,
            on_accept: Box::new(move |_, size| {
                m.received.fetch_add(1, Ordering::Relaxed);
                m.received_bytes.fetch_add(size, Ordering::Relaxed);
                wake.notify_one();
            }),
        });
        let which = match source {
            store::Source::Bypass => "bypass (no policy)",
            _ => "policy",
        };
        tracing::info!("SMTP {which} listening on {addr}: send mail here");
        tasks.push(Box::pin(smtp::server::serve(
            listener,
            shared,
            stop.clone(),
            grace,
        )));
    }
    let mut hop_names: Vec<_> = hops.iter().collect();
    hop_names.sort_by_key(|(name, _)| name.as_str());
    for (name, hop) in hop_names {
        tracing::info!("{name} recipients are delivered to {hop}");
    }
    tasks.push(Box::pin(pipeline.clone().run(stop.clone())));
    tasks.push(Box::pin(deliverer.clone().run(stop.clone())));
    let render_queue = queue.clone();
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (queue, metrics) = (render_queue.clone(), metrics.clone());
            async move {
                let depth = queue.depth().await.unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(depth.received, depth.pending, depth.deferred),
                )
            }
        }),
    );
    Ok((router, tasks))
}

/// This machine's name, for the SMTP greeting.
fn machine_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
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

/// Opens the master keys with the passphrase; on a first run with no passphrase configured,
/// makes keys and a random passphrase file beside them.
fn open_or_create_master_keys(config: &Config) -> Result<MasterKeys> {
    let dir = config.key_dir();
    let master_path = dir.join(MASTER_FILE);
    let generated = dir.join(GENERATED_PASSPHRASE);
    let configured = config.keyserver.passphrase_file.clone();
    let have_passphrase = configured.is_some() || std::env::var_os(passphrase::ENV).is_some();
    if !master_path.exists() {
        create_private_dir(&dir)?;
        let pass = if have_passphrase {
            passphrase::obtain(configured.as_deref(), false)?
        } else {
            let mut raw = [0u8; 24];
            OsRng.fill_bytes(&mut raw);
            let pass = Zeroizing::new(base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                raw,
            ));
            files::write_new(&generated, format!("{}\n", *pass).as_bytes(), 0o600, false)?;
            tracing::warn!(
                "generated a random master key passphrase in {}; for production, move it off this disk and set POSTERN_PASSPHRASE or keyserver.passphrase_file",
                generated.display()
            );
            pass
        };
        let now = keys::Clock::now(&SystemClock);
        let keys = MasterKeys::new(vec![MasterSecretKey::generate(&mut OsRng, now)])?;
        let sealed = vault::seal_master_keys(&keys, &pass, DEFAULT_KDF, &mut OsRng)?;
        files::write_new(&master_path, &sealed, 0o600, false)?;
        files::write_new(
            &dir.join(PARAMS_FILE),
            &keys.public_params().to_bytes(),
            0o644,
            false,
        )?;
        tracing::info!(
            "generated master key {} in {}",
            keys.newest().public().id(),
            dir.display()
        );
        return Ok(keys);
    }
    let file = match configured {
        Some(f) => Some(f),
        None if std::env::var_os(passphrase::ENV).is_none() && generated.exists() => {
            Some(generated)
        }
        None => None,
    };
    let pass = passphrase::obtain(file.as_deref(), false).context(
        "the key server needs the master key passphrase: set POSTERN_PASSPHRASE or keyserver.passphrase_file",
    )?;
    let sealed = files::read(&master_path, "master key file")?;
    let keys = vault::open_master_keys(&sealed, &pass)
        .with_context(|| format!("cannot open {}", master_path.display()))?;
    tracing::info!(
        "opened {} master key(s) in {}; newest {}",
        keys.public_params().keys().len(),
        dir.display(),
        keys.newest().public().id()
    );
    Ok(keys)
}
