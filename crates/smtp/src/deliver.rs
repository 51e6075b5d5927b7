//! Delivery workers: take due recipients from the queue, deliver them to their next hop (SMTP
//! with connection reuse, or a Maildir), and record each recipient's outcome: delivered, deferred
//! with exponential backoff, or bounced with a delivery status notification to the sender.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::{Delivery, Outcome, Queue, Route};
use tokio::sync::{Notify, Semaphore, watch};

use crate::client::{ClientError, Connection};
use crate::config::{DeliveryConfig, Hops, NextHop};
use crate::metrics::Metrics;

/// The delivery side of the gateway.
pub struct Deliverer {
    queue: Queue,
    config: DeliveryConfig,
    hops: Hops,
    hostname: String,
    /// Concurrency per next hop: one for each distinct destination.
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    idle: Mutex<HashMap<String, Vec<Connection>>>,
    metrics: Arc<Metrics>,
    /// Wakes the workers when new mail is routed.
    pub wake: Arc<Notify>,
    /// When the delivery loop last came round (Unix seconds), for the status page.
    pub beat: Arc<std::sync::atomic::AtomicU64>,
}

/// What one attempt for one recipient came to, with the next hop's reply (or why there was
/// none).
enum Attempt {
    /// The next hop took it.
    Delivered(String),
    /// A failure that may pass: tried again until the queue lifetime ends.
    Temporary(String),
    /// Refused for good.
    Permanent(String),
}

/// Idle connections kept per next hop.
const MAX_IDLE: usize = 32;

impl Deliverer {
    /// A deliverer to `hops` and the hosts policies hand off to.
    pub fn new(
        queue: Queue,
        config: DeliveryConfig,
        hops: Hops,
        hostname: String,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let now = queue.clock().now();
        Arc::new(Deliverer {
            queue,
            config,
            hops,
            hostname,
            limits: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            metrics,
            wake: Arc::new(Notify::new()),
            beat: Arc::new(now.into()),
        })
    }

