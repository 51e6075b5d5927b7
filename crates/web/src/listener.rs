//! The web listener: HTTP/1.1 (over TLS when configured) for the reader, the console, the APIs
//! and `/metrics`, with the limits a server on the internet needs.
//!
//! - At most `max_connections` at once and `max_connections_per_client` from one address; when
//!   all are taken, a connection waiting for a request, from the address that holds the most,
//!   is closed to make room (see [`admission`]), so unfinished requests cannot keep out a
//!   client that sends whole ones.
//! - A request head must arrive whole within `header_timeout` (hyper's header timer, which
//!   also bounds the wait for the next request on a kept-alive connection), a TLS handshake
//!   within the same time, and no connection lives longer than `connection_lifetime`.
//! - On stop, no new connections; open ones finish the request under way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admission::{Admission, Refused};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// What the listener allows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connections at once from one client address.
    pub max_connections_per_client: usize,
    /// Longest wait for a whole request head (and for a TLS handshake).
    pub header_timeout: Duration,
    /// Longest a connection may stay open, whatever it does.
    pub connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1000,
            max_connections_per_client: 100,
            header_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Longest a stopping listener waits for open connections to finish their request.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `tcp` until `stop` turns true.
pub async fn serve(
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Admission::new(limits.max_connections, limits.max_connections_per_client);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file handles and the like: the connection waits in the backlog.
                tracing::warn!(error = %e, "web: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match slots.admit(peer.ip()) {
            Ok(slot) => Arc::new(slot),
            Err(refused) => {
                tracing::debug!(%peer, ?refused, "web: connection refused");
                if tls.is_none() {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            let _ = stream.write_all(refusal(refused).as_bytes()).await;
                            let _ = stream.shutdown().await;
                        })
                        .await;
                    });
                }
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            match tls {
                None => connection(stream, peer, app, slot, &limits, stop).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        h = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)) => h,
                        _ = slot.evicted() => return,
                    };
                    match handshake {
                        Ok(Ok(tls)) => connection(tls, peer, app, slot, &limits, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(tcp);
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// The answer to a connection that gets no slot (plain HTTP only).
fn refusal(refused: Refused) -> String {
    let text = match refused {
        Refused::Full => "The server is busy: too many connections. Try again in a moment.\n",
        Refused::PerClient => "Too many connections from your address. Try again in a moment.\n",
    };
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Retry-After: 5\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
}

/// Serves one connection's requests until it ends, is evicted, outlives its lifetime or the
/// listener stops.
async fn connection<S>(
    io: S,
    peer: SocketAddr,
    app: Router,
    slot: Arc<admission::Slot>,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_slot = slot.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        service_slot.working();
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        let slot = service_slot.clone();
        async move {
            let response = tower_service::Service::call(&mut app, request).await;
            // The response body may still be streaming; the connection then waits for the
            // next request, which is when it may be chosen to make room.
            slot.waiting();
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = slot.evicted() => {
            tracing::debug!(%peer, "web: stalled connection closed to make room");
            return;
        }
        _ = tokio::time::sleep(limits.connection_lifetime) => None,
        _ = stop.wait_for(|s| *s) => None,
    };
    match ended {
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "web: connection ended"),
        Some(Ok(())) => {}
        None => {
            // Finish the request under way, if any, then close.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(STOP_GRACE, conn.as_mut()).await;
        }
    }
}
