//! The dispatcher's recovery window (issue 15) reaches back to the oldest uncommitted
//! dispatch record: `smsgw_kafka::oldest_uncommitted_ms` against a real Tansu, and the
//! measured fact that makes a time-based look-back matter only on Kafka proper.

use smsgw_kafka::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use smsgw_kafka::rdkafka::{Offset, TopicPartitionList};
use smsgw_kafka::{now_ms, send, OutRecord, Producer};
use smsgw_testkit::{create_topic, Broker};
use std::time::Duration;

fn commit(kafka: &smsgw_kafka::KafkaConfig, group: &str, topic: &str, offset: i64) {
    let c: BaseConsumer = kafka
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_uncommitted_record_is_found_by_the_group_commit() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let topic = format!("{}.work", kafka.topics.prefix);
    create_topic(&kafka, &topic, 1).await?;
    let producer = Producer::new(&kafka)?;
    // Given three records a second apart, the group having committed the first,
    let mut around = Vec::new();
    for i in 0..3 {
        let before = now_ms();
        let rec = OutRecord {
            topic: topic.clone(),
            key: Some(format!("k{i}").into_bytes()),
            partition: Some(0),
            payload: vec![i],
            headers: vec![],
        };
        send(&producer, &rec).await?;
        around.push((before, now_ms()));
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    commit(&kafka, "g", &topic, 1);
    // then the oldest uncommitted record is the second one;
    let oldest = smsgw_kafka::oldest_uncommitted_ms(&kafka, "g", &topic).await?;
    let (before, after) = around[1];
    assert!(
        oldest.is_some_and(|t| t >= before - 5 && t <= after + 5),
        "{oldest:?} not within {:?}",
        around[1]
    );
    // a group with no commit starts at the first record;
    let first = smsgw_kafka::oldest_uncommitted_ms(&kafka, "fresh", &topic).await?;
    assert!(first.is_some_and(|t| t <= around[0].1 + 5), "{first:?}");
    // committed to the end, nothing is in flight.
    commit(&kafka, "g", &topic, 3);
    assert_eq!(
        smsgw_kafka::oldest_uncommitted_ms(&kafka, "g", &topic).await?,
        None
    );

    // Measured fact (Tansu 0.6): a look-up by time returns the first offset whatever the
    // time, so `read_recent` reads the whole topic and a look-back shorter than the work
    // in flight does no harm here; on Kafka proper it would skip the older outcomes,
    // which is why the dispatcher looks back to the oldest uncommitted record.
    let read = smsgw_kafka::read_recent(&kafka, topic.clone(), 500, |_, _| {}).await?;
    assert_eq!(
        read, 3,
        "Tansu now honours offsets_for_times: see docs/reliability.md"
    );
    Ok(())
}
