//! Topic bootstrap.

use crate::{KafkaConfig, KafkaError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// One topic to create.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Full name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication: i32,
    /// Topic configs (`cleanup.policy`, `retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

/// Creates the topics that do not exist yet; existing ones are left as they are.
pub async fn bootstrap_topics(kafka: &KafkaConfig, specs: &[TopicSpec]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .client_config(&[])
        .create()
        .map_err(|e| KafkaError::Config(e.to_string()))?;
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let mut t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication),
            );
            for (k, v) in &s.configs {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let results = admin
        .create_topics(new.iter(), &AdminOptions::new())
        .await?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic exists")
            }
            Err((name, code)) => {
                return Err(KafkaError::Config(format!("creating topic {name}: {code}")));
            }
        }
    }
    Ok(())
}

/// Partition counts and retention of the standard topics. Part of the bootstrap config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicLayout {
    /// Partitions of the ingest topic.
    #[serde(default = "six")]
    pub ingest_partitions: i32,
    /// Partitions of the event log.
    #[serde(default = "six")]
    pub events_partitions: i32,
    /// Partitions of each carrier's dispatch topic.
    #[serde(default = "three")]
    pub dispatch_partitions: i32,
    /// Partitions of the receipts topic.
    #[serde(default = "six")]
    pub receipts_partitions: i32,
    /// Partitions of the inbound, opt-out, carrier-status and dead-letter topics.
    #[serde(default = "three")]
    pub small_partitions: i32,
    /// Replication factor of every topic (1 on a single broker).
    #[serde(default = "one")]
    pub replication: i32,
    /// Retention of the event log in ms (-1 keeps it forever).
    #[serde(default = "week")]
    pub events_retention_ms: i64,
}

fn six() -> i32 {
    6
}
fn three() -> i32 {
    3
}
fn one() -> i32 {
    1
}
fn week() -> i64 {
    7 * 24 * 3600 * 1000
}

impl Default for TopicLayout {
    fn default() -> Self {
        TopicLayout {
            ingest_partitions: six(),
            events_partitions: six(),
            dispatch_partitions: three(),
            receipts_partitions: six(),
            small_partitions: three(),
            replication: one(),
            events_retention_ms: week(),
        }
    }
}

impl TopicLayout {
    /// The specs of every smsgw topic, with a dispatch topic per carrier.
    pub fn specs(&self, topics: &crate::Topics, carriers: &[String]) -> Vec<TopicSpec> {
        let spec = |name: String, partitions: i32, configs: &[(&str, String)]| TopicSpec {
            name,
            partitions,
            replication: self.replication,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let compact = [("cleanup.policy", "compact".to_string())];
        let retention = [("retention.ms", self.events_retention_ms.to_string())];
        let mut specs = vec![
            spec(topics.ingest(), self.ingest_partitions, &[]),
            spec(topics.replies(), self.small_partitions, &[]),
            spec(topics.events(), self.events_partitions, &retention),
            spec(topics.receipts(), self.receipts_partitions, &[]),
            spec(topics.inbound(), self.small_partitions, &[]),
            spec(topics.optout(), self.small_partitions, &compact),
            spec(topics.carrier_status(), 1, &compact),
            spec(topics.cancellations(), self.small_partitions, &compact),
            spec(topics.schedule(), self.small_partitions, &compact),
            spec(topics.callbacks(), self.small_partitions, &compact),
            spec(topics.dead_letter(), self.small_partitions, &[]),
        ];
        for c in carriers {
            specs.push(spec(topics.dispatch(c), self.dispatch_partitions, &[]));
        }
        specs
    }
}
