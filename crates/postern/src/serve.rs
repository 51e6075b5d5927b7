//! `postern serve`: runs the gateway's components in one process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clock::{SharedClock, SystemClock};
use envelope::vault::{self, DEFAULT_KDF};
use envelope::{MasterKeys, MasterSecretKey};
use keyserver::KeyServer;
use rand::RngCore;
use rand::rngs::OsRng;
use store::keyserver::Store;
use tokio::net::TcpListener;
use web::status::Status;
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

/// Seconds between two checks of the relay for code emails, besides the check before each code.
const RELAY_CHECK_SECS: u64 = 120;

/// The gateway's host name: `smtp.hostname`, else the machine's.
fn hostname(config: &Config) -> String {
    config
        .smtp
        .hostname
        .clone()
        .unwrap_or_else(crate::config::machine_name)
}

/// Opens the master keys and starts the key server over `store`, with its sweeper and the
/// periodic check of the relay for code emails; checks that relay now and warns when it does
/// not answer, since recipients then get no code.
async fn start_keyserver(
    config: &Config,
    store: Store,
    clock: SharedClock,
) -> Result<Arc<KeyServer>> {
    let master = open_or_create_master_keys(config, clock.now())?;
    let sweeper = store.clone();
    let sweep_clock = clock.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(600)).await;
            let now = sweep_clock.now();
            if let Err(e) = sweeper.sweep(now).await {
                tracing::warn!(error = %e, "cannot sweep expired codes and sessions");
            }
        }
    });
    let hostname = hostname(config);
    let mail = &config.keyserver.mail;
    let from = mail.from_for(&hostname);
    let domain = from
        .rsplit_once('@')
        .map_or("", |(_, d)| d.trim_end_matches('>'));
    if domain == "localhost" || !domain.contains('.') {
        tracing::warn!(
            "code emails come from {from}, not a full domain name: spam filters may drop them; set smtp.hostname or keyserver.mail.from"
        );
    }
    let server = KeyServer::new(master, store, config.keyserver.clone(), clock, &hostname)?;
    let relay = mail.relay_address();
    match server.check_relay().await {
        Ok(()) => tracing::info!("sign-in code emails go through {relay} (keyserver.mail)"),
        Err(e) => tracing::warn!(
            "the relay for sign-in code emails, {relay} (keyserver.mail.relay_host and relay_port), does not answer ({e}): recipients cannot get codes to open their mail until it does"
        ),
    }
    let checked = server.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(RELAY_CHECK_SECS)).await;
            // The outcome is recorded, and a change logged, by the check itself.
            let _ = checked.check_relay().await;
        }
    });
    Ok(server)
}

