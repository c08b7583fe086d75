//! The per-carrier dispatch loop: take work from the carrier's topic, submit it within the
//! window, record the outcome, and store offsets only for work whose outcome is recorded.

use crate::config::{CarrierConfig, ErrorAction};
use crate::http::HttpConnector;
use crate::metrics::Metrics;
use crate::pdu::{build_submits, classify, Attempt};
use crate::pool::BindPool;
use rusmpp::pdus::SubmitSm;
use smsgw_codec::{
    AvroRecord, CarrierRecord, CarrierRecordKind, DispatchRequested, SubmitCorrelated,
};
use smsgw_domain::{Command, EventPayload, Message, State, SubmitOutcome};
use smsgw_kafka::{
    consumer, dead_letter, now_ms, send_until_stored, Done, Incoming, KafkaError, OutRecord,
    Producer, Topics,
};
use smsgw_runtime::Shutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the loop needs.
#[derive(Debug, Clone)]
pub struct DispatchCtx {
    /// Carrier settings.
    pub carrier: CarrierConfig,
    /// Producer.
    pub producer: Producer,
    /// Topic names.
    pub topics: Topics,
    /// Metrics.
    pub metrics: Metrics,
    /// The carrier's rate limit, shared by its binds.
    pub limiter: std::sync::Arc<crate::limiter::RateLimiter>,
    /// The opt-out log, checked again just before a message's first submit.
    pub optouts: crate::optouts::OptOutGate,
    /// Shutdown: work whose first part has not left is given up once it is requested.
    pub shutdown: Shutdown,
}

impl DispatchCtx {
    /// Awaits `wait`, unless shutdown is requested first while nothing of the message
    /// has left (`may_abandon`): then `None`.
    async fn unless_stopping<T>(
        &self,
        may_abandon: bool,
        wait: impl Future<Output = T>,
    ) -> Option<T> {
        if !may_abandon {
            return Some(wait.await);
        }
        if self.shutdown.requested() {
            return None;
        }
        tokio::select! {
            biased;
            _ = self.shutdown.clone().wait() => None,
            v = wait => Some(v),
        }
    }
}

/// The attempts on their way; a panic elsewhere cannot leave them unusable.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a send stopped before completing.
#[derive(Debug)]
enum Stop {
    /// The attempt failed.
    Failed(SubmitOutcome),
    /// The recipient opted out (scope) after the message was routed: nothing was sent.
    Blocked(String),
    /// The sender cancelled it (who asked) after it was routed: nothing was sent.
    Cancelled(Option<String>),
    /// Shutdown came before anything was sent: nothing to record.
    Abandoned,
}

/// How submits reach the carrier.
#[derive(Debug, Clone)]
pub enum Link {
    /// The carrier's SMPP binds.
    Smpp(BindPool),
    /// An HTTP carrier.
    Http(Arc<HttpConnector>),
}

/// Runs until `ctx.shutdown`; then gives up work not yet sent, lets what is on the wire
/// finish for at most `drain`, stores the offsets of what finished and closes.
pub async fn run_dispatch(
    ctx: DispatchCtx,
    kafka: &smsgw_kafka::KafkaConfig,
    link: Link,
    restart_lookback_ms: i64,
    drain: Duration,
) -> Result<(), KafkaError> {
    let topic = ctx.topics.dispatch(&ctx.carrier.name);
    let consumer = consumer(kafka, &ctx.carrier.group())?;
    smsgw_kafka::join(&consumer, kafka, &[&topic])?;
    // Work in flight: every submitting bind's window, so a full pool takes no more.
    let binds = ctx
        .carrier
        .sessions()
        .iter()
        .filter(|(_, r)| r.submits())
        .count();
    let in_flight = ctx.carrier.window * binds;
    let mut recovery = crate::recovery::Recovery::new(&ctx.carrier.name, now_ms(), in_flight);
    // Look back at least to the oldest dispatch record not yet committed: the work that
    // may have been in flight when the last process died is no older than that.
    let lookback = lookback_to_oldest_work(kafka, &ctx, restart_lookback_ms).await?;
    let read = learn_outcomes(kafka, &ctx.topics, lookback, &mut recovery).await?;
    tracing::info!(carrier = %ctx.carrier.name, outcomes = recovery.len(), read, lookback_ms = lookback, "dispatcher warm-up done");
    let stop = ctx.shutdown.clone();
    let mut worker = DispatchWorker {
        ctx,
        link,
        recovery,
        in_flight: Arc::default(),
        kafka: kafka.clone(),
        lookback_ms: restart_lookback_ms,
        first_assignment: true,
    };
    let opts = smsgw_kafka::LoopOptions {
        max_in_flight: in_flight,
        tick: None,
        drain,
    };
    smsgw_kafka::run_loop(consumer, &mut worker, opts, stop.wait()).await
}

