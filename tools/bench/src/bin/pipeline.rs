//! `make bench-pipeline` (part of `make bench`): the whole gateway end to end on this
//! machine: Tansu (memory storage unless `BENCH_STORAGE=sqlite`), the five services as release processes, our SMPP simulator (receipts 500 ms
//! after submit), load written to the ingest topic as upstream producers do.
//!
//! First the broker's own ceiling: raw produce and consume rates on the same storage,
//! divided by the records smsgw writes and reads per message. Then two runs:
//! - **throughput**: `BENCH_MESSAGES` (20,000) requests as fast as the producer goes;
//!   the figure is messages over the time from the first request to the last
//!   `MessageDelivered`; CPU (cores) and peak RSS per service over the run; Kafka
//!   records written per message (every topic's growth over the run);
//! - **latency**: 1,000 msg/s for 10 s; ingest→submit and ingest→delivered percentiles
//!   (from the request's produce time, carried in `client_ref`, to the event's time).
//!
//! Prints progress while it runs and writes `bench-results/pipeline.json`.
//! `BENCH_QUICK=1`: small counts, for a smoke run.

use anyhow::Context;
use smsgw_bench::{percentile, usage};
use smsgw_carrier_sim::{Config as SimConfig, Rule, Simulator};
use smsgw_codec::{AvroRecord, SubmitRequest};
use smsgw_domain::{Event, EventPayload};
use smsgw_e2e::fleet::Fleet;
use smsgw_kafka::rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use smsgw_kafka::rdkafka::Message as _;
use smsgw_kafka::{now_ms, KafkaConfig, OutRecord, Producer};
use smsgw_testkit::Broker;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Size of a record in the broker-ceiling phase: about an Avro event's.
const CEILING_RECORD_BYTES: usize = 200;

/// Per-message timestamps seen on the event log.
#[derive(Default)]
struct Seen {
    produced: HashMap<String, i64>,
    /// When ingest accepted the message (`MessageAccepted`'s time).
    accepted: HashMap<String, i64>,
    /// When the router chose the first carrier (`CarrierSelected`'s time).
    routed: HashMap<String, i64>,
    submitted: HashMap<String, i64>,
    delivered: HashMap<String, i64>,
    /// Each message's latest event kind, to say where the missing ones stopped.
    last: HashMap<String, &'static str>,
}

fn request(i: usize, tag: &str) -> SubmitRequest {
    SubmitRequest {
        client_id: "bench".into(),
        to: format!("+4479{:08}", i % 100_000_000),
        from: "BENCH".into(),
        body: "Your code is 123456. It expires in 10 minutes.".into(),
        idempotency_key: Some(format!("{tag}-{i}")),
        client_ref: Some(format!("t={}", now_ms())),
        message_id: None,
        registered_delivery: Some(true),
        validity_period_s: None,
        schedule_delivery_at: None,
        callback_url: None,
        send_at: None,
        message_type: None,
    }
}

/// Reads every partition of `topic` from the beginning, without group membership (so the
/// bench's own readers add no group traffic to the broker under test).
fn assign_all(c: &StreamConsumer, topic: &str) -> anyhow::Result<()> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = smsgw_kafka::rdkafka::TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), smsgw_kafka::rdkafka::Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    Ok(())
}

/// Follows the event log into `seen` until the task is dropped.
fn watch(
    kafka: &KafkaConfig,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let c: StreamConsumer = kafka
        .client_config(&[
            ("group.id", &format!("bench-{}", now_ms())),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "20"),
        ])
        .create()?;
    assign_all(&c, &kafka.topics.events())?;
    Ok(tokio::spawn(async move {
        while let Ok(m) = c.recv().await {
            let Some(Ok(e)) = m.payload().map(Event::decode) else {
                continue;
            };
            let mut s = seen.lock().unwrap();
            s.last.insert(e.message_id.clone(), e.payload.kind());
            match &e.payload {
                EventPayload::Accepted(a) => {
                    if let Some(t) = a.client_ref.as_deref().and_then(|r| r.strip_prefix("t=")) {
                        s.produced
                            .insert(e.message_id.clone(), t.parse().unwrap_or(0));
                    }
                    s.accepted.insert(e.message_id.clone(), e.occurred_at_ms);
                }
                EventPayload::CarrierSelected(_) => {
                    s.routed
                        .entry(e.message_id.clone())
                        .or_insert(e.occurred_at_ms);
                }
                EventPayload::Submitted(_) => {
                    s.submitted.insert(e.message_id.clone(), e.occurred_at_ms);
                }
                EventPayload::Delivered(_) => {
                    s.delivered.insert(e.message_id.clone(), e.occurred_at_ms);
                }
                _ => {}
            }
        }
    }))
}

