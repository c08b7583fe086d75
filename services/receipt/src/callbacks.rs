//! Status callbacks: every status change of a message is POSTed, signed, to its callback
//! URL, in the order of its events, once.
//!
//! Data flow: a consumer in its own group (`callbacks.group_id`) reads the event log.
//! `MessageAccepted` fixes where a message's callbacks go (its `callback_url`, else the
//! sender's, else the account's, else the default) and with which secret; events that
//! change the status a client sees ([`status_of`]) become calls. Calls for one message go
//! through one queue, one at a time, so they arrive in event order; different messages
//! are called concurrently (`max_concurrent`), so a slow receiver holds up only its own
//! messages. A failing call is retried with exponential backoff and jitter
//! (`callbacks.retry`); after the last attempt it goes to the dead-letter topic with the
//! reason and the body.
//!
//! Exactly one call per event: after a call is answered (or dead-lettered), the message's
//! [`CallbackProgress`] (the event ids done) is written to the compacted callbacks topic,
//! and only then is the event's offset released for commit. On startup that topic is read
//! back first, so events re-read after a crash are recognised and skipped. The one window
//! left is a crash between the receiver's 2xx and the progress record: that call is made
//! again, with the same `X-Smsgw-Event-Id`, which receivers use to drop it.
//!
//! Why here: the receipt service owns final states, and the callbacks follow the event
//! log rather than any one service's outputs, so one reader sees every status in order.

use crate::metrics::Metrics;
use serde::Deserialize;
use smsgw_codec::SMPP_CLIENT_REF_PREFIX as SMPP_PREFIX;
use smsgw_codec::{AvroRecord, CallbackProgress, DeadLetter};
use smsgw_domain::{Event, EventPayload, MessageAccepted};
use smsgw_kafka::{
    consumer, now_ms, spawn_tail, Done, Incoming, KafkaConfig, KafkaError, OutRecord, Producer,
    RecordAt, Topics,
};
use smsgw_runtime::webhook::{post_with_retries, Call, Retry};
use smsgw_runtime::Shutdown;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Where callbacks go and how they are signed, for one sender or account.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Callback URL for messages that name none.
    #[serde(default)]
    pub url: Option<String>,
    /// HMAC-SHA256 signing secret (or `env:NAME`); unset: the default secret.
    #[serde(default)]
    pub secret: Option<String>,
}

/// Status callback settings (`[callbacks]` in the receipt config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// Make callbacks at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Consumer group on the event log.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Default callback URL for messages whose sender and account set none.
    #[serde(default)]
    pub default_url: Option<String>,
    /// Default signing secret (or `env:NAME`). Unset: callbacks are not signed unless
    /// their sender or account has a secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// Per account (`client_id`) URL and secret.
    #[serde(default)]
    pub accounts: HashMap<String, Target>,
    /// Per sender id URL and secret; wins over the account.
    #[serde(default)]
    pub senders: HashMap<String, Target>,
    /// Retries of a failing call.
    #[serde(default)]
    pub retry: Retry,
    /// Messages whose calls may be in progress at once.
    #[serde(default = "default_concurrent")]
    pub max_concurrent: usize,
    /// Event-log records taken but not yet finished (calls queued or in progress).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Messages whose callback state is kept in memory (oldest forgotten first).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// Hosts (names or IP literals, as written in URLs) that a message's own
    /// `callback_url` may use although they are or resolve to loopback, private,
    /// link-local or reserved addresses. Empty by default: a caller cannot make the
    /// gateway call inside the network (`smsgw_runtime::egress`). Configured URLs
    /// (`default_url`, `accounts`, `senders`) are the operator's and are not limited.
    #[serde(default)]
    pub allow_internal_hosts: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_group() -> String {
    "smsgw-callbacks".into()
}
fn default_concurrent() -> usize {
    256
}
fn default_in_flight() -> usize {
    10_000
}
fn default_capacity() -> usize {
    200_000
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            enabled: true,
            group_id: default_group(),
            default_url: None,
            secret: None,
            accounts: HashMap::new(),
            senders: HashMap::new(),
            retry: Retry::default(),
            max_concurrent: default_concurrent(),
            max_in_flight: default_in_flight(),
            capacity: default_capacity(),
            allow_internal_hosts: Vec::new(),
        }
    }
}

impl CallbackConfig {
    /// Fails fast on values that cannot work (including unresolvable `env:` secrets).
    pub fn validate(&self) -> Result<(), String> {
        self.retry.validate()?;
        if self.max_concurrent == 0 || self.max_in_flight == 0 || self.capacity == 0 {
            return Err(
                "callbacks max_concurrent, max_in_flight and capacity must be positive".into(),
            );
        }
        let targets = self.accounts.values().chain(self.senders.values());
        for secret in targets
            .filter_map(|t| t.secret.as_ref())
            .chain(self.secret.as_ref())
        {
            smsgw_runtime::secret(secret).map_err(|e| format!("callbacks secret: {e}"))?;
        }
        Ok(())
    }

