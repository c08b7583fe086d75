//! A measurement, not a check (ignored; `make bench-tansu`): how long a consumer takes to
//! read back `N` records (300 bytes and one header each, as smsgw writes them) from
//! Tansu's sqlite storage, with the header index `deploy/local/tansu-index.py` adds and
//! without it. Prints both; docs/benchmarks.md has the figures.

use smsgw_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use smsgw_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use smsgw_testkit::Broker;
use std::time::{Duration, Instant};

/// Reads partition 0 of `topic` from its start to its end; how long it took.
fn read_back(kafka: &smsgw_kafka::KafkaConfig, topic: &str) -> anyhow::Result<Duration> {
    let c: BaseConsumer = kafka
        .client_config(&[("group.id", "fetch-cost"), ("enable.auto.commit", "false")])
        .create()?;
    let (_, high) = c.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(900) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            if m.offset() + 1 >= high {
                return Ok(t.elapsed());
            }
        }
    }
    anyhow::bail!("not read back within 900 s")
}

async fn measure(n: usize, indexed: bool) -> anyhow::Result<Duration> {
    let dir =
        std::env::temp_dir().join(format!("smsgw-fetch-cost-{}-{indexed}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("tansu.db");
    let broker = Broker::start_with_storage(&format!("sqlite:///{}", db.display()))?;
    if !indexed {
        let dropped = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\n\
                 db = sqlite3.connect(sys.argv[1], timeout=30)\n\
                 db.execute('drop index header_topition_offset_id')\n\
                 db.commit()",
                &db.display().to_string(),
            ])
            .status()?;
        anyhow::ensure!(dropped.success(), "could not drop the index");
    }
    let kafka = broker.kafka();
    let topic = format!("{}.cost", kafka.topics.prefix);
    smsgw_testkit::create_topic(&kafka, &topic, 1).await?;
    let producer = smsgw_kafka::Producer::new(&kafka)?;
    let recs: Vec<_> = (0..n)
        .map(|i| smsgw_kafka::OutRecord {
            topic: topic.clone(),
            key: Some(format!("k{i}").into_bytes()),
            partition: Some(0),
            payload: vec![b'x'; 300],
            headers: vec![(
                smsgw_codec::CONTENT_TYPE_HEADER.to_string(),
                smsgw_codec::CONTENT_TYPE_AVRO.to_string(),
            )],
        })
        .collect();
    for chunk in recs.chunks(5_000) {
        smsgw_kafka::send_all(&producer, chunk).await?;
    }
    let k = kafka.clone();
    let took = tokio::task::spawn_blocking(move || read_back(&k, &topic)).await??;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: make bench-tansu"]
async fn reading_back_with_and_without_the_header_index() -> anyhow::Result<()> {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let with = measure(n, true).await?;
    let without = measure(n, false).await?;
    println!(
        "{n} records read back from sqlite: {:.2} s with the header index, {:.2} s without",
        with.as_secs_f64(),
        without.as_secs_f64()
    );
    Ok(())
}
