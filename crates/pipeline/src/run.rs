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
use crate::keyring::{KeyFailure, KeyRing};
use crate::transform::{self, Decrypt, Encrypt, TransformError};

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
    /// A pipeline that wakes `delivery` when it has routed mail.
    pub fn new(
        queue: Queue,
        settings: Settings,
        keys: Arc<KeyRing>,
        delivery: Arc<Notify>,
    ) -> Arc<Self> {
        let internal = settings
            .internal_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        let default_sender = default_sender(&settings);
        Arc::new(Pipeline {
            queue,
            internal,
            mime: Arc::new(settings.mime.clone()),
            keys,
            default_sender,
            encaps: Arc::new(EncapsCache::with_clock(100_000, keys::clock::current_epoch)),
            decaps: Arc::new(DecapsCache::with_clock(100_000, keys::clock::current_epoch)),
            workers: Arc::new(Semaphore::new(settings.gateway.workers.max(1))),
            settings,
            counters: Counters::default(),
            wake: Arc::new(Notify::new()),
            delivery,
        })
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

    /// Runs until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let maintenance = tokio::spawn(self.clone().maintain(stop.clone()));
        loop {
            if *stop.borrow() {
                break;
            }
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
                for (id, envelope) in claimed {
                    let me = self.clone();
                    let recipients = envelope.recipients.clone();
                    let key = id.clone();
                    let handle = tasks.spawn(async move {
                        let Ok(_permit) = me.workers.clone().acquire_owned().await else {
                            return None;
                        };
                        Some(me.process(id, envelope).await)
                    });
                    waiting.insert(handle.id(), (key, recipients));
                }
                let mut batch = Vec::new();
                while let Some(done) = tasks.join_next_with_id().await {
                    match done {
                        Ok((task, Some(decision))) => {
                            waiting.remove(&task);
                            batch.push(decision);
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
                    Ok(()) => tracing::debug!(messages = ids.len(), "processed"),
                    Err(e) => {
                        tracing::error!(error = %e, messages = ids.len(), "cannot record processing; trying again");
                        if let Err(e) = self.queue.release(&ids).await {
                            tracing::error!(error = %e, "cannot release the messages; they are processed again at the next start");
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
        maintenance.abort();
    }

    /// Decides one message and makes its copies.
    async fn process(&self, id: String, envelope: Envelope) -> Decision {
        let mut decision = Decision {
            id: id.clone(),
            ..Decision::default()
        };
        let pass = |recipients: &[String]| pass_as_is(self, recipients);
        if envelope.source != Source::Policy {
            decision.copies.push(pass(&envelope.recipients));
            return decision;
        }
        let path = self.queue.spool().path(&id);
        let head = {
            let path = path.clone();
            match tokio::task::spawn_blocking(move || transform::read_head(&path)).await {
                Ok(Ok(h)) => h,
                other => {
                    let why = match other {
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => String::new(),
                    };
                    tracing::error!(queue_id = %id, error = %why, "cannot read the message; it stays in the errored queue");
                    decision.errored = envelope
                        .recipients
                        .iter()
                        .map(|r| Errored {
                            address: r.clone(),
                            reason: reason("cannot read the message", &why),
                        })
                        .collect();
                    return decision;
                }
            }
        };
        let fields = mime::headers::fields(&head);
        // The marker alone proves nothing: a message counts as encrypted only when a sealed
        // message can be read from it. A plain message with a forged marker is still encrypted
        // on its way out, and passes as the plain message it is on its way in.
        let sealed = if mime::is_encrypted(&fields) {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || transform::locate(&p)).await {
                Ok(Ok(h)) => Some(Ok(h)),
                Ok(Err(TransformError::NotSealed(mime::ReadError::NotFound))) => None,
                Ok(Err(e)) => Some(Err(e.to_string())),
                Err(e) => Some(Err(e.to_string())),
            }
        } else {
            None
        };
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

        let (mut to_encrypt, mut to_decrypt, mut to_pass) = (Vec::new(), Vec::new(), Vec::new());
        for r in &envelope.recipients {
            match (&sealed, self.is_internal(r)) {
                (Some(_), true) => to_decrypt.push(r.clone()),
                (Some(Ok(_)), false) => to_pass.push(r.clone()),
                (_, false) => to_encrypt.push(r.clone()),
                (None, true) => to_pass.push(r.clone()),
            }
        }
        if !to_pass.is_empty() {
            decision.copies.push(pass(&to_pass));
        }
        if !to_decrypt.is_empty()
            && let Some(sealed) = sealed
        {
            self.decrypt(&id, &path, &head, sealed, &to_decrypt, &mut decision)
                .await;
        }
        if !to_encrypt.is_empty() {
            // The sender whose key signs: the From address if it is one of this gateway's
            // users, else the envelope sender if it is (a message relayed for a user with a
            // foreign From); else nobody, and the default sender signs.
            let own = from
                .clone()
                .filter(|f| self.is_internal(f.as_str()))
                .or_else(|| {
                    Address::parse(&envelope.sender)
                        .ok()
                        .filter(|a| self.is_internal(a.as_str()))
                });
            let sender = own.clone().or(from.clone());
            self.encrypt(
                &id,
                &path,
                head,
                &to_encrypt,
                own.as_ref(),
                sender.as_ref(),
                &visible,
                &mut decision,
            )
            .await;
        }
        let errored = decision.errored.len() as u64;
        if errored > 0 {
            self.counters.errored.fetch_add(errored, Ordering::Relaxed);
        }
        decision
    }

    /// The signing key for mail from `sender`: the sender's own, else (if allowed) the default
    /// sender's. Returns the key and who it signs as.
    async fn signer(
        &self,
        sender: Option<&Address>,
        epoch: Epoch,
    ) -> Result<(Arc<envelope::SigningKey>, Address), String> {
        let own = match sender {
            Some(s) => match self.keys.signing_key(s, epoch).await {
                Ok(k) => return Ok((k, s.clone())),
                Err(e) => Some((s, e)),
            },
            None => None,
        };
        let own_problem = match &own {
            Some((s, e)) => format!("no signing key for the sender {s} ({e})"),
            None => "the sender is not one of this gateway's users".to_string(),
        };
        if !self.settings.gateway.use_default_sender {
            return Err(own_problem);
        }
        let Some(default) = &self.default_sender else {
            return Err(format!("{own_problem}; no default sender is configured"));
        };
        match self.keys.signing_key(default, epoch).await {
            Ok(k) => Ok((k, default.clone())),
            Err(e) => Err(format!(
                "{own_problem}; and none for the default sender {default} ({e})"
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn encrypt(
        &self,
        id: &str,
        path: &std::path::Path,
        head: Vec<u8>,
        recipients: &[String],
        own: Option<&Address>,
        from: Option<&Address>,
        visible: &HashSet<Address>,
        decision: &mut Decision,
    ) {
        let fail = |decision: &mut Decision, list: &[String], why: String| {
            put_in_errored(id, decision, list, why)
        };
        let epoch = Epoch::from_unix(self.keys.now());
        let params = match self.keys.params().await {
            Ok(p) => p,
            Err(e) => return fail(decision, recipients, reason("cannot encrypt", &e)),
        };
        let (signer, signed_as) = match self.signer(own, epoch).await {
            Ok(s) => s,
            Err(why) => return fail(decision, recipients, format!("cannot sign: {why}")),
        };
        // Recipients in To and Cc share one sealed message; each blind copy gets its own.
        let mut shared: Vec<(String, Address)> = Vec::new();
        let mut groups: Vec<Vec<(String, Address)>> = Vec::new();
        for r in recipients {
            match Address::parse(r) {
                Ok(a) if visible.contains(&a) => shared.push((r.clone(), a)),
                Ok(a) => groups.push(vec![(r.clone(), a)]),
                Err(e) => fail(
                    decision,
                    std::slice::from_ref(r),
                    reason("not an address a message can be encrypted to", &e),
                ),
            }
        }
        if !shared.is_empty() {
            groups.insert(0, shared);
        }
        if groups.is_empty() {
            return;
        }
        // Read once for all the sealed copies of this message.
        let all: Vec<String> = groups.iter().flatten().map(|(r, _)| r.clone()).collect();
        let path = path.to_path_buf();
        let read =
            tokio::task::spawn_blocking(move || transform::Original::with_head(&path, head)).await;
        let original = match read {
            Ok(Ok(o)) => Arc::new(o),
            Ok(Err(e)) => return fail(decision, &all, reason("cannot encrypt", &e)),
            Err(e) => return fail(decision, &all, reason("cannot encrypt", &e)),
        };
        for group in groups {
            let job = Encrypt {
                original: original.clone(),
                recipients: group.iter().map(|(_, a)| a.clone()).collect(),
                epoch,
                sender: from.cloned(),
                signer: signer.clone(),
                params: params.clone(),
                encaps: self.encaps.clone(),
                settings: self.mime.clone(),
                hostname: self.settings.hostname.clone(),
            };
            let spool = self.queue.spool().clone();
            let made = tokio::task::spawn_blocking(move || transform::encrypt(&job, &spool)).await;
            let names: Vec<String> = group.iter().map(|(r, _)| r.clone()).collect();
            match made {
                Ok(Ok(file)) => {
                    self.counters.encrypted.fetch_add(1, Ordering::Relaxed);
                    let default = from != Some(&signed_as);
                    let note = format!(
                        "encrypted for {} ({epoch}); signed as {signed_as}{}",
                        names.join(", "),
                        if default { " (default sender)" } else { "" }
                    );
                    tracing::info!(queue_id = %id, recipients = names.len(), signer = %signed_as, "encrypted");
                    // Keys of users whose keys were used are prefetched for next month.
                    if own == Some(&signed_as) && !decision.users.contains(&signed_as.to_string()) {
                        decision.users.push(signed_as.to_string());
                    }
                    decision.copies.push(Copy {
                        file: Some(file),
                        routes: self.routes(&names),
                        note: Some(note),
                    });
                }
                Ok(Err(e)) => fail(decision, &names, reason("cannot encrypt", &e)),
                Err(e) => fail(decision, &names, reason("cannot encrypt", &e)),
            }
        }
    }

    async fn decrypt(
        &self,
        id: &str,
        path: &std::path::Path,
        head: &[u8],
        sealed: Result<transform::Located, String>,
        recipients: &[String],
        decision: &mut Decision,
    ) {
        let fail = |decision: &mut Decision, list: &[String], why: String| {
            put_in_errored(id, decision, list, why)
        };
        let located = match sealed {
            Ok(l) => l,
            Err(e) => return fail(decision, recipients, reason("cannot decrypt", &e)),
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
            decision.copies.push(pass_as_is(self, &others));
        }
        if addressed.is_empty() {
            return;
        }
        let names: Vec<String> = addressed.iter().map(|(r, _)| r.clone()).collect();
        let mut params = match self.keys.params().await {
            Ok(p) => p,
            Err(e) => return fail(decision, &names, reason("cannot decrypt", &e)),
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
            Err(e) => return fail(decision, &names, reason("cannot decrypt", &e)),
        };
        let job = Decrypt {
            source: path.to_path_buf(),
            outer: head.to_vec(),
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
            Ok(Err(e)) => return fail(decision, &names, reason("cannot decrypt", &e)),
            Err(e) => return fail(decision, &names, reason("cannot decrypt", &e)),
        };
        self.counters.decrypted.fetch_add(1, Ordering::Relaxed);
        let verdict = signature.header_value();
        if matches!(signature, mime::Signature::Invalid { .. })
            && self.mime.error_on_verification_failure
        {
            file.discard();
            return fail(
                decision,
                &names,
                format!("the signature does not verify ({verdict})"),
            );
        }
        tracing::info!(queue_id = %id, recipients = names.len(), "decrypted; signature {verdict}");
        decision
            .users
            .extend(addressed.iter().map(|(_, a)| a.to_string()));
        let mut note = format!("decrypted; signature {verdict}");
        let file = if self.settings.gateway.reencrypt_inbound {
            match self.reencrypt(file, &addressed).await {
                Ok(f) => {
                    note.push_str("; encrypted again for delivery");
                    f
                }
                Err(why) => return fail(decision, &names, why),
            }
        } else {
            file
        };
        decision.copies.push(Copy {
            file: Some(file),
            routes: self.routes(&names),
            note: Some(note),
        });
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
                params,
                encaps: self.encaps.clone(),
                settings: self.mime.clone(),
                hostname: self.settings.hostname.clone(),
            };
            let spool = self.queue.spool().clone();
            tokio::task::spawn_blocking(move || transform::encrypt(&job, &spool))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e: TransformError| e.to_string())
        }
        .await;
        decrypted.discard();
        made.map_err(|e| format!("cannot encrypt again after decrypting: {e}"))
    }

    /// The errored queue's clock: retries when due, everything at once when the key server
    /// answers again, bounces past the lifetime; and the key prefetch.
    async fn maintain(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let g = &self.settings.gateway;
        let mut last_probe = 0u64;
        let mut was_down = false;
        let mut last_expiry = 0u64;
        let mut last_prefetch = 0u64;
        let started = store::queue::now();
        loop {
            if *stop.borrow() {
                return;
            }
            let now = store::queue::now();
            let down = self.keys.is_down();
            if down && !was_down {
                // The first check comes one probe interval after the outage is noticed.
                last_probe = now;
            }
            was_down = down;
            if down && now >= last_probe + g.keyserver_probe_secs {
                last_probe = now;
                if self.keys.probe().await {
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
            if now >= started + 5 && now >= last_prefetch + g.prefetch_interval_secs {
                last_prefetch = now;
                self.prefetch().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
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
            if !d.sender.is_empty()
                && let Err(e) = self.bounce(&d, &failed).await
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
        smtp::dsn::queue(&self.queue, &self.settings.hostname, d, failed).await?;
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
        let since = store::queue::now().saturating_sub(u64::from(g.prefetch_seen_days) * 86_400);
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