/// Starts the SMTP listeners, the pipeline and the delivery workers; returns the `/metrics`
/// route and the tasks to wait for at shutdown.
async fn start_mail(
    config: &Config,
    caps: &Caps,
    stop: tokio::sync::watch::Receiver<bool>,
    local_keyserver: Option<&Store>,
    code_relay: Option<Arc<keyserver::relay::RelayHealth>>,
    editor: Arc<crate::console_config::Editor>,
    clock: SharedClock,
) -> Result<(axum::Router, Vec<Task>)> {
    use smtp::session::Shared;
    use std::sync::atomic::Ordering;

    let hostname = hostname(config);
    let queue = store::Queue::open_with_clock(&config.queue_dir(), clock.clone())
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
    let settings = pipeline::Settings {
        internal_domains: config.smtp.internal_domains.clone(),
        gateway: config.gateway.clone(),
        mime: config.mime.clone(),
        hostname: hostname.clone(),
    };
    let keyring = gateway_keys(config, &settings, local_keyserver, clock.clone()).await?;
    let mark = Arc::new(transform::MarkKey::new(
        queue
            .secret(transform::mark::SECRET_NAME)
            .await
            .context("cannot read or make the gateway's mark key")?,
    ));
    let components = Arc::new(crate::supervise::Components::new(clock.clone()));
    if let Some(relay) = code_relay {
        components.add_check(Arc::new(crate::code_relay::CodeRelay(relay)));
    }
    let web_gateway = web::Gateway {
        queue: queue.clone(),
        keys: keyring.clone(),
        mime: Arc::new(config.mime.clone()),
        hostname: hostname.clone(),
        wake: Arc::default(),
        keyserver: local_keyserver.cloned(),
        config: editor,
        settings: config.web.settings(),
        mark: mark.clone(),
        components: components.clone(),
    };
    let pipeline = pipeline::Pipeline::new(
        queue.clone(),
        settings,
        keyring,
        deliverer.wake.clone(),
        mark,
    )
    .context("the built-in default policy does not load")?;
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
        let mut smtp_config = config.smtp.clone();
        smtp_config.max_connections = match source {
            store::Source::Bypass => caps.bypass,
            _ => caps.policy,
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for SMTP on {addr}"))?;
        let wake = pipeline.wake.clone();
        let m = metrics.clone();
        let shared = Arc::new(Shared {
            config: smtp_config,
            hostname: hostname.clone(),
            queue: queue.clone(),
            tls: tls.clone(),
            source,
            guard: mime::Guard::new(&config.mime, &hostname),
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
        let watched = components.add(
            format!("SMTP receiver, {which}"),
            format!("listening on {addr}"),
        );
        tasks.push(Box::pin(watched.watch(
            smtp::server::serve(listener, shared, stop.clone(), grace),
            stop.clone(),
        )));
    }
    tracing::info!("external recipients are delivered to {}", hops.external);
    tracing::info!("internal recipients are delivered to {}", hops.internal);
    let web_gateway = web::Gateway {
        wake: pipeline.wake.clone(),
        ..web_gateway
    };
    use web::status::{DELIVERY, MAINTENANCE, POLICY};
    let (p, s) = (pipeline.clone(), stop.clone());
    tasks.push(supervised(
        &components,
        POLICY,
        "applies the policy, encrypts, decrypts and signs",
        pipeline.beat.clone(),
        move || p.clone().run(s.clone()),
        &stop,
    ));
    let (m, s) = (pipeline::Maintenance::new(pipeline.clone()), stop.clone());
    tasks.push(supervised(
        &components,
        MAINTENANCE,
        "retries the errored queue, expires quarantine and kept messages, prefetches keys",
        m.beat.clone(),
        move || m.clone().run(s.clone()),
        &stop,
    ));
    let (d, s) = (deliverer.clone(), stop.clone());
    tasks.push(supervised(
        &components,
        DELIVERY,
        "delivers to the next hops",
        deliverer.beat.clone(),
        move || d.clone().run(s.clone()),
        &stop,
    ));
    let render_queue = queue.clone();
    let metrics_clock = clock.clone();
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (queue, metrics, pipeline, components, clock) = (
                render_queue.clone(),
                metrics.clone(),
                pipeline.clone(),
                components.clone(),
                metrics_clock.clone(),
            );
            async move {
                let depth = queue.depth().await.unwrap_or_default();
                let held = queue.quarantine_depth().await.unwrap_or_default();
                let mut text = metrics.render(depth.received, depth.pending, depth.deferred);
                text.push_str(&format!(
                    "# HELP postern_quarantined Messages held in quarantine areas.\n# TYPE postern_quarantined gauge\npostern_quarantined {held}\n"
                ));
                let c = &pipeline.counters;
                text.push_str(&format!(
                    "# HELP postern_queue_errored Recipients waiting in the errored queue for a key.\n# TYPE postern_queue_errored gauge\npostern_queue_errored {}\n\
                     # HELP postern_encrypted_total Sealed messages made.\n# TYPE postern_encrypted_total counter\npostern_encrypted_total {}\n\
                     # HELP postern_decrypted_total Sealed messages opened.\n# TYPE postern_decrypted_total counter\npostern_decrypted_total {}\n\
                     # HELP postern_errored_total Recipients put in the errored queue.\n# TYPE postern_errored_total counter\npostern_errored_total {}\n\
                     # HELP postern_keyserver_up Whether the key server answered the last request.\n# TYPE postern_keyserver_up gauge\npostern_keyserver_up {}\n",
                    depth.errored,
                    c.encrypted.load(Ordering::Relaxed),
                    c.decrypted.load(Ordering::Relaxed),
                    c.errored.load(Ordering::Relaxed),
                    u8::from(!pipeline.keys().is_down()),
                ));
                text.push_str(&components.metrics(clock.now()));
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    text,
                )
            }
        }),
    );
    let token = admin_token(&config.data_dir)?;
    let router = router
        .merge(web::api::router(queue.clone(), token))
        .merge(web::router(web_gateway));
    Ok((router, tasks))
}

