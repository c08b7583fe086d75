//! The broker the tests (and `make run`, and the bench) use must never hide a record from
//! a consumer that tails a partition while several producers write to it. Every smsgw
//! topic has that shape: ingest, the router and the receipt service all write to the
//! event log while the router and the status view tail it.
//!
//! Tansu 0.6's object-store engine (`memory://`) fails this: its produce raises the high
//! watermark before it stores the batch, so a fetch in between returns the batches after
//! the missing one and the consumer moves past it for good. That is how the bench lost
//! accepted messages the router never saw (issue 15). The sqlite engine raises the
//! watermark in the same transaction that inserts the records, so it passes; the test
//! kit's default broker runs on it.

use smsgw_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use smsgw_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use smsgw_kafka::{OutRecord, Producer, TopicSpec};
use smsgw_testkit::Broker;
use std::collections::BTreeSet;
use std::time::Duration;

const PRODUCERS: usize = 8;
const PER_PRODUCER: usize = 10_000;

/// Four producers write at once to one partition while a consumer tails it with the
/// services' fetch settings; the consumer must receive every record, at contiguous
/// offsets.
async fn tailing_consumer_sees_every_record(broker: &Broker) -> anyhow::Result<()> {
    let kafka = broker.kafka();
    let topic = kafka.topics.events();
    smsgw_kafka::bootstrap_topics(
        &kafka,
        &[TopicSpec {
            name: topic.clone(),
            partitions: 1,
            replication: 1,
            configs: vec![],
        }],
    )
    .await?;

    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", "visibility"),
            ("enable.auto.commit", "false"),
            ("fetch.wait.max.ms", smsgw_kafka::FETCH_WAIT_MAX_MS),
        ])
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;

    let total = PRODUCERS * PER_PRODUCER;
    let writers: Vec<_> = (0..PRODUCERS)
        .map(|w| {
            let kafka = kafka.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                // A producer each: separate connections, so the broker handles the
                // produce requests concurrently, as it does for separate services.
                let producer = Producer::new(&kafka)?;
                let records: Vec<OutRecord> = (0..PER_PRODUCER)
                    .map(|i| OutRecord {
                        topic: topic.clone(),
                        key: Some(format!("{w}-{i}").into_bytes()),
                        partition: Some(0),
                        payload: format!("{w}-{i}").into_bytes(),
                        headers: vec![],
                    })
                    .collect();
                for chunk in records.chunks(50) {
                    smsgw_kafka::send_all(&producer, chunk).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();

    let mut seen = BTreeSet::new();
    let mut gaps = Vec::new();
    let mut next_offset = 0i64;
    while seen.len() < total {
        let m = match tokio::time::timeout(Duration::from_secs(15), consumer.recv()).await {
            Ok(m) => m?,
            Err(_) => break, // nothing more arrives: report what is missing below
        };
        if m.offset() != next_offset {
            gaps.push((next_offset, m.offset()));
        }
        next_offset = m.offset() + 1;
        seen.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
    }
    for w in writers {
        w.await??;
    }
    assert!(
        gaps.is_empty() && seen.len() == total,
        "the tailing consumer received {} of {total} records; offset jumps (expected, got): {:?}",
        seen.len(),
        &gaps[..gaps.len().min(10)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_test_broker_never_hides_a_record_from_a_tailing_consumer() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    tailing_consumer_sees_every_record(&broker).await
}

/// The engine `make run`, the bench and the tests avoid, kept as evidence of the cause:
/// run with `cargo test -p smsgw-testkit -- --ignored` to see it lose records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "demonstrates a Tansu 0.6 memory-engine defect; not run by make test"]
async fn the_memory_engine_hides_records_from_a_tailing_consumer() -> anyhow::Result<()> {
    let broker = Broker::start_with_storage("memory://tansu/")?;
    tailing_consumer_sees_every_record(&broker).await
}
