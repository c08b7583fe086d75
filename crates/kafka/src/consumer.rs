//! The one consumer-loop pattern: handle, produce, wait for acks, then store the offset.

use crate::producer::{await_delivery, dead_letter, OutRecord, Producer};
use crate::{KafkaConfig, KafkaError};
use prometheus::IntCounter;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The partitions this instance owns right now, shared between the consumer (which
/// changes it: at join under `static` assignment, on every rebalance under `group`) and
/// the service's side tasks that must act only for their own partitions (the router's
/// release of held messages). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Owned(Arc<RwLock<BTreeSet<(String, i32)>>>);

impl Owned {
    /// Whether `partition` of `topic` is this instance's now.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(topic.to_string(), partition))
    }

    fn change(&self, tpl: &rdkafka::TopicPartitionList, add: bool) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        for e in tpl.elements() {
            let key = (e.topic().to_string(), e.partition());
            if add {
                set.insert(key);
            } else {
                set.remove(&key);
            }
        }
    }
}

/// The consumer context of every smsgw consumer: keeps [`Owned`] current on each
/// rebalance. With `enable.auto.commit`, librdkafka commits the stored offsets of the
/// revoked partitions before it gives them up, so what is done stays done; outputs of a
/// revoked partition still waiting for acknowledgement are not stored (see
/// [`store_done`]) and the partition's next owner handles those records again.
#[derive(Debug)]
pub struct OwningContext {
    owned: Owned,
    tx: tokio::sync::mpsc::UnboundedSender<crate::worker::Rebalanced>,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::worker::Rebalanced>>>,
}

impl Default for OwningContext {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        OwningContext {
            owned: Owned::default(),
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl OwningContext {
    /// The shared view of what is owned.
    pub fn owned(&self) -> Owned {
        self.owned.clone()
    }

    /// The assignment changes, in order, for the one loop that reads them (a second
    /// caller gets a stream that never yields).
    pub fn events(&self) -> tokio::sync::mpsc::UnboundedReceiver<crate::worker::Rebalanced> {
        self.rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| tokio::sync::mpsc::unbounded_channel().1)
    }

