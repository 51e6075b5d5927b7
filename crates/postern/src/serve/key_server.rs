//! The key server in this process: the master keys opened (made on a first run, with a
//! generated passphrase), its sweeper, the relay for code emails checked now and then, and
//! the token the gateway in this process uses with it.

use envelope::vault::{self, DEFAULT_KDF};
use envelope::{MasterKeys, MasterSecretKey};

use super::*;
use crate::keys_cmd::{MASTER_FILE, PARAMS_FILE};
use crate::passphrase;

/// Seconds between two checks of the relay for code emails, besides the check before each code.
const RELAY_CHECK_SECS: u64 = 120;

/// Opens the master keys and starts the key server over `store`, with its sweeper and the
/// periodic check of the relay for code emails; checks that relay now and warns when it does
/// not answer, since recipients then get no code.
pub(super) async fn start_keyserver(
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

/// The token the gateway uses with the key server in its own process, kept in
/// `gateway.token` (mode 0600) and made again when the domains it needs change.
pub(super) async fn local_token(
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

/// Opens the master keys with the passphrase; on a first run with no passphrase configured,
/// makes keys and a random passphrase file beside them.
pub(super) fn open_or_create_master_keys(config: &Config, now: u64) -> Result<MasterKeys> {
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
