//! Supervision of the gateway's background tasks, and their state as the status page and
//! `/metrics` see them: running, stopped (and why), or stalled (its loop has not come round for
//! too long).
//!
//! `serve` runs each task under [`Component::watch`] (the SMTP listeners) or
//! [`Component::supervise`] (the loops, restarted when they fail) and hands its loop's
//! heartbeat, so that the console reports what the process is doing rather than what it was
//! told to do. The pages see them through [`web::status::Status`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use clock::SharedClock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use web::status::{Report, State, Status};

/// A loop that has not come round for this long (seconds) is reported as stalled. Long enough
/// for a large batch behind a slow key server; short enough to be seen before users complain.
/// A supervised loop that failed within this long is reported as stalled too.
pub const STALL_SECS: u64 = 300;

/// Failures in a row (each run shorter than [`STALL_SECS`]) after which a supervised loop is
/// left stopped: a fault that comes back at once is not retried for ever.
pub const FAILURES_IN_A_ROW: u32 = 5;

/// A lock that outlives a panic elsewhere: what it guards stays meaningful (counts, text).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One background task of the gateway.
pub struct Component {
    name: String,
    detail: String,
    /// Why it stopped, once it has.
    ended: Mutex<Option<String>>,
    /// Restarts after a failure, and the last failure (when, why).
    restarts: Mutex<(u64, Option<(u64, String)>)>,
    /// When its loop last came round (Unix seconds), if it has a loop.
    beat: Option<Arc<AtomicU64>>,
    clock: SharedClock,
}

impl Component {
    /// A component named for the administrator, with what it does ("listening on ...") and
    /// the heartbeat its loop writes at each pass, if it has a loop.
    fn make(
        name: String,
        detail: String,
        beat: Option<Arc<AtomicU64>>,
        clock: SharedClock,
    ) -> Arc<Self> {
        Arc::new(Component {
            name,
            detail,
            ended: Mutex::new(None),
            restarts: Mutex::new((0, None)),
            beat,
            clock,
        })
    }

    /// Runs `task` in a task of its own and records how it ends: a panic or an unexpected
    /// return is logged as an error and shown as stopped.
    pub async fn watch(
        self: Arc<Self>,
        task: impl Future<Output = ()> + Send + 'static,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let outcome = tokio::spawn(task).await;
        let stopping = *stop.borrow();
        let why = match outcome {
            Ok(()) if stopping => "shut down".to_string(),
            Ok(()) => {
                tracing::error!(component = %self.name, "stopped unexpectedly");
                "ended unexpectedly; see the log, and restart the gateway".to_string()
            }
            Err(e) => {
                tracing::error!(component = %self.name, error = %e, "failed");
                let what = if e.is_panic() {
                    "an internal error"
                } else {
                    "cancelled"
                };
                format!("failed ({what}); see the log, and restart the gateway")
            }
        };
        self.end(why);
    }

    /// Runs the task `make` makes, and makes and runs it again when it fails or ends before
    /// `stop` (after 1 s, doubling to a minute while failures follow each other), as Postfix's
    /// master restarts a failed service. Mail is in the queue, so a fresh loop takes it up.
    pub async fn supervise<F, Fut>(
        self: Arc<Self>,
        mut make: F,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut backoff = 1u64;
        let mut in_a_row = 0u32;
        loop {
            let started = self.clock.now();
            let outcome = tokio::spawn(make()).await;
            if *stop.borrow() {
                self.end("shut down".into());
                return;
            }
            let why = match outcome {
                Ok(()) => "it ended unexpectedly",
                Err(e) if e.is_panic() => "an internal error",
                Err(_) => "it was cancelled",
            };
            let now = self.clock.now();
            // A run that lasted a while starts the count and the backoff again.
            if now.saturating_sub(started) >= STALL_SECS {
                backoff = 1;
                in_a_row = 0;
            }
            in_a_row += 1;
            if in_a_row >= FAILURES_IN_A_ROW {
                tracing::error!(component = %self.name, "failed ({why}) {in_a_row} times in a row; not restarted");
                self.end(format!(
                    "failed {in_a_row} times in a row (last: {why}); see the log, and restart the gateway"
                ));
                return;
            }
            tracing::error!(component = %self.name, "failed ({why}); restarting in {backoff} s");
            {
                let mut r = lock(&self.restarts);
                *r = (r.0 + 1, Some((now, why.to_string())));
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(backoff)) => {}
                _ = stop.changed() => {
                    self.end("shut down".into());
                    return;
                }
            }
            backoff = (backoff * 2).min(60);
        }
    }

    /// How many times it was restarted.
    pub fn restarts(&self) -> u64 {
        lock(&self.restarts).0
    }

    fn end(&self, why: String) {
        *lock(&self.ended) = Some(why);
    }

    /// Its state at `now` (Unix seconds).
    pub fn report(&self, now: u64) -> Report {
        let ended = lock(&self.ended).clone();
        let (state, detail) = match (ended, &self.beat) {
            (Some(why), _) => (State::Stopped, format!("stopped: {why}")),
            (None, Some(beat)) => {
                let idle = now.saturating_sub(beat.load(Ordering::Relaxed));
                if idle >= STALL_SECS {
                    (
                        State::Stalled,
                        format!(
                            "{}; its loop has not come round for {} min (a long batch, or stuck: see the log)",
                            self.detail,
                            idle / 60
                        ),
                    )
                } else {
                    (State::Running, self.detail.clone())
                }
            }
            (None, None) => (State::Running, self.detail.clone()),
        };
        let (restarts, last) = lock(&self.restarts).clone();
        let (state, detail) = match last {
            Some((at, why)) if state != State::Stopped => {
                let ago = now.saturating_sub(at);
                let said = format!(
                    "{detail}; restarted {restarts} time(s), last {} min ago after {why} (see the log)",
                    ago / 60
                );
                // A loop that failed lately is not healthy, even if it runs again now.
                if ago < STALL_SECS {
                    (State::Stalled, said)
                } else {
                    (state, said)
                }
            }
            _ => (state, detail),
        };
        Report {
            name: self.name.clone(),
            state,
            detail,
        }
    }
}

