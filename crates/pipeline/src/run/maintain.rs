//! Maintenance beside the policy loop: the errored queue's clock (retries when due, everything
//! at once when the key server answers again, bounces past the lifetime), expiry of quarantine
//! and kept messages, and the key prefetch for next month.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use envelope::{Address, Epoch};
use keys::KeyKind;
use store::{ErroredFilter, Outcome};
use tokio::sync::watch;

use super::Pipeline;
use crate::notify;

/// The pipeline's maintenance loop. The prefetch runs in a task of its own, so that a long one
/// holds nothing up; one runs at a time.
#[derive(Clone)]
pub struct Maintenance {
    pipeline: Arc<Pipeline>,
    /// When the loop last came round (Unix seconds), for the status page.
    pub beat: Arc<AtomicU64>,
    prefetching: Arc<AtomicBool>,
}

impl Maintenance {
    /// The maintenance of `pipeline`'s queue and keys.
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        let now = pipeline.now();
        Maintenance {
            pipeline,
            beat: Arc::new(now.into()),
            prefetching: Arc::new(false.into()),
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let g = &self.pipeline.settings.gateway;
        let mut last_probe = 0u64;
        let mut was_down = false;
        let mut last_expiry = 0u64;
        // The start swept already.
        let mut last_sweep = self.pipeline.now();
        let mut last_prefetch = 0u64;
        let started = self.pipeline.now();
        loop {
            if *stop.borrow() {
                return;
            }
            let now = self.pipeline.now();
            self.beat.store(now, Ordering::Relaxed);
            let down = self.pipeline.keys.is_down();
            if down && !was_down {
                // The first check comes one probe interval after the outage is noticed.
                last_probe = now;
            }
            was_down = down;
            if down && now >= last_probe + g.keyserver_probe_secs {
                last_probe = now;
                // A probe waits for the key server's timeout; a shutdown does not wait for it.
                let answered = tokio::select! {
                    up = self.pipeline.keys.probe() => up,
                    _ = stop.changed() => return,
                };
                if answered {
                    match self
                        .pipeline
                        .queue
                        .requeue_errored(u64::MAX, &ErroredFilter::default())
                        .await
                    {
                        Ok(n) if n > 0 => {
                            tracing::info!(
                                recipients = n,
                                "the key server is back: retrying the errored queue"
                            );
                            self.pipeline.wake.notify_one();
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "cannot retry the errored queue"),
                    }
                }
            }
            // Files a crash left between placing them and committing their rows.
            if now >= last_sweep + 600 {
                last_sweep = now;
                match self.pipeline.queue.sweep_orphans().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(files = n, "removed spool files no queue row names"),
                    Err(e) => tracing::error!(error = %e, "cannot sweep the spool"),
                }
            }
            // Bounces first: a recipient past its lifetime is not retried once more.
            if now >= last_expiry + 5 {
                last_expiry = now;
                self.expire(now).await;
                match self.pipeline.queue.expire_quarantine(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        messages = n,
                        "deleted from quarantine: past their area's retention"
                    ),
                    Err(e) => tracing::error!(error = %e, "cannot expire the quarantine"),
                }
                match self.pipeline.queue.expire_kept(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        messages = n,
                        "removed kept sealed messages: their links have expired"
                    ),
                    Err(e) => tracing::error!(error = %e, "cannot remove expired kept messages"),
                }
            }
            match self
                .pipeline
                .queue
                .requeue_errored(now, &ErroredFilter::default())
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(recipients = n, "retrying errored messages");
                    self.pipeline.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot retry the errored queue"),
            }
            // The first prefetch waits a little, so that a key server in this process is up.
            if now >= started + 5
                && now >= last_prefetch + g.prefetch_interval_secs
                && !self.prefetching.swap(true, Ordering::AcqRel)
            {
                last_prefetch = now;
                let me = self.clone();
                tokio::spawn(async move {
                    // Cleared however the prefetch ends, a panic included.
                    struct Done(Arc<AtomicBool>);
                    impl Drop for Done {
                        fn drop(&mut self) {
                            self.0.store(false, Ordering::Release);
                        }
                    }
                    let _done = Done(me.prefetching.clone());
                    me.prefetch().await;
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Bounces errored recipients past the lifetime, with the reason, to the sender.
    async fn expire(&self, now: u64) {
        let cutoff = now.saturating_sub(self.pipeline.settings.gateway.errored_lifetime_secs);
        let expired = match self.pipeline.queue.expired_errored(cutoff).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the errored queue");
                return;
            }
        };
        for (d, reasons) in expired {
            let failed: Vec<(String, String)> = d
                .recipients
                .iter()
                .zip(&reasons)
                .map(|((_, a), r)| {
                    (
                        a.clone(),
                        format!("5.7.0 could not be encrypted or decrypted in time: {r}"),
                    )
                })
                .collect();
            // A forward to decrypt that could not be answered in time is dropped without a
            // word: its sender may be forged, and a bounce would reach a stranger.
            let told: Vec<(String, String)> = failed
                .iter()
                .filter(|(a, _)| !self.pipeline.is_decrypt_address(a))
                .cloned()
                .collect();
            if !d.sender.is_empty()
                && !told.is_empty()
                && let Err(e) = self.bounce(&d, &told).await
            {
                tracing::error!(queue_id = %d.id, error = %e, "cannot queue the notification; trying again later");
                continue;
            }
            let outcomes: Vec<(i64, Outcome)> = d
                .recipients
                .iter()
                .zip(failed)
                .map(|((rid, _), (_, why))| (*rid, Outcome::Bounced(why)))
                .collect();
            tracing::warn!(queue_id = %d.id, recipients = outcomes.len(), "errored past its lifetime: bounced to the sender");
            if let Err(e) = self.pipeline.queue.record(&d.id, &outcomes).await {
                tracing::error!(queue_id = %d.id, error = %e, "cannot record the bounce");
            }
        }
    }

    async fn bounce(
        &self,
        d: &store::Delivery,
        failed: &[(String, String)],
    ) -> Result<(), store::QueueError> {
        notify::bounce(
            &self.pipeline.queue,
            &self.pipeline.settings.hostname,
            d,
            failed,
        )
        .await?;
        self.pipeline.wake.notify_one();
        Ok(())
    }

    /// Fetches this month's and, inside the prefetch window, next month's decryption and
    /// signing keys for the gateway's users into the key cache.
    pub async fn prefetch(&self) {
        let g = &self.pipeline.settings.gateway;
        let now = self.pipeline.keys.now();
        let this = Epoch::from_unix(now);
        let next = this.next();
        let mut epochs = vec![this];
        if now + u64::from(g.prefetch_days) * 86_400 >= next.start_unix() {
            epochs.push(next);
        }
        let since = self
            .pipeline
            .now()
            .saturating_sub(u64::from(g.prefetch_seen_days) * 86_400);
        let mut addresses: Vec<Address> = match self.pipeline.queue.users_seen(since).await {
            Ok(list) => list.iter().filter_map(|a| Address::parse(a).ok()).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot list the users seen");
                Vec::new()
            }
        };
        addresses.extend(
            g.prefetch_addresses
                .iter()
                .filter_map(|a| Address::parse(a).ok()),
        );
        addresses.extend(self.pipeline.default_sender.clone());
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return;
        }
        if self.pipeline.keys.params().await.is_err() {
            tracing::warn!("prefetch: no public parameters; trying again later");
            return;
        }
        for epoch in epochs {
            let report = self
                .pipeline
                .keys
                .client()
                .prefetch(epoch, &addresses, &[KeyKind::Decrypt, KeyKind::Sign])
                .await;
            tracing::info!(
                epoch = %epoch,
                fetched = report.fetched,
                cached = report.cached,
                failed = report.failed.len(),
                "prefetched keys"
            );
            for (a, kind, e) in report.failed.iter().take(5) {
                tracing::debug!(address = %a, kind = ?kind, error = %e, "prefetch failed");
            }
        }
    }
}