/// How far back to read the event log: to the oldest dispatch record of this carrier's
/// group not yet committed (the work that may have been in flight), at least
/// `configured` ([`crate::recovery::window`]). Retried while the broker fails it.
async fn lookback_to_oldest_work(
    kafka: &smsgw_kafka::KafkaConfig,
    ctx: &DispatchCtx,
    configured: i64,
) -> Result<i64, KafkaError> {
    let (group, topic) = (ctx.carrier.group(), ctx.topics.dispatch(&ctx.carrier.name));
    let oldest = smsgw_kafka::retry_startup("dispatcher commit look-up", || {
        smsgw_kafka::oldest_uncommitted_ms(kafka, &group, &topic)
    })
    .await?;
    Ok(crate::recovery::window(configured, oldest, now_ms()))
}

/// The event-log records of the last `lookback_ms`, for the recovery to fold.
async fn read_outcomes(
    kafka: &smsgw_kafka::KafkaConfig,
    topics: &Topics,
    lookback_ms: i64,
) -> Result<Vec<Vec<u8>>, KafkaError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    smsgw_kafka::read_recent(kafka, topics.events(), lookback_ms, move |_, p| {
        let _ = tx.send(p.to_vec());
    })
    .await?;
    let mut out = Vec::new();
    while let Ok(bytes) = rx.try_recv() {
        out.push(bytes);
    }
    Ok(out)
}

/// Folds the last `lookback_ms` of the event log into `recovery` (the read retried while
/// the broker fails it); returns how many records were read.
async fn learn_outcomes(
    kafka: &smsgw_kafka::KafkaConfig,
    topics: &Topics,
    lookback_ms: i64,
    recovery: &mut crate::recovery::Recovery,
) -> Result<usize, KafkaError> {
    let read = smsgw_kafka::retry_startup("dispatcher warm-up", || {
        read_outcomes(kafka, topics, lookback_ms)
    })
    .await?;
    for bytes in &read {
        recovery.fold_bytes(bytes);
    }
    Ok(read.len())
}

/// One carrier's dispatch work, as the consumer loop's worker.
struct DispatchWorker {
    ctx: DispatchCtx,
    link: Link,
    recovery: crate::recovery::Recovery,
    /// Attempts on their way, and the records repeating them (reported with them).
    in_flight: Arc<std::sync::Mutex<crate::recovery::InFlight<smsgw_kafka::RecordAt>>>,
    kafka: smsgw_kafka::KafkaConfig,
    lookback_ms: i64,
    first_assignment: bool,
}

