//! The decision step between receiving and delivering. It claims received messages and decides
//! each recipient's copy by the policy in force (`postern policy`; without one, the default
//! policy: outbound mail is encrypted, inbound encrypted mail decrypted, the rest passes), then
//! makes the copies: sealed into an encrypted email, opened, changed or passed as received.
//!
//! - [`claim`](self): the loop that claims received messages, and one message's processing;
//! - `decide`: the policy's decision and its actions (deliver, hold, delete, change
//!   recipients, notify, archive);
//! - `encrypt`, `decrypt`: making the copies (decrypt also scans and seals again);
//! - `maintain`: the errored queue's retries and bounces, expiry, the key prefetch
//!   ([`Maintenance`]);
//! - `failure`: why a copy could not be made, and where its recipients go;
//! - `forward`: forward to decrypt.
//!
//! Recipients named in To or Cc share one sealed message; each blind-copy recipient gets a
//! sealed message of their own. A recipient whose copy cannot be made now (no key) waits in the
//! errored queue: retried with backoff, all at once when the key server answers again, and
//! bounced to the sender after the errored lifetime. Nothing leaves in clear that was to be
//! encrypted, and nothing is dropped.

use std::collections::HashSet;
use std::sync::Arc;

use envelope::{Address, DecapsCache, EncapsCache, Epoch};
use mime::MimeSettings;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use store::{Backoff, Decision, Envelope, Errored, MessageCopy, Queue, Route};
use tokio::sync::{Notify, Semaphore};

use crate::config::GatewayConfig;
use crate::notify::Notice;
use transform::{KeyRing, MarkKey};

mod claim;
mod decide;
mod decrypt;
mod encrypt;
mod failure;
mod forward;
mod maintain;

pub use maintain::Maintenance;

use failure::Exception;

/// What processing one message produced.
struct Work {
    decision: Decision,
    /// Permanent failures, for the exception rules.
    exceptions: Vec<Exception>,
    /// Notifications to send once the decision is recorded.
    notices: Vec<Notice>,
    /// Archive addresses already given a copy.
    archived: Vec<String>,
}

/// The message being processed, as the actions need it.
struct Message<'a> {
    id: &'a str,
    body: &'a store::Body,
    head: &'a [u8],
    envelope: &'a Envelope,
    subject: &'a str,
    from: Option<&'a Address>,
    visible: &'a HashSet<Address>,
    /// The gateway's verdict fields found in the message as received (removed on delivery).
    forged: &'a [String],
    /// The rule a released message skips (in the scan after a decryption too).
    skip_rule: Option<&'a str>,
    /// The sealed message found (taken by the first decryption; found again for another).
    located: std::sync::Mutex<Option<transform::Located>>,
}

/// What the pipeline needs to know besides its queue and keys.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Domains of this gateway's users.
    pub internal_domains: Vec<String>,
    /// `[gateway]`.
    pub gateway: GatewayConfig,
    /// `[mime]`.
    pub mime: MimeSettings,
    /// This gateway's host name (the X-headers' value, notifications).
    pub hostname: String,
}

/// Counters of the transformations, for `/metrics`. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Sealed messages made.
    pub encrypted: Counter,
    /// Messages opened.
    pub decrypted: Counter,
    /// Recipients put in the errored queue.
    pub errored: Counter,
}

impl Counters {
    /// Adds the counters to `registry` under their `postern_` names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "postern_encrypted",
            "Sealed messages made",
            self.encrypted.clone(),
        );
        registry.register(
            "postern_decrypted",
            "Sealed messages opened",
            self.decrypted.clone(),
        );
        registry.register(
            "postern_errored",
            "Recipients put in the errored queue",
            self.errored.clone(),
        );
    }
}

/// Decides and transforms received messages.
pub struct Pipeline {
    queue: Queue,
    settings: Settings,
    internal: Vec<String>,
    mime: Arc<MimeSettings>,
    keys: Arc<KeyRing>,
    default_sender: Option<Address>,
    encaps: Arc<EncapsCache>,
    decaps: Arc<DecapsCache>,
    workers: Arc<Semaphore>,
    /// Transformation counters.
    pub counters: Counters,
    /// Wakes the pipeline when a message is accepted.
    pub wake: Arc<Notify>,
    delivery: Arc<Notify>,
    /// The policy in force and its stored version (0: the default policy).
    policy: std::sync::RwLock<(i64, Arc<policy::Compiled>)>,
    /// Where `notify admin` goes.
    admin: String,
    /// Forward-to-decrypt answers not recorded yet, for the hourly limit.
    links: store::RateLimit,
    /// The key of the gateway's mark on the encrypted email it makes.
    mark: Arc<MarkKey>,
    /// When this pipeline started (Unix seconds): `links` counts from then on.
    started: u64,
    /// When the policy loop last came round (Unix seconds), for the status page.
    pub beat: Arc<std::sync::atomic::AtomicU64>,
}

