//! Re-reading the recent part of a topic at startup (the router's and the dispatcher's
//! warm-up): every record produced in the last `lookback_ms`, up to the high watermarks
//! at the time of the call, without a consumer group or commits.

use crate::{KafkaConfig, KafkaError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// Calls `on_record(partition, payload)` for every record of `topic` produced in the
/// last `lookback_ms` (as of now), then returns how many were read. Runs on a blocking
/// thread.
pub async fn read_recent(
    kafka: &KafkaConfig,
    topic: String,
    lookback_ms: i64,
    mut on_record: impl FnMut(i32, &[u8]) + Send + 'static,
) -> Result<u64, KafkaError> {
    if lookback_ms <= 0 {
        return Ok(0);
    }
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || read_window(&kafka, &topic, lookback_ms, &mut on_record))
        .await
        .map_err(|e| KafkaError::Config(format!("warm-up task: {e}")))?
}

/// A consumer of `kafka` in `group` that never commits: for the reads below.
fn reader(kafka: &KafkaConfig, group: &str) -> Result<BaseConsumer, KafkaError> {
    kafka
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create()
        .map_err(|e| KafkaError::Config(e.to_string()))
}

/// The next record within 500 ms, or `None`; a poll error (the broker went away mid-read,
/// a restart) is waited out, the callers keep polling until their deadline.
fn next(c: &BaseConsumer) -> Option<rdkafka::message::BorrowedMessage<'_>> {
    match c.poll(Duration::from_millis(500))? {
        Ok(m) => Some(m),
        Err(_) => {
            std::thread::sleep(Duration::from_millis(100));
            None
        }
    }
}