impl smsgw_kafka::Worker for DispatchWorker {
    async fn on_record(&mut self, input: &Incoming<'_>, done: &Done) -> Result<(), KafkaError> {
        let ctx = &self.ctx;
        if let Some(produced) = input.timestamp_ms {
            ctx.metrics
                .consumer_lag
                .with_label_values(&[&ctx.carrier.name, &input.partition.to_string()])
                .set(((now_ms() - produced).max(0) as f64) / 1000.0);
        }
        let at = input.at();
        match input.payload.map(DispatchRequested::decode) {
            Some(Ok(req)) => {
                let verdict = self.recovery.check(
                    input.partition,
                    input.timestamp_ms,
                    &req.message_id,
                    req.attempt,
                );
                if verdict == crate::recovery::Verdict::Done {
                    ctx.metrics
                        .redelivered
                        .with_label_values(&[&ctx.carrier.name])
                        .inc();
                    // Still on its way here: finished with the original, never before.
                    let Some(at) = lock(&self.in_flight).repeat(&req.message_id, req.attempt, at)
                    else {
                        return Ok(());
                    };
                    let Some((ids, submitted_at)) =
                        self.recovery.unsettled_submit(&req.message_id, req.attempt)
                    else {
                        done.finish(at);
                        return Ok(());
                    };
                    // Sent but not ended: the correlations may have died with the last
                    // process (they are written after the event), so they are written
                    // again, one per part.
                    let n = ids.len() as i32;
                    let corrs: Vec<CarrierRecord> = ids
                        .iter()
                        .enumerate()
                        .map(|(i, cmid)| {
                            correlation(
                                &ctx.carrier.name,
                                cmid,
                                &req.message_id,
                                req.attempt,
                                (i as i32 + 1, n),
                                submitted_at,
                            )
                        })
                        .collect();
                    let (producer, done, topic) =
                        (ctx.producer.clone(), done.clone(), ctx.topics.receipts());
                    tracing::info!(carrier = %ctx.carrier.name, message_id = %req.message_id, parts = n, "submit recorded before the restart: its correlations are written again");
                    tokio::spawn(async move {
                        for corr in corrs {
                            if let Ok(rec) = OutRecord::avro(topic.clone(), corr.key(), &corr) {
                                send_until_stored(&producer, &rec).await;
                            }
                        }
                        done.finish(at);
                    });
                    return Ok(());
                }
                let flagged = verdict == crate::recovery::Verdict::PossibleDuplicate;
                let (ctx, link, done) = (ctx.clone(), self.link.clone(), done.clone());
                let in_flight = self.in_flight.clone();
                lock(&in_flight).start(&req.message_id, req.attempt);
                tokio::spawn(async move {
                    let (id, attempt) = (req.message_id.clone(), req.attempt);
                    let stored = submit_one(&ctx, req, link, flagged).await;
                    let repeats = lock(&in_flight).end(&id, attempt);
                    for at in std::iter::once(at).chain(repeats) {
                        if stored {
                            done.finish(at);
                        } else {
                            done.abandon(at);
                        }
                    }
                });
            }
            other => {
                let reason = match other {
                    Some(Err(e)) => format!("undecodable dispatch request: {e}"),
                    _ => "dispatch record has no value".to_string(),
                };
                ctx.metrics
                    .dead_lettered
                    .with_label_values(&[&ctx.carrier.name])
                    .inc();
                let rec = dead_letter(
                    &ctx.topics.dead_letter(),
                    "dispatcher",
                    &reason,
                    input,
                    now_ms(),
                );
                let (producer, done) = (ctx.producer.clone(), done.clone());
                tokio::spawn(async move {
                    send_until_stored(&producer, &rec).await;
                    done.finish(at);
                });
            }
        }
        Ok(())
    }

    /// A partition newly this dispatcher's (a rebalance, not the start): its previous
    /// owner may have had work on the wire, so the outcomes recorded since are learnt
    /// again and its older records get the restart treatment (sent flagged).
    async fn on_assigned(&mut self, partitions: &[(String, i32)]) -> Result<(), KafkaError> {
        if std::mem::take(&mut self.first_assignment) {
            return Ok(());
        }
        let now = now_ms();
        let lookback = lookback_to_oldest_work(&self.kafka, &self.ctx, self.lookback_ms).await?;
        learn_outcomes(&self.kafka, &self.ctx.topics, lookback, &mut self.recovery).await?;
        for (_, p) in partitions {
            self.recovery.assigned(*p, now);
        }
        tracing::info!(carrier = %self.ctx.carrier.name, ?partitions, "dispatch partitions taken over; recovery run for them");
        Ok(())
    }

