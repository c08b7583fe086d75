//! smsgw receipt: turns carrier receipts into final states.
//!
//! Data flow: the dispatcher writes two kinds of record to the receipts topic, both keyed
//! `<carrier>:<carrier message id>`: a `SubmitCorrelated` when `submit_sm_resp` names the
//! carrier's id, and a `ReceiptReceived` for each delivery receipt. This service reads
//! the topic, pairs them in a [`correlator::Correlator`] (in either order: a receipt that
//! beats its `submit_sm_resp` waits for it), and writes `MessageDelivered`,
//! `DeliveryFailed` (the router then re-routes or ends the message) or `MessageExpired` to
//! the event log. A message with no final
//! receipt within `receipt_timeout_ms` is expired; a receipt nobody claims within
//! `orphan_timeout_ms` is dead-lettered whole, and remembered (also across a restart,
//! read back from the dead-letter topic at start) so that a correlation a restarted
//! dispatcher writes late still pairs with it. Both timeouts end a wait only on evidence that
//! its counterpart is not in the log: a later record of the partition shows the log that
//! far on, or the broker confirms the partition was read to its end after the timeout
//! (and after a grace since the last read error); a broker outage is not such evidence.
//! Offsets are stored only up to the oldest record still needed, so a restart rebuilds
//! the pairing state by re-reading.
//!
//! The same service makes the status callbacks to upstream applications, from its own
//! consumer group on the event log ([`callbacks`]).

pub mod callbacks;
pub mod correlator;
pub mod metrics;

use correlator::{Actions, Correlator};
use serde::Deserialize;
use smsgw_codec::{AvroRecord, CarrierRecord, CarrierRecordKind, DeadLetter};
use smsgw_kafka::{
    consumer, dead_letter, now_ms, Done, Incoming, KafkaConfig, KafkaError, OutRecord, Producer,
    RecordAt, Topics,
};
use smsgw_runtime::Shutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// Everything the receipt service needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers, client properties and topic names.
    pub kafka: KafkaConfig,
    /// Address of `/metrics` and `/healthz`.
    #[serde(default = "default_admin")]
    pub admin_listen: SocketAddr,
    /// Consumer group on the receipts topic.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// How long a submitted message waits for a final receipt before it expires (ms), in
    /// the receipts log's time: an outage does not count (see the crate docs).
    #[serde(default = "default_receipt_timeout")]
    pub receipt_timeout_ms: i64,
    /// How long a receipt waits for its submission to be correlated (ms), in the
    /// receipts log's time; also the grace after a read error before the broker's "read
    /// to the end" counts (at most 30 s).
    #[serde(default = "default_orphan_timeout")]
    pub orphan_timeout_ms: i64,
    /// How often timeouts are checked (ms).
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    /// Status callbacks to upstream applications.
    #[serde(default)]
    pub callbacks: callbacks::CallbackConfig,
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9103))
}
fn default_group() -> String {
    "smsgw-receipt".into()
}
fn default_receipt_timeout() -> i64 {
    72 * 3600 * 1000
}
fn default_orphan_timeout() -> i64 {
    10 * 60 * 1000
}
fn default_tick() -> u64 {
    1000
}

impl Config {
    /// A config with defaults.
    pub fn new(kafka: KafkaConfig) -> Self {
        Config {
            kafka,
            admin_listen: default_admin(),
            group_id: default_group(),
            receipt_timeout_ms: default_receipt_timeout(),
            orphan_timeout_ms: default_orphan_timeout(),
            tick_ms: default_tick(),
            callbacks: callbacks::CallbackConfig::default(),
        }
    }

    /// Fails fast on values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        if self.receipt_timeout_ms <= 0 || self.orphan_timeout_ms <= 0 || self.tick_ms == 0 {
            return Err(
                "receipt_timeout_ms, orphan_timeout_ms and tick_ms must be positive".into(),
            );
        }
        self.callbacks.validate()
    }
}