    fn changed(&self, tpl: &rdkafka::TopicPartitionList, assigned: bool) {
        self.owned.change(tpl, assigned);
        let ps: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let _ = self.tx.send(if assigned {
            crate::worker::Rebalanced::Assigned(ps)
        } else {
            crate::worker::Rebalanced::Revoked(ps)
        });
    }
}

impl ClientContext for OwningContext {}

impl ConsumerContext for OwningContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.changed(tpl, true);
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                self.changed(tpl, false);
                tracing::info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Every smsgw consumer: a stream consumer that knows what it owns.
pub type GroupConsumer = StreamConsumer<OwningContext>;

/// What `consumer` owns, kept current (for side tasks that act per partition).
pub fn owned(consumer: &GroupConsumer) -> Owned {
    consumer.context().owned()
}

/// Stores `offset` of a partition whose outputs are acknowledged. A partition revoked
/// in the meantime refuses the store: then the record is logged and left for its new
/// owner (at least once), instead of stopping the loop.
pub(crate) fn store_done(consumer: &GroupConsumer, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = consumer.store_offset(topic, partition, offset) {
        tracing::info!(
            topic,
            partition,
            offset,
            error = %e,
            "offset not stored (partition no longer ours?); its next owner reads the record again"
        );
    }
}

/// Builds a consumer in `group`: offsets are stored explicitly (only after the outputs
/// of a record are acknowledged) and committed in the background.
/// How long a fetch may wait for data at the broker. Kafka answers a waiting fetch as
/// soon as data arrives, but Tansu 0.6 waits the whole time, so librdkafka's 500 ms
/// default would add up to half a second per hop. Overridable through `properties`.
pub const FETCH_WAIT_MAX_MS: &str = "20";

pub fn consumer(kafka: &KafkaConfig, group: &str) -> Result<Arc<GroupConsumer>, KafkaError> {
    kafka
        .client_config(&[
            ("group.id", group),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "500"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            ("fetch.wait.max.ms", FETCH_WAIT_MAX_MS),
            // What librdkafka fetches ahead while the loop is full (not paused under
            // static assignment, see `run_loop`): 8 MB, not its default 64 MB, so that
            // a consumer's memory stays within the per-service budget.
            ("queued.max.messages.kbytes", "8192"),
        ])
        .create_with_context(OwningContext::default())
        .map(Arc::new)
        .map_err(|e| KafkaError::Config(e.to_string()))
}

/// Starts consuming `topics`: subscribes as a group member, or with
/// [`crate::Assignment::Static`] assigns this instance's partitions
/// ([`KafkaConfig::owns_partition`]) at the group's committed offsets.
pub fn join(
    consumer: &GroupConsumer,
    kafka: &KafkaConfig,
    topics: &[&str],
) -> Result<(), KafkaError> {
    use rdkafka::{Offset, TopicPartitionList};
    if kafka.assignment == crate::Assignment::Group {
        consumer.subscribe(topics)?;
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            if kafka.owns_partition(p.id()) {
                tpl.add_partition_offset(topic, p.id(), Offset::Stored)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    consumer.context().changed(&tpl, true);
    tracing::info!(
        instance = kafka.instance,
        instances = kafka.instances,
        partitions = tpl.count(),
        "static assignment"
    );
    Ok(())
}

/// A consumed record, as handlers see it.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub payload: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record timestamp (ms), if any.
    pub timestamp_ms: Option<i64>,
}

impl<'a> Incoming<'a> {
    /// A view of a librdkafka message.
    pub fn from_message(m: &'a BorrowedMessage<'a>) -> Self {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Incoming {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    /// The last value of a header, as UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why a handler produced nothing useful for a record.
#[derive(Debug, PartialEq, Eq)]
pub enum HandleError {
    /// Bad input: write it to the dead-letter topic with this reason and move on.
    DeadLetter(String),
    /// Irrelevant or already-handled input: drop it and count it.
    Drop(&'static str),
}

/// Turns one input record into output records. Must be idempotent: after a crash the
/// same record is handled again. Handling is awaited record by record, so the outputs of
/// one partition are enqueued in input order.
#[allow(async_fn_in_trait)]
pub trait Handler {
    /// Handles one record at `now_ms` (the injected clock).
    async fn handle(
        &mut self,
        input: &Incoming<'_>,
        now_ms: i64,
    ) -> Result<Vec<OutRecord>, HandleError>;

    /// Whether one record's outputs are written one after another, each only once the
    /// broker holds the one before (`true`), instead of all at once. A handler whose
    /// later outputs act on its earlier ones says so: the router's dispatch work carries
    /// out the decision written before it, and written together either may be stored
    /// without the other when the service dies (work done with no decision in the log
    /// leaves a message whose events do not fold).
    fn ordered_outputs(&self) -> bool {
        false
    }
}

/// Counters the loop keeps; each service registers them under its own names.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    /// Records handled with outputs acknowledged.
    pub processed: IntCounter,
    /// Records dead-lettered.
    pub dead_lettered: IntCounter,
    /// Records dropped by the handler.
    pub dropped: IntCounter,
    /// Time lag by partition: how old (seconds since it was produced) the record being
    /// handled is. Grows when the service falls behind.
    pub lag: prometheus::GaugeVec,
}

impl ConsumerMetrics {
    /// Registers the counter `name{outcome}` (`processed`, `dead_lettered`, `dropped`)
    /// and the gauge `<name without _records_total>_consumer_lag_seconds{partition}` in
    /// `registry`. Panics only on a duplicate name, a programming error.
    pub fn register(registry: &prometheus::Registry, name: &str, help: &str) -> Self {
        let records =
            prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &["outcome"])
                .expect("valid metric name");
        registry
            .register(Box::new(records.clone()))
            .expect("metric registered once");
        let get = |o: &str| records.with_label_values(&[o]);
        let lag_name = format!(
            "{}_consumer_lag_seconds",
            name.trim_end_matches("_total").trim_end_matches("_records")
        );
        let lag = prometheus::GaugeVec::new(
            prometheus::Opts::new(lag_name, "Age of the record being handled"),
            &["partition"],
        )
        .expect("valid metric name");
        registry
            .register(Box::new(lag.clone()))
            .expect("metric registered once");
        ConsumerMetrics {
            processed: get("processed"),
            dead_lettered: get("dead_lettered"),
            dropped: get("dropped"),
            lag,
        }
    }
}

pub use smsgw_runtime::now_ms;

/// Runs a [`Handler`] through [`crate::run_loop`] until `shutdown` resolves, then
/// drains what is in flight and commits. Records are handled one at a time, so the
/// outputs of a partition are enqueued in input order; up to `max_in_flight` records
/// may wait for their outputs' acknowledgements at once.
#[allow(clippy::too_many_arguments)]
pub async fn run_consumer<H: Handler>(
    consumer: Arc<GroupConsumer>,
    producer: &Producer,
    dlq_topic: &str,
    service: &str,
    handler: &mut H,
    metrics: &ConsumerMetrics,
    max_in_flight: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), KafkaError> {
    let mut worker = HandlerWorker {
        producer,
        dlq_topic,
        service,
        handler,
        metrics,
        unstored: crate::Unstored::default(),
    };
    let opts = crate::LoopOptions {
        max_in_flight,
        tick: None,
        drain: CLOSE_TIMEOUT,
    };
    crate::run_loop(consumer, &mut worker, opts, shutdown).await
}

/// A [`Handler`] as a [`crate::Worker`]: handle, enqueue the outputs, report the record
/// finished when the broker acknowledged them all. A record read again while its first
/// reading's outputs are unacknowledged is not handled again ([`crate::Unstored`]).
struct HandlerWorker<'a, H> {
    producer: &'a Producer,
    dlq_topic: &'a str,
    service: &'a str,
    handler: &'a mut H,
    metrics: &'a ConsumerMetrics,
    unstored: crate::Unstored,
}

impl<H: Handler> crate::Worker for HandlerWorker<'_, H> {
    async fn on_record(
        &mut self,
        input: &Incoming<'_>,
        done: &crate::Done,
    ) -> Result<(), KafkaError> {
        let metrics = self.metrics;
        if let Some(produced) = input.timestamp_ms {
            metrics
                .lag
                .with_label_values(&[&input.partition.to_string()])
                .set(((now_ms() - produced).max(0) as f64) / 1000.0);
        }
        let at = input.at();
        if self.unstored.contains(&at) {
            return Ok(()); // its first reading reports it
        }
        let outputs = match self.handler.handle(input, now_ms()).await {
            Ok(o) => o,
            Err(HandleError::DeadLetter(reason)) => {
                tracing::warn!(topic = input.topic, partition = input.partition, offset = input.offset, %reason, "dead-lettering record");
                metrics.dead_lettered.inc();
                vec![dead_letter(
                    self.dlq_topic,
                    self.service,
                    &reason,
                    input,
                    now_ms(),
                )]
            }
            Err(HandleError::Drop(why)) => {
                tracing::debug!(offset = input.offset, why, "dropped record");
                metrics.dropped.inc();
                vec![]
            }
        };
        // Enqueued now, in order: all of them, or only the first when they are written
        // one after another (the rest follow its acknowledgement).
        let mut outputs = outputs.into_iter();
        let now_count = if self.handler.ordered_outputs() {
            1
        } else {
            usize::MAX
        };
        let mut acks = Vec::new();
        for rec in outputs.by_ref().take(now_count) {
            acks.push((self.producer.enqueue(&rec).await?, rec.topic));
        }
        let later: Vec<OutRecord> = outputs.collect();
        let (done, processed) = (done.clone(), metrics.processed.clone());
        if acks.is_empty() {
            processed.inc();
            done.finish(at);
            return Ok(());
        }
        let unstored = self.unstored.clone();
        unstored.insert(at.clone());
        let producer = self.producer.clone();
        tokio::spawn(async move {
            let mut failed = None;
            for (f, t) in acks {
                if let Err(e) = await_delivery(f, &t).await {
                    failed = Some(e);
                    break;
                }
            }
            if failed.is_none() {
                failed = crate::producer::send_in_order(&producer, &later)
                    .await
                    .err();
            }
            unstored.remove(&at);
            match failed {
                Some(e) => done.fail(e),
                None => {
                    processed.inc();
                    done.finish(at);
                }
            }
        });
        Ok(())
    }
}

/// How long the last commit and the close at shutdown may take before the service stops
/// without them.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Commits the stored offsets synchronously and closes the consumer (at shutdown), for
/// at most [`CLOSE_TIMEOUT`]; failure is logged, since the worst outcome is re-reading
/// records that idempotent handlers absorb. With the brokers unreachable, librdkafka's
/// synchronous commit and its close can wait for ever, so both run on a thread of their
/// own ([`crate::off_runtime`]), which also drops the last reference to the consumer.
pub async fn close(consumer: Arc<GroupConsumer>) {
    let closing = crate::off_runtime(move || {
        let r = consumer.commit_consumer_state(CommitMode::Sync);
        drop(consumer);
        r
    });
    match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Some(Ok(()))) | Ok(None) => {}
        Ok(Some(Err(e))) => tracing::debug!(error = %e, "final commit"),
        Err(_) => tracing::warn!(
            timeout_s = CLOSE_TIMEOUT.as_secs(),
            "consumer did not commit and close in time; records since the last commit will be read again"
        ),
    }
}

