//! The decision step between receiving and delivering: claims received messages, decides each
//! recipient's next hop, and hands them to delivery. Until the policy engine arrives, mail on the
//! policy port passes through unchanged, like mail on the bypass port: internal recipients go to
//! the internal next hop, the rest to the external one.

use std::sync::Arc;
use std::time::Duration;

use store::Queue;
use tokio::sync::{Notify, watch};

/// Routes received messages.
pub struct Pipeline {
    queue: Queue,
    internal_domains: Vec<String>,
    /// Wakes the pipeline when a message is accepted.
    pub wake: Arc<Notify>,
    delivery: Arc<Notify>,
}

impl Pipeline {
    /// A pipeline that wakes `delivery` when it has routed mail.
    pub fn new(queue: Queue, internal_domains: Vec<String>, delivery: Arc<Notify>) -> Arc<Self> {
        Arc::new(Pipeline {
            queue,
            internal_domains: internal_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            wake: Arc::new(Notify::new()),
            delivery,
        })
    }

    /// The next hop for a recipient.
    pub fn hop_for(&self, recipient: &str) -> &'static str {
        let domain = recipient
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        if self.internal_domains.contains(&domain) {
            "internal"
        } else {
            "external"
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let claimed = match self.queue.claim_received(256).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read received messages");
                    Vec::new()
                }
            };
            let busy = !claimed.is_empty();
            let batch: Vec<(String, Vec<(String, String)>)> = claimed
                .into_iter()
                .map(|(id, envelope)| {
                    let routes = envelope
                        .recipients
                        .iter()
                        .map(|r| (r.clone(), self.hop_for(r).to_string()))
                        .collect();
                    (id, routes)
                })
                .collect();
            if !batch.is_empty() {
                match self.queue.route_batch(&batch).await {
                    Ok(()) => tracing::debug!(messages = batch.len(), "routed"),
                    // Left in processing: routed again at the next start.
                    Err(e) => tracing::error!(error = %e, messages = batch.len(), "cannot route"),
                }
            }
            if busy {
                self.delivery.notify_one();
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