/// Why the receipt service stopped.
#[derive(Debug, Error)]
pub enum ReceiptError {
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// Kafka failed beyond what the loop rides out.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The admin endpoint could not start.
    #[error(transparent)]
    Runtime(#[from] smsgw_runtime::RuntimeError),
}

/// The receipts topic's worker: feeds the correlator and writes what it decides.
struct ReceiptWorker {
    topics: Topics,
    topic: String,
    producer: Producer,
    correlator: Correlator,
    metrics: metrics::Metrics,
    /// Inputs whose outputs are on their way: read again meanwhile, they are skipped.
    unstored: smsgw_kafka::Unstored,
    /// Confirms, for waits past their wall deadline, that their partitions were read to
    /// their end (the correlator's evidence for ending them).
    ends: EndCheck,
}

/// A question to the broker in flight: each partition's high watermark.
type Asking = tokio::task::JoinHandle<Result<Vec<(i32, i64)>, KafkaError>>;

/// Asks the broker, at most once a second and off the loop, whether partitions with
/// overdue waits were read to their end, and tells the correlator when they were, at a
/// time at least `grace` after the last read error (a producer that retried through an
/// outage may store records late).
struct EndCheck {
    kafka: KafkaConfig,
    /// The next offset to read, per partition (what was read so far).
    read_to: std::collections::HashMap<i32, i64>,
    /// The broker's high watermarks, asked at the given wall time.
    asking: Option<(i64, Asking)>,
    last_asked: i64,
    last_error: i64,
    grace_ms: i64,
}

impl EndCheck {
    /// Runs at each tick: takes a finished answer in, then asks again if needed.
    async fn tick(&mut self, topic: &str, now_ms: i64, correlator: &mut Correlator) {
        if self.asking.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            let (asked_at, h) = self.asking.take().expect("checked");
            match h.await {
                Ok(Ok(highs)) if asked_at - self.last_error >= self.grace_ms => {
                    for (p, high) in highs {
                        if self.read_to.get(&p).copied().unwrap_or(0) >= high {
                            correlator.read_to_end(p, asked_at);
                        }
                    }
                }
                Ok(Ok(_)) => {}
                _ => self.last_error = now_ms,
            }
        }
        let due = correlator.needs_end_check(now_ms);
        if self.asking.is_none() && !due.is_empty() && now_ms - self.last_asked >= 1_000 {
            self.last_asked = now_ms;
            let (kafka, topic) = (self.kafka.clone(), topic.to_string());
            let ask = tokio::spawn(async move {
                smsgw_kafka::high_watermarks(&kafka, &topic, &due, Duration::from_secs(5)).await
            });
            self.asking = Some((now_ms, ask));
        }
    }
}

impl smsgw_kafka::Worker for ReceiptWorker {
    async fn on_record(&mut self, input: &Incoming<'_>, done: &Done) -> Result<(), KafkaError> {
        let (p, o) = (input.partition, input.offset);
        let next = self.ends.read_to.entry(p).or_default();
        *next = (*next).max(o + 1);
        if self.unstored.contains(&input.at()) {
            // Read again (a partition given back) while the outputs its first reading
            // caused are on their way: that reading's report finishes it. Handled
            // again, a settled correlation would be skipped and committed early.
            return Ok(());
        }
        match input.payload.map(CarrierRecord::decode) {
            Some(Ok(rec)) => {
                let a = self.correlator.on_record(p, o, rec, now_ms());
                self.act(a, done).await
            }
            other => {
                let reason = match other {
                    Some(Err(e)) => format!("undecodable receipts record: {e}"),
                    _ => "receipts record has no value".into(),
                };
                self.metrics.dead_lettered.inc();
                let dl = dead_letter(
                    &self.topics.dead_letter(),
                    "receipt",
                    &reason,
                    input,
                    now_ms(),
                );
                self.send_then_done(vec![dl], vec![(p, o)], done).await
            }
        }
    }

    async fn on_tick(&mut self, now_ms: i64, done: &Done) -> Result<(), KafkaError> {
        self.ends
            .tick(&self.topic, now_ms, &mut self.correlator)
            .await;
        let a = self.correlator.on_tick(now_ms);
        self.act(a, done).await?;
        let (c, o) = self.correlator.waiting();
        let waiting = &self.metrics.waiting;
        waiting.with_label_values(&["correlation"]).set(c as i64);
        waiting.with_label_values(&["receipt"]).set(o as i64);
        Ok(())
    }

    async fn on_revoked(&mut self, partitions: &[(String, i32)]) {
        for (_, p) in partitions {
            self.correlator.revoke(*p);
            self.ends.read_to.remove(p);
        }
    }

    fn on_read_error(&mut self, now_ms: i64) {
        self.ends.last_error = now_ms;
    }
}

