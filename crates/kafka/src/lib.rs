//! Kafka plumbing shared by every smsgw service.
//!
//! Data flow: a service builds its clients from [`KafkaConfig`] (every librdkafka property
//! can be set there: SASL, TLS, acks), names topics through [`Topics`], and runs its
//! input through [`run_consumer`]: each record goes to a [`Handler`], whose output
//! records are produced, and only when all of them are acknowledged by the broker is the
//! input offset stored for the next commit. A record the handler cannot use is written to
//! the dead-letter topic with its reason, and the partition moves on.
//!
//! [`bootstrap_topics`] creates the topics, since some brokers (Tansu) never auto-create.

mod admin;
mod config;
mod consumer;
mod producer;
mod recent;
mod tail;

pub use admin::{bootstrap_topics, TopicLayout, TopicSpec};
pub use config::{Assignment, KafkaConfig, Topics};
pub use consumer::{
    commit_stored, consumer, join, now_ms, run_consumer, ConsumerMetrics, HandleError, Handler,
    Incoming, OffsetTracker,
};
pub use producer::{dead_letter, send, send_all, OutRecord, Producer};
pub use rdkafka;
pub use recent::read_recent;
pub use tail::{spawn_tail, tail, TailState};

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
            let r = tokio::task::spawn_blocking(move || {
                c.fetch_metadata(None, std::time::Duration::from_secs(2))
                    .map(|m| m.brokers().len())
            })
            .await;
            match r {
                Ok(Ok(n)) => health.set("kafka", true, true, format!("{n} broker(s)")),
                Ok(Err(e)) => health.set("kafka", false, true, e.to_string()),
                Err(e) => health.set("kafka", false, true, e.to_string()),
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        }
    }))
}
