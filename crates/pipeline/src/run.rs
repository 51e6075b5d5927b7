//! The decision step between receiving and delivering. It claims received messages and, for
//! each recipient, applies the built-in policies of the seed until the policy engine lands:
//!
//! - mail on the policy port to a recipient outside the internal domains is encrypted (unless
//!   it already is an encrypted email), signed by the sender or the default sender;
//! - an encrypted email (marked `X-PP-ENCRYPTED: TRUE` and carrying a sealed message) to an
//!   internal recipient it is sealed to is decrypted (and encrypted again if
//!   `reencrypt_inbound` is set);
//! - everything else, and all mail from the bypass port, passes unchanged.
//!
//! Recipients named in To or Cc share one sealed message; each blind-copy recipient gets a
//! sealed message of their own. A recipient whose copy cannot be made now (no key) waits in the
//! errored queue: retried with backoff, all at once when the key server answers again, and
//! bounced to the sender after the errored lifetime. Nothing leaves in clear that was to be
//! encrypted, and nothing is dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use envelope::{Address, DecapsCache, EncapsCache, Epoch, KeyId};
use keys::KeyKind;
use mime::MimeSettings;
use store::{Backoff, Copy, Decision, Envelope, Errored, ErroredFilter, Outcome, Queue, Source};
use tokio::sync::{Notify, Semaphore, watch};

use crate::config::GatewayConfig;
use crate::notify::{self, Notice};
use crate::rewrite;
use transform::{Decrypt, Encrypt, KeyFailure, KeyRing, MarkKey, TransformError};

mod forward;

/// Whether a failed transformation may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The key server is down, the disk is full: the errored queue retries it.
    Retry,
    /// No retry will fix it: the "Encryption Exception" rule decides.
    Encryption,
    /// No retry will fix it: the "Unable to decrypt" rule decides.
    Decryption,
}

impl Failure {
    /// How a failed transformation is handled: `permanent` when the message or its keys are at
    /// fault, a retry when the disk is (whatever error type carried its I/O error).
    fn of(e: &TransformError, permanent: Failure) -> Failure {
        if e.is_transient() {
            Failure::Retry
        } else {
            permanent
        }
    }
}

/// What processing one message produced.
struct Work {
    decision: Decision,
    /// Permanent failures, for the exception rules.
    exceptions: Vec<(Failure, Vec<String>, String)>,
    /// Notifications to send once the decision is recorded.
    notices: Vec<Notice>,
    /// Archive addresses already given a copy.
    archived: Vec<String>,
}

impl Work {
    fn fail(&mut self, id: &str, list: &[String], why: String, kind: Failure) {
        if kind == Failure::Retry {
            put_in_errored(id, &mut self.decision, list, why);
        } else {
            self.exceptions.push((kind, list.to_vec(), why));
        }
    }
}

/// The message being processed, as the actions need it.
struct Message<'a> {
    id: &'a str,
    path: &'a std::path::Path,
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

impl Message<'_> {
    /// The sealed message, or why it cannot be had and whether a retry may help.
    async fn take_located(&self) -> Result<transform::Located, (String, Failure)> {
        let taken = match self.located.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(l) = taken {
            return Ok(l);
        }
        let path = self.path.to_path_buf();
        match tokio::task::spawn_blocking(move || transform::locate(&path)).await {
            Ok(Ok(l)) => Ok(l),
            Ok(Err(e)) => Err((e.to_string(), Failure::of(&e, Failure::Decryption))),
            Err(e) => Err((e.to_string(), Failure::Retry)),
        }
    }
}

/// Runs `f` on the blocking pool; its error, or a panic in it, comes back as text.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
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