impl ReceiptWorker {
    /// Enqueues the outputs in order, then completes the offsets once all are acknowledged.
    async fn act(&mut self, a: Actions, done: &Done) -> Result<(), KafkaError> {
        let mut out = Vec::new();
        self.metrics.late_pairs.inc_by(a.late_pairs);
        for ms in &a.receipt_latencies_ms {
            self.metrics
                .submit_to_receipt
                .observe((*ms).max(0) as f64 / 1000.0);
        }
        for e in &a.events {
            self.metrics
                .events
                .with_label_values(&[e.payload.kind()])
                .inc();
            out.push(OutRecord::avro(
                self.topics.events(),
                e.message_id.clone(),
                e,
            )?);
        }
        for (p, o, reason, record) in &a.orphans {
            self.metrics.orphans.inc();
            // The receipt kept whole: an operator can replay it, and this service's
            // next life remembers it (see `given_up_receipt`).
            let dl = DeadLetter {
                service: "receipt".into(),
                reason: reason.clone(),
                topic: self.topic.clone(),
                partition: *p,
                offset: *o,
                key: Some(record.key().into_bytes()),
                payload: Some(record.encode()?),
                headers: Default::default(),
                failed_at: now_ms(),
            };
            out.push(OutRecord::avro(
                self.topics.dead_letter(),
                format!("{p}:{o}"),
                &dl,
            )?);
        }
        self.send_then_done(out, a.done, done).await
    }

    async fn send_then_done(
        &mut self,
        out: Vec<OutRecord>,
        finished: Vec<(i32, i64)>,
        done: &Done,
    ) -> Result<(), KafkaError> {
        let mut acks = Vec::with_capacity(out.len());
        for r in &out {
            acks.push(self.producer.enqueue(r).await?);
        }
        let (done, producer, topic) = (done.clone(), self.producer.clone(), self.topic.clone());
        let resent = self.metrics.outputs_resent.clone();
        let at = move |(partition, offset): (i32, i64)| RecordAt {
            topic: topic.clone(),
            partition,
            offset,
        };
        let finished: Vec<RecordAt> = finished.into_iter().map(at).collect();
        for a in &finished {
            self.unstored.insert(a.clone());
        }
        let unstored = self.unstored.clone();
        tokio::spawn(async move {
            // The correlator has already let go of these messages: an output that is
            // not stored now would be lost until a restart re-read its inputs. So it is
            // sent again until it is, and only then are its inputs done.
            for (a, rec) in acks.into_iter().zip(&out) {
                if !matches!(a.await, Ok(Ok(_))) {
                    resent.inc();
                    tracing::warn!(topic = %rec.topic, "an output was not acknowledged; sending it again");
                    smsgw_kafka::send_until_stored(&producer, rec).await;
                }
            }
            for a in finished {
                unstored.remove(&a);
                done.finish(a);
            }
        });
        Ok(())
    }
}

/// How far back the dead-letter topic is read at start for receipts an earlier life
/// gave up (1 h: a dispatcher writes a lost correlation again within minutes of its
/// restart).
pub const GIVEN_UP_LOOKBACK_MS: i64 = 3_600_000;

/// The reason [`Correlator`] gives a receipt it gave up, up to the carrier message id.
const GIVEN_UP_REASON: &str = "receipt for unknown carrier message id";

/// The receipt inside a dead letter this service wrote when it gave the receipt up as an
/// orphan (read from `receipts_topic`); `None` for any other dead letter.
pub fn given_up_receipt(dead_letter: &[u8], receipts_topic: &str) -> Option<CarrierRecord> {
    let dl = DeadLetter::decode(dead_letter).ok()?;
    if dl.service != "receipt"
        || dl.topic != receipts_topic
        || !dl.reason.starts_with(GIVEN_UP_REASON)
    {
        return None;
    }
    let rec = CarrierRecord::decode(dl.payload.as_deref()?).ok()?;
    matches!(rec.kind, CarrierRecordKind::ReceiptReceived(_)).then_some(rec)
}