/// Offsets completed out of order, turned into the highest offset that is safe to store:
/// everything at or below it is done.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    parts: HashMap<(String, i32), Part>,
}

#[derive(Debug, Default)]
struct Part {
    pending: BTreeSet<i64>,
    /// Given up (shutdown): not pending any more, but the safe point never passes them.
    abandoned: BTreeSet<i64>,
    max_seen: i64,
    stored: i64,
}

impl OffsetTracker {
    /// Records that `offset` was taken and is not done yet.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self
            .parts
            .entry((topic.to_string(), partition))
            .or_insert_with(|| Part {
                pending: BTreeSet::new(),
                abandoned: BTreeSet::new(),
                max_seen: offset - 1,
                stored: offset - 1,
            });
        p.pending.insert(offset);
        p.max_seen = p.max_seen.max(offset);
    }

    /// Marks `offset` done; returns the offset to store if the safe point moved.
    pub fn complete(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.parts.get_mut(&(topic.to_string(), partition))?;
        p.pending.remove(&offset);
        let lowest = [p.pending.first(), p.abandoned.first()]
            .into_iter()
            .flatten()
            .min();
        let safe = match lowest {
            Some(&lowest) => lowest - 1,
            None => p.max_seen,
        };
        (safe > p.stored).then(|| {
            p.stored = safe;
            safe
        })
    }

    /// Marks `offset` given up: it no longer counts as pending, and nothing at or
    /// after it is ever stored (it is read again after a restart).
    pub fn abandon(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&(topic.to_string(), partition)) {
            if p.pending.remove(&offset) {
                p.abandoned.insert(offset);
            }
        }
    }

    /// Forgets a partition (revoked): later reports of its records are ignored.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.parts.remove(&(topic.to_string(), partition));
    }

    /// Offsets taken and not done, over all partitions.
    pub fn pending(&self) -> usize {
        self.parts.values().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_stores_only_contiguous_done_offsets() {
        let mut t = OffsetTracker::default();
        for o in 10..14 {
            t.begin("t", 0, o);
        }
        assert_eq!(t.complete("t", 0, 11), None, "10 is still pending");
        assert_eq!(t.complete("t", 0, 10), Some(11));
        assert_eq!(t.complete("t", 0, 13), None);
        assert_eq!(t.complete("t", 0, 12), Some(13));
        assert_eq!(t.pending(), 0);
        assert_eq!(t.complete("other", 0, 1), None);
    }

    #[test]
    fn an_abandoned_offset_is_never_passed_and_a_revoked_partition_is_forgotten() {
        // Given 10..14 taken on partition 0 and 5 on partition 1,
        let mut t = OffsetTracker::default();
        for o in 10..14 {
            t.begin("t", 0, o);
        }
        t.begin("t", 1, 5);
        // when 11 is given up at shutdown and the others finish,
        t.abandon("t", 0, 11);
        assert_eq!(t.complete("t", 0, 10), Some(10));
        assert_eq!(t.complete("t", 0, 12), None, "11 was never sent");
        assert_eq!(t.complete("t", 0, 13), None);
        // then nothing past 10 is stored, and nothing counts as pending there.
        assert_eq!(t.pending(), 1);
        // When partition 1 is revoked, its late report stores nothing.
        t.forget("t", 1);
        assert_eq!(t.complete("t", 1, 5), None);
        assert_eq!(t.pending(), 0);
    }
}