    async fn on_revoked(&mut self, partitions: &[(String, i32)]) {
        for (_, p) in partitions {
            self.recovery.revoked(*p);
        }
    }
}

/// Submits one part (or one HTTP request) under the carrier's rate limit and error
/// policy: throttling and queue-full statuses send the same thing again (slowing the
/// carrier down for throttling), other statuses fail the attempt. `once` makes one try;
/// its argument says whether it may give up (shutdown) while it waits to send.
async fn with_policy<F, Fut>(
    ctx: &DispatchCtx,
    segments: u32,
    gate: Option<&DispatchRequested>,
    mut once: F,
) -> Result<String, Stop>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let c = &ctx.carrier;
    let mut retries = 0;
    let fail = |command_status: Option<i32>, reason: String, retryable: bool, ambiguous: bool| {
        Err(Stop::Failed(SubmitOutcome::Failed {
            command_status,
            reason,
            retryable,
            ambiguous,
        }))
    };
    // Until the first part is accepted nothing of the message has left, so shutdown may
    // give it up.
    let may_abandon = gate.is_some();
    loop {
        if ctx
            .unless_stopping(may_abandon, ctx.limiter.acquire(segments))
            .await
            .is_none()
        {
            return Err(Stop::Abandoned);
        }
        // The last moment before the first part leaves: a STOP that arrived after
        // routing still blocks the message.
        if let Some(req) = gate {
            if let Some(actor) = ctx.optouts.cancelled(&req.message_id).await {
                return Err(Stop::Cancelled(actor));
            }
            if let Some(scope) = ctx.optouts.blocking_scope(req).await {
                return Err(Stop::Blocked(scope));
            }
        }
        let error = |kind: &str| {
            ctx.metrics
                .submit_errors
                .with_label_values(&[&c.name, kind])
                .inc()
        };
        let (code, name) = match once(may_abandon).await {
            Attempt::Abandoned => return Err(Stop::Abandoned),
            Attempt::Accepted(id) => {
                ctx.limiter.accepted(segments);
                return Ok(id);
            }
            Attempt::Unknown(reason) => {
                error("ambiguous");
                return fail(None, reason, true, true);
            }
            Attempt::NotSent(reason) => {
                error("not_sent");
                return fail(None, reason, true, false);
            }
            Attempt::Refused(code, name) => (code, name),
        };
        let action = c.action(code);
        error(match action {
            ErrorAction::Throttle => "throttle",
            ErrorAction::RetryLater => "retry_later",
            ErrorAction::FailRetryable => "fail_retryable",
            ErrorAction::FailPermanent => "fail_permanent",
        });
        let again = matches!(action, ErrorAction::Throttle | ErrorAction::RetryLater)
            && retries < c.throttle_retries;
        if !again {
            let retryable = action != ErrorAction::FailPermanent;
            return fail(Some(code as i32), name, retryable, false);
        }
        retries += 1;
        let (outcome, pause) = if action == ErrorAction::Throttle {
            // The limiter decides whether the carrier limits a rate; this submit keeps
            // its place in the window and goes again after a short pause.
            ctx.limiter.throttled();
            ("throttled", throttle_pause(retries))
        } else {
            ("retry_later", Duration::from_millis(c.retry_later_ms))
        };
        ctx.metrics
            .submits
            .with_label_values(&[&c.name, outcome])
            .inc();
        if ctx
            .unless_stopping(may_abandon, tokio::time::sleep(pause))
            .await
            .is_none()
        {
            return Err(Stop::Abandoned);
        }
    }
}

/// The pause before a throttled submit goes again: 10 ms, doubling with each retry of
/// the same submit, at most 640 ms. Short, because most throttles are answered by the
/// rate limiter and a throttled submit holds its window slot while it waits.
fn throttle_pause(retries: u32) -> Duration {
    Duration::from_millis(10 << retries.saturating_sub(1).min(6))
}

