//! Producing records.

use crate::consumer::Incoming;
use crate::{KafkaConfig, KafkaError};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use smsgw_codec::{AvroRecord, DeadLetter};
use std::time::Duration;

/// The idempotent producer every service shares.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Producer")
    }
}

impl Producer {
    /// Builds the producer: idempotent, `acks=all`, a short linger to batch records, and
    /// no delivery timeout of its own (`message.timeout.ms = 0`): while the broker is
    /// away a record waits for it instead of failing. A record that timed out on the
    /// client makes librdkafka bump the idempotent producer's epoch, and Tansu 0.6's
    /// sqlite engine panics on the next produce of that producer ("more or less than one
    /// row" in `idempotent_message_check`), after which it takes no record from anyone
    /// (`crates/testkit/tests/producer_timeout.rs`). Every property can still be set in
    /// `[kafka.properties]`.
    pub fn new(kafka: &KafkaConfig) -> Result<Self, KafkaError> {
        let inner = kafka
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "2"),
                ("compression.type", "none"),
                ("message.timeout.ms", "0"),
            ])
            .create()
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        Ok(Producer { inner })
    }

    /// Enqueues a record now (so records enqueued in order stay in order per partition)
    /// and returns the future of its acknowledgement.
    pub async fn enqueue(&self, rec: &OutRecord) -> Result<DeliveryFuture, KafkaError> {
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
            for (k, v) in &rec.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut fr = FutureRecord::to(&rec.topic).headers(headers);
            // An empty payload is written as null: a tombstone on a compacted topic.
            if !rec.payload.is_empty() {
                fr = fr.payload(&rec.payload);
            }
            if let Some(k) = &rec.key {
                fr = fr.key(k);
            }
            if let Some(p) = rec.partition {
                fr = fr.partition(p);
            }
            match self.inner.send_result(fr) {
                Ok(f) => return Ok(f),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => {
                    return Err(KafkaError::Produce {
                        topic: rec.topic.clone(),
                        source: e,
                    })
                }
            }
        }
    }
}

/// Produces one record and waits for the broker's acknowledgement.
pub async fn send(producer: &Producer, rec: &OutRecord) -> Result<(), KafkaError> {
    let f = producer.enqueue(rec).await?;
    await_delivery(f, &rec.topic).await
}

/// Sends `rec` until the broker stores it, backing off from 100 ms to 10 s between
/// tries. For outputs that must not be given up: work whose outcome is not stored must
/// not be acknowledged, or a restart would do it again (or, when its state is already
/// gone, never finish it). It does not give up, on purpose; shutdown waits for it, and
/// a process that is killed instead leaves the input uncommitted.
pub async fn send_until_stored(producer: &Producer, rec: &OutRecord) {
    let mut delay = std::time::Duration::from_millis(100);
    while let Err(e) = send(producer, rec).await {
        tracing::error!(topic = %rec.topic, error = %e, "could not store an output; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    }
}

/// Enqueues `records` in order, then waits for every acknowledgement.
pub async fn send_all(producer: &Producer, records: &[OutRecord]) -> Result<(), KafkaError> {
    let mut acks = Vec::with_capacity(records.len());
    for r in records {
        acks.push((producer.enqueue(r).await?, r.topic.as_str()));
    }
    for (f, topic) in acks {
        await_delivery(f, topic).await?;
    }
    Ok(())
}

/// Sends `records` one after another, each only once the broker holds the one before:
/// a crash can leave a later record unwritten, never an earlier one.
pub async fn send_in_order(producer: &Producer, records: &[OutRecord]) -> Result<(), KafkaError> {
    for r in records {
        send(producer, r).await?;
    }
    Ok(())
}

pub(crate) async fn await_delivery(f: DeliveryFuture, topic: &str) -> Result<(), KafkaError> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(KafkaError::Produce {
            topic: topic.to_string(),
            source: e,
        }),
        Err(_) => Err(KafkaError::Produce {
            topic: topic.to_string(),
            source: RdError::Canceled,
        }),
    }
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    /// Topic.
    pub topic: String,
    /// Key (partitioning).
    pub key: Option<Vec<u8>>,
    /// Explicit partition, when the key must not decide.
    pub partition: Option<i32>,
    /// Value; empty means null (a tombstone).
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, String)>,
}