    /// Where a message's callbacks go: its own URL, else its sender's, else its
    /// account's, else the default.
    pub fn url_for(&self, a: &MessageAccepted) -> Option<String> {
        a.callback_url
            .clone()
            .or_else(|| self.senders.get(&a.sender).and_then(|t| t.url.clone()))
            .or_else(|| self.accounts.get(&a.client_id).and_then(|t| t.url.clone()))
            .or_else(|| self.default_url.clone())
    }

    /// Whether `url` is one the operator configured (not one a message chose).
    pub fn is_configured(&self, url: &str) -> bool {
        self.default_url.as_deref() == Some(url)
            || self
                .senders
                .values()
                .chain(self.accounts.values())
                .any(|t| t.url.as_deref() == Some(url))
    }

    /// The signing secret for a message of `sender` and account `client_id`.
    pub fn secret_for(&self, client_id: &str, sender: &str) -> Option<String> {
        self.senders
            .get(sender)
            .and_then(|t| t.secret.clone())
            .or_else(|| self.accounts.get(client_id).and_then(|t| t.secret.clone()))
            .or_else(|| self.secret.clone())
            .and_then(|s| smsgw_runtime::secret(&s).ok())
    }
}

/// The status a client sees after an event, with what the callback reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `accepted`, `submitted`, `delivered`, `undelivered`, `failed`, `expired`,
    /// `blocked` or `cancelled`.
    pub status: &'static str,
    /// Carrier, when one is involved.
    pub carrier: Option<String>,
    /// The carrier's error code (DLR `err`), when it gave one.
    pub error_code: Option<String>,
    /// Segments, when the event says.
    pub segments: Option<i32>,
}

/// The client-visible status an event moves the message to; `None` for internal steps
/// (carrier selection, a failed attempt the router may retry elsewhere, rejection of a
/// request that never became a message). When no carrier is left, the router's
/// `MessageUndeliverable` carries the last receipt's `stat` and `err`.
pub fn status_of(p: &EventPayload) -> Option<Status> {
    let s = |status, carrier: Option<&String>, error_code: Option<&String>, segments| Status {
        status,
        carrier: carrier.cloned(),
        error_code: error_code.cloned(),
        segments,
    };
    Some(match p {
        EventPayload::Accepted(a) => s("accepted", None, None, Some(a.segments)),
        EventPayload::Submitted(x) => s("submitted", Some(&x.carrier), None, Some(x.segments)),
        EventPayload::Delivered(x) => s("delivered", Some(&x.carrier), None, None),
        EventPayload::Undeliverable(x) if x.stat.is_some() => s(
            "undelivered",
            x.carrier.as_ref(),
            x.error_code.as_ref(),
            None,
        ),
        EventPayload::Undeliverable(x) => s("failed", x.carrier.as_ref(), None, None),
        EventPayload::Expired(x) => s("expired", x.carrier.as_ref(), None, None),
        EventPayload::Blocked(_) => s("blocked", None, None, None),
        EventPayload::Cancelled(_) => s("cancelled", None, None, None),
        EventPayload::Rejected(_)
        | EventPayload::CarrierSelected(_)
        | EventPayload::SubmitFailed(_)
        | EventPayload::DeliveryFailed(_) => return None,
    })
}

/// The JSON body of the callback for `event`.
pub fn body(e: &Event, st: &Status, ctx: &CallbackProgress) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "message_id": e.message_id,
        "event_id": e.event_id,
        "status": st.status,
        "client_ref": ctx.client_ref,
        "carrier": st.carrier,
        "error_code": st.error_code,
        "segments": st.segments.unwrap_or(ctx.segments),
        "occurred_at": smsgw_smpp::rfc3339(e.occurred_at_ms),
        "occurred_at_ms": e.occurred_at_ms,
    }))
    .expect("a JSON object serialises")
}

/// One call waiting in a message's queue.
#[derive(Clone)]
struct Job {
    event_id: String,
    body: Vec<u8>,
    offset: (i32, i64),
    /// The status it reports, its error code, and when (for SMPP receipts).
    status: Status,
    occurred_at: i64,
}