/// One `submit_sm` on a bind of the pool, waiting up to the grace for a bind (given up
/// at shutdown when `may_abandon`).
async fn submit_smpp(
    ctx: &DispatchCtx,
    pool: &BindPool,
    sm: &SubmitSm,
    may_abandon: bool,
) -> Attempt {
    let c = &ctx.carrier;
    let grace = Duration::from_millis(c.unbound_grace_ms);
    let Some(lease) = ctx.unless_stopping(may_abandon, pool.lease(grace)).await else {
        return Attempt::Abandoned;
    };
    let Some(lease) = lease else {
        return Attempt::NotSent(format!(
            "carrier {} not bound within {} ms",
            c.name, c.unbound_grace_ms
        ));
    };
    classify(lease.client.submit_sm(sm.clone()).await)
}

/// Sends a request over `link`: the carrier ids of what was accepted, and the failure
/// that stopped it, if any.
async fn send_over(
    ctx: &DispatchCtx,
    req: &DispatchRequested,
    link: &Link,
) -> (Vec<String>, Option<Stop>) {
    let c = &ctx.carrier;
    let pool = match link {
        Link::Http(http) => {
            let segments = req.segments.max(1) as u32;
            return match with_policy(ctx, segments, Some(req), |_| http.submit(req)).await {
                Ok(id) => (vec![id], None),
                Err(f) => (Vec::new(), Some(f)),
            };
        }
        Link::Smpp(pool) => pool,
    };
    let pdus = match build_submits(req, c.registered_delivery, c.long_messages.mode()) {
        Ok(p) => p,
        Err(reason) => {
            let f = SubmitOutcome::Failed {
                command_status: None,
                reason,
                retryable: false,
                ambiguous: false,
            };
            return (Vec::new(), Some(Stop::Failed(f)));
        }
    };
    // One PDU carries every segment in payload mode.
    let per_pdu = if pdus.len() == 1 {
        req.segments.max(1) as u32
    } else {
        1
    };
    let mut ids = Vec::new();
    for (i, sm) in pdus.iter().enumerate() {
        let gate = (i == 0).then_some(req);
        match with_policy(ctx, per_pdu, gate, |may_abandon| {
            submit_smpp(ctx, pool, sm, may_abandon)
        })
        .await
        {
            Ok(id) => ids.push(id),
            Err(f) => return (ids, Some(f)),
        }
    }
    (ids, None)
}