/// A part the gateway depends on but does not run (the relay for code emails,
/// [`crate::code_relay`]): checked, and reported from its last check, after the tasks.
pub trait Check: Send + Sync {
    /// Its state at `now` (Unix seconds).
    fn report(&self, now: u64) -> Report;
}

/// The components of this process, in the order the status page lists them.
pub struct Components {
    list: Mutex<Vec<Arc<Component>>>,
    checks: Mutex<Vec<Arc<dyn Check>>>,
    clock: SharedClock,
}

impl Components {
    /// No components yet; their restarts are timed by `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Components {
            list: Mutex::new(Vec::new()),
            checks: Mutex::new(Vec::new()),
            clock,
        }
    }

    /// Adds a component named for the administrator, with what it does ("listening on ..."),
    /// and gives it back, to be watched.
    pub fn add(&self, name: impl Into<String>, detail: impl Into<String>) -> Arc<Component> {
        self.push(Component::make(
            name.into(),
            detail.into(),
            None,
            self.clock.clone(),
        ))
    }

    /// The same, with the heartbeat its loop writes at each pass.
    pub fn add_with_beat(
        &self,
        name: impl Into<String>,
        detail: impl Into<String>,
        beat: Arc<AtomicU64>,
    ) -> Arc<Component> {
        self.push(Component::make(
            name.into(),
            detail.into(),
            Some(beat),
            self.clock.clone(),
        ))
    }

    fn push(&self, c: Arc<Component>) -> Arc<Component> {
        lock(&self.list).push(c.clone());
        c
    }

    /// Adds a checked part, listed after the tasks.
    pub fn add_check(&self, c: Arc<dyn Check>) {
        lock(&self.checks).push(c);
    }

    fn list(&self) -> Vec<Arc<Component>> {
        lock(&self.list).clone()
    }

    fn checks(&self) -> Vec<Arc<dyn Check>> {
        lock(&self.checks).clone()
    }
}

impl Status for Components {
    /// Every component's state at `now`.
    fn reports(&self, now: u64) -> Vec<Report> {
        let mut reports: Vec<Report> = self.list().iter().map(|c| c.report(now)).collect();
        reports.extend(self.checks().iter().map(|c| c.report(now)));
        reports
    }
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.list().iter().map(|c| c.name.clone()).collect();
        f.debug_struct("Components")
            .field("list", &names)
            .field("checks", &self.checks().len())
            .finish()
    }
}