fn read_window(
    kafka: &KafkaConfig,
    topic: &str,
    lookback_ms: i64,
    on_record: &mut dyn FnMut(i32, &[u8]),
) -> Result<u64, KafkaError> {
    let t = Duration::from_secs(10);
    let c = reader(kafka, "smsgw-warmup")?;
    let md = c.fetch_metadata(Some(topic), t)?;
    let since = crate::now_ms() - lookback_ms;
    let mut query = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = c.fetch_watermarks(topic, p.id(), t)?;
        if high > low {
            ends.insert(p.id(), high);
            query.add_partition_offset(topic, p.id(), Offset::Offset(since))?;
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    let starts = c.offsets_for_times(query, t)?;
    let mut assign = TopicPartitionList::new();
    for e in starts.elements() {
        let start = match e.offset() {
            Offset::Offset(o) => o,
            _ => continue, // nothing that recent in this partition
        };
        if start < ends[&e.partition()] {
            assign.add_partition_offset(topic, e.partition(), Offset::Offset(start))?;
        } else {
            ends.remove(&e.partition());
        }
    }
    ends.retain(|p, _| assign.elements().iter().any(|e| e.partition() == *p));
    c.assign(&assign)?;
    let mut read = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        let Some(m) = next(&c) else {
            continue;
        };
        if let Some(p) = m.payload() {
            on_record(m.partition(), p);
        }
        read += 1;
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(read)
}

/// The high watermark (the offset the next record will get) of each of `partitions` of
/// `topic`, asked of the broker now, each within `timeout`. Records stored before the
/// call are below it. Runs on a blocking thread.
pub async fn high_watermarks(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    let (kafka, topic, partitions) = (kafka.clone(), topic.to_string(), partitions.to_vec());
    tokio::task::spawn_blocking(move || {
        let c = reader(&kafka, "smsgw-watermarks")?;
        partitions
            .iter()
            .map(|p| Ok((*p, c.fetch_watermarks(&topic, *p, timeout)?.1)))
            .collect()
    })
    .await
    .map_err(|e| KafkaError::Config(format!("watermark task: {e}")))?
}

/// When the oldest record of `topic` that `group` has not committed was produced: the
/// record at each partition's committed offset (or its first record, with no commit),
/// over the partitions that have one. `None` when every partition is committed to its
/// end. A restarted consumer reads again from there, so work older than this cannot be
/// in flight. Runs on a blocking thread.
pub async fn oldest_uncommitted_ms(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
) -> Result<Option<i64>, KafkaError> {
    let (kafka, group, topic) = (kafka.clone(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || oldest_uncommitted(&kafka, &group, &topic))
        .await
        .map_err(|e| KafkaError::Config(format!("commit look-up task: {e}")))?
}

fn oldest_uncommitted(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
) -> Result<Option<i64>, KafkaError> {
    let t = Duration::from_secs(10);
    let c = reader(kafka, group)?;
    let md = c.fetch_metadata(Some(topic), t)?;
    let mut all = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        all.add_partition(topic, p.id());
    }
    let committed = c.committed_offsets(all, t)?;
    let mut assign = TopicPartitionList::new();
    for e in committed.elements() {
        let (low, high) = c.fetch_watermarks(topic, e.partition(), t)?;
        let at = match e.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        if at < high {
            assign.add_partition_offset(topic, e.partition(), Offset::Offset(at))?;
        }
    }
    let mut waiting: std::collections::HashSet<i32> =
        assign.elements().iter().map(|e| e.partition()).collect();
    if waiting.is_empty() {
        return Ok(None);
    }
    c.assign(&assign)?;
    let mut oldest: Option<i64> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !waiting.is_empty() && std::time::Instant::now() < deadline {
        let Some(m) = next(&c) else {
            continue;
        };
        if waiting.remove(&m.partition()) {
            if let Some(ts) = m.timestamp().to_millis() {
                oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
            }
            c.pause(&{
                let mut p = TopicPartitionList::new();
                p.add_partition(topic, m.partition());
                p
            })?;
        }
    }
    if !waiting.is_empty() {
        return Err(KafkaError::Config(format!(
            "{topic}: the first uncommitted record of partitions {waiting:?} was not read within 30 s"
        )));
    }
    Ok(oldest)
}

/// The values of the records keyed `key` in `partition` of `topic` before `before`, in
/// offset order, from the last one `is_start` accepts (read backwards in steps of
/// 5,000 records, at most `max_records` records scanned). `None` when no record
/// `is_start` accepts was found within that. For rebuilding one key's state from the
/// log on demand (the router's re-route context). Runs on a blocking thread.
pub async fn read_key_back(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    before: i64,
    key: &str,
    max_records: i64,
    is_start: impl Fn(&[u8]) -> bool + Send + 'static,
) -> Result<Option<Vec<Vec<u8>>>, KafkaError> {
    let (kafka, topic, key) = (kafka.clone(), topic.to_string(), key.to_string());
    tokio::task::spawn_blocking(move || {
        key_back(
            &kafka,
            &topic,
            partition,
            before,
            &key,
            max_records,
            &is_start,
        )
    })
    .await
    .map_err(|e| KafkaError::Config(format!("read-back task: {e}")))?
}

fn key_back(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    before: i64,
    key: &str,
    max_records: i64,
    is_start: &dyn Fn(&[u8]) -> bool,
) -> Result<Option<Vec<Vec<u8>>>, KafkaError> {
    const STEP: i64 = 5_000;
    let t = Duration::from_secs(10);
    let c = reader(kafka, "smsgw-read-back")?;
    let (low, _) = c.fetch_watermarks(topic, partition, t)?;
    let floor = low.max(before - max_records);
    let mut found: Vec<Vec<u8>> = Vec::new();
    let mut end = before;
    while end > floor {
        let start = floor.max(end - STEP);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
        c.assign(&tpl)?;
        let mut chunk: Vec<Vec<u8>> = Vec::new();
        let mut at = start;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while at < end {
            if std::time::Instant::now() > deadline {
                return Err(KafkaError::Config(format!(
                    "{topic}/{partition}: offsets {at}..{end} not read within 30 s"
                )));
            }
            let Some(m) = next(&c) else {
                continue;
            };
            at = m.offset() + 1;
            if m.offset() < end && m.key() == Some(key.as_bytes()) {
                if let Some(p) = m.payload() {
                    chunk.push(p.to_vec());
                }
            }
        }
        // The last start within this chunk, if any: the records from it on, then what
        // later chunks found.
        if let Some(i) = chunk.iter().rposition(|p| is_start(p)) {
            chunk.drain(..i);
            chunk.append(&mut found);
            return Ok(Some(chunk));
        }
        chunk.append(&mut found);
        found = chunk;
        end = start;
    }
    Ok(None)
}

/// Runs a start-up read (`what`) again while the broker fails it, for up to two
/// minutes: a broker restarting while a service warms up must not stop the service.
pub async fn retry_startup<T, F, Fut>(what: &str, mut read: F) -> Result<T, KafkaError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, KafkaError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(what, error = %e, "start-up read failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