impl OutRecord {
    /// A tombstone (null value) for `key`: on a compacted topic it removes the key.
    pub fn tombstone(topic: impl Into<String>, key: impl Into<String>) -> Self {
        OutRecord {
            topic: topic.into(),
            key: Some(key.into().into_bytes()),
            partition: None,
            payload: vec![],
            headers: vec![],
        }
    }

    /// An Avro single-object record with a string key.
    pub fn avro<T: AvroRecord>(
        topic: impl Into<String>,
        key: impl Into<String>,
        value: &T,
    ) -> Result<Self, KafkaError> {
        Ok(OutRecord {
            topic: topic.into(),
            key: Some(key.into().into_bytes()),
            partition: None,
            payload: value.encode()?,
            headers: vec![(
                smsgw_codec::CONTENT_TYPE_HEADER.to_string(),
                smsgw_codec::CONTENT_TYPE_AVRO.to_string(),
            )],
        })
    }
}

/// Most bytes of the original value a dead letter carries (its first bytes).
pub const DEAD_LETTER_PAYLOAD_MAX: usize = 64 * 1024;
/// Most bytes of the original key, of each original header name and value, and of the
/// reason, in a dead letter.
pub const DEAD_LETTER_FIELD_MAX: usize = 1024;
/// Most original headers a dead letter carries.
pub const DEAD_LETTER_HEADERS_MAX: usize = 32;

/// The first `max` bytes of `b`.
fn clip(b: &[u8], max: usize) -> Vec<u8> {
    b[..b.len().min(max)].to_vec()
}

/// The dead-letter record for an input the service gave up on. It always fits the
/// broker, whatever the input: the key, the value, the headers and the reason are cut to
/// the bounds above. What was cut is said in the dead letter's headers map:
/// `smsgw-dl-key-bytes`, `smsgw-dl-payload-bytes` (the original sizes),
/// `smsgw-dl-payload-sha256` (of the whole original value) and `smsgw-dl-headers` (the
/// original count), present when the input had them; the original is still on its topic
/// at the given offset for as long as the topic keeps it.
pub fn dead_letter(
    dlq_topic: &str,
    service: &str,
    reason: &str,
    input: &Incoming<'_>,
    now_ms: i64,
) -> OutRecord {
    use sha2::Digest;
    use smsgw_runtime::clip_str;
    let reason = clip_str(reason, DEAD_LETTER_FIELD_MAX);
    let mut headers: std::collections::HashMap<String, String> = input
        .headers
        .iter()
        .take(DEAD_LETTER_HEADERS_MAX)
        .map(|(k, v)| {
            (
                clip_str(k, DEAD_LETTER_FIELD_MAX),
                clip_str(&String::from_utf8_lossy(v), DEAD_LETTER_FIELD_MAX),
            )
        })
        .collect();
    headers.insert("smsgw-dl-headers".into(), input.headers.len().to_string());
    if let Some(k) = input.key {
        headers.insert("smsgw-dl-key-bytes".into(), k.len().to_string());
    }
    if let Some(p) = input.payload {
        headers.insert("smsgw-dl-payload-bytes".into(), p.len().to_string());
        headers.insert(
            "smsgw-dl-payload-sha256".into(),
            hex::encode(sha2::Sha256::digest(p)),
        );
    }
    let key = input.key.map(|k| clip(k, DEAD_LETTER_FIELD_MAX));
    let dl = DeadLetter {
        service: service.to_string(),
        reason: reason.clone(),
        topic: input.topic.to_string(),
        partition: input.partition,
        offset: input.offset,
        key: key.clone(),
        payload: input.payload.map(|p| clip(p, DEAD_LETTER_PAYLOAD_MAX)),
        headers,
        failed_at: now_ms,
    };
    let payload = dl.encode().unwrap_or_else(|e| {
        // The dead letter schema is ours and static; if even it fails, keep the reason.
        format!("dead letter encode failed: {e}; reason: {reason}").into_bytes()
    });
    OutRecord {
        topic: dlq_topic.to_string(),
        key,
        partition: None,
        payload,
        headers: vec![
            ("smsgw-reason".to_string(), reason),
            (
                smsgw_codec::CONTENT_TYPE_HEADER.to_string(),
                smsgw_codec::CONTENT_TYPE_AVRO.to_string(),
            ),
        ],
    }
}
