//! Fault injection, short form (in `make test`): the five services as processes on a
//! Tansu broker with sqlite storage, under load, while each service and then the broker
//! is killed with SIGKILL and started again, and poison records land on every consumed
//! input topic. Afterwards the invariants of docs/reliability.md are checked:
//!
//! 1. every request on the ingest topic became exactly one message, and every accepted
//!    message reached a final state;
//! 2. no recipient got a message twice unless the event log says it may have
//!    (`possible_duplicate` after a dispatcher restart, or an `ambiguous` failure);
//! 3. no opted-out recipient got anything (their messages end blocked);
//! 4. every poison record is in the dead-letter topic with a reason.
//!
//! The long form (`SMSGW_FAULTS_LONG=1`) repeats the kill cycle four times over a longer
//! load. For a narrower look, `SMSGW_FAULTS_ONLY=<service>` kills only that service,
//! `SMSGW_FAULTS_NO_BROKER=1` leaves the broker alone, `SMSGW_FAULTS_LOG=info` makes the
//! services' logs (in the temporary directory) verbose.

use smsgw_carrier_sim::{Config as SimConfig, Rule, Simulator};
use smsgw_codec::{AvroRecord, DeadLetter, OptOutChanged, SubmitRequest};
use smsgw_domain::{Event, EventPayload, Message};
use smsgw_e2e::fleet::Fleet;
use smsgw_kafka::{send, OutRecord, Producer};
use smsgw_testkit::{produce, read_all, Broker};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The carrier sees international numbers without the `+`.
fn e164(dest: &str) -> String {
    format!("+{}", dest.trim_start_matches('+'))
}