/// Counters of the transformations, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sealed messages made.
    pub encrypted: std::sync::atomic::AtomicU64,
    /// Messages opened.
    pub decrypted: std::sync::atomic::AtomicU64,
    /// Recipients put in the errored queue.
    pub errored: std::sync::atomic::AtomicU64,
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
    /// When the maintenance loop (errored retries, expiry, prefetch) last came round.
    pub maintenance_beat: Arc<std::sync::atomic::AtomicU64>,
    /// A prefetch is under way.
    prefetching: std::sync::atomic::AtomicBool,
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
fn pass_as_is(pipeline: &Pipeline, recipients: &[String]) -> Copy {
    Copy {
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

/// A reason for the errored queue (one line).
fn reason(context: &str, e: &dyn std::fmt::Display) -> String {
    let text = format!("{context}: {e}");
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
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
            maintenance_beat: Arc::new(now.into()),
            prefetching: false.into(),
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
    fn now(&self) -> u64 {
        self.queue.clock().now()
    }

    /// The keys in use.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    fn is_internal(&self, address: &str) -> bool {
        let domain = address
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        self.internal.contains(&domain)
    }

    /// The next hop for a recipient.
    pub fn hop_for(&self, recipient: &str) -> &'static str {
        if self.is_internal(recipient) {
            "internal"
        } else {
            "external"
        }
    }

    /// Each recipient with its next hop.
    fn routes(&self, recipients: &[String]) -> Vec<(String, String)> {
        recipients
            .iter()
            .map(|r| (r.clone(), self.hop_for(r).to_string()))
            .collect()
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.settings.gateway.errored_retry_initial_secs,
            max: self.settings.gateway.errored_retry_max_secs,
        }
    }

    /// Runs the policy loop until `stop` turns true. [`Pipeline::maintain`] runs beside it.
    /// Only one runs at a time: it first takes back what an earlier run, which failed, had
    /// claimed.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        match self.queue.release_all_processing().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                messages = n,
                "processing again what a failed run had claimed"
            ),
            Err(e) => tracing::error!(error = %e, "cannot take back what a failed run had claimed"),
        }
        loop {
            if *stop.borrow() {
                break;
            }
            self.beat
                .store(self.now(), std::sync::atomic::Ordering::Relaxed);
            let claimed = match self.queue.claim_received(256).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read received messages");
                    Vec::new()
                }
            };
            let busy = !claimed.is_empty();
            if busy {
                let mut tasks = tokio::task::JoinSet::new();
                let mut waiting: std::collections::HashMap<tokio::task::Id, (String, Vec<String>)> =
                    std::collections::HashMap::new();
                self.refresh_policy().await;
                let compiled = self.policy();
                for (id, envelope, skip_rule) in claimed {
                    let me = self.clone();
                    let recipients = envelope.recipients.clone();
                    let key = id.clone();
                    let compiled = compiled.clone();
                    let handle = tasks.spawn(async move {
                        let Ok(_permit) = me.workers.clone().acquire_owned().await else {
                            return None;
                        };
                        Some(me.process(id, envelope, skip_rule, compiled).await)
                    });
                    waiting.insert(handle.id(), (key, recipients));
                }
                let mut batch = Vec::new();
                let mut notices = Vec::new();
                while let Some(done) = tasks.join_next_with_id().await {
                    match done {
                        Ok((task, Some(work))) => {
                            waiting.remove(&task);
                            batch.push(work.decision);
                            notices.extend(work.notices);
                        }
                        Ok((_, None)) => {}
                        Err(e) => {
                            // A bug, not the message's fault: it waits in the errored queue
                            // rather than crash the loop again at every start.
                            if let Some((id, recipients)) = waiting.remove(&e.id()) {
                                tracing::error!(queue_id = %id, error = %e, "processing failed");
                                batch.push(Decision {
                                    id,
                                    errored: recipients
                                        .into_iter()
                                        .map(|address| Errored {
                                            address,
                                            reason: "an internal error occurred while processing"
                                                .into(),
                                        })
                                        .collect(),
                                    ..Decision::default()
                                });
                            }
                        }
                    }
                }
                let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
                match self.queue.apply(batch, self.backoff()).await {
                    Ok(()) => {
                        tracing::debug!(messages = ids.len(), "processed");
                        // Sent once the decision is recorded: a decision processed again
                        // after a failure does not notify twice.
                        for notice in &notices {
                            let sent = notify::send(
                                &self.queue,
                                compiled.policy(),
                                &self.settings.hostname,
                                notice,
                            )
                            .await;
                            if let Err(e) = sent {
                                tracing::error!(template = %notice.template, error = %e, "cannot send a notification");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, messages = ids.len(), "cannot record processing; trying again");
                        // Until they are released, nothing claims these messages again: keep
                        // trying (a full disk fails both; it frees them together). A stop
                        // leaves them to the next start, which releases what is processing.
                        while let Err(e) = self.queue.release(&ids).await {
                            tracing::error!(error = %e, messages = ids.len(), "cannot release the messages; trying again");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = stop.changed() => break,
                            }
                            if *stop.borrow() {
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
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

    /// Decides one message by the policy and makes its copies.
    async fn process(
        &self,
        id: String,
        mut envelope: Envelope,
        skip_rule: Option<String>,
        compiled: Arc<policy::Compiled>,
    ) -> Work {
        let mut work = Work {
            decision: Decision {
                id: id.clone(),
                ..Decision::default()
            },
            exceptions: Vec::new(),
            notices: Vec::new(),
            archived: Vec::new(),
        };
        if envelope.source != Source::Policy {
            work.decision
                .copies
                .push(pass_as_is(self, &envelope.recipients));
            return work;
        }
        let path = self.queue.spool().path(&id);
        let head = {
            let path = path.clone();
            match blocking(move || transform::read_head(&path)).await {
                Ok(h) => h,
                Err(why) => {
                    tracing::error!(queue_id = %id, error = %why, "cannot read the message; it stays in the errored queue");
                    let why = reason("cannot read the message", &why);
                    work.fail(&id, &envelope.recipients, why, Failure::Retry);
                    return work;
                }
            }
        };
        // Forward to decrypt: its address answers (or not) and takes no part in the policy.
        let (to_decrypt, rest): (Vec<String>, Vec<String>) = envelope
            .recipients
            .iter()
            .cloned()
            .partition(|r| self.is_decrypt_address(r));
        if !to_decrypt.is_empty() {
            self.forward_to_decrypt(&id, &path, &head, &envelope, &to_decrypt, &mut work)
                .await;
            if rest.is_empty() {
                return work;
            }
            envelope.recipients = rest;
        }
        let fields = mime::headers::fields(&head);
        // The gateway's own verdict fields (decrypted here, signature, warning) in a message
        // as received were written by its sender: they are removed from what is delivered.
        let forged: Vec<String> = mime::guarded_fields(&self.mime)
            .into_iter()
            .filter(|name| fields.iter().any(|f| f.is(name)))
            .collect();
        if !forged.is_empty() {
            tracing::warn!(queue_id = %id, fields = ?forged, "the message carries this gateway's verdict fields; they are removed");
        }
        // The marker alone proves nothing: a message counts as encrypted only when a sealed
        // message can be found in it. A plain message with a forged marker is still encrypted
        // on its way out, and passes as the plain message it is on its way in. A damaged
        // sealed message counts (its decryption fails: "Unable to decrypt").
        let mut located = None;
        let sealed: Option<Result<(), String>> = if mime::is_encrypted(&fields) {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || transform::locate(&p)).await {
                Ok(Ok(h)) => {
                    located = Some(h);
                    Some(Ok(()))
                }
                Ok(Err(TransformError::NotSealed(mime::ReadError::NotFound))) => None,
                // The disk, not the message: nothing is decided until it can be read.
                Ok(Err(e)) if e.is_transient() => {
                    let why = reason("cannot read the message", &e);
                    work.fail(&id, &envelope.recipients, why, Failure::Retry);
                    return work;
                }
                Ok(Err(e)) => Some(Err(e.to_string())),
                Err(e) => Some(Err(e.to_string())),
            }
        } else {
            None
        };
        let decided = self
            .decide(
                compiled.clone(),
                &path,
                &envelope.recipients,
                sealed.is_some(),
                skip_rule.as_deref(),
                &envelope.sender,
            )
            .await;
        let (subject, eval) = match decided {
            Ok(x) => x,
            Err(e) => {
                let why = reason("cannot read the message", &e);
                work.fail(&id, &envelope.recipients, why, Failure::Retry);
                return work;
            }
        };
        if let Some(cut) = eval.cut {
            tracing::warn!(queue_id = %id, %cut, "a scan limit cut the policy's scan of the message");
        }
        let parsed = mail_parser::MessageParser::default().parse_headers(&head[..]);
        let from = parsed
            .as_ref()
            .and_then(|m| m.from())
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .and_then(|a| Address::parse(a).ok())
            .or_else(|| Address::parse(&envelope.sender).ok());
        let visible: HashSet<Address> = parsed
            .as_ref()
            .map(|m| {
                m.to()
                    .into_iter()
                    .chain(m.cc())
                    .flat_map(|list| list.iter())
                    .filter_map(|a| a.address())
                    .filter_map(|a| Address::parse(a).ok())
                    .collect()
            })
            .unwrap_or_default();
        let message = Message {
            id: &id,
            path: &path,
            head: &head,
            envelope: &envelope,
            subject: &subject,
            from: from.as_ref(),
            visible: &visible,
            located: std::sync::Mutex::new(located),
            skip_rule: skip_rule.as_deref(),
            forged: &forged,
        };
        for group in &eval.groups {
            let why = group
                .rule
                .as_ref()
                .and_then(|rule| {
                    eval.trace.iter().find(|s| {
                        s.matched
                            && &s.rule == rule
                            && Some(&s.recipient) == group.recipients.first()
                    })
                })
                .map(|s| s.why.clone())
                .unwrap_or_else(|| "no rule decided".into());
            tracing::info!(
                queue_id = %id,
                recipients = group.recipients.len(),
                rule = group.rule.as_deref().unwrap_or("-"),
                action = %group.terminal.describe(),
                "policy decided"
            );
            self.carry_out(&message, group, &why, sealed.as_ref(), &mut work)
                .await;
        }
        // Failures no retry will fix go to the exception rules.
        let exceptions = std::mem::take(&mut work.exceptions);
        for (kind, recipients, why) in exceptions {
            let (name, actions) = match kind {
                Failure::Decryption => (
                    "Unable to decrypt",
                    &compiled.policy().exceptions.decryption,
                ),
                _ => (
                    "Encryption Exception",
                    &compiled.policy().exceptions.encryption,
                ),
            };
            let terminal = actions.iter().find(|a| a.is_terminal()).cloned().unwrap_or(
                policy::Action::Quarantine {
                    area: "Encryption_Quarantine".into(),
                },
            );
            let group = policy::Decided {
                recipients,
                rule: Some(name.to_string()),
                terminal,
                actions: actions
                    .iter()
                    .filter(|a| !a.is_terminal())
                    .map(|a| (name.to_string(), a.clone()))
                    .collect(),
            };
            tracing::warn!(queue_id = %id, recipients = group.recipients.len(), rule = name, "{why}");
            self.carry_out(&message, &group, &why, None, &mut work)
                .await;
        }
        let errored = work.decision.errored.len() as u64;
        if errored > 0 {
            self.counters.errored.fetch_add(errored, Ordering::Relaxed);
        }
        work
    }

    /// Carries out one group's actions: the non-terminal ones (header changes, notifications,
    /// archive copies) and the terminal one.
    async fn carry_out(
        &self,
        m: &Message<'_>,
        group: &policy::Decided,
        why: &str,
        sealed: Option<&Result<(), String>>,
        work: &mut Work,
    ) {
        let rule = group.rule.clone().unwrap_or_default();
        let mut changes = rewrite::Changes {
            remove: m.forged.to_vec(),
            ..rewrite::Changes::default()
        };
        for (from_rule, action) in &group.actions {
            match action {
                policy::Action::AddHeader { name, value } => {
                    changes.headers.push((name.clone(), value.clone()));
                }
                policy::Action::TagSubject { tag } => changes.tags.push(tag.clone()),
                policy::Action::Notify { to, template } => {
                    self.notice(m, group, from_rule, to, template, why, work);
                }
                policy::Action::Archive { to } => {
                    // One archive copy per message, however many groups name the address.
                    if work.archived.contains(to) {
                        continue;
                    }
                    work.archived.push(to.clone());
                    self.new_recipients(
                        m,
                        std::slice::from_ref(to),
                        &[],
                        &rewrite::Changes::default(),
                        work,
                    )
                    .await;
                }
                _ => {}
            }
        }
        let recipients = &group.recipients;
        match &group.terminal {
            policy::Action::Pass => self.deliver(m, recipients, &changes, None, work).await,
            policy::Action::Handoff { host, port } => {
                let hop = format!("handoff:{host}:{port}");
                self.deliver(m, recipients, &changes, Some(hop), work).await;
            }
            policy::Action::ChangeRecipient { to } => {
                tracing::info!(queue_id = %m.id, rule = %rule, "recipients changed to {}", to.join(", "));
                self.new_recipients(m, to, recipients, &changes, work).await;
            }
            policy::Action::Delete | policy::Action::Quarantine { .. } => {
                self.stop(m, group, why, work);
            }
            policy::Action::Encrypt => {
                if matches!(sealed, Some(Ok(_))) {
                    // Already an encrypted email: sealing it again would help nobody.
                    self.deliver(m, recipients, &changes, None, work).await;
                } else {
                    self.encrypt(m, recipients, &changes, work).await;
                }
            }
            policy::Action::Decrypt | policy::Action::DecryptScanReencrypt => match sealed {
                Some(s) => {
                    let again = group.terminal == policy::Action::DecryptScanReencrypt
                        || self.settings.gateway.reencrypt_inbound;
                    let first = work.decision.copies.len();
                    let located = match s {
                        Ok(()) => m.take_located().await,
                        Err(e) => Err((e.clone(), Failure::Decryption)),
                    };
                    let scan = group.terminal == policy::Action::DecryptScanReencrypt;
                    self.decrypt(m, located, recipients, (again, scan), work)
                        .await;
                    // The decrypted copy's verdict fields are this gateway's own.
                    let changes = rewrite::Changes {
                        remove: Vec::new(),
                        ..changes
                    };
                    if !changes.is_empty() {
                        self.change_copies(first, &changes, work).await;
                    }
                }
                None => self.deliver(m, recipients, &changes, None, work).await,
            },
            // Non-terminal actions never decide (the policy crate guarantees it).
            _ => self.deliver(m, recipients, &changes, None, work).await,
        }
    }

    /// A notification for `group`, sent once the decision is recorded.
    #[allow(clippy::too_many_arguments)]
    fn notice(
        &self,
        m: &Message<'_>,
        group: &policy::Decided,
        from_rule: &str,
        to: &policy::Recipient,
        template: &str,
        why: &str,
        work: &mut Work,
    ) {
        let area = match &group.terminal {
            policy::Action::Quarantine { area } => area.clone(),
            _ => String::new(),
        };
        work.notices.push(Notice {
            to: notify::addresses(to, &m.envelope.sender, &group.recipients, &self.admin),
            template: template.to_string(),
            context: policy::templates::Context {
                sender: m.envelope.sender.clone(),
                recipients: group.recipients.clone(),
                subject: m.subject.to_string(),
                rule: from_rule.to_string(),
                area,
                reason: why.to_string(),
                queue_id: m.id.to_string(),
                hostname: self.settings.hostname.clone(),
                date: self.queue.clock().rfc2822(),
            },
        });
    }

    /// Holds (quarantine) or drops (delete) `group`'s recipients, as its terminal action says.
    fn stop(&self, m: &Message<'_>, group: &policy::Decided, why: &str, work: &mut Work) {
        let rule = group.rule.clone().unwrap_or_default();
        let recipients = &group.recipients;
        match &group.terminal {
            policy::Action::Delete => {
                tracing::warn!(queue_id = %m.id, recipients = recipients.len(), rule = %rule, "deleted by policy: {why}");
                for r in recipients {
                    work.decision.deleted.push(Errored {
                        address: r.clone(),
                        reason: format!("deleted by rule {rule:?}: {why}"),
                    });
                }
            }
            policy::Action::Quarantine { area } => {
                tracing::warn!(queue_id = %m.id, recipients = recipients.len(), rule = %rule, area = %area, "quarantined: {why}");
                work.decision.held.push(store::Hold {
                    recipients: recipients.clone(),
                    area: area.clone(),
                    rule,
                    reason: why.to_string(),
                    subject: m.subject.to_string(),
                });
            }
            _ => {}
        }
    }

    /// Delivers the message as received (with `changes`), to the normal next hops or `hop`.
    async fn deliver(
        &self,
        m: &Message<'_>,
        recipients: &[String],
        changes: &rewrite::Changes,
        hop: Option<String>,
        work: &mut Work,
    ) {
        let routes = match &hop {
            Some(h) => recipients.iter().map(|r| (r.clone(), h.clone())).collect(),
            None => self.routes(recipients),
        };
        if changes.is_empty() {
            work.decision.copies.push(Copy {
                file: None,
                routes,
                note: hop
                    .as_deref()
                    .and_then(|h| h.strip_prefix("handoff:"))
                    .map(|target| format!("handed off to {target}")),
                replaces: None,
                sender: None,
            });
            return;
        }
        match self.changed_copy(m.path, changes).await {
            Ok(file) => work.decision.copies.push(Copy {
                file: Some(file),
                routes,
                note: Some("header changed by policy".into()),
                replaces: None,
                sender: None,
            }),
            Err(e) => work.fail(
                m.id,
                recipients,
                reason("cannot copy the message", &e),
                Failure::Retry,
            ),
        }
    }

    /// A copy of the message to addresses that were not its recipients: a changed recipient
    /// (standing in for `instead_of`) or an archive (`instead_of` empty).
    async fn new_recipients(
        &self,
        m: &Message<'_>,
        to: &[String],
        instead_of: &[String],
        changes: &rewrite::Changes,
        work: &mut Work,
    ) {
        match self.changed_copy(m.path, changes).await {
            Ok(file) => work.decision.copies.push(Copy {
                file: Some(file),
                routes: self.routes(to),
                note: Some(if instead_of.is_empty() {
                    format!("archive copy to {}", to.join(", "))
                } else {
                    format!(
                        "recipients {} changed to {}",
                        instead_of.join(", "),
                        to.join(", ")
                    )
                }),
                replaces: Some(instead_of.to_vec()),
                sender: None,
            }),
            Err(e) => {
                let list = if instead_of.is_empty() {
                    to
                } else {
                    instead_of
                };
                work.fail(
                    m.id,
                    list,
                    reason("cannot copy the message", &e),
                    Failure::Retry,
                );
            }
        }
    }

    /// The policy's decision for `recipients` of the message at `path`, read (up to the scan
    /// limit, or its header section if the policy looks at no content) on the blocking pool;
    /// with the message's subject.
    async fn decide(
        &self,
        compiled: Arc<policy::Compiled>,
        path: &std::path::Path,
        recipients: &[String],
        encrypted: bool,
        skip_rule: Option<&str>,
        sender: &str,
    ) -> Result<(String, policy::Evaluation), String> {
        let path = path.to_path_buf();
        let limit = self.settings.gateway.scan_limit_bytes;
        let limits = self.settings.gateway.scan_limits();
        let (sender, recipients) = (sender.to_string(), recipients.to_vec());
        let (internal, skip_rule) = (self.internal.clone(), skip_rule.map(str::to_string));
        blocking(move || {
            let view = rewrite::view(&path, limit, &limits, compiled.reads_content())?;
            let eval = compiled.decide(
                &view,
                &policy::Facts {
                    sender: &sender,
                    recipients: &recipients,
                    recipient_count: recipients.len(),
                    internal_domains: &internal,
                    encrypted,
                    skip_rule: skip_rule.as_deref(),
                },
            );
            Ok::<_, std::io::Error>((view.subject, eval))
        })
        .await
    }

    async fn changed_copy(
        &self,
        path: &std::path::Path,
        changes: &rewrite::Changes,
    ) -> Result<store::Finished, String> {
        let (path, changes, spool) = (
            path.to_path_buf(),
            changes.clone(),
            self.queue.spool().clone(),
        );
        blocking(move || rewrite::copy_with_changes(&path, &changes, &spool)).await
    }

    /// Applies `changes` to the transformed copies made since `first`.
    async fn change_copies(&self, first: usize, changes: &rewrite::Changes, work: &mut Work) {
        for i in first..work.decision.copies.len() {
            let Some(file) = work.decision.copies[i].file.take() else {
                continue;
            };
            match self.changed_copy(file.path(), changes).await {
                Ok(changed) => {
                    file.discard();
                    work.decision.copies[i].file = Some(changed);
                }
                Err(e) => {
                    file.discard();
                    let copy = work.decision.copies.remove(i);
                    let list: Vec<String> = copy.routes.into_iter().map(|(a, _)| a).collect();
                    work.fail(
                        &work.decision.id.clone(),
                        &list,
                        reason("cannot copy the message", &e),
                        Failure::Retry,
                    );
                    return;
                }
            }
        }
    }

    /// The signing key for mail from `sender`: the sender's own, else (if allowed) the default
    /// sender's. Returns the key and who it signs as; the error says whether a retry may help.
    async fn signer(
        &self,
        sender: Option<&Address>,
        epoch: Epoch,
    ) -> Result<(Arc<envelope::SigningKey>, Address), (String, Failure)> {
        let own = match sender {
            Some(s) => match self.keys.signing_key(s, epoch).await {
                Ok(k) => return Ok((k, s.clone())),
                Err(e) => Some((s, e)),
            },
            None => None,
        };
        let retry_own = matches!(&own, Some((_, e)) if e.is_transient());
        let own_problem = match &own {
            Some((s, e)) => format!("no signing key for the sender {s} ({e})"),
            None => "the sender is not one of this gateway's users".to_string(),
        };
        let kind = |retry: bool| {
            if retry {
                Failure::Retry
            } else {
                Failure::Encryption
            }
        };
        if !self.settings.gateway.use_default_sender {
            return Err((own_problem, kind(retry_own)));
        }
        let Some(default) = &self.default_sender else {
            return Err((
                format!("{own_problem}; no default sender is configured"),
                Failure::Encryption,
            ));
        };
        match self.keys.signing_key(default, epoch).await {
            Ok(k) => Ok((k, default.clone())),
            Err(e) => {
                let retry = e.is_transient();
                Err((
                    format!("{own_problem}; and none for the default sender {default} ({e})"),
                    kind(retry),
                ))
            }
        }
    }

    async fn encrypt(
        &self,
        m: &Message<'_>,
        recipients: &[String],
        changes: &rewrite::Changes,
        work: &mut Work,
    ) {
        let id = m.id;
        // The sender whose key signs: the From address if it is one of this gateway's users,
        // else the envelope sender if it is (a message relayed for a user with a foreign
        // From); else nobody, and the default sender signs.
        let own = m
            .from
            .cloned()
            .filter(|f| self.is_internal(f.as_str()))
            .or_else(|| {
                Address::parse(&m.envelope.sender)
                    .ok()
                    .filter(|a| self.is_internal(a.as_str()))
            });
        let from = own.clone().or(m.from.cloned());
        let epoch = Epoch::from_unix(self.keys.now());
        let params = match self.keys.params().await {
            Ok(p) => p,
            Err(e) => {
                return work.fail(id, recipients, reason("cannot encrypt", &e), Failure::Retry);
            }
        };
        let (signer, signed_as) = match self.signer(own.as_ref(), epoch).await {
            Ok(s) => s,
            Err((why, kind)) => {
                return work.fail(id, recipients, format!("cannot sign: {why}"), kind);
            }
        };
        // Recipients in To and Cc share one sealed message; each blind copy gets its own.
        let mut shared: Vec<(String, Address)> = Vec::new();
        let mut groups: Vec<Vec<(String, Address)>> = Vec::new();
        for r in recipients {
            match Address::parse(r) {
                Ok(a) if m.visible.contains(&a) => shared.push((r.clone(), a)),
                Ok(a) => groups.push(vec![(r.clone(), a)]),
                Err(e) => work.fail(
                    id,
                    std::slice::from_ref(r),
                    reason("not an address a message can be encrypted to", &e),
                    Failure::Encryption,
                ),
            }
        }
        if !shared.is_empty() {
            groups.insert(0, shared);
        }
        if groups.is_empty() {
            return;
        }
        // Header changes go into what is sealed (and so into the outer subject too).
        let all: Vec<String> = groups.iter().flatten().map(|(r, _)| r.clone()).collect();
        let changed = if changes.is_empty() {
            None
        } else {
            match self.changed_copy(m.path, changes).await {
                Ok(f) => Some(f),
                Err(e) => {
                    return work.fail(
                        id,
                        &all,
                        reason("cannot copy the message", &e),
                        Failure::Retry,
                    );
                }
            }
        };
        let source = changed
            .as_ref()
            .map_or(m.path.to_path_buf(), |f| f.path().to_path_buf());
        let head = if changed.is_some() {
            None
        } else {
            Some(m.head.to_vec())
        };
        let keep_until = self.now() + u64::from(self.mime.kept_days).saturating_mul(86_400);
        // Read once for all the sealed copies of this message.
        let read = blocking(move || match head {
            Some(h) => transform::Original::with_head(&source, h),
            None => transform::Original::read(&source),
        })
        .await;
        let original = match read {
            Ok(o) => Arc::new(o),
            Err(e) => {
                if let Some(f) = changed {
                    f.discard();
                }
                return work.fail(id, &all, reason("cannot encrypt", &e), Failure::Retry);
            }
        };
        for group in groups {
            let job = Encrypt {
                original: original.clone(),
                recipients: group.iter().map(|(_, a)| a.clone()).collect(),
                epoch,
                sender: from.clone(),
                signer: signer.clone(),
                mark: self.mark.clone(),
                params: params.clone(),
                encaps: self.encaps.clone(),
                settings: self.mime.clone(),
                hostname: self.settings.hostname.clone(),
                keep_until: Some(keep_until),
            };
            let spool = self.queue.spool().clone();
            let made = tokio::task::spawn_blocking(move || transform::encrypt(&job, &spool)).await;
            let names: Vec<String> = group.iter().map(|(r, _)| r.clone()).collect();
            match made {
                Ok(Ok(made)) => {
                    self.counters.encrypted.fetch_add(1, Ordering::Relaxed);
                    let default = from.as_ref() != Some(&signed_as);
                    let note = format!(
                        "encrypted for {} ({epoch}); signed as {signed_as}{}{}",
                        names.join(", "),
                        if default { " (default sender)" } else { "" },
                        if made.kept.is_some() {
                            "; large: the sealed message is kept on the gateway"
                        } else {
                            ""
                        }
                    );
                    let file = made.email;
                    work.decision.kept.extend(made.kept);
                    tracing::info!(queue_id = %id, recipients = names.len(), signer = %signed_as, "encrypted");
                    // Keys of users whose keys were used are prefetched for next month.
                    if own.as_ref() == Some(&signed_as)
                        && !work.decision.users.contains(&signed_as.to_string())
                    {
                        work.decision.users.push(signed_as.to_string());
                    }
                    work.decision.copies.push(Copy {
                        file: Some(file),
                        routes: self.routes(&names),
                        note: Some(note),
                        replaces: None,
                        sender: None,
                    });
                }
                Ok(Err(e)) => {
                    let kind = Failure::of(&e, Failure::Encryption);
                    work.fail(id, &names, reason("cannot encrypt", &e), kind);
                }
                Err(e) => work.fail(id, &names, reason("cannot encrypt", &e), Failure::Retry),
            }
        }
        drop(original);
        if let Some(f) = changed {
            f.discard();
        }
    }

    async fn decrypt(
        &self,
        m: &Message<'_>,
        sealed: Result<transform::Located, (String, Failure)>,
        recipients: &[String],
        (reencrypt, scan): (bool, bool),
        work: &mut Work,
    ) {
        let id = m.id;
        let located = match sealed {
            Ok(l) => l,
            Err((e, kind)) => {
                return work.fail(id, recipients, reason("cannot decrypt", &e), kind);
            }
        };
        let header = &located.header;
        // Only recipients the message is sealed to can have it opened for them; anyone else
        // (a forward, a list) gets it as it came.
        let sealed_to: HashSet<&Address> = header.recipients.iter().map(|r| &r.address).collect();
        let mut addressed: Vec<(String, Address)> = Vec::new();
        let mut others = Vec::new();
        for r in recipients {
            match Address::parse(r) {
                Ok(a) if sealed_to.contains(&a) => addressed.push((r.clone(), a)),
                _ => others.push(r.clone()),
            }
        }
        if !others.is_empty() {
            tracing::info!(queue_id = %id, recipients = others.len(), "not sealed to these recipients: delivered encrypted");
            work.decision.copies.push(pass_as_is(self, &others));
        }
        if addressed.is_empty() {
            return;
        }
        let names: Vec<String> = addressed.iter().map(|(r, _)| r.clone()).collect();
        let mut params = match self.keys.params().await {
            Ok(p) => p,
            Err(e) => return work.fail(id, &names, reason("cannot decrypt", &e), Failure::Retry),
        };
        if params.get(header.sig_key_id).is_err() {
            // A master key newer than the parameters held: fetch them again.
            self.keys.refresh_params();
            if let Ok(p) = self.keys.params().await {
                params = p;
            }
        }
        let key = match self
            .first_key(&addressed, header.epoch, header.kem_key_id)
            .await
        {
            Ok(k) => k,
            Err(e) => {
                let kind = if e.is_transient() {
                    Failure::Retry
                } else {
                    Failure::Decryption
                };
                return work.fail(id, &names, reason("cannot decrypt", &e), kind);
            }
        };
        let job = Decrypt {
            source: m.path.to_path_buf(),
            outer: m.head.to_vec(),
            located,
            key,
            params,
            decaps: self.decaps.clone(),
            settings: self.mime.clone(),
            hostname: self.settings.hostname.clone(),
        };
        let spool = self.queue.spool().clone();
        let opened = tokio::task::spawn_blocking(move || transform::decrypt(&job, &spool)).await;
        let (file, signature) = match opened {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let kind = Failure::of(&e, Failure::Decryption);
                return work.fail(id, &names, reason("cannot decrypt", &e), kind);
            }
            Err(e) => return work.fail(id, &names, reason("cannot decrypt", &e), Failure::Retry),
        };
        self.counters.decrypted.fetch_add(1, Ordering::Relaxed);
        let verdict = signature.header_value();
        if matches!(signature, mime::Signature::Invalid { .. })
            && self.mime.error_on_verification_failure
        {
            file.discard();
            return work.fail(
                id,
                &names,
                format!("the signature does not verify ({verdict})"),
                Failure::Decryption,
            );
        }
        tracing::info!(queue_id = %id, recipients = names.len(), "decrypted; signature {verdict}");
        work.decision
            .users
            .extend(addressed.iter().map(|(_, a)| a.to_string()));
        let mut note = format!("decrypted; signature {verdict}");
        let (addressed, names) = if scan {
            let kept = self.scan_plain(m, file.path(), &addressed, work).await;
            if kept.is_empty() {
                file.discard();
                return;
            }
            let names: Vec<String> = kept.iter().map(|(r, _)| r.clone()).collect();
            note.push_str("; scanned");
            (kept, names)
        } else {
            (addressed, names)
        };
        let file = if reencrypt {
            match self.reencrypt(file, &addressed).await {
                Ok(f) => {
                    note.push_str("; encrypted again for delivery");
                    f
                }
                Err(why) => return work.fail(id, &names, why, Failure::Retry),
            }
        } else {
            file
        };
        work.decision.copies.push(Copy {
            file: Some(file),
            routes: self.routes(&names),
            note: Some(note),
            replaces: None,
            sender: None,
        });
    }

    /// The scan of `decrypt_scan_reencrypt`: the policy runs again on the plain message (as
    /// not encrypted). Recipients it quarantines or deletes are held or dropped (the message
    /// as received is what a quarantine keeps, so nothing plain is stored); the others are
    /// returned, to be encrypted again. Other decisions of the second pass change nothing.
    async fn scan_plain(
        &self,
        m: &Message<'_>,
        plain: &std::path::Path,
        addressed: &[(String, Address)],
        work: &mut Work,
    ) -> Vec<(String, Address)> {
        let names: Vec<String> = addressed.iter().map(|(r, _)| r.clone()).collect();
        let decided = self
            .decide(
                self.policy(),
                plain,
                &names,
                false,
                m.skip_rule,
                &m.envelope.sender,
            )
            .await;
        let eval = match decided {
            Ok((_, e)) => e,
            Err(e) => {
                let why = reason("cannot scan the decrypted message", &e);
                work.fail(m.id, &names, why, Failure::Retry);
                return Vec::new();
            }
        };
        if let Some(cut) = eval.cut {
            tracing::warn!(queue_id = %m.id, %cut, "a scan limit cut the policy's scan of the decrypted message");
        }
        let mut stopped: Vec<String> = Vec::new();
        for g in &eval.groups {
            if !matches!(
                g.terminal,
                policy::Action::Quarantine { .. } | policy::Action::Delete
            ) {
                continue;
            }
            let why = eval
                .trace
                .iter()
                .find(|s| s.matched && Some(&s.rule) == g.rule.as_ref())
                .map(|s| format!("in the decrypted message: {}", s.why))
                .unwrap_or_default();
            for (from_rule, action) in &g.actions {
                if let policy::Action::Notify { to, template } = action {
                    self.notice(m, g, from_rule, to, template, &why, work);
                }
            }
            self.stop(m, g, &why, work);
            stopped.extend(g.recipients.iter().cloned());
        }
        addressed
            .iter()
            .filter(|(r, _)| !stopped.contains(r))
            .cloned()
            .collect()
    }

    async fn first_key(
        &self,
        addressed: &[(String, Address)],
        epoch: Epoch,
        key_id: KeyId,
    ) -> Result<Arc<envelope::DecryptionKey>, KeyFailure> {
        let mut first_error = None;
        for (_, a) in addressed {
            match self.keys.decryption_key(a, epoch, key_id).await {
                Ok(k) => return Ok(k),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| KeyFailure::Broken("no recipient".into())))
    }

    /// Seals a decrypted message again for its internal recipients, signed by the default
    /// sender (the original signer's key is not this gateway's to use).
    async fn reencrypt(
        &self,
        decrypted: store::Finished,
        recipients: &[(String, Address)],
    ) -> Result<store::Finished, String> {
        let made = async {
            let epoch = Epoch::from_unix(self.keys.now());
            let params = self.keys.params().await.map_err(|e| e.to_string())?;
            let default = self
                .default_sender
                .clone()
                .ok_or("no default sender is configured")?;
            let signer = self
                .keys
                .signing_key(&default, epoch)
                .await
                .map_err(|e| format!("no signing key for the default sender: {e}"))?;
            let path = decrypted.path().to_path_buf();
            let original = tokio::task::spawn_blocking(move || transform::Original::read(&path))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let job = Encrypt {
                original: Arc::new(original),
                recipients: recipients.iter().map(|(_, a)| a.clone()).collect(),
                epoch,
                sender: Some(default),
                signer,
                mark: self.mark.clone(),
                params,
                encaps: self.encaps.clone(),
                settings: self.mime.clone(),
                hostname: self.settings.hostname.clone(),
                // Internal mail carries its sealed message whatever its size.
                keep_until: None,
            };
            let spool = self.queue.spool().clone();
            tokio::task::spawn_blocking(move || transform::encrypt(&job, &spool))
                .await
                .map_err(|e| e.to_string())?
                .map(|made| made.email)
                .map_err(|e: TransformError| e.to_string())
        }
        .await;
        decrypted.discard();
        made.map_err(|e| format!("cannot encrypt again after decrypting: {e}"))
    }

    /// The errored queue's clock: retries when due, everything at once when the key server
    /// answers again, bounces past the lifetime; expiry of quarantine and kept messages; and
    /// the key prefetch (in a task of its own, so that a long one holds nothing up). Runs
    /// until `stop` turns true.
    pub async fn maintain(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let g = &self.settings.gateway;
        let mut last_probe = 0u64;
        let mut was_down = false;
        let mut last_expiry = 0u64;
        let mut last_prefetch = 0u64;
        let started = self.now();
        loop {
            if *stop.borrow() {
                return;
            }
            let now = self.now();
            self.maintenance_beat
                .store(now, std::sync::atomic::Ordering::Relaxed);
            let down = self.keys.is_down();
            if down && !was_down {
                // The first check comes one probe interval after the outage is noticed.
                last_probe = now;
            }
            was_down = down;
            if down && now >= last_probe + g.keyserver_probe_secs {
                last_probe = now;
                // A probe waits for the key server's timeout; a shutdown does not wait for it.
                let answered = tokio::select! {
                    up = self.keys.probe() => up,
                    _ = stop.changed() => return,
                };
                if answered {
                    match self
                        .queue
                        .requeue_errored(u64::MAX, &ErroredFilter::default())
                        .await
                    {
                        Ok(n) if n > 0 => {
                            tracing::info!(
                                recipients = n,
                                "the key server is back: retrying the errored queue"
                            );
                            self.wake.notify_one();
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "cannot retry the errored queue"),
                    }
                }
            }
            // Bounces first: a recipient past its lifetime is not retried once more.
            if now >= last_expiry + 5 {
                last_expiry = now;
                self.expire(now).await;
                match self.queue.expire_quarantine(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        messages = n,
                        "deleted from quarantine: past their area's retention"
                    ),
                    Err(e) => tracing::error!(error = %e, "cannot expire the quarantine"),
                }
                match self.queue.expire_kept(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        messages = n,
                        "removed kept sealed messages: their links have expired"
                    ),
                    Err(e) => tracing::error!(error = %e, "cannot remove expired kept messages"),
                }
            }
            match self
                .queue
                .requeue_errored(now, &ErroredFilter::default())
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(recipients = n, "retrying errored messages");
                    self.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot retry the errored queue"),
            }
            // The first prefetch waits a little, so that a key server in this process is up.
            if now >= started + 5
                && now >= last_prefetch + g.prefetch_interval_secs
                && !self
                    .prefetching
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                last_prefetch = now;
                let me = self.clone();
                tokio::spawn(async move {
                    // Cleared however the prefetch ends, a panic included.
                    struct Done(Arc<Pipeline>);
                    impl Drop for Done {
                        fn drop(&mut self) {
                            self.0
                                .prefetching
                                .store(false, std::sync::atomic::Ordering::Release);
                        }
                    }
                    let done = Done(me);
                    done.0.prefetch().await;
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
        let cutoff = now.saturating_sub(self.settings.gateway.errored_lifetime_secs);
        let expired = match self.queue.expired_errored(cutoff).await {
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
                .filter(|(a, _)| !self.is_decrypt_address(a))
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
            if let Err(e) = self.queue.record(&d.id, &outcomes).await {
                tracing::error!(queue_id = %d.id, error = %e, "cannot record the bounce");
            }
        }
    }

    async fn bounce(
        &self,
        d: &store::Delivery,
        failed: &[(String, String)],
    ) -> Result<(), store::QueueError> {
        notify::bounce(&self.queue, &self.settings.hostname, d, failed).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Fetches this month's and, inside the prefetch window, next month's decryption and
    /// signing keys for the gateway's users into the key cache.
    pub async fn prefetch(&self) {
        let g = &self.settings.gateway;
        let now = self.keys.now();
        let this = Epoch::from_unix(now);
        let next = this.next();
        let mut epochs = vec![this];
        if now + u64::from(g.prefetch_days) * 86_400 >= next.start_unix() {
            epochs.push(next);
        }
        let since = self
            .now()
            .saturating_sub(u64::from(g.prefetch_seen_days) * 86_400);
        let mut addresses: Vec<Address> = match self.queue.users_seen(since).await {
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
        addresses.extend(self.default_sender.clone());
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return;
        }
        if self.keys.params().await.is_err() {
            tracing::warn!("prefetch: no public parameters; trying again later");
            return;
        }
        for epoch in epochs {
            let report = self
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

#[cfg(test)]
mod tests {
    use super::*;

    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(28)
    }

    #[test]
    fn a_full_disk_anywhere_in_a_transformation_is_a_retry() {
        let sealing = TransformError::Seal(envelope::SealError::Io(enospc()));
        assert_eq!(Failure::of(&sealing, Failure::Encryption), Failure::Retry);
        let opening = TransformError::Open(envelope::OpenError::Io(enospc()));
        assert_eq!(Failure::of(&opening, Failure::Decryption), Failure::Retry);
        let reading =
            TransformError::NotSealed(mime::ReadError::Io(std::io::Error::from_raw_os_error(5)));
        assert_eq!(Failure::of(&reading, Failure::Decryption), Failure::Retry);
        let spool = TransformError::Io(enospc());
        assert_eq!(Failure::of(&spool, Failure::Encryption), Failure::Retry);
    }

    #[test]
    fn a_fault_of_the_message_or_key_goes_to_the_exception_rules() {
        let damaged = TransformError::Open(envelope::OpenError::Tampered(3));
        assert_eq!(
            Failure::of(&damaged, Failure::Decryption),
            Failure::Decryption
        );
        let not_base64 = TransformError::Open(envelope::OpenError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not base64",
        )));
        assert_eq!(
            Failure::of(&not_base64, Failure::Decryption),
            Failure::Decryption
        );
        let nobody = TransformError::Seal(envelope::SealError::NoRecipients);
        assert_eq!(
            Failure::of(&nobody, Failure::Encryption),
            Failure::Encryption
        );
    }

    #[test]
    fn a_key_cache_on_a_full_disk_is_waited_for() {
        assert!(KeyFailure::Local("database or disk is full".into()).is_transient());
        assert!(KeyFailure::Unreachable("timeout".into()).is_transient());
        assert!(!KeyFailure::Refused("unknown domain".into()).is_transient());
    }
}