/// The target of an SMPP account's delivery receipts (`smpp:<system_id>`), for a message
/// submitted over SMPP (the SMPP server sets its `client_ref` so) that asked for one.
pub fn smpp_target(a: &MessageAccepted) -> Option<String> {
    a.client_ref
        .as_deref()
        .filter(|r| r.len() > SMPP_PREFIX.len() && r.starts_with(SMPP_PREFIX))
        .filter(|_| a.registered_delivery == Some(true))
        .map(str::to_string)
}

/// The statuses an SMPP receipt reports: the final ones.
fn is_final_status(status: &str) -> bool {
    !matches!(status, "accepted" | "submitted")
}

/// Callback state of the messages that have a callback target.
///
/// At most `capacity` messages are remembered. Ended messages (their final call done)
/// are remembered so a re-read of their events makes no call, and are the first to be
/// let go when room is needed. Only when every remembered message is still open is the
/// oldest open one forgotten; that is counted (`forgotten`, shown as
/// `smsgw_receipt_callbacks_total{outcome="forgotten"}`) and logged, since its later
/// status changes get no call.
#[derive(Default)]
struct Book {
    progress: HashMap<String, CallbackProgress>,
    /// Open messages in the order learnt; ids that ended or were let go are skipped.
    open: VecDeque<String>,
    /// Ended messages in the order they ended.
    ended: VecDeque<String>,
    queues: HashMap<String, VecDeque<Job>>,
    capacity: usize,
    /// Open messages forgotten at capacity, not yet counted in the metrics.
    forgotten: u64,
}

/// True for the id of an event that ends a message (`<message id>/<kind>/<attempt>`).
fn is_final_event(event_id: &str) -> bool {
    const FINAL: [&str; 5] = [
        "MessageDelivered",
        "MessageUndeliverable",
        "MessageExpired",
        "MessageBlocked",
        "MessageCancelled",
    ];
    event_id
        .rsplit('/')
        .nth(1)
        .is_some_and(|kind| FINAL.contains(&kind))
}

fn has_ended(p: &CallbackProgress) -> bool {
    p.done.iter().any(|d| is_final_event(d))
}

impl Book {
    /// Learns a message (from its `MessageAccepted` or a progress record), merging the
    /// events done.
    fn learn(&mut self, p: CallbackProgress) {
        let id = p.message_id.clone();
        let ends = has_ended(&p);
        if let Some(known) = self.progress.get_mut(&id) {
            let was_ended = has_ended(known);
            let have: HashSet<String> = known.done.iter().cloned().collect();
            known
                .done
                .extend(p.done.into_iter().filter(|d| !have.contains(d)));
            if ends && !was_ended {
                self.ended.push_back(id);
            }
            return;
        }
        self.make_room();
        if ends {
            self.ended.push_back(id.clone());
        } else {
            self.open.push_back(id.clone());
        }
        self.progress.insert(id, p);
    }

    /// Lets go of the oldest ended message, or else forgets the oldest open one, while
    /// the book is full.
    fn make_room(&mut self) {
        if self.open.len() >= 2 * self.capacity {
            // Drop ids that ended or were let go (amortised over `capacity` learns).
            let progress = &self.progress;
            self.open
                .retain(|o| progress.get(o).is_some_and(|p| !has_ended(p)));
        }
        while self.progress.len() >= self.capacity {
            let (old, open) = match self.ended.pop_front() {
                Some(old) => (old, false),
                None => match self.open.pop_front() {
                    Some(old) => (old, true),
                    None => return,
                },
            };
            if self.queues.contains_key(&old) {
                // A call in progress: keep it (the book may exceed capacity by the
                // messages with calls in progress).
                if open {
                    self.open.push_back(old);
                } else {
                    self.ended.push_back(old);
                }
                return;
            }
            let ended = self.progress.get(&old).map(has_ended);
            if open && ended == Some(true) {
                continue; // it ended: its id is in `ended` too
            }
            if self.progress.remove(&old).is_some() && open {
                self.forgotten += 1;
                tracing::warn!(
                    message_id = %old,
                    capacity = self.capacity,
                    "status callbacks: more open messages than capacity; the oldest is forgotten and its later changes get no call"
                );
            }
        }
    }

    /// True if the event's call was made or is queued.
    fn seen(&self, id: &str, event_id: &str) -> bool {
        self.progress
            .get(id)
            .is_some_and(|p| p.done.iter().any(|d| d == event_id))
            || self
                .queues
                .get(id)
                .is_some_and(|q| q.iter().any(|j| j.event_id == event_id))
    }
}