fn number(i: usize) -> String {
    format!("+4479111{i:05}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariants_hold_under_kill_9_and_poison() -> anyhow::Result<()> {
    let long = std::env::var("SMSGW_FAULTS_LONG").is_ok();
    let (messages, cycles) = if long { (3_000, 4) } else { (400, 1) };
    let dir = std::env::temp_dir().join(format!("smsgw-faults-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    // Tansu reads `sqlite://a/b` as the relative path a/b: an absolute path needs `//`.
    let mut broker = Broker::start_with_storage(&format!("sqlite:///{}/tansu.db", dir.display()))?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["sim"]).await?;
    let mut sim = SimConfig::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    sim.rules = vec![Rule {
        dlr_delay_ms: 200,
        ..Rule::default()
    }];
    let sim = Simulator::start(sim).await?;

    // Five recipients opted out before anything starts.
    let opted_out: Vec<String> = (0..5).map(|i| number(90_000 + i)).collect();
    for n in &opted_out {
        let o = OptOutChanged {
            scope: "global".into(),
            number: n.clone(),
            opted_out: true,
            source: "api".into(),
            changed_at: 1,
            actor: None,
            reference: None,
        };
        produce(&kafka, &kafka.topics.optout(), &o.key(), &o).await?;
    }

    // Receipts the carrier sends while the dispatcher is down are lost (our simulator
    // does not queue them for the next bind as an SMSC's store-and-forward would): those
    // messages end expired after the receipt timeout, shortened here to 15 s.
    let mut fleet =
        Fleet::start(&kafka, &format!("smpp://{}", sim.smpp_addr), &dir, 15_000).await?;

    // Poison on every consumed input topic.
    let producer = Producer::new(&kafka)?;
    let poisoned = [
        kafka.topics.ingest(),
        kafka.topics.events(),
        kafka.topics.dispatch("sim"),
        kafka.topics.receipts(),
        kafka.topics.inbound(),
    ];
    for t in &poisoned {
        let rec = OutRecord {
            topic: t.clone(),
            key: Some(b"poison".to_vec()),
            partition: None,
            payload: b"\xc3\x01not a record at all".to_vec(),
            headers: vec![],
        };
        send(&producer, &rec).await?;
    }

    // Load on the ingest topic, as an upstream producer writes it (idempotency keys, so
    // a producer retry is one message), with a kill -9 cycle running alongside.
    let total = messages + opted_out.len();
    let load = {
        let (kafka, producer, opted_out) = (kafka.clone(), producer.clone(), opted_out.clone());
        tokio::spawn(async move {
            let pace = Duration::from_millis(if long { 5 } else { 15 });
            for i in 0..total {
                let to = if i < messages {
                    number(i)
                } else {
                    opted_out[i - messages].clone()
                };
                let req = SubmitRequest {
                    client_id: "faults".into(),
                    to,
                    from: "SHOP".into(),
                    body: format!("fault test {i}"),
                    idempotency_key: Some(format!("k{i}")),
                    client_ref: None,
                    message_id: None,
                    registered_delivery: None,
                    validity_period_s: None,
                    schedule_delivery_at: None,
                    callback_url: None,
                    send_at: None,
                    message_type: None,
                };
                let rec = OutRecord::avro(kafka.topics.ingest(), format!("k{i}"), &req)?;
                send(&producer, &rec).await?;
                tokio::time::sleep(pace).await;
            }
            anyhow::Ok(())
        })
    };
    let started = Instant::now();
    for _ in 0..cycles {
        for s in ["router", "dispatcher", "receipt", "ingest", "optout"] {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if std::env::var("SMSGW_FAULTS_ONLY").is_ok_and(|o| o != s) {
                continue;
            }
            fleet.kill9(s);
            tokio::time::sleep(Duration::from_millis(300)).await;
            fleet.restart(s).await?;
        }
        // The broker itself: every service rides out the outage.
        if std::env::var("SMSGW_FAULTS_NO_BROKER").is_err() {
            broker.kill9();
            tokio::time::sleep(Duration::from_millis(500)).await;
            broker.restart()?;
        }
    }
    load.await??;
    println!("load and kill cycle took {:?}", started.elapsed());

    // 1. Every request became one message, and each one ends.
    let deadline = Instant::now() + Duration::from_secs(if long { 600 } else { 180 });
    let (messages_by_id, by_destination) = loop {
        let mut by_id: HashMap<String, Vec<Event>> = HashMap::new();
        for (_, v) in read_all(&kafka, &kafka.topics.events(), Duration::from_secs(3)).await? {
            if let Some(Ok(e)) = v.map(|v| Event::decode(&v)) {
                by_id.entry(e.message_id.clone()).or_default().push(e);
            }
        }
        let folded: HashMap<String, Message> = by_id
            .iter()
            .map(|(id, evs)| (id.clone(), Message::replay(id.clone(), evs)))
            .collect();
        let open: Vec<&String> = folded
            .iter()
            .filter(|(_, m)| !m.state().is_terminal())
            .map(|(id, _)| id)
            .collect();
        if (folded.len() >= total && open.is_empty()) || Instant::now() > deadline {
            assert_eq!(folded.len(), total, "one message per request");
            let stuck: HashMap<String, usize> = open.iter().fold(HashMap::new(), |mut m, id| {
                let last = folded[*id]
                    .history()
                    .last()
                    .map_or("none", |e| e.payload.kind());
                *m.entry(format!("{}/{last}", folded[*id].state().as_str()))
                    .or_default() += 1;
                m
            });
            assert!(
                open.is_empty(),
                "{} messages never ended: {stuck:?}, e.g. {:?}",
                open.len(),
                open.first()
            );
            let dest: HashMap<String, String> = folded
                .iter()
                .filter_map(|(id, m)| Some((m.accepted()?.destination.clone(), id.clone())))
                .collect();
            break (folded, dest);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let states: HashMap<&str, usize> = messages_by_id.values().fold(HashMap::new(), |mut m, x| {
        *m.entry(x.state().as_str()).or_default() += 1;
        m
    });
    println!("final states: {states:?}");

    // 2. Duplicates at the carrier are all visible in the event log.
    let flagged: HashSet<&String> = messages_by_id
        .iter()
        .filter(|(_, m)| {
            m.history().iter().any(|e| {
                matches!(&e.payload, EventPayload::Submitted(s) if s.possible_duplicate)
                    || matches!(&e.payload, EventPayload::SubmitFailed(f) if f.ambiguous)
            })
        })
        .map(|(id, _)| id)
        .collect();
    let taken = sim.taken_by_destination();
    let twice: Vec<(&String, &u32)> = taken.iter().filter(|(_, n)| **n > 1).collect();
    for (dest, n) in &twice {
        let id = &by_destination[&e164(dest)];
        assert!(
            flagged.contains(id),
            "{dest} got {n} copies and the log does not say so"
        );
    }
    println!(
        "carrier took {} messages, {} twice; {} flagged as possible duplicates",
        taken.len(),
        twice.len(),
        flagged.len()
    );

    // 3. Opted-out recipients got nothing and their messages are blocked.
    for n in &opted_out {
        let got: u32 = taken
            .iter()
            .filter(|(d, _)| e164(d) == *n)
            .map(|(_, c)| *c)
            .sum();
        assert_eq!(got, 0, "{n} was texted");
        assert_eq!(
            messages_by_id[&by_destination[n]].state().as_str(),
            "blocked"
        );
    }

    // 4. Every poison record is dead-lettered with its reason.
    let dead: Vec<DeadLetter> =
        read_all(&kafka, &kafka.topics.dead_letter(), Duration::from_secs(3))
            .await?
            .into_iter()
            .filter_map(|(_, v)| DeadLetter::decode(&v?).ok())
            .collect();
    for t in &poisoned {
        let d = dead
            .iter()
            .find(|d| &d.topic == t && d.key.as_deref() == Some(b"poison".as_slice()));
        assert!(
            d.is_some_and(|d| !d.reason.is_empty()),
            "no dead letter for {t}: {dead:?}"
        );
    }
    fleet.stop();
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
