//! Counters for Prometheus (`/metrics`): kept as atomics, rendered in the text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency buckets in seconds, from acceptance to delivery.
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0];

/// The mail path's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages accepted with 250.
    pub received: AtomicU64,
    /// Bytes accepted.
    pub received_bytes: AtomicU64,
    /// Recipient deliveries that succeeded.
    pub delivered: AtomicU64,
    /// Recipient deliveries put off for a retry.
    pub deferred: AtomicU64,
    /// Recipient deliveries refused for good.
    pub bounced: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
}

impl Metrics {
    /// Records the time from acceptance to delivery.
    pub fn observe_latency(&self, seconds: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ms
            .fetch_add((seconds * 1000.0) as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the queue depths given.
    pub fn render(&self, received_waiting: u64, pending: u64, deferred_waiting: u64) -> String {
        let mut s = String::new();
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            &mut s,
            "postern_messages_received_total",
            "Messages accepted with 250.",
            self.received.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "postern_received_bytes_total",
            "Bytes of accepted messages.",
            self.received_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "postern_deliveries_total",
            "Recipient deliveries that succeeded.",
            self.delivered.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "postern_deferrals_total",
            "Recipient deliveries put off for a retry.",
            self.deferred.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "postern_bounces_total",
            "Recipient deliveries refused for good.",
            self.bounced.load(Ordering::Relaxed),
        );
        let _ = write!(
            s,
            "# HELP postern_queue_depth Messages and recipients waiting.\n# TYPE postern_queue_depth gauge\n\
             postern_queue_depth{{state=\"received\"}} {received_waiting}\n\
             postern_queue_depth{{state=\"pending\"}} {pending}\n\
             postern_queue_depth{{state=\"deferred\"}} {deferred_waiting}\n"
        );
        let _ = write!(
            s,
            "# HELP postern_delivery_latency_seconds From acceptance to delivery.\n# TYPE postern_delivery_latency_seconds histogram\n"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "postern_delivery_latency_seconds_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "postern_delivery_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "postern_delivery_latency_seconds_sum {}",
            self.latency_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(s, "postern_delivery_latency_seconds_count {count}");
        s
    }
}
