//! Kafka plumbing shared by every smsgw service.
//!
//! Data flow: a service builds its clients from [`KafkaConfig`] (every librdkafka property
//! can be set there: SASL, TLS, acks), names topics through [`Topics`], joins with
//! [`join`] (by group, or by instance number under static assignment) and runs its
//! input through the one consumer loop, [`run_loop`]: each record goes to the service's
//! [`Worker`], which reports it finished through [`Done`] once what it caused is stored,
//! and only then is the offset stored for the next commit (in order per partition).
//! The loop tells the worker of rebalances and keeps [`Owned`] current, so side tasks
//! act only for their own partitions. [`run_consumer`] is the loop for a [`Handler`]
//! that turns a record into output records: those are produced, and a record the
//! handler cannot use is written to the dead-letter topic with its reason.
//!
//! [`bootstrap_topics`] creates the topics, since some brokers (Tansu) never auto-create.

mod admin;
mod config;
mod consumer;
mod producer;
mod recent;
mod tail;
mod worker;

pub use admin::{bootstrap_topics, TopicLayout, TopicSpec};
pub use config::{owner_of, Assignment, KafkaConfig, Topics};
pub use consumer::{
    close as close_consumer, consumer, join, now_ms, owned, run_consumer, ConsumerMetrics,
    GroupConsumer, HandleError, Handler, Incoming, Owned, OwningContext, FETCH_WAIT_MAX_MS,
};
pub use producer::{
    dead_letter, send, send_all, send_in_order, send_until_stored, OutRecord, Producer,
    DEAD_LETTER_FIELD_MAX, DEAD_LETTER_HEADERS_MAX, DEAD_LETTER_PAYLOAD_MAX,
};
pub use rdkafka;
pub use recent::{
    high_watermarks, oldest_uncommitted_ms, read_key_back, read_recent, retry_startup,
};
pub use tail::{spawn_tail, tail, TailState};
pub use worker::{run_loop, Done, LoopOptions, Rebalanced, RecordAt, Unstored, Worker};

use thiserror::Error;

/// Errors of the Kafka layer.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// The client could not be built from the config: fix the config (fatal at startup).
    #[error("invalid Kafka client config: {0}")]
    Config(String),
    /// The broker refused or lost a write after librdkafka's own retries: the service
    /// stops without storing the input offset, and the restart re-reads the input.
    #[error("produce to {topic} failed: {source}")]
    Produce {
        /// Target topic.
        topic: String,
        /// Cause.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Admin, metadata or commit failure: retried by the caller or fatal at startup.
    #[error("Kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// Encoding an output record failed: a bug, dead-lettered with the input.
    #[error("encode: {0}")]
    Codec(#[from] smsgw_codec::CodecError),
}

impl KafkaError {
    /// A write refused because its topic does not exist (smsgw never auto-creates
    /// topics): retrying cannot help.
    pub fn is_unknown_topic(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        matches!(
            self,
            KafkaError::Produce { source, .. } | KafkaError::Client(source)
                if matches!(
                    source.rdkafka_error_code(),
                    Some(C::UnknownTopicOrPartition | C::UnknownTopic)
                )
        )
    }
}

/// Keeps the `kafka` check of `health` current: every 5 s it asks the brokers for
/// metadata (2 s timeout). Readiness depends on it. Runs until `shutdown`.
pub fn spawn_probe(
    kafka: &KafkaConfig,
    health: smsgw_runtime::Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: std::sync::Arc<BaseConsumer> = std::sync::Arc::new(
        kafka
            .client_config(&[("group.id", "smsgw-probe")])
            .create()
            .map_err(|e| KafkaError::Config(e.to_string()))?,
    );
    Ok(tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let c = client.clone();
            let r = off_runtime(move || {
                c.fetch_metadata(None, std::time::Duration::from_secs(2))
                    .map(|m| m.brokers().len())
            });
            let r = tokio::select! {
                _ = &mut shutdown => break,
                r = r => r,
            };
            match r {
                Some(Ok(n)) => health.set("kafka", true, true, format!("{n} broker(s)")),
                Some(Err(e)) => health.set("kafka", false, true, e.to_string()),
                None => health.set("kafka", false, true, "probe thread failed"),
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        }
    }))
}

/// Runs a blocking librdkafka call on a thread of its own and resolves with its result
/// (`None` if the thread could not start or panicked). Not `spawn_blocking`: with the
/// brokers unreachable some calls wait a long time or for ever, and a tokio runtime waits
/// for its blocking tasks when it shuts down; a caller that stops waiting here (shutdown)
/// leaves the thread to finish on its own.
pub(crate) async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("smsgw-kafka-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start a thread for a Kafka call");
        return None;
    }
    rx.await.ok()
}
