//! Re-reading the recent event log at startup, so in-flight messages can be re-routed.

use crate::handler::observe;
use crate::state::RouterState;
use smsgw_codec::AvroRecord;
use smsgw_domain::Event;
use smsgw_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use smsgw_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use smsgw_kafka::{KafkaConfig, KafkaError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Folds the events of the last `lookback_ms` into `state` (no output is produced).
pub async fn warm_up(
    kafka: &KafkaConfig,
    lookback_ms: i64,
    state: &Arc<Mutex<RouterState>>,
) -> Result<(), KafkaError> {
    if lookback_ms <= 0 {
        return Ok(());
    }
    let (kafka, state) = (kafka.clone(), state.clone());
    tokio::task::spawn_blocking(move || read_window(&kafka, lookback_ms, &state))
        .await
        .map_err(|e| KafkaError::Config(format!("warm-up task: {e}")))?
}

fn read_window(
    kafka: &KafkaConfig,
    lookback_ms: i64,
    state: &Mutex<RouterState>,
) -> Result<(), KafkaError> {
    let topic = kafka.topics.events();
    let t = Duration::from_secs(10);
    let c: BaseConsumer = kafka
        .client_config(&[
            ("group.id", "smsgw-router-warmup"),
            ("enable.auto.commit", "false"),
        ])
        .create()
        .map_err(|e| KafkaError::Config(e.to_string()))?;
    let md = c.fetch_metadata(Some(&topic), t)?;
    let since = smsgw_kafka::now_ms() - lookback_ms;
    let mut query = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = c.fetch_watermarks(&topic, p.id(), t)?;
        if high > low {
            ends.insert(p.id(), high);
            query.add_partition_offset(&topic, p.id(), Offset::Offset(since))?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    let starts = c.offsets_for_times(query, t)?;
    let mut assign = TopicPartitionList::new();
    for e in starts.elements() {
        let start = match e.offset() {
            Offset::Offset(o) => o,
            _ => continue, // nothing that recent in this partition
        };
        if start < ends[&e.partition()] {
            assign.add_partition_offset(&topic, e.partition(), Offset::Offset(start))?;
        } else {
            ends.remove(&e.partition());
        }
    }
    ends.retain(|p, _| assign.elements().iter().any(|e| e.partition() == *p));
    c.assign(&assign)?;
    let mut read = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        let Some(m) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        if let Some(Ok(e)) = m.payload().map(Event::decode) {
            observe(&mut state.lock().unwrap_or_else(|p| p.into_inner()), &e);
        }
        read += 1;
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    tracing::info!(events = read, "router warm-up done");
    Ok(())
}
