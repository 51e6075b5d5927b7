//! The mail path in this process: the queue, the SMTP listeners, the pipeline and its
//! maintenance, the delivery workers, each supervised; `/metrics`, the REST API and the pages.

use super::key_server::local_token;
use super::*;

/// Starts the SMTP listeners, the pipeline and the delivery workers; returns the `/metrics`
/// route and the tasks to wait for at shutdown.
pub(super) async fn start_mail(
    config: &Config,
    caps: &Caps,
    stop: tokio::sync::watch::Receiver<bool>,
    local_keyserver: Option<&Store>,
    code_relay: Option<Arc<keyserver::relay::RelayHealth>>,
    editor: Arc<crate::console_config::Editor>,
    clock: SharedClock,
) -> Result<(axum::Router, Vec<Task>)> {
    use smtp::session::Shared;

    let hostname = hostname(config);
    let node = store::node::load_or_make(&config.data_dir, config.store.node_id.as_deref())
        .context("store.node_id")?;
    let options = store::QueueOptions {
        clock: clock.clone(),
        node: node.clone(),
        inline_limit: config.store.inline_limit,
    };
    let queue = store::Queue::open_with_options(&config.queue_dir(), options)
        .await
        .with_context(|| format!("cannot open the queue in {}", config.queue_dir().display()))?;
    tracing::info!("this node is {node} in the queue's claims and leases");
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
    let relay = code_relay.map(|r| Arc::new(crate::code_relay::CodeRelay(r)));
    if let Some(relay) = &relay {
        components.add_check(relay.clone());
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
                m.received.inc();
                m.received_bytes.inc_by(size);
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
    let mut exposition = super::metrics::Exposition::new(queue.clone(), pipeline.keys().clone());
    metrics.register(exposition.registry());
    pipeline.counters.register(exposition.registry());
    exposition.collector(components.clone());
    if let Some(relay) = relay {
        exposition.collector(relay);
    }
    let exposition = Arc::new(exposition);
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let exposition = exposition.clone();
            async move { exposition.answer().await }
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
pub(super) fn supervised<F, Fut>(
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
pub(super) async fn gateway_keys(
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

/// The administration API token file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Reads the administration API token, making one on first start.
pub(super) fn admin_token(data_dir: &Path) -> Result<Zeroizing<String>> {
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