struct Worker {
    config: Arc<CallbackConfig>,
    book: Arc<Mutex<Book>>,
    /// For configured URLs.
    client: reqwest::Client,
    /// For URLs a message chose: no internal addresses unless allowlisted.
    guarded: reqwest::Client,
    allow: std::collections::HashSet<String>,
    producer: Producer,
    topics: Topics,
    metrics: Metrics,
    /// The events topic, whose records the calls finish.
    topic: String,
    slots: Arc<Semaphore>,
    /// Events queued and not yet called and recorded: read again meanwhile (a partition
    /// given back), they are skipped, since their first reading finishes them.
    unstored: smsgw_kafka::Unstored,
}

fn lock(book: &Mutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

impl Worker {
    /// Works through one message's queue, in order, until it is empty.
    async fn drain(self: Arc<Self>, id: String, done: Done) {
        let finish = |(partition, offset): (i32, i64)| {
            let at = RecordAt {
                topic: self.topic.clone(),
                partition,
                offset,
            };
            self.unstored.remove(&at);
            done.finish(at)
        };
        let _slot = self.slots.clone().acquire_owned().await;
        loop {
            let (job, ctx) = {
                let mut b = lock(&self.book);
                let next = b.queues.get_mut(&id).and_then(|q| q.front().cloned());
                let Some(job) = next else {
                    b.queues.remove(&id);
                    return;
                };
                let ctx = b.progress.get(&id).cloned();
                (job, ctx)
            };
            let Some(mut ctx) = ctx else {
                // Cannot happen: a job is queued only for a known message.
                finish(job.offset);
                self.pop(&id);
                continue;
            };
            self.call(&ctx, &job).await;
            ctx.done.push(job.event_id.clone());
            ctx.updated_at = now_ms();
            // Record progress before releasing the offset; retry until Kafka has it.
            loop {
                match OutRecord::avro(self.topics.callbacks(), id.clone(), &ctx) {
                    Ok(rec) => match smsgw_kafka::send(&self.producer, &rec).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "callback progress not stored; retrying")
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "callback progress cannot be encoded");
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            self.pop(&id);
            lock(&self.book).learn(CallbackProgress {
                done: vec![job.event_id.clone()],
                ..ctx
            });
            finish(job.offset);
        }
    }

    /// Takes the finished job off `id`'s queue. The empty queue stays until the drain
    /// loop sees it empty (under the lock), so a job queued meanwhile is its.
    fn pop(&self, id: &str) {
        if let Some(q) = lock(&self.book).queues.get_mut(id) {
            q.pop_front();
        }
    }

    /// Writes an SMPP account's receipt to its topic for the SMPP server; retried until
    /// stored, or dead-lettered when the account has no topic (it was removed).
    async fn smpp_receipt(&self, ctx: &CallbackProgress, job: &Job) {
        let system_id = &ctx.url[SMPP_PREFIX.len()..];
        if !is_final_status(job.status.status) {
            return;
        }
        let receipt = smsgw_codec::SmppReceipt {
            message_id: ctx.message_id.clone(),
            event_id: job.event_id.clone(),
            system_id: system_id.to_string(),
            client_id: ctx.client_id.clone(),
            status: job.status.status.to_string(),
            error_code: job.status.error_code.clone(),
            source: ctx.sender.clone(),
            destination: ctx.destination.clone().unwrap_or_default(),
            submitted_at: ctx.accepted_at.unwrap_or(ctx.updated_at),
            done_at: job.occurred_at,
        };
        let topic = self.topics.smpp_receipts(system_id);
        let rec = match OutRecord::avro(topic.clone(), ctx.message_id.clone(), &receipt) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "SMPP receipt cannot be encoded");
                return;
            }
        };
        loop {
            match smsgw_kafka::send(&self.producer, &rec).await {
                Ok(()) => {
                    self.metrics
                        .callbacks
                        .with_label_values(&["smpp_receipt"])
                        .inc();
                    return;
                }
                Err(e) if e.is_unknown_topic() => {
                    self.metrics
                        .callbacks
                        .with_label_values(&["dead_lettered"])
                        .inc();
                    let dl = DeadLetter {
                        service: "receipt-callbacks".into(),
                        reason: format!(
                            "SMPP receipt: no topic {topic} (is the account configured?)"
                        ),
                        topic: self.topics.events(),
                        partition: job.offset.0,
                        offset: job.offset.1,
                        key: Some(ctx.message_id.clone().into_bytes()),
                        payload: Some(rec.payload.clone()),
                        headers: HashMap::new(),
                        failed_at: now_ms(),
                    };
                    self.dead_letter(&ctx.message_id, &dl).await;
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "SMPP receipt not stored; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Writes a dead letter, retrying until stored.
    async fn dead_letter(&self, key: &str, dl: &DeadLetter) {
        loop {
            let sent = match OutRecord::avro(self.topics.dead_letter(), key.to_string(), dl) {
                Ok(rec) => smsgw_kafka::send(&self.producer, &rec).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = %e, "dead letter not stored; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Makes one call with retries; dead-letters it after the last attempt.
    async fn call(&self, ctx: &CallbackProgress, job: &Job) {
        if ctx.url.starts_with(SMPP_PREFIX) {
            return self.smpp_receipt(ctx, job).await;
        }
        let secret = self.config.secret_for(&ctx.client_id, &ctx.sender);
        let call = Call {
            url: &ctx.url,
            body: &job.body,
            headers: vec![("x-smsgw-event-id", job.event_id.clone())],
            secret: secret.as_deref(),
        };
        let started = std::time::Instant::now();
        let m = &self.metrics;
        let chosen_by_caller = !self.config.is_configured(&ctx.url);
        let client = if chosen_by_caller {
            &self.guarded
        } else {
            &self.client
        };
        let r = match chosen_by_caller
            .then(|| smsgw_runtime::egress::check_url(&ctx.url, &self.allow))
            .transpose()
        {
            Err(refused) => Err(format!("refused: {refused}")),
            Ok(_) => {
                post_with_retries(client, &call, &self.config.retry, |attempt, err| {
                    m.callbacks.with_label_values(&["retried"]).inc();
                    tracing::warn!(attempt, error = %err, "status callback failed");
                })
                .await
            }
        };
        m.callback_seconds.observe(started.elapsed().as_secs_f64());
        match r {
            Ok(_) => m.callbacks.with_label_values(&["delivered"]).inc(),
            Err(reason) => {
                m.callbacks.with_label_values(&["dead_lettered"]).inc();
                let dl = DeadLetter {
                    service: "receipt-callbacks".into(),
                    reason: format!("status callback to {}: {reason}", ctx.url),
                    topic: self.topics.events(),
                    partition: job.offset.0,
                    offset: job.offset.1,
                    key: Some(ctx.message_id.clone().into_bytes()),
                    payload: Some(job.body.clone()),
                    headers: HashMap::new(),
                    failed_at: now_ms(),
                };
                self.dead_letter(&ctx.message_id, &dl).await;
            }
        }
    }
}

/// Runs the callback consumer until `shutdown`.
pub async fn run(
    config: CallbackConfig,
    kafka: KafkaConfig,
    metrics: Metrics,
    shutdown: Shutdown,
) -> Result<(), KafkaError> {
    let config = Arc::new(config);
    let book = Arc::new(Mutex::new(Book {
        capacity: config.capacity,
        ..Book::default()
    }));
    // What was already called, before reading any event.
    let (progress, progress_task) = {
        let b = book.clone();
        spawn_tail(
            &kafka,
            kafka.topics.callbacks(),
            None,
            shutdown.clone().wait(),
            move |p: CallbackProgress| lock(&b).learn(p),
        )
    };
    tokio::select! {
        _ = progress.caught_up() => {}
        _ = shutdown.clone().wait() => return Ok(()),
    }
    let topic = kafka.topics.events();
    let consumer = consumer(&kafka, &config.group_id)?;
    smsgw_kafka::join(&consumer, &kafka, &[&topic])?;
    let allow: std::collections::HashSet<String> =
        config.allow_internal_hosts.iter().cloned().collect();
    let caller = Arc::new(Worker {
        config: config.clone(),
        book: book.clone(),
        client: smsgw_runtime::egress::plain_client(),
        guarded: smsgw_runtime::egress::guarded_client(&allow),
        allow,
        producer: Producer::new(&kafka)?,
        topics: kafka.topics.clone(),
        metrics: metrics.clone(),
        topic,
        slots: Arc::new(Semaphore::new(config.max_concurrent)),
        unstored: smsgw_kafka::Unstored::default(),
    });
    tracing::info!("status callbacks consuming");
    let opts = smsgw_kafka::LoopOptions {
        max_in_flight: config.max_in_flight,
        tick: Some(Duration::from_millis(500)),
        drain: Duration::from_millis(200),
    };
    let mut events = EventWorker {
        config,
        book,
        caller,
        metrics,
    };
    // Calls still queued at shutdown stay uncommitted and are read again.
    let r = smsgw_kafka::run_loop(consumer, &mut events, opts, shutdown.clone().wait()).await;
    let _ = progress_task.await;
    r
}

/// The events topic's worker: queues a call per status change, one message at a time.
struct EventWorker {
    config: Arc<CallbackConfig>,
    book: Arc<Mutex<Book>>,
    caller: Arc<Worker>,
    metrics: Metrics,
}

impl smsgw_kafka::Worker for EventWorker {
    async fn on_record(&mut self, input: &Incoming<'_>, done: &Done) -> Result<(), KafkaError> {
        if self.caller.unstored.contains(&input.at()) {
            return Ok(()); // still queued from its first reading, which finishes it
        }
        match enqueue(
            &self.config,
            &self.book,
            input,
            (input.partition, input.offset),
        ) {
            Enqueued::Started(id) => {
                self.caller.unstored.insert(input.at());
                tokio::spawn(self.caller.clone().drain(id, done.clone()));
            }
            Enqueued::Queued => self.caller.unstored.insert(input.at()),
            Enqueued::Nothing(why) => {
                if why == "duplicate" {
                    self.metrics
                        .callbacks
                        .with_label_values(&["duplicate"])
                        .inc();
                }
                done.finish(input.at());
            }
        }
        Ok(())
    }

    async fn on_tick(&mut self, _now_ms: i64, _done: &Done) -> Result<(), KafkaError> {
        let (queued, forgotten) = {
            let mut b = lock(&self.book);
            let queued: usize = b.queues.values().map(|q| q.len()).sum();
            (queued, std::mem::take(&mut b.forgotten))
        };
        self.metrics.callback_queue.set(queued as i64);
        self.metrics
            .callbacks
            .with_label_values(&["forgotten"])
            .inc_by(forgotten);
        Ok(())
    }
}

enum Enqueued {
    /// Queued on an idle message: start its worker.
    Started(String),
    /// Queued behind a call in progress.
    Queued,
    /// No call for this record.
    Nothing(&'static str),
}

fn enqueue(
    config: &CallbackConfig,
    book: &Mutex<Book>,
    input: &Incoming<'_>,
    offset: (i32, i64),
) -> Enqueued {
    let Some(e) = input.payload.and_then(|p| Event::decode(p).ok()) else {
        // The router dead-letters undecodable events; here they are simply not called.
        return Enqueued::Nothing("undecodable");
    };
    let Some(status) = status_of(&e.payload) else {
        return Enqueued::Nothing("internal");
    };
    let mut b = lock(book);
    if let EventPayload::Accepted(a) = &e.payload {
        // An SMPP receipt also needs the recipient and the acceptance time, after a
        // restart too: they are kept in the progress record.
        let smpp = smpp_target(a);
        let (destination, accepted_at) = match smpp {
            Some(_) => (Some(a.destination.clone()), Some(e.occurred_at_ms)),
            None => (None, None),
        };
        match smpp.or_else(|| config.url_for(a)) {
            Some(url) => b.learn(CallbackProgress {
                message_id: e.message_id.clone(),
                url,
                client_id: a.client_id.clone(),
                sender: a.sender.clone(),
                client_ref: a.client_ref.clone(),
                segments: a.segments,
                destination,
                accepted_at,
                done: vec![],
                updated_at: e.occurred_at_ms,
            }),
            None => return Enqueued::Nothing("no_target"),
        }
    }
    if b.seen(&e.message_id, &e.event_id) {
        return Enqueued::Nothing("duplicate");
    }
    let Some(ctx) = b.progress.get(&e.message_id) else {
        return Enqueued::Nothing("no_target");
    };
    // An SMPP account is told final states only; its accepted event is still a (silent)
    // job, so that the progress record keeps the receipt's context over a restart.
    if ctx.url.starts_with(SMPP_PREFIX) && status.status == "submitted" {
        return Enqueued::Nothing("internal");
    }
    let job = Job {
        event_id: e.event_id.clone(),
        body: body(&e, &status, ctx),
        offset,
        status,
        occurred_at: e.occurred_at_ms,
    };
    // A queue that exists, even empty, has a drain loop that will look at it again
    // under this lock: only a new queue needs one started.
    match b.queues.entry(e.message_id.clone()) {
        std::collections::hash_map::Entry::Occupied(mut q) => {
            q.get_mut().push_back(job);
            Enqueued::Queued
        }
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(VecDeque::from([job]));
            Enqueued::Started(e.message_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgw_domain::{MessageSubmitted, MessageUndeliverable};

    fn accepted(url: Option<&str>, sender: &str, client: &str) -> MessageAccepted {
        MessageAccepted {
            client_id: client.into(),
            idempotency_key: None,
            client_ref: Some("order-7".into()),
            destination: "+447911123456".into(),
            sender: sender.into(),
            body: "hi".into(),
            encoding: "GSM7".into(),
            segments: 2,
            registered_delivery: None,
            expires_at: None,
            schedule_delivery_at: None,
            callback_url: url.map(Into::into),
            send_at: None,
            message_type: None,
        }
    }

    fn config() -> CallbackConfig {
        let mut c = CallbackConfig {
            default_url: Some("https://default.example/cb".into()),
            secret: Some("default-key".into()),
            ..Default::default()
        };
        c.accounts.insert(
            "shop".into(),
            Target {
                url: Some("https://shop.example/cb".into()),
                secret: Some("shop-key".into()),
            },
        );
        c.senders.insert(
            "ALERTS".into(),
            Target {
                url: Some("https://alerts.example/cb".into()),
                secret: None,
            },
        );
        c
    }

    #[test]
    fn the_message_url_wins_then_sender_then_account_then_default() {
        let c = config();
        let url = |u, s, a| c.url_for(&accepted(u, s, a));
        assert_eq!(
            url(Some("https://m.example/"), "ALERTS", "shop").as_deref(),
            Some("https://m.example/")
        );
        assert_eq!(
            url(None, "ALERTS", "shop").as_deref(),
            Some("https://alerts.example/cb")
        );
        assert_eq!(
            url(None, "SHOP", "shop").as_deref(),
            Some("https://shop.example/cb")
        );
        assert_eq!(
            url(None, "SHOP", "other").as_deref(),
            Some("https://default.example/cb")
        );
        assert_eq!(
            CallbackConfig::default().url_for(&accepted(None, "S", "c")),
            None
        );
        assert_eq!(c.secret_for("shop", "ALERTS").as_deref(), Some("shop-key"));
        assert_eq!(c.secret_for("other", "X").as_deref(), Some("default-key"));
    }

    #[test]
    fn statuses_follow_the_events_a_client_cares_about() {
        let st = |p: &EventPayload| status_of(p).map(|s| s.status);
        assert_eq!(
            st(&EventPayload::Accepted(accepted(None, "S", "c"))),
            Some("accepted")
        );
        let sub = EventPayload::Submitted(MessageSubmitted {
            carrier: "a".into(),
            attempt: 1,
            carrier_message_id: "x".into(),
            segments: 2,
            possible_duplicate: false,
            later_part_ids: vec![],
        });
        assert_eq!(status_of(&sub).unwrap().carrier.as_deref(), Some("a"));
        let undeliv = |stat: Option<&str>| {
            EventPayload::Undeliverable(MessageUndeliverable {
                carrier: Some("a".into()),
                reason: "r".into(),
                stat: stat.map(Into::into),
                error_code: stat.map(|_| "034".into()),
            })
        };
        let u = status_of(&undeliv(Some("UNDELIV"))).unwrap();
        assert_eq!(
            (u.status, u.error_code.as_deref()),
            ("undelivered", Some("034"))
        );
        assert_eq!(st(&undeliv(None)), Some("failed"));
        let sel = EventPayload::CarrierSelected(smsgw_domain::CarrierSelected {
            carrier: "a".into(),
            attempt: 1,
            strategy: "s".into(),
            score: None,
            factors: vec![],
            alternatives: vec![],
        });
        assert_eq!(st(&sel), None);
    }

    #[test]
    fn the_body_carries_id_status_error_segments_and_time() {
        let e = Event::new(
            "m1",
            EventPayload::Expired(smsgw_domain::MessageExpired {
                reason: "r".into(),
                carrier: None,
            }),
            0,
            1_795_723_051_213,
        );
        let ctx = CallbackProgress {
            message_id: "m1".into(),
            url: "https://x/".into(),
            client_id: "c".into(),
            sender: "S".into(),
            client_ref: Some("order-7".into()),
            segments: 3,
            destination: None,
            accepted_at: None,
            done: vec![],
            updated_at: 0,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&body(&e, &status_of(&e.payload).unwrap(), &ctx)).unwrap();
        assert_eq!(v["message_id"], "m1");
        assert_eq!(v["status"], "expired");
        assert_eq!(v["segments"], 3);
        assert_eq!(v["client_ref"], "order-7");
        assert_eq!(v["error_code"], serde_json::Value::Null);
        assert_eq!(v["occurred_at"], "2026-11-26T19:57:31.213Z");
        assert_eq!(v["event_id"], e.event_id);
    }

    /// Progress of message `id` with the events `done`.
    fn p(id: &str, done: &[&str]) -> CallbackProgress {
        CallbackProgress {
            message_id: id.into(),
            url: "u".into(),
            client_id: "c".into(),
            sender: "s".into(),
            client_ref: None,
            segments: 1,
            destination: None,
            accepted_at: None,
            done: done.iter().map(|s| s.to_string()).collect(),
            updated_at: 0,
        }
    }

    #[test]
    fn progress_merges_and_duplicates_are_seen() {
        let mut b = Book {
            capacity: 2,
            ..Book::default()
        };
        b.learn(p("m1", &["e1"]));
        b.learn(p("m1", &["e2", "e1"]));
        assert!(b.seen("m1", "e1") && b.seen("m1", "e2") && !b.seen("m1", "e3"));
        assert_eq!(b.progress["m1"].done.len(), 2);
        b.learn(p("m2", &[]));
        b.learn(p("m3", &[]));
        assert!(
            !b.progress.contains_key("m1"),
            "oldest forgotten at capacity"
        );
        assert_eq!(b.forgotten, 1, "and counted");
    }

    #[test]
    fn ended_messages_make_room_first_so_open_ones_are_not_forgotten() {
        let mut b = Book {
            capacity: 3,
            ..Book::default()
        };
        // Given one open message, then 100 that ended one after another.
        b.learn(p("open", &["open/MessageAccepted/0"]));
        for i in 0..100 {
            let id = format!("m{i}");
            b.learn(p(&id, &[]));
            b.learn(p(&id, &[&format!("{id}/MessageDelivered/1")]));
        }
        // Then the open one is still known and nothing open was forgotten; the most
        // recently ended are remembered (a re-read of their events calls nothing).
        assert!(b.progress.contains_key("open"));
        assert_eq!(b.forgotten, 0);
        assert!(b.seen("m99", "m99/MessageDelivered/1"));
        assert!(!b.progress.contains_key("m0"));
        assert!(b.progress.len() <= 3 && b.open.len() <= 6, "{:?}", b.open);
        // When the book is full of open messages, the oldest open one is forgotten
        // and counted.
        for i in 0..3 {
            b.learn(p(&format!("o{i}"), &[]));
        }
        assert!(!b.progress.contains_key("open"));
        assert_eq!(b.forgotten, 1);
        assert!(
            is_final_event("a/b/MessageCancelled/0") && !is_final_event("x/MessageSubmitted/1")
        );
    }
    /// An SMPP account's message: only its final state becomes a receipt (its accepted
    /// event a silent job that keeps the context), carrying the recipient and times.
    #[test]
    fn an_smpp_message_that_asked_for_a_receipt_gets_one_for_its_final_state() {
        let config = config();
        let book = Mutex::new(Book {
            capacity: 10,
            ..Book::default()
        });
        let mut a = accepted(None, "Shop", "acme");
        a.client_ref = Some("smpp:shop".into());
        a.registered_delivery = Some(true);
        let events = [
            Event::new("m1", EventPayload::Accepted(a.clone()), 0, 1_000),
            Event::new(
                "m1",
                EventPayload::Submitted(MessageSubmitted {
                    carrier: "c".into(),
                    attempt: 1,
                    carrier_message_id: "x".into(),
                    segments: 1,
                    possible_duplicate: false,
                    later_part_ids: vec![],
                }),
                1,
                2_000,
            ),
            Event::new(
                "m1",
                EventPayload::Undeliverable(MessageUndeliverable {
                    carrier: Some("c".into()),
                    reason: "r".into(),
                    stat: Some("UNDELIV".into()),
                    error_code: Some("34".into()),
                }),
                1,
                3_000,
            ),
        ];
        let outcomes: Vec<&'static str> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let bytes = e.encode().unwrap();
                let input = Incoming {
                    topic: "events",
                    partition: 0,
                    offset: i as i64,
                    key: None,
                    payload: Some(&bytes),
                    headers: vec![],
                    timestamp_ms: None,
                };
                match enqueue(&config, &book, &input, (0, i as i64)) {
                    Enqueued::Started(_) => "started",
                    Enqueued::Queued => "queued",
                    Enqueued::Nothing(why) => why,
                }
            })
            .collect();
        assert_eq!(outcomes, ["started", "internal", "queued"]);
        let b = lock(&book);
        let ctx = &b.progress["m1"];
        assert_eq!(ctx.url, "smpp:shop");
        assert_eq!(ctx.destination.as_deref(), Some("+447911123456"));
        assert_eq!(ctx.accepted_at, Some(1_000));
        let jobs: Vec<_> = b.queues["m1"]
            .iter()
            .map(|j| (j.status.status, j.occurred_at))
            .collect();
        assert_eq!(jobs, [("accepted", 1_000), ("undelivered", 3_000)]);
        assert!(!is_final_status("accepted") && is_final_status("undelivered"));

        // Without registered_delivery, or with another client_ref, it is an ordinary
        // message (here: no callback target at all).
        for (r, rd) in [
            (Some("smpp:shop"), None),
            (Some("order-7"), Some(true)),
            (Some("smpp:"), Some(true)),
        ] {
            let mut plain = a.clone();
            plain.client_ref = r.map(Into::into);
            plain.registered_delivery = rd;
            assert_eq!(smpp_target(&plain), None, "{r:?} {rd:?}");
        }
    }
}