/// Records in every topic of `kafka`'s prefix, by topic (sum of partitions' high
/// watermarks).
fn records(kafka: &KafkaConfig) -> anyhow::Result<HashMap<String, i64>> {
    let c: BaseConsumer = kafka
        .client_config(&[("group.id", "bench-count")])
        .create()?;
    let md = c.fetch_metadata(None, Duration::from_secs(10))?;
    let mut n = HashMap::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| t.name().starts_with(&kafka.topics.prefix))
    {
        for p in t.partitions() {
            *n.entry(t.name().to_string()).or_default() += c
                .fetch_watermarks(t.name(), p.id(), Duration::from_secs(10))?
                .1;
        }
    }
    Ok(n)
}

/// How many readers each record of a topic has while messages flow (the consumer groups
/// and tails of the services; start-up reads excluded): the ingest topic is read by
/// ingest; the event log by the router, the receipt service's callback worker and
/// ingest's status view; each dispatch topic by the dispatcher; receipts by the receipt
/// service; the callback progress and schedule topics by one tail each; the compacted
/// opt-out topic by three tails (router, dispatcher, optout's API), cancellations by two
/// (router, dispatcher), carrier status by the router; dead letters by nobody.
fn readers(kafka: &KafkaConfig, topic: &str) -> i64 {
    let t = &kafka.topics;
    match topic {
        x if x == t.events() => 3,
        x if x == t.optout() => 3,
        x if x == t.cancellations() => 2,
        x if x == t.dead_letter() => 0,
        _ => 1,
    }
}

/// Records written and read per message between two counts.
fn per_message(
    kafka: &KafkaConfig,
    before: &HashMap<String, i64>,
    after: &HashMap<String, i64>,
    n: usize,
) -> (f64, f64) {
    let (mut w, mut r) = (0, 0);
    for (t, a) in after {
        let grew = a - before.get(t).copied().unwrap_or(0);
        w += grew;
        r += grew * readers(kafka, t);
    }
    (w as f64 / n as f64, r as f64 / n as f64)
}

/// The broker's raw rates on this machine, with the storage the run uses: `n` records
/// of `size` bytes produced as smsgw's producer does (idempotent, `acks=all`, 2 ms
/// linger), then consumed by a fresh group with smsgw's consumer settings.
async fn broker_ceiling(kafka: &KafkaConfig, n: usize, size: usize) -> anyhow::Result<(f64, f64)> {
    let topic = format!("{}.ceiling", kafka.topics.prefix);
    smsgw_kafka::bootstrap_topics(
        kafka,
        &[smsgw_kafka::TopicSpec {
            name: topic.clone(),
            partitions: 3,
            replication: 1,
            configs: vec![],
        }],
    )
    .await?;
    let producer = Producer::new(kafka)?;
    let payload = vec![b'x'; size];
    let t0 = Instant::now();
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let rec = OutRecord {
            topic: topic.clone(),
            key: Some(format!("k{i}").into_bytes()),
            partition: None,
            payload: payload.clone(),
            headers: vec![],
        };
        acks.push(producer.enqueue(&rec).await?);
    }
    for a in acks {
        a.await
            .map_err(|_| anyhow::anyhow!("producer gone"))?
            .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
    }
    let produce = n as f64 / t0.elapsed().as_secs_f64();
    let c: StreamConsumer = kafka
        .client_config(&[
            ("group.id", &format!("ceiling-{}", now_ms())),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "20"),
            ("enable.auto.commit", "false"),
        ])
        .create()?;
    assign_all(&c, &topic)?;
    let mut got = 0;
    let mut t1 = None;
    while got < n {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .context("consuming the ceiling topic stalled")??;
        // The clock starts at the first record, so the group join is not counted.
        t1.get_or_insert_with(Instant::now);
        got += usize::from(m.payload().is_some());
    }
    let consume = n as f64 / t1.map_or(1.0, |t| t.elapsed().as_secs_f64());
    Ok((produce, consume))
}

