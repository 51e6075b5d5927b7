//! `/metrics`: every part's counters in one OpenMetrics registry, with the queue's depths read
//! from the database at each scrape. When a depth cannot be read the answer is 503, not a 0
//! that would tell the monitoring the queue is empty when nothing is known.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use transform::KeyRing;

/// The media type of what `prometheus_client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A queue depth's label: the state it counts.
type StateLabel = [(&'static str, &'static str); 1];

/// The registry and the gauges set from the database before each encoding.
pub(super) struct Exposition {
    registry: Registry,
    queue: store::Queue,
    keys: Arc<KeyRing>,
    depth: Family<StateLabel, Gauge>,
    errored: Gauge,
    quarantined: Gauge,
    keyserver_up: Gauge,
    /// One scrape at a time, so that the gauges encoded are the ones this scrape read.
    scrape: tokio::sync::Mutex<()>,
}

impl Exposition {
    /// The database gauges of `queue`, the key server's reachability as `keys` last found
    /// it; the parts add their own counters with [`Exposition::registry`] and
    /// [`Exposition::collector`].
    pub(super) fn new(queue: store::Queue, keys: Arc<KeyRing>) -> Self {
        let mut registry = Registry::default();
        let depth = Family::<StateLabel, Gauge>::default();
        let (errored, quarantined, keyserver_up) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "postern_queue_depth",
            "Messages waiting for the policy (received), recipients waiting to be sent (pending) or retried (deferred)",
            depth.clone(),
        );
        registry.register(
            "postern_queue_errored",
            "Recipients waiting in the errored queue for a key",
            errored.clone(),
        );
        registry.register(
            "postern_quarantined",
            "Messages held in quarantine areas",
            quarantined.clone(),
        );
        registry.register(
            "postern_keyserver_up",
            "Whether the key server answered the last request",
            keyserver_up.clone(),
        );
        Exposition {
            registry,
            queue,
            keys,
            depth,
            errored,
            quarantined,
            keyserver_up,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Where a part registers its counters.
    pub(super) fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Adds metrics read at each scrape (the components, the code relay).
    pub(super) fn collector(&mut self, c: impl Collector) {
        self.registry.register_collector(Box::new(c));
    }

    /// The text of one scrape, or why there is none.
    async fn render(&self) -> Result<String, Unreadable> {
        let _one = self.scrape.lock().await;
        let depth = self.queue.depth().await?;
        let held = self.queue.quarantine_depth().await?;
        for (state, n) in [
            ("received", depth.received),
            ("pending", depth.pending),
            ("deferred", depth.deferred),
        ] {
            self.depth.get_or_create(&[("state", state)]).set(gauge(n));
        }
        self.errored.set(gauge(depth.errored));
        self.quarantined.set(gauge(held));
        self.keyserver_up.set(i64::from(!self.keys.is_down()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|_| Unreadable::Encoding)?;
        Ok(text)
    }

    /// The answer to `GET /metrics`.
    pub(super) async fn answer(&self) -> Response {
        match self.render().await {
            Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
            Err(Unreadable::Database(e)) => {
                tracing::warn!("/metrics: the queue database could not be read: {e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the queue database could not be read, so the queue's depths are unknown; the gateway's log says why\n",
                )
                    .into_response()
            }
            Err(Unreadable::Encoding) => {
                tracing::error!("/metrics: a metric could not be encoded");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "a metric could not be encoded; the gateway's log says so\n",
                )
                    .into_response()
            }
        }
    }
}

/// Why a scrape has no text.
enum Unreadable {
    /// A depth could not be read.
    Database(store::QueueError),
    /// A metric failed to write itself (a collector's bug).
    Encoding,
}

impl From<store::QueueError> for Unreadable {
    fn from(e: store::QueueError) -> Self {
        Unreadable::Database(e)
    }
}

/// A count as a gauge's value (counts beyond `i64` do not happen; they would show as the most).
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