/// A loop `make` makes, listed in `components` under `name` with its heartbeat, and started
/// again when it fails ([`crate::supervise::Component::supervise`]).
fn supervised<F, Fut>(
    components: &crate::supervise::Components,
    name: &str,
    detail: &str,
    beat: Arc<std::sync::atomic::AtomicU64>,
    make: F,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Task
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let component = components.add_with_beat(name, detail, beat);
    Box::pin(component.supervise(make, stop.clone()))
}

/// The gateway's key client: the configured key server with the configured token, or the key
/// server in this process with a token it makes for the gateway's domains.
async fn gateway_keys(
    config: &Config,
    settings: &pipeline::Settings,
    local: Option<&Store>,
    clock: SharedClock,
) -> Result<Arc<transform::KeyRing>> {
    let g = &config.gateway;
    let configured_token = match &g.token_file {
        Some(path) => Some(Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("gateway.token_file {}", path.display()))?
                .trim()
                .to_string(),
        )),
        None => std::env::var("POSTERN_GATEWAY_TOKEN")
            .ok()
            .map(Zeroizing::new),
    };
    let (url, token, ca_file) = match (&g.keyserver_url, local) {
        (Some(url), _) => (url.clone(), configured_token, g.keyserver_ca_file.clone()),
        (None, Some(store)) => {
            let mut listen = config.web.listen;
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let scheme = if config.web.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            let token = match configured_token {
                Some(t) => t,
                None => local_token(config, settings, store, clock.now()).await?,
            };
            let ca = g
                .keyserver_ca_file
                .clone()
                .or_else(|| config.web.tls_cert.clone());
            (format!("{scheme}://{listen}"), Some(token), ca)
        }
        (None, None) => bail!(
            "gateway.keyserver_url is needed: the keyserver component does not run in this process"
        ),
    };
    let cache = keys::KeyCache::open_dir(&config.gateway_cache_dir())
        .await
        .with_context(|| {
            format!(
                "cannot open the gateway's key cache in {}",
                config.gateway_cache_dir().display()
            )
        })?;
    let mut client = keys::ClientConfig::new(url.clone());
    client.token = token;
    client.ca_file = ca_file;
    client.retries = 1;
    client.timeout = Duration::from_secs(10);
    let client = keys::KeyClient::new(client, Some(cache))
        .with_context(|| format!("key server {url}"))?
        .with_clock(clock.clone());
    tracing::info!("keys come from {url}");
    Ok(Arc::new(transform::KeyRing::new(client, clock)))
}

/// The token the gateway uses with the key server in its own process, kept in
/// `gateway.token` (mode 0600) and made again when the domains it needs change.
async fn local_token(
    config: &Config,
    settings: &pipeline::Settings,
    store: &Store,
    now: u64,
) -> Result<Zeroizing<String>> {
    let mut domains: Vec<String> = settings
        .internal_domains
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    if let Some(d) = pipeline::run::default_sender(settings) {
        domains.push(d.domain().to_string());
    }
    domains.sort();
    domains.dedup();
    let path = config.data_dir.join("gateway.token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = Zeroizing::new(text.trim().to_string());
        if let Some(info) = store.find_token(&token).await?
            && domains.iter().all(|d| info.domains.contains(d))
        {
            return Ok(token);
        }
    }
    let name = format!("local-gateway-{now}");
    let token = store.create_token(&name, &domains, now).await?;
    let _ = std::fs::remove_file(&path);
    files::write_new(&path, format!("{}\n", *token).as_bytes(), 0o600, false)?;
    tracing::info!(token = %name, domains = ?domains, "made a key server token for this gateway");
    Ok(token)
}

/// The administration API token file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Reads the administration API token, making one on first start.
fn admin_token(data_dir: &Path) -> Result<Zeroizing<String>> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim();
        if token.len() >= 32 {
            return Ok(Zeroizing::new(token.to_string()));
        }
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut *bytes);
    let token = Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let _ = std::fs::remove_file(&path);
    files::write_new(&path, format!("{}\n", *token).as_bytes(), 0o600, false)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!("made the administration API token in {}", path.display());
    Ok(token)
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
fn open_or_create_master_keys(config: &Config, now: u64) -> Result<MasterKeys> {
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