/// Submits one request, part by part, and records the outcome. If a later part fails
/// after earlier ones were accepted, the recipient may see fragments: the failure is
/// marked ambiguous. False when shutdown gave it up before anything was sent: nothing
/// is recorded and its offset must not be stored.
async fn submit_one(ctx: &DispatchCtx, req: DispatchRequested, link: Link, flagged: bool) -> bool {
    let c = &ctx.carrier;
    if req.expires_at.is_some_and(|e| e <= now_ms()) {
        // Never submit what is no longer worth delivering.
        ctx.metrics
            .submits
            .with_label_values(&[&c.name, "expired"])
            .inc();
        let reason = "validity period ended before submit".to_string();
        record(ctx, &req, Command::Expire { reason }, &[]).await;
        return true;
    }
    let (ids, failure) = send_over(ctx, &req, &link).await;
    let failure = match failure {
        Some(Stop::Abandoned) => {
            ctx.metrics
                .submits
                .with_label_values(&[&c.name, "abandoned"])
                .inc();
            return false;
        }
        Some(Stop::Blocked(scope)) => {
            ctx.metrics
                .submits
                .with_label_values(&[&c.name, "blocked"])
                .inc();
            let command = Command::Block {
                reason: "opted_out".into(),
                scope,
            };
            record(ctx, &req, command, &[]).await;
            return true;
        }
        Some(Stop::Cancelled(actor)) => {
            ctx.metrics
                .submits
                .with_label_values(&[&c.name, "cancelled"])
                .inc();
            let command = Command::Cancel {
                actor,
                stopped_by: "dispatcher".into(),
            };
            record(ctx, &req, command, &[]).await;
            return true;
        }
        Some(Stop::Failed(f)) => Some(f),
        None => None,
    };
    let outcome = match failure {
        None => SubmitOutcome::Accepted {
            carrier_message_id: ids[0].clone(),
            segments: if c.is_http() {
                req.segments
            } else {
                ids.len() as i32
            },
            possible_duplicate: flagged,
            later_part_ids: ids.iter().skip(1).cloned().collect(),
        },
        Some(SubmitOutcome::Failed {
            command_status,
            reason,
            retryable,
            ambiguous,
        }) => {
            let partial = !ids.is_empty();
            let reason = if partial {
                format!("part {} of {}: {reason}", ids.len() + 1, req.segments)
            } else {
                reason
            };
            SubmitOutcome::Failed {
                command_status,
                reason,
                retryable,
                ambiguous: ambiguous || partial,
            }
        }
        Some(accepted) => accepted,
    };
    if flagged && matches!(outcome, SubmitOutcome::Accepted { .. }) {
        ctx.metrics
            .possible_duplicates
            .with_label_values(&[&c.name])
            .inc();
    }
    let label = match &outcome {
        SubmitOutcome::Accepted { .. } => "ok",
        SubmitOutcome::Failed { ambiguous, .. } => {
            if *ambiguous {
                ctx.metrics.ambiguous.with_label_values(&[&c.name]).inc();
            }
            "failed"
        }
    };
    ctx.metrics
        .submits
        .with_label_values(&[&c.name, label])
        .inc();
    let now = now_ms();
    ctx.metrics
        .accept_to_submit
        .observe(((now - req.accepted_at).max(0) as f64) / 1000.0);
    let command = Command::RecordSubmit {
        carrier: c.name.clone(),
        attempt: req.attempt,
        outcome,
    };
    record(ctx, &req, command, &ids).await;
    true
}

/// Decides `command` on the routed message and stores its events; after a
/// `MessageSubmitted`, one correlation per accepted part (`ids`).
async fn record(ctx: &DispatchCtx, req: &DispatchRequested, command: Command, ids: &[String]) {
    let c = &ctx.carrier;
    let now = now_ms();
    let snapshot = Message::snapshot(
        req.message_id.clone(),
        State::Routed,
        req.attempt,
        req.carriers_tried.clone(),
    );
    let events = match snapshot.decide(command, now) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "domain refused a submit outcome");
            return;
        }
    };
    for ev in &events {
        match OutRecord::avro(ctx.topics.events(), ev.message_id.clone(), ev) {
            Ok(rec) => send_until_stored(&ctx.producer, &rec).await,
            Err(e) => tracing::error!(error = %e, "event encode"),
        }
        if let EventPayload::Submitted(s) = &ev.payload {
            // After the event is stored, so a receipt never overtakes its submission.
            // One correlation per part: each part gets its own receipt.
            for (i, id) in ids.iter().enumerate() {
                let part = (i as i32 + 1, ids.len() as i32);
                let corr = correlation(&c.name, id, &ev.message_id, s.attempt, part, now);
                match OutRecord::avro(ctx.topics.receipts(), corr.key(), &corr) {
                    Ok(rec) => send_until_stored(&ctx.producer, &rec).await,
                    Err(e) => tracing::error!(error = %e, "correlation encode"),
                }
            }
        }
    }
}

/// The receipts-topic record that lets the receipt service match part `part.0` of
/// `part.1`'s receipt (`carrier_message_id`) to the message's attempt.
fn correlation(
    carrier: &str,
    carrier_message_id: &str,
    message_id: &str,
    attempt: i32,
    part: (i32, i32),
    submitted_at: i64,
) -> CarrierRecord {
    CarrierRecord {
        carrier: carrier.to_string(),
        carrier_message_id: carrier_message_id.to_string(),
        received_at: submitted_at,
        kind: CarrierRecordKind::SubmitCorrelated(SubmitCorrelated {
            message_id: message_id.to_string(),
            attempt,
            part: part.0,
            parts: part.1,
        }),
    }
}