/// The default sender: the configured one, else postmaster@ the first internal domain, else
/// postmaster@ the host name.
pub fn default_sender(settings: &Settings) -> Option<Address> {
    let text = match &settings.gateway.default_sender {
        Some(s) => s.clone(),
        None => format!(
            "postmaster@{}",
            settings
                .internal_domains
                .first()
                .map_or(settings.hostname.as_str(), String::as_str)
        ),
    };
    Address::parse(&text).ok()
}

/// A copy of the message as received for `recipients`.
fn pass_as_is(pipeline: &Pipeline, recipients: &[String]) -> MessageCopy {
    MessageCopy {
        file: None,
        routes: pipeline.routes(recipients),
        note: None,
        replaces: None,
        sender: None,
    }
}

/// Puts `list` in the errored queue with `why`.
fn put_in_errored(id: &str, decision: &mut Decision, list: &[String], why: String) {
    tracing::warn!(queue_id = %id, recipients = list.len(), "errored: {why}");
    for r in list {
        decision.errored.push(Errored {
            address: r.clone(),
            reason: why.clone(),
        });
    }
}

impl Pipeline {
    /// A pipeline that wakes `delivery` when it has routed mail. It starts with the default
    /// policy and takes the stored one at its first round. `mark` marks the encrypted email it
    /// makes ([`transform::mark`]).
    pub fn new(
        queue: Queue,
        settings: Settings,
        keys: Arc<KeyRing>,
        delivery: Arc<Notify>,
        mark: Arc<MarkKey>,
    ) -> Result<Arc<Self>, policy::PolicyError> {
        let compiled = policy::Compiled::new(policy::Policy::default_policy()?)?;
        let internal = settings
            .internal_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        let default_sender = default_sender(&settings);
        let clock = queue.clock().clone();
        let now = clock.now();
        let epoch_clock = move || Epoch::from_unix(clock.now());
        let admin = settings.gateway.admin_address.clone().unwrap_or_else(|| {
            format!(
                "postmaster@{}",
                settings
                    .internal_domains
                    .first()
                    .map_or(settings.hostname.as_str(), String::as_str)
            )
        });
        Ok(Arc::new(Pipeline {
            queue,
            internal,
            mime: Arc::new(settings.mime.clone()),
            keys,
            default_sender,
            encaps: Arc::new(EncapsCache::with_clock(100_000, epoch_clock.clone())),
            decaps: Arc::new(DecapsCache::with_clock(100_000, epoch_clock)),
            workers: Arc::new(Semaphore::new(settings.gateway.workers.max(1))),
            settings,
            counters: Counters::default(),
            wake: Arc::new(Notify::new()),
            delivery,
            policy: std::sync::RwLock::new((0, Arc::new(compiled))),
            admin,
            links: store::RateLimit::hourly(),
            mark,
            started: now,
            beat: Arc::new(now.into()),
        }))
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<policy::Compiled> {
        match self.policy.read() {
            Ok(p) => p.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Takes a newly stored policy (changes apply to the next message, without a restart).
    async fn refresh_policy(&self) {
        let current = match self.policy.read() {
            Ok(p) => p.0,
            Err(poisoned) => poisoned.into_inner().0,
        };
        let version = match self.queue.policy_version().await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the policy version; keeping the policy in force");
                return;
            }
        };
        if version == current {
            return;
        }
        let loaded = match self.queue.current_policy().await {
            Ok(Some(stored)) => policy::Policy::from_toml(&stored.text),
            Ok(None) => policy::Policy::default_policy(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the policy; keeping the policy in force");
                return;
            }
        };
        match loaded.and_then(policy::Compiled::new) {
            Ok(compiled) => {
                tracing::info!(
                    version,
                    rules = compiled.policy().rules.len(),
                    "policy in force"
                );
                let mut slot = match self.policy.write() {
                    Ok(p) => p,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *slot = (version, Arc::new(compiled));
            }
            Err(e) => {
                tracing::error!(version, error = %e, "the stored policy is not valid; keeping the policy in force");
            }
        }
    }

    /// The time now, by the process's one clock.
    pub(crate) fn now(&self) -> u64 {
        self.queue.clock().now()
    }

    /// The keys in use.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    fn is_internal(&self, address: &str) -> bool {
        policy::is_internal(address, &self.internal)
    }

    /// The next hop for a recipient.
    pub fn hop_for(&self, recipient: &str) -> Route {
        if self.is_internal(recipient) {
            Route::Internal
        } else {
            Route::External
        }
    }

    /// Each recipient with its next hop.
    fn routes(&self, recipients: &[String]) -> Vec<(String, Route)> {
        recipients
            .iter()
            .map(|r| (r.clone(), self.hop_for(r)))
            .collect()
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.settings.gateway.errored_retry_initial_secs,
            max: self.settings.gateway.errored_retry_max_secs,
        }
    }
}
