//! The SMTP listeners: connection limits in total and per client, STARTTLS certificates, and a
//! graceful stop (no new connections; open sessions may finish).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::session::{self, Shared};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("STARTTLS certificate: {0}")]
pub struct TlsSetupError(pub String);

/// A STARTTLS acceptor from PEM files, or from a self-signed certificate for `hostname`.
pub fn tls_acceptor(
    cert: Option<&Path>,
    key: Option<&Path>,
    hostname: &str,
) -> Result<TlsAcceptor, TlsSetupError> {
    let (certs, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = match (cert, key) {
        (Some(cert), Some(key)) => {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| TlsSetupError(format!("{}: {e}", p.display())))
            };
            let cert_pem = read(cert)?;
            let key_pem = read(key)?;
            let certs = rustls_pemfile::certs(&mut &cert_pem[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsSetupError(format!("{}: {e}", cert.display())))?;
            let key = rustls_pemfile::private_key(&mut &key_pem[..])
                .map_err(|e| TlsSetupError(format!("{}: {e}", key.display())))?
                .ok_or_else(|| TlsSetupError(format!("{} holds no private key", key.display())))?;
            (certs, key)
        }
        _ => {
            let made = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
                .map_err(|e| TlsSetupError(e.to_string()))?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
            (vec![made.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Counts open connections, in total and per client address.
#[derive(Default)]
struct Counter {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

struct Slot {
    counter: Arc<Mutex<Counter>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counter.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_client.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_client.remove(&self.ip);
                }
            }
        }
    }
}

/// Serves SMTP on `listener` until `stop` turns true, then waits (up to `grace`) for open
/// sessions to end.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let counter = Arc::new(Mutex::new(Counter::default()));
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (mut tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let refusal = {
            let Ok(mut c) = counter.lock() else { break };
            let per = c.per_client.get(&peer.ip()).copied().unwrap_or(0);
            if c.total >= shared.config.max_connections {
                Some("421 4.7.0 too many connections; try again later\r\n")
            } else if per >= shared.config.max_connections_per_client {
                Some("421 4.7.0 too many connections from your address; try again later\r\n")
            } else {
                c.total += 1;
                *c.per_client.entry(peer.ip()).or_default() += 1;
                None
            }
        };
        if let Some(text) = refusal {
            tracing::info!(%peer, "connection refused: {}", text.trim_end());
            tokio::spawn(async move {
                let _ = tcp.write_all(text.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
            continue;
        }
        let slot = Slot {
            counter: counter.clone(),
            ip: peer.ip(),
        };
        let shared = shared.clone();
        sessions.spawn(async move {
            let _slot = slot;
            session::run(shared, tcp, peer).await;
        });
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    sessions.abort_all();
}
