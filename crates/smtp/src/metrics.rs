//! The mail path's counters for `/metrics`: what was accepted and what became of each
//! recipient. The binary registers them with the other parts' in one registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Latency buckets in seconds, from acceptance to delivery. Acceptance is stored to the
/// second, so the lower buckets say "within the same second".
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0];

/// The mail path's counters. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Messages accepted with 250.
    pub received: Counter,
    /// Bytes accepted.
    pub received_bytes: Counter,
    /// Recipient deliveries that succeeded.
    pub delivered: Counter,
    /// Recipient deliveries put off for a retry.
    pub deferred: Counter,
    /// Recipient deliveries refused for good.
    pub bounced: Counter,
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            received: Counter::default(),
            received_bytes: Counter::default(),
            delivered: Counter::default(),
            deferred: Counter::default(),
            bounced: Counter::default(),
            latency: Histogram::new(BUCKETS),
        }
    }
}

impl Metrics {
    /// Records the time from acceptance to delivery.
    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Adds the counters to `registry` under their `postern_` names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "postern_messages_received",
            "Messages accepted with 250",
            self.received.clone(),
        );
        registry.register_with_unit(
            "postern_received",
            "Bytes of accepted messages",
            Unit::Bytes,
            self.received_bytes.clone(),
        );
        registry.register(
            "postern_deliveries",
            "Recipient deliveries that succeeded",
            self.delivered.clone(),
        );
        registry.register(
            "postern_deferrals",
            "Recipient deliveries put off for a retry",
            self.deferred.clone(),
        );
        registry.register(
            "postern_bounces",
            "Recipient deliveries refused for good",
            self.bounced.clone(),
        );
        registry.register_with_unit(
            "postern_delivery_latency",
            "From acceptance to delivery",
            Unit::Seconds,
            self.latency.clone(),
        );
    }
}
