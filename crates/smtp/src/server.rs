//! The SMTP listeners: connection limits in total and per client (with room made by closing
//! a waiting session of the client that holds the most), STARTTLS certificates, and a graceful stop (no new
//! connections; open sessions finish the transaction under way and are then told 421).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use admission::{Admission, Refused};

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

/// Serves SMTP on `listener` until `stop` turns true, then waits (up to `grace`) for open
/// sessions to end.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let slots = Admission::new(
        shared.config.max_connections,
        shared.config.max_connections_per_client,
    );
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (mut tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: the connection waits in the backlog; try again shortly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let slot = match slots.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                let text = match refused {
                    Refused::Full => "421 4.7.0 too many connections; try again later\r\n",
                    Refused::PerClient => {
                        "421 4.7.0 too many connections from your address; try again later\r\n"
                    }
                };
                tracing::info!(%peer, "connection refused: {}", text.trim_end());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        let _ = tcp.write_all(text.as_bytes()).await;
                        let _ = tcp.shutdown().await;
                    })
                    .await;
                });
                continue;
            }
        };
        let shared = shared.clone();
        let stop = stop.clone();
        sessions.spawn(session::run(shared, tcp, peer, slot, stop));
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    sessions.abort_all();
}