async fn send_paced(
    producer: &Producer,
    kafka: &KafkaConfig,
    n: usize,
    tag: &str,
    per_sec: Option<f64>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut acks = Vec::new();
    for i in 0..n {
        if let Some(rate) = per_sec {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let req = request(i, tag);
        let rec = OutRecord::avro(kafka.topics.ingest(), format!("{tag}-{i}"), &req)?;
        acks.push(producer.enqueue(&rec).await?);
    }
    for a in acks {
        a.await
            .map_err(|_| anyhow::anyhow!("producer gone"))?
            .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
    }
    Ok(())
}

async fn wait_delivered(seen: &Arc<Mutex<Seen>>, target: usize, what: &str) -> anyhow::Result<()> {
    // Gives up after 60 s without a new delivery (the missing messages' last events are
    // then in the error).
    let mut progress_at = Instant::now();
    let mut last = 0;
    loop {
        let n = seen.lock().unwrap().delivered.len();
        if n >= target {
            return Ok(());
        }
        if n > last {
            progress_at = Instant::now();
        }
        if progress_at.elapsed() > Duration::from_secs(60) {
            let s = seen.lock().unwrap();
            let mut stuck: HashMap<&str, usize> = HashMap::new();
            let mut examples = Vec::new();
            for (id, kind) in s
                .last
                .iter()
                .filter(|(id, _)| !s.delivered.contains_key(*id))
            {
                *stuck.entry(kind).or_default() += 1;
                if examples.len() < 5 {
                    examples.push(format!("{id} ({kind})"));
                }
            }
            anyhow::bail!(
                "{what}: only {n} of {target} delivered, none for 60 s; the others' last events: {stuck:?}; e.g. {}",
                examples.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (accepted, submitted, now) = {
            let s = seen.lock().unwrap();
            (s.produced.len(), s.submitted.len(), s.delivered.len())
        };
        println!(
            "  {what}: {now}/{target} delivered ({:.0}/s); {accepted} accepted, {submitted} submitted",
            (now - last) as f64 / 2.0
        );
        last = now;
    }
}

#[tokio::main]
async fn main() {
    smsgw_bench::finish(smsgw_bench::until_signalled(run()).await)
}

async fn run() -> anyhow::Result<()> {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 20_000 });
    let latency_secs = if quick { 3.0 } else { 10.0 };
    let dir = std::env::temp_dir().join(format!("smsgw-bench-{}", now_ms()));
    std::fs::create_dir_all(&dir)?;
    // The broker's storage: memory by default, which can hide a record from a tailing
    // consumer (a run may then report messages that never finished: docs/operations.md,
    // "Broker storage"). BENCH_STORAGE=sqlite for Tansu's durable engine, which does not
    // sustain this load yet (docs/benchmarks.md).
    let storage: String = match std::env::var("BENCH_STORAGE").as_deref() {
        Ok("sqlite") => format!("sqlite:///{}/tansu.db", dir.display()),
        _ => "memory://tansu/".to_string(),
    };
    let broker = Broker::start_with_storage(&storage)?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["sim"]).await?;
    let ceiling_n = if quick { 10_000 } else { 50_000 };
    println!("broker: raw produce and consume of {ceiling_n} records of {CEILING_RECORD_BYTES} bytes ({storage})");
    let (produce_rate, consume_rate) =
        broker_ceiling(&kafka, ceiling_n, CEILING_RECORD_BYTES).await?;
    println!("  produce {produce_rate:.0} records/s, consume {consume_rate:.0} records/s");
    let mut sc = SimConfig::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    sc.rules = vec![Rule {
        dlr_delay_ms: 500,
        ..Rule::default()
    }];
    let sim = Simulator::start(sc).await?;
    // BENCH_INSTANCES=2: every service twice, sharing the partitions by instance number
    // as the chart runs them (the carrier's binds are shared too: one per dispatcher).
    let instances: u32 = std::env::var("BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let fleet = Fleet::start_scaled(
        &kafka,
        &format!("smpp://{}", sim.smpp_addr),
        &dir,
        600_000,
        std::env::var("BENCH_WINDOW")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(50),
        instances,
    )
    .await
    .context("starting the services (build them first: cargo build --release --workspace)")?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let _watch = watch(&kafka, seen.clone())?;
    let producer = Producer::new(&kafka)?;

    println!("warm-up: 500 messages");
    send_paced(&producer, &kafka, 500, "warm", None).await?;
    wait_delivered(&seen, 500, "warm-up").await?;

    println!("throughput: {n} messages, as fast as the producer goes");
    let records_before = records(&kafka)?;
    let cpu_before: HashMap<String, f64> = fleet
        .pids()
        .into_iter()
        .map(|(s, p)| (s, usage(p).0))
        .collect();
    let t0 = Instant::now();
    let t0_ms = now_ms();
    send_paced(&producer, &kafka, n, "tput", None).await?;
    let produced_in = t0.elapsed();
    wait_delivered(&seen, 500 + n, "throughput").await?;
    let last = seen
        .lock()
        .unwrap()
        .delivered
        .values()
        .copied()
        .max()
        .unwrap_or(t0_ms);
    let secs = (last - t0_ms) as f64 / 1000.0;
    let rate = n as f64 / secs;
    let (written, read) = per_message(&kafka, &records_before, &records(&kafka)?, n);
    // The broker's time per message: its writes at the produce rate, its reads at the
    // consume rate; the ceiling is the message rate at which that time fills a second.
    let ceiling = 1.0 / (written / produce_rate + read / consume_rate);
    let mut services = serde_json::Map::new();
    println!("  {:<11} {:>8} {:>10}", "service", "cores", "peak RSS");
    for (s, pid) in fleet.pids() {
        let (cpu, hwm) = usage(pid);
        let cores = (cpu - cpu_before.get(&s).copied().unwrap_or(0.0)) / secs;
        println!("  {s:<11} {cores:>8.2} {:>7.1} MB", hwm as f64 / 1024.0);
        services.insert(
            s,
            serde_json::json!({"cores": cores, "peak_rss_mb": hwm as f64 / 1024.0}),
        );
    }
    println!(
        "throughput: {rate:.0} msg/s to the last receipt ({n} in {secs:.1} s; requests written in {:.1} s)",
        produced_in.as_secs_f64()
    );
    println!(
        "  Kafka records per message: {written:.1} written, {read:.1} read; broker ceiling {ceiling:.0} msg/s; smsgw runs at {:.0} % of it",
        100.0 * rate / ceiling
    );

    println!("latency: 1,000 msg/s for {latency_secs} s");
    let m = (1_000.0 * latency_secs) as usize;
    let before: Vec<String> = seen.lock().unwrap().produced.keys().cloned().collect();
    send_paced(&producer, &kafka, m, "lat", Some(1_000.0)).await?;
    wait_delivered(&seen, 500 + n + m, "latency").await?;
    let (mut to_submit, mut to_delivered) = (Vec::new(), Vec::new());
    // Where the time to submit goes: request → accepted (ingest), accepted → carrier
    // selected (router), selected → submitted (dispatcher and the carrier's response).
    let mut stages: [Vec<i64>; 3] = Default::default();
    {
        let s = seen.lock().unwrap();
        let old: std::collections::HashSet<&String> = before.iter().collect();
        for (id, t) in s.produced.iter().filter(|(id, _)| !old.contains(id)) {
            if let Some(x) = s.submitted.get(id) {
                to_submit.push(x - t);
                if let (Some(a), Some(r)) = (s.accepted.get(id), s.routed.get(id)) {
                    stages[0].push(a - t);
                    stages[1].push(r - a);
                    stages[2].push(x - r);
                }
            }
            if let Some(x) = s.delivered.get(id) {
                to_delivered.push(x - t);
            }
        }
    }
    let pct = |v: &mut Vec<i64>| [0.5, 0.9, 0.99, 0.999].map(|p| percentile(v, p));
    let (s, d) = (pct(&mut to_submit), pct(&mut to_delivered));
    println!(
        "  ingest→submit    p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms",
        s[0], s[1], s[2], s[3]
    );
    let stage = stages.each_mut().map(pct);
    for (name, p) in ["ingest", "router", "dispatcher"].iter().zip(&stage) {
        println!(
            "    of which {name:<10} p50 {} ms, p90 {} ms, p99 {} ms",
            p[0], p[1], p[2]
        );
    }
    println!("  ingest→delivered p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms (receipts come 500 ms after submit)", d[0], d[1], d[2], d[3]);

    let out = serde_json::json!({
        "instances": instances,
        "messages": n, "throughput_msg_per_s": rate, "records_written_per_message": written,
        "records_read_per_message": read,
        "broker": {"storage": storage, "record_bytes": CEILING_RECORD_BYTES, "records": ceiling_n,
            "produce_per_s": produce_rate, "consume_per_s": consume_rate, "ceiling_msg_per_s": ceiling,
            "fraction_used": rate / ceiling},
        "services": services,
        "latency_1k_per_s": {"messages": m, "ingest_to_submit_ms": {"p50": s[0], "p90": s[1], "p99": s[2], "p999": s[3]},
            "ingest_to_delivered_ms": {"p50": d[0], "p90": d[1], "p99": d[2], "p999": d[3]},
            "stages_ms": {"ingest": stage[0], "router": stage[1], "dispatcher": stage[2]}},
        "when": smsgw_smpp::rfc3339(now_ms()),
    });
    smsgw_bench::write_results(
        &if instances == 1 {
            "pipeline".to_string()
        } else {
            format!("pipeline-{instances}x")
        },
        &out,
    )?;
    fleet.stop();
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