/// The components for `/metrics`, read at each scrape: `postern_component_up` (1 running, 0
/// stalled, stopped or down) for the tasks and the checked parts, and
/// `postern_component_restarts_total` for the tasks.
impl Collector for Components {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let now = self.clock.now();
        let list = self.list();
        let checks = self.checks();
        let reports = list
            .iter()
            .map(|c| c.report(now))
            .chain(checks.iter().map(|c| c.report(now)));
        {
            let mut up = encoder.encode_descriptor(
                "postern_component_up",
                "Whether a component runs and its loop comes round.",
                None,
                MetricType::Gauge,
            )?;
            for r in reports {
                let labels = [("component", r.name.as_str())];
                ConstGauge::new(i64::from(r.state == State::Running))
                    .encode(up.encode_family(&labels)?)?;
            }
        }
        let mut restarts = encoder.encode_descriptor(
            "postern_component_restarts",
            "Restarts of a component after a failure.",
            None,
            MetricType::Counter,
        )?;
        for c in &list {
            let labels = [("component", c.name.as_str())];
            ConstCounter::new(c.restarts()).encode(restarts.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn now() -> u64 {
        clock::Clock::now(&clock::SystemClock::new())
    }

    /// What `/metrics` shows of `all`, as a registry encodes it.
    fn exposition(all: &Arc<Components>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(all.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn state_of(all: &Components, name: &str, now: u64) -> Report {
        all.reports(now)
            .into_iter()
            .find(|r| r.name == name)
            .expect("listed")
    }

    #[tokio::test]
    async fn a_task_that_ends_panics_or_shuts_down_is_reported_as_it_happened() {
        let all = Arc::new(Components::new(clock::SystemClock::shared()));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (release_tx, release) = tokio::sync::oneshot::channel::<()>();

        let running = all.add("Waiting", "listening on 127.0.0.1:25");
        let waiting = tokio::spawn(running.watch(
            async move {
                let _ = release.await;
            },
            stop.clone(),
        ));
        let ends = all.add("Ends", "x");
        ends.watch(async {}, stop.clone()).await;
        let panics = all.add("Panics", "x");
        panics
            .watch(async { panic!("a bug in the loop") }, stop.clone())
            .await;

        let now = now();
        let r = state_of(&all, "Waiting", now);
        assert_eq!(r.state, State::Running);
        assert_eq!(r.detail, "listening on 127.0.0.1:25");
        let r = state_of(&all, "Ends", now);
        assert_eq!(r.state, State::Stopped);
        assert!(r.detail.contains("ended unexpectedly"), "{}", r.detail);
        let r = state_of(&all, "Panics", now);
        assert_eq!(r.state, State::Stopped);
        assert!(r.detail.contains("internal error"), "{}", r.detail);

        stop_tx.send(true).unwrap();
        release_tx.send(()).unwrap();
        waiting.await.unwrap();
        let r = state_of(&all, "Waiting", now);
        assert_eq!(r.state, State::Stopped);
        assert_eq!(r.detail, "stopped: shut down");

        let metrics = exposition(&all);
        assert!(
            metrics.contains("postern_component_up{component=\"Panics\"} 0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("postern_component_up{component=\"Waiting\"} 0"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_supervised_task_that_fails_is_started_again_and_says_so() {
        let all = Arc::new(Components::new(clock::SystemClock::shared()));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let runs = Arc::new(AtomicU64::new(0));
        let c = all.add("Delivery", "delivers");
        let counted = runs.clone();
        let task_stop = stop.clone();
        let supervisor = tokio::spawn(c.clone().supervise(
            move || {
                let run = counted.fetch_add(1, Ordering::SeqCst);
                let mut stop = task_stop.clone();
                async move {
                    if run == 0 {
                        panic!("a bug on the first run");
                    }
                    // Runs until the shutdown, as the gateway's loops do.
                    let _ = stop.changed().await;
                }
            },
            stop,
        ));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "not restarted");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Running again, but shown as not healthy while the failure is recent.
        let r = state_of(&all, "Delivery", now());
        assert_eq!(r.state, State::Stalled);
        assert!(r.detail.contains("restarted 1 time(s)"), "{}", r.detail);
        assert!(r.detail.contains("an internal error"), "{}", r.detail);
        let later = state_of(&all, "Delivery", now() + STALL_SECS);
        assert_eq!(later.state, State::Running, "{}", later.detail);
        let metrics = exposition(&all);
        assert!(
            metrics.contains("postern_component_restarts_total{component=\"Delivery\"} 1"),
            "{metrics}"
        );
        stop_tx.send(true).unwrap();
        supervisor.await.unwrap();
        assert_eq!(state_of(&all, "Delivery", now()).state, State::Stopped);
    }

    #[tokio::test]
    async fn a_supervised_task_that_keeps_failing_is_left_stopped() {
        let all = Components::new(clock::SystemClock::shared());
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let runs = Arc::new(AtomicU64::new(0));
        let c = all.add("Policy", "decides");
        let counted = runs.clone();
        // Backoffs 1 + 2 + 4 + 8 s before the fifth failure.
        tokio::time::timeout(
            std::time::Duration::from_secs(40),
            c.supervise(
                move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async {}
                },
                stop,
            ),
        )
        .await
        .expect("gives up");
        assert_eq!(runs.load(Ordering::SeqCst), u64::from(FAILURES_IN_A_ROW));
        let r = state_of(&all, "Policy", now());
        assert_eq!(r.state, State::Stopped);
        assert!(r.detail.contains("failed 5 times in a row"), "{}", r.detail);
    }

    #[test]
    fn a_loop_that_stops_coming_round_is_stalled_then_running_again() {
        let clock = clock::ManualClock::at(1_000 + STALL_SECS);
        let all = Arc::new(Components::new(clock.clone()));
        let beat = Arc::new(AtomicU64::new(1_000));
        all.add_with_beat("Delivery", "sending", beat.clone());
        assert_eq!(state_of(&all, "Delivery", 1_010).state, State::Running);
        let r = state_of(&all, "Delivery", 1_000 + STALL_SECS + 60);
        assert_eq!(r.state, State::Stalled);
        assert!(r.detail.contains("6 min"), "{}", r.detail);
        let metrics = exposition(&all);
        assert!(
            metrics.contains("postern_component_up{component=\"Delivery\"} 0"),
            "{metrics}"
        );
        beat.store(1_000 + STALL_SECS, Ordering::Relaxed);
        assert_eq!(
            state_of(&all, "Delivery", 1_000 + STALL_SECS + 60).state,
            State::Running
        );
    }
}