    /// Runs until `stop` turns true: each round claims what is due and delivers it.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let lease = Duration::from_secs(self.config.timeout_secs * 4 + 60);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            self.beat.store(
                self.queue.clock().now(),
                std::sync::atomic::Ordering::Relaxed,
            );
            let due = match self.queue.due(256, lease).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the queue");
                    Vec::new()
                }
            };
            let busy = !due.is_empty();
            // One read for the batch's small messages; the others are read in turn.
            let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
            let bodies = self.queue.bodies(&ids).await.unwrap_or_default();
            for d in due {
                let body = bodies.get(&d.id).cloned();
                let me = self.clone();
                let Some(route) = &d.hop else {
                    tracing::error!(queue_id = %d.id, "due for delivery without a next hop");
                    continue;
                };
                let limit = self.limit(&self.hops.of(route));
                tasks.spawn(async move {
                    let Ok(_permit) = limit.acquire_owned().await else {
                        return;
                    };
                    me.deliver(d, body).await;
                });
            }
            while tasks.try_join_next().is_some() {}
            if busy && tasks.len() < 512 {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Let attempts in flight finish; their leases cover a crash anyway.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }

    /// The concurrency limit of the destination `hop` leads to: routes that lead to the same
    /// destination (both to one smarthost, a hand-off to it) share one.
    fn limit(&self, hop: &NextHop) -> Arc<Semaphore> {
        let mut limits = match self.limits.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        limits
            .entry(hop.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.concurrency_per_hop.max(1))))
            .clone()
    }

    fn backoff(&self, attempts: u32) -> u64 {
        let factor = 1u64.checked_shl(attempts.min(30)).unwrap_or(u64::MAX);
        self.config
            .retry_initial_secs
            .saturating_mul(factor)
            .min(self.config.retry_max_secs)
    }

    async fn deliver(&self, d: Delivery, body: Option<store::Body>) {
        let Some(route) = d.hop.clone() else {
            return;
        };
        let hop = self.hops.of(&route);
        let body = match body {
            Some(b) => Ok(b),
            None => self.queue.body(&d.id).await,
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                // Left leased: it is tried again when the lease ends, as after a crash.
                tracing::error!(queue_id = %d.id, error = %e, "cannot read the message to deliver");
                return;
            }
        };
        let addresses: Vec<String> = d.recipients.iter().map(|(_, a)| a.clone()).collect();
        let results: Vec<Attempt> = match &hop {
            NextHop::Maildir(root) => {
                let mut out = Vec::new();
                for a in &addresses {
                    let (root, sender, a2, body) =
                        (root.clone(), d.sender.clone(), a.clone(), body.clone());
                    let r = tokio::task::spawn_blocking(move || {
                        crate::maildir::deliver(&root, &sender, &a2, &body)
                    })
                    .await;
                    out.push(match r {
                        Ok(Ok(name)) => {
                            Attempt::Delivered(format!("delivered to maildir as {name}"))
                        }
                        Ok(Err(e)) => Attempt::Temporary(format!("maildir: {e}")),
                        Err(e) => Attempt::Temporary(format!("maildir: {e}")),
                    });
                }
                out
            }
            NextHop::Smtp { host, port } => {
                match self.smtp(&d, &route, host, *port, &addresses, &body).await {
                    Ok(replies) => replies
                        .into_iter()
                        .map(|r| {
                            if r.is_ok() {
                                Attempt::Delivered(r.to_string())
                            } else if r.is_permanent() {
                                Attempt::Permanent(r.to_string())
                            } else {
                                Attempt::Temporary(r.to_string())
                            }
                        })
                        .collect(),
                    Err(e) => addresses
                        .iter()
                        .map(|_| {
                            if e.is_transient() {
                                Attempt::Temporary(e.to_string())
                            } else {
                                Attempt::Permanent(e.to_string())
                            }
                        })
                        .collect(),
                }
            }
        };
        let now = self.queue.clock().now();
        let expired = now.saturating_sub(d.received_at) >= self.config.queue_lifetime_secs;
        let mut outcomes = Vec::with_capacity(results.len());
        let mut bounced = Vec::new();
        for ((rid, address), result) in d.recipients.iter().zip(results) {
            let outcome = match result {
                Attempt::Delivered(reply) => {
                    self.metrics.delivered.inc();
                    self.metrics
                        .observe_latency(now.saturating_sub(d.received_at) as f64);
                    tracing::info!(queue_id = %d.id, recipient = %address, hop = %hop, "delivered: {reply}");
                    Outcome::Delivered(reply)
                }
                Attempt::Temporary(reply) if !expired => {
                    let retry_at = now + self.backoff(d.attempts);
                    self.metrics.deferred.inc();
                    tracing::warn!(queue_id = %d.id, recipient = %address, hop = %hop, retry_in = retry_at - now, "deferred: {reply}");
                    Outcome::Deferred { retry_at, reply }
                }
                failed => {
                    let reply = match failed {
                        Attempt::Temporary(reply) => {
                            format!("gave up after the queue lifetime; last error: {reply}")
                        }
                        Attempt::Permanent(reply) | Attempt::Delivered(reply) => reply,
                    };
                    self.metrics.bounced.inc();
                    tracing::warn!(queue_id = %d.id, recipient = %address, hop = %hop, "bounced: {reply}");
                    bounced.push((address.clone(), reply.clone()));
                    Outcome::Bounced(reply)
                }
            };
            outcomes.push((*rid, outcome));
        }
        // The null sender (a notification itself) never gets one back.
        if !bounced.is_empty()
            && !d.sender.is_empty()
            && let Err(e) = self.notify_sender(&d, &bounced).await
        {
            tracing::error!(queue_id = %d.id, error = %e, "cannot queue the delivery status notification");
        }
        if let Err(e) = self.queue.record(&d.id, &outcomes).await {
            tracing::error!(queue_id = %d.id, error = %e, "cannot record delivery results; the lease will expire and they will be retried");
        }
    }

    async fn smtp(
        &self,
        d: &Delivery,
        route: &Route,
        host: &str,
        port: u16,
        recipients: &[String],
        body: &store::Body,
    ) -> Result<Vec<crate::client::Reply>, ClientError> {
        let tls = self.config.starttls_for(route);
        let key = format!("{host}:{port}:{tls:?}");
        let reused = self
            .idle
            .lock()
            .ok()
            .and_then(|mut m| m.get_mut(&key).and_then(Vec::pop));
        let timeout = Duration::from_secs(self.config.timeout_secs);
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => Connection::open(host, port, &self.hostname, tls, timeout).await?,
        };
        let result = conn.send_body(&d.sender, recipients, body).await;
        let result = match result {
            // A reused connection may have been closed by the server meanwhile: one fresh try.
            Err(ClientError::Network(_)) if was_reused => {
                let mut fresh = Connection::open(host, port, &self.hostname, tls, timeout).await?;
                let r = fresh.send_body(&d.sender, recipients, body).await;
                conn = fresh;
                r
            }
            other => other,
        };
        match result {
            Ok(replies) => {
                if let Ok(mut idle) = self.idle.lock() {
                    let list = idle.entry(key).or_default();
                    if list.len() < MAX_IDLE {
                        list.push(conn);
                    }
                }
                Ok(replies)
            }
            Err(e) => Err(e),
        }
    }

    /// Queues a delivery status notification (RFC 3464) to the sender for `failed` recipients.
    async fn notify_sender(
        &self,
        d: &Delivery,
        failed: &[(String, String)],
    ) -> Result<(), store::QueueError> {
        let id = crate::dsn::queue(&self.queue, &self.hostname, d, failed).await?;
        tracing::info!(queue_id = %id, original = %d.id, "queued a delivery status notification to {}", d.sender);
        Ok(())
    }
}