/// Receipts given up by earlier lives within [`GIVEN_UP_LOOKBACK_MS`], from the
/// dead-letter topic.
async fn given_up_before(kafka: &KafkaConfig) -> Result<Vec<CarrierRecord>, KafkaError> {
    let found = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (into, receipts) = (found.clone(), kafka.topics.receipts());
    smsgw_kafka::read_recent(
        kafka,
        kafka.topics.dead_letter(),
        GIVEN_UP_LOOKBACK_MS,
        move |_, v| {
            if let Some(rec) = given_up_receipt(v, &receipts) {
                into.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
            }
        },
    )
    .await?;
    let found = std::mem::take(&mut *found.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(found)
}

/// Runs the receipt service until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiptError> {
    config.validate().map_err(ReceiptError::Config)?;
    let shutdown = Shutdown::new(shutdown);
    let metrics = metrics::Metrics::new();
    let health = smsgw_runtime::Health::default();
    let _probe = smsgw_kafka::spawn_probe(&config.kafka, health.clone(), shutdown.clone().wait())?;
    let admin = smsgw_runtime::serve_admin(
        config.admin_listen,
        metrics.registry.clone(),
        health.clone(),
        shutdown.clone().wait(),
    )
    .await?;
    let callbacks = config.callbacks.enabled.then(|| {
        tokio::spawn(callbacks::run(
            config.callbacks.clone(),
            config.kafka.clone(),
            metrics.clone(),
            shutdown.clone(),
        ))
    });
    let topics = config.kafka.topics.clone();
    let topic = topics.receipts();
    let consumer = consumer(&config.kafka, &config.group_id)?;
    smsgw_kafka::join(&consumer, &config.kafka, &[&topic])?;
    let mut correlator = Correlator::new(config.receipt_timeout_ms, config.orphan_timeout_ms);
    let given_up = smsgw_kafka::retry_startup("receipts given up earlier", || {
        given_up_before(&config.kafka)
    })
    .await?;
    tracing::info!(
        receipts = given_up.len(),
        "receipts given up by earlier lives remembered"
    );
    for rec in given_up {
        correlator.remember_given_up(rec);
    }
    let mut worker = ReceiptWorker {
        topics,
        topic,
        producer: Producer::new(&config.kafka)?,
        correlator,
        metrics: metrics.clone(),
        unstored: smsgw_kafka::Unstored::default(),
        ends: EndCheck {
            kafka: config.kafka.clone(),
            read_to: Default::default(),
            asking: None,
            last_asked: 0,
            last_error: 0,
            grace_ms: config.orphan_timeout_ms.min(30_000),
        },
    };
    // A correlation stays unfinished until its final receipt: no bound on records in
    // flight here (the correlator's state is what they are).
    let opts = smsgw_kafka::LoopOptions {
        max_in_flight: usize::MAX,
        tick: Some(Duration::from_millis(config.tick_ms)),
        drain: Duration::from_millis(200),
    };
    let result = smsgw_kafka::run_loop(consumer, &mut worker, opts, shutdown.clone().wait()).await;
    if let Some(c) = callbacks {
        match c.await {
            Ok(Err(e)) => tracing::error!(error = %e, "status callbacks stopped"),
            Err(e) => tracing::error!(error = %e, "status callbacks task failed"),
            Ok(Ok(())) => {}
        }
    }
    let _ = admin.await;
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgw_codec::ReceiptReceived;

    fn receipt() -> CarrierRecord {
        CarrierRecord {
            carrier: "a".into(),
            carrier_message_id: "7z".into(),
            received_at: 5,
            kind: CarrierRecordKind::ReceiptReceived(ReceiptReceived {
                stat: "DELIVRD".into(),
                error_code: None,
                raw_text: None,
            }),
        }
    }

    fn dead_letter(service: &str, reason: &str, payload: Option<Vec<u8>>) -> Vec<u8> {
        DeadLetter {
            service: service.into(),
            reason: reason.into(),
            topic: "smsgw.receipts".into(),
            partition: 0,
            offset: 3,
            key: Some(b"a:7z".to_vec()),
            payload,
            headers: Default::default(),
            failed_at: 9,
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn a_receipt_given_up_is_read_back_from_its_dead_letter() {
        // Given the dead letter this service writes for an orphan receipt,
        let reason = format!("{GIVEN_UP_REASON} 7z of a (stat DELIVRD)");
        let dl = dead_letter("receipt", &reason, Some(receipt().encode().unwrap()));
        // when it is read back at start, then the receipt is what was given up.
        assert_eq!(given_up_receipt(&dl, "smsgw.receipts"), Some(receipt()));
        // Another topic's, another service's, or a poison record's dead letter is not.
        assert_eq!(given_up_receipt(&dl, "other.receipts"), None);
        let other = dead_letter("router", &reason, Some(receipt().encode().unwrap()));
        assert_eq!(given_up_receipt(&other, "smsgw.receipts"), None);
        let poison = dead_letter(
            "receipt",
            "undecodable record",
            Some(b"\xC3\x01junk".to_vec()),
        );
        assert_eq!(given_up_receipt(&poison, "smsgw.receipts"), None);
        let old = dead_letter("receipt", &reason, None);
        assert_eq!(given_up_receipt(&old, "smsgw.receipts"), None);
        assert_eq!(given_up_receipt(b"garbage", "smsgw.receipts"), None);
    }
}
