//! The one consumer-loop pattern: handle, produce, wait for acks, then store the offset.

use crate::producer::{await_delivery, dead_letter, OutRecord, Producer};
use crate::{KafkaConfig, KafkaError};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
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

    /// The owned partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Vec<i32> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| *p)
            .collect()
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
#[derive(Debug, Default)]
pub struct OwningContext {
    owned: Owned,
}

impl OwningContext {
    /// The shared view of what is owned.
    pub fn owned(&self) -> Owned {
        self.owned.clone()
    }
}

impl ClientContext for OwningContext {}

impl ConsumerContext for OwningContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.owned.change(tpl, true);
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                self.owned.change(tpl, false);
                tracing::info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Every smsgw consumer: a stream consumer that knows what it owns.
pub type GroupConsumer = StreamConsumer<OwningContext>;

/// Stores `offset` of a partition whose outputs are acknowledged. A partition revoked
/// in the meantime refuses the store: then the record is logged and left for its new
/// owner (at least once), instead of stopping the loop.
pub fn store_done(consumer: &GroupConsumer, topic: &str, partition: i32, offset: i64) {
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
    consumer.context().owned.change(&tpl, true);
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

/// Runs the at-least-once loop until `shutdown` resolves, then drains what is in flight
/// and commits. Up to `max_in_flight` records may wait for acknowledgements at once;
/// their offsets are stored strictly in order.
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
    let mut in_flight = FuturesOrdered::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let (topic, partition, offset): (String, i32, i64) = done?;
                store_done(&consumer, &topic, partition, offset);
                metrics.processed.inc();
            }
            msg = consumer.recv(), if in_flight.len() < max_in_flight => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "consume error; continuing");
                        continue;
                    }
                };
                let input = Incoming::from_message(&msg);
                if let Some(produced) = msg.timestamp().to_millis() {
                    metrics
                        .lag
                        .with_label_values(&[&input.partition.to_string()])
                        .set(((now_ms() - produced).max(0) as f64) / 1000.0);
                }
                let outputs = match handler.handle(&input, now_ms()).await {
                    Ok(o) => o,
                    Err(HandleError::DeadLetter(reason)) => {
                        tracing::warn!(topic = input.topic, partition = input.partition, offset = input.offset, %reason, "dead-lettering record");
                        metrics.dead_lettered.inc();
                        vec![dead_letter(dlq_topic, service, &reason, &input, now_ms())]
                    }
                    Err(HandleError::Drop(why)) => {
                        tracing::debug!(offset = input.offset, why, "dropped record");
                        metrics.dropped.inc();
                        vec![]
                    }
                };
                let mut acks = Vec::with_capacity(outputs.len());
                for rec in &outputs {
                    acks.push((producer.enqueue(rec).await?, rec.topic.clone()));
                }
                let (topic, partition, offset) = (input.topic.to_string(), input.partition, input.offset);
                in_flight.push_back(async move {
                    for (f, t) in acks {
                        await_delivery(f, &t).await?;
                    }
                    Ok::<_, KafkaError>((topic, partition, offset))
                });
            }
        }
    }
    // Outputs wait for the broker without a timeout of their own (see `Producer::new`),
    // so the drain is bounded here: what is not acknowledged in time stays uncommitted
    // and is read again on the next start.
    let drain = tokio::time::sleep(CLOSE_TIMEOUT);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            done = in_flight.next() => match done {
                Some(done) => {
                    let (topic, partition, offset) = done?;
                    store_done(&consumer, &topic, partition, offset);
                    metrics.processed.inc();
                }
                None => break,
            },
            _ = &mut drain => {
                tracing::warn!(
                    unacknowledged = in_flight.len(),
                    "shutdown: outputs not acknowledged in time; their inputs will be read again"
                );
                break;
            }
        }
    }
    close(consumer).await;
    Ok(())
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
pub struct OffsetTracker {
    parts: HashMap<(String, i32), Part>,
}

#[derive(Debug, Default)]
struct Part {
    pending: BTreeSet<i64>,
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
        let safe = match p.pending.first() {
            Some(&lowest) => lowest - 1,
            None => p.max_seen,
        };
        (safe > p.stored).then(|| {
            p.stored = safe;
            safe
        })
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
}
