//! The one consumer loop's revocation path, against a real broker: records of a
//! partition taken away in a rebalance, reported finished afterwards, are not committed
//! (their next owner reads them again), while the partitions kept commit as usual; and
//! the worker hears of each change. Without the loop forgetting revoked partitions, the
//! late reports would commit offsets of partitions that belong to another member.

use smsgw_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use smsgw_kafka::rdkafka::{Offset, TopicPartitionList};
use smsgw_kafka::{Done, Incoming, KafkaError, RecordAt, Worker};
use smsgw_testkit::{eventually, stopper, Broker};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Seen {
    taken: Vec<RecordAt>,
    done: Option<Done>,
    revoked: Vec<i32>,
    assigned: Vec<Vec<i32>>,
}

/// Takes records and finishes none of them until the test says so.
struct Holding(Arc<Mutex<Seen>>);

impl Worker for Holding {
    async fn on_record(&mut self, input: &Incoming<'_>, done: &Done) -> Result<(), KafkaError> {
        let mut s = self.0.lock().unwrap();
        s.taken.push(input.at());
        s.done.get_or_insert_with(|| done.clone());
        Ok(())
    }
    async fn on_assigned(&mut self, ps: &[(String, i32)]) -> Result<(), KafkaError> {
        self.0
            .lock()
            .unwrap()
            .assigned
            .push(ps.iter().map(|(_, p)| *p).collect());
        Ok(())
    }
    async fn on_revoked(&mut self, ps: &[(String, i32)]) {
        self.0
            .lock()
            .unwrap()
            .revoked
            .extend(ps.iter().map(|(_, p)| *p));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_records_of_a_revoked_partition_are_left_to_its_next_owner() -> anyhow::Result<()>
{
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let topic = format!("{}.loop", kafka.topics.prefix);
    smsgw_testkit::create_topic(&kafka, &topic, 4).await?;
    let producer = smsgw_kafka::Producer::new(&kafka)?;
    for p in 0..4 {
        for i in 0..2 {
            let rec = smsgw_kafka::OutRecord {
                topic: topic.clone(),
                key: None,
                partition: Some(p),
                payload: format!("r{p}-{i}").into_bytes(),
                headers: vec![],
            };
            smsgw_kafka::send(&producer, &rec).await?;
        }
    }
    // Given member A of the group, holding all 8 records of the 4 partitions unfinished,
    let group = "loop-rebalance";
    let seen = Arc::new(Mutex::new(Seen::default()));
    let consumer = smsgw_kafka::consumer(&kafka, group)?;
    smsgw_kafka::join(&consumer, &kafka, &[&topic])?;
    let (stop, sd) = stopper();
    let mut worker = Holding(seen.clone());
    // Exactly the 8 records: a loop that kept counting a revoked partition's records as
    // in flight would never read another one.
    let opts = smsgw_kafka::LoopOptions {
        max_in_flight: 8,
        tick: None,
        drain: Duration::from_secs(2),
    };
    let a =
        tokio::spawn(async move { smsgw_kafka::run_loop(consumer, &mut worker, opts, sd).await });
    eventually("A takes all 8", Duration::from_secs(30), || {
        let n = seen.lock().unwrap().taken.len();
        async move { (n == 8).then_some(()) }
    })
    .await?;
    // when member B joins and takes half the partitions away,
    let mut b = Command::new(env!("CARGO_BIN_EXE_smsgw-group-member"))
        .args([&broker.addr, &topic, group])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    eventually("A hears of the revocation", Duration::from_secs(30), || {
        let s = seen.lock().unwrap();
        let ok = !s.revoked.is_empty() && s.assigned.len() >= 2;
        async move { ok.then_some(()) }
    })
    .await?;
    let (revoked, kept) = {
        let s = seen.lock().unwrap();
        let kept = s.assigned.last().cloned().unwrap_or_default();
        (s.revoked.clone(), kept)
    };
    let lost: Vec<i32> = (0..4).filter(|p| !kept.contains(p)).collect();
    println!("revoked {revoked:?}, kept {kept:?}");
    assert!(!lost.is_empty() && !kept.is_empty(), "B took a share");
    // (Tansu's rebalance is eager: every partition is revoked, then some are assigned
    // again, so the unfinished records of the kept ones are read again from the
    // committed offset: at least once.)
    let again = 8 + 2 * kept.len();
    eventually(
        "A reads its kept partitions again",
        Duration::from_secs(30),
        || {
            let n = seen.lock().unwrap().taken.len();
            async move { (n >= again).then_some(()) }
        },
    )
    .await?;
    // and every record A took is then reported finished,
    {
        let s = seen.lock().unwrap();
        let done = s.done.clone().expect("a Done handle");
        for at in &s.taken {
            done.finish(at.clone());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    a.await??;
    drop(b.stdin.take());
    let _ = b.wait();
    // then A committed the partitions it kept, and nothing of those it lost.
    let probe: BaseConsumer = kafka
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(&topic, p);
    }
    let committed = probe.committed_offsets(tpl, Duration::from_secs(10))?;
    for e in committed.elements() {
        let offset = e.offset();
        println!("partition {}: committed {offset:?}", e.partition());
        if kept.contains(&e.partition()) {
            assert_eq!(
                offset,
                Offset::Offset(2),
                "a kept partition commits what finished"
            );
        } else {
            assert!(
                !matches!(offset, Offset::Offset(o) if o > 0),
                "partition {} was revoked before its records finished, yet {offset:?} was committed",
                e.partition()
            );
        }
    }
    Ok(())
}

/// Remembers what it handled, as the router does: a record seen before gives nothing.
struct Remembering {
    out_topic: String,
    handled: Arc<Mutex<Vec<String>>>,
}

impl smsgw_kafka::Handler for Remembering {
    async fn handle(
        &mut self,
        input: &Incoming<'_>,
        _now_ms: i64,
    ) -> Result<Vec<smsgw_kafka::OutRecord>, smsgw_kafka::HandleError> {
        let body = String::from_utf8_lossy(input.payload.unwrap_or_default()).to_string();
        let mut handled = self.handled.lock().unwrap();
        let first = !handled.contains(&body);
        handled.push(body.clone());
        Ok(if first {
            vec![smsgw_kafka::OutRecord {
                topic: self.out_topic.clone(),
                key: None,
                partition: Some(0),
                payload: body.into_bytes(),
                headers: vec![],
            }]
        } else {
            vec![]
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_read_again_before_its_outputs_are_stored_is_committed_only_with_them(
) -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let topic = format!("{}.in", kafka.topics.prefix);
    // The output topic does not exist yet: the first reading's output waits unacknowledged
    // (no delivery timeout) until the test creates it.
    let out_topic = format!("{}.out", kafka.topics.prefix);
    smsgw_testkit::create_topic(&kafka, &topic, 1).await?;
    let producer = smsgw_kafka::Producer::new(&kafka)?;
    let put = |body: &str| smsgw_kafka::OutRecord {
        topic: topic.clone(),
        key: None,
        partition: Some(0),
        payload: body.as_bytes().to_vec(),
        headers: vec![],
    };
    smsgw_kafka::send(&producer, &put("r0")).await?;
    // Given a handler service that took r0 and whose output is not stored yet,
    let group = "loop-reread";
    let handled = Arc::new(Mutex::new(Vec::new()));
    let consumer = smsgw_kafka::consumer(&kafka, group)?;
    smsgw_kafka::join(&consumer, &kafka, &[&topic])?;
    let registry = prometheus::Registry::new();
    let metrics = smsgw_kafka::ConsumerMetrics::register(&registry, "t_records_total", "t");
    let (stop, sd) = stopper();
    let svc = {
        let (kafka, handled, out_topic) = (kafka.clone(), handled.clone(), out_topic.clone());
        let dlq = format!("{}.dlq", kafka.topics.prefix);
        tokio::spawn(async move {
            let producer = smsgw_kafka::Producer::new(&kafka)?;
            let mut h = Remembering { out_topic, handled };
            smsgw_kafka::run_consumer(consumer, &producer, &dlq, "t", &mut h, &metrics, 8, sd).await
        })
    };
    let count = |b: &'static str| {
        let handled = handled.clone();
        move || {
            let n = handled.lock().unwrap().iter().filter(|x| *x == b).count();
            async move { (n >= 1).then_some(n) }
        }
    };
    eventually("r0 handled", Duration::from_secs(30), count("r0")).await?;
    // when another member joins and leaves, so that the service reads from the last
    // commit again,
    smsgw_testkit::rebalance_group(&kafka, group, &topic).await?;
    smsgw_kafka::send(&producer, &put("r1")).await?;
    eventually("r1 handled", Duration::from_secs(30), count("r1")).await?;
    // then r0 was not handled a second time, and nothing is committed while its output
    // is unstored,
    tokio::time::sleep(Duration::from_secs(1)).await; // auto-commit runs every 500 ms
    assert_eq!(
        smsgw_testkit::group_lag(&kafka, group, &topic)?,
        2,
        "a record read again was committed before its first reading's output was stored"
    );
    assert_eq!(
        handled
            .lock()
            .unwrap()
            .iter()
            .filter(|x| *x == "r0")
            .count(),
        1
    );
    // and once the outputs are stored, both are committed.
    smsgw_testkit::create_topic(&kafka, &out_topic, 1).await?;
    eventually(
        "committed with the outputs",
        Duration::from_secs(60),
        || async { (smsgw_testkit::group_lag(&kafka, group, &topic).ok()? == 0).then_some(()) },
    )
    .await?;
    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// Writes two outputs per record, the second acting on the first (as the router's
/// dispatch work carries out its decision), and asks for them in order.
struct Ordered {
    first_topic: String,
    second_topic: String,
    taken: Arc<Mutex<usize>>,
}

impl smsgw_kafka::Handler for Ordered {
    async fn handle(
        &mut self,
        input: &Incoming<'_>,
        _now_ms: i64,
    ) -> Result<Vec<smsgw_kafka::OutRecord>, smsgw_kafka::HandleError> {
        *self.taken.lock().unwrap() += 1;
        let body = input.payload.unwrap_or_default().to_vec();
        let to = |topic: &String| smsgw_kafka::OutRecord {
            topic: topic.clone(),
            key: None,
            partition: Some(0),
            payload: body.clone(),
            headers: vec![],
        };
        Ok(vec![to(&self.first_topic), to(&self.second_topic)])
    }

    fn ordered_outputs(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_outputs_are_written_only_after_the_ones_before_are_stored() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let topic = format!("{}.in", kafka.topics.prefix);
    // The first output's topic does not exist yet: it waits unacknowledged (no delivery
    // timeout) until the test creates it, as a write does while its batch is in flight.
    let first_topic = format!("{}.decisions", kafka.topics.prefix);
    let second_topic = format!("{}.work", kafka.topics.prefix);
    smsgw_testkit::create_topic(&kafka, &topic, 1).await?;
    smsgw_testkit::create_topic(&kafka, &second_topic, 1).await?;
    let producer = smsgw_kafka::Producer::new(&kafka)?;
    smsgw_kafka::send(
        &producer,
        &smsgw_kafka::OutRecord {
            topic: topic.clone(),
            key: None,
            partition: Some(0),
            payload: b"r0".to_vec(),
            headers: vec![],
        },
    )
    .await?;
    // Given a service whose handler writes a decision and then the work it implies,
    let group = "loop-ordered";
    let consumer = smsgw_kafka::consumer(&kafka, group)?;
    smsgw_kafka::join(&consumer, &kafka, &[&topic])?;
    let registry = prometheus::Registry::new();
    let metrics = smsgw_kafka::ConsumerMetrics::register(&registry, "t_records_total", "t");
    let (stop, sd) = stopper();
    let taken = Arc::new(Mutex::new(0));
    let svc = {
        let (kafka, first_topic, second_topic, taken) = (
            kafka.clone(),
            first_topic.clone(),
            second_topic.clone(),
            taken.clone(),
        );
        let dlq = format!("{}.dlq", kafka.topics.prefix);
        tokio::spawn(async move {
            let producer = smsgw_kafka::Producer::new(&kafka)?;
            let mut h = Ordered {
                first_topic,
                second_topic,
                taken,
            };
            smsgw_kafka::run_consumer(consumer, &producer, &dlq, "t", &mut h, &metrics, 8, sd).await
        })
    };
    let stored = |t: &str| {
        let (kafka, t) = (kafka.clone(), t.to_string());
        async move {
            smsgw_kafka::high_watermarks(&kafka, &t, &[0], Duration::from_secs(10))
                .await
                .map(|w| w[0].1)
        }
    };
    // when the record is taken and its decision cannot be stored yet,
    eventually("r0 taken", Duration::from_secs(30), || {
        let n = *taken.lock().unwrap();
        async move { (n == 1).then_some(()) }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // then the work is not written either (written together, it would be stored now and
    // a crash would leave it without its decision), and the record is not committed;
    assert_eq!(
        stored(&second_topic).await?,
        0,
        "work written before its decision"
    );
    assert_eq!(smsgw_testkit::group_lag(&kafka, group, &topic)?, 1);
    // once the decision can be stored, both are, and the record is committed.
    smsgw_testkit::create_topic(&kafka, &first_topic, 1).await?;
    eventually(
        "both stored and committed",
        Duration::from_secs(60),
        || async {
            let both =
                stored(&first_topic).await.ok()? == 1 && stored(&second_topic).await.ok()? == 1;
            let committed = smsgw_testkit::group_lag(&kafka, group, &topic).ok()? == 0;
            (both && committed).then_some(())
        },
    )
    .await?;
    let _ = stop.send(());
    svc.await??;
    Ok(())
}
