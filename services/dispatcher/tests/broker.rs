//! dispatcher against a real Tansu broker and our SMSC simulator: work becomes a
//! submit, the outcome an event, the receipt and the MO reach their topics.

use smsgw_carrier_sim::{Config as SimConfig, Mo, Rule, Simulator};
use smsgw_codec::{CarrierRecord, CarrierRecordKind, DispatchRequested, InboundMessage};
use smsgw_dispatcher::{CarrierConfig, Config};
use smsgw_domain::{Event, EventPayload};
use smsgw_testkit::{eventually, free_port, produce, read_records, stopper, Broker};
use std::time::Duration;

/// A dispatcher for `carrier` alone: no webhook listener, the admin endpoint on a free
/// port.
fn config(kafka: &smsgw_kafka::KafkaConfig, carrier: CarrierConfig) -> anyhow::Result<Config> {
    let mut config = Config::new(kafka.clone(), vec![carrier]);
    config.webhook_listen = None;
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    Ok(config)
}

fn work(id: &str, to: &str) -> DispatchRequested {
    DispatchRequested {
        message_id: id.into(),
        carrier: "sim".into(),
        attempt: 1,
        carriers_tried: vec!["sim".into()],
        destination: to.into(),
        sender: "SHOP".into(),
        body: "hello".into(),
        encoding: "GSM7".into(),
        segments: 1,
        accepted_at: 0,
        registered_delivery: None,
        expires_at: None,
        schedule_delivery_at: None,
        client_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_records_outcomes_and_forwards_receipts_and_mo() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["sim"]).await?;
    let mut sc = SimConfig::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    sc.system_id = Some("gw".into());
    sc.rules = vec![
        Rule {
            prefix: "4474002".into(),
            reject_rate: 1.0,
            ..Rule::default()
        },
        Rule {
            dlr_delay_ms: 50,
            ..Rule::default()
        },
    ];
    let sim = Simulator::start(sc).await?;

    let mut carrier = CarrierConfig::new("sim", &format!("smpp://{}", sim.smpp_addr), "gw", "pw");
    carrier.reconnect_min_ms = 50;
    let config = config(&kafka, carrier)?;
    let staleness = Duration::from_millis(config.optout_max_staleness_ms);
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    let topic = kafka.topics.dispatch("sim");
    produce(&kafka, &topic, "m1", &work("m1", "+447911100001")).await?;
    produce(&kafka, &topic, "m2", &work("m2", "+447400200002")).await?;
    // Its validity ended before the dispatcher got to it: never submitted.
    let stale = DispatchRequested {
        expires_at: Some(1_000),
        ..work("m3", "+447911100003")
    };
    produce(&kafka, &topic, "m3", &stale).await?;

    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 3, Duration::from_secs(30)).await?;
    let m1 = events.iter().find(|e| e.message_id == "m1").unwrap();
    let m2 = events.iter().find(|e| e.message_id == "m2").unwrap();
    let m3 = events.iter().find(|e| e.message_id == "m3").unwrap();
    assert!(
        matches!(&m3.payload, EventPayload::Expired(x) if x.reason.contains("validity")),
        "{m3:?}"
    );
    let EventPayload::Submitted(s) = &m1.payload else {
        panic!("{m1:?}")
    };
    assert!(
        matches!(&m2.payload, EventPayload::SubmitFailed(f) if f.command_status == Some(0x45) && !f.ambiguous)
    );
    // The correlation and then the receipt, under the same key.
    let recs: Vec<CarrierRecord> =
        read_records(&kafka, &kafka.topics.receipts(), 2, Duration::from_secs(30)).await?;
    assert!(recs
        .iter()
        .all(|r| r.key() == format!("sim:{}", s.carrier_message_id)));
    // Either order: the receipt may be stored before the correlation (the receipt
    // service pairs them either way).
    assert!(recs.iter().any(
        |r| matches!(&r.kind, CarrierRecordKind::SubmitCorrelated(c) if c.message_id == "m1")
    ));
    assert!(recs
        .iter()
        .any(|r| matches!(&r.kind, CarrierRecordKind::ReceiptReceived(r) if r.stat == "DELIVRD")));

    eventually(
        "MO delivered to a bound session",
        Duration::from_secs(10),
        || async {
            (sim.send_mo(&Mo {
                from: "447911100009".into(),
                to: "SHOP".into(),
                body: "hi there".into(),
            }) == 1)
                .then_some(())
        },
    )
    .await?;
    let mo: Vec<InboundMessage> =
        read_records(&kafka, &kafka.topics.inbound(), 1, Duration::from_secs(30)).await?;
    assert_eq!(
        (mo[0].from.as_str(), mo[0].body.as_str()),
        ("+447911100009", "hi there")
    );
    assert_eq!(sim.stats().submits, 2);

    // A STOP that lands after routing: the dispatcher's own check blocks the message;
    // the gateway's confirmation to the same recipient still goes out.
    let stop_rec = smsgw_codec::OptOutChanged {
        scope: "account:acme".into(),
        number: "+447911100004".into(),
        opted_out: true,
        source: "api".into(),
        changed_at: smsgw_kafka::now_ms(),
        actor: None,
        reference: None,
    };
    produce(&kafka, &kafka.topics.optout(), &stop_rec.key(), &stop_rec).await?;
    // The dispatcher's promise: a STOP that has been on the log for its staleness bound
    // blocks every later submit (a younger one is the router's to catch).
    tokio::time::sleep(staleness + Duration::from_millis(50)).await;
    let late = DispatchRequested {
        client_id: Some("acme".into()),
        ..work("m4", "+447911100004")
    };
    let confirmation = DispatchRequested {
        client_id: Some(smsgw_codec::SYSTEM_CLIENT.into()),
        ..work("m5", "+447911100004")
    };
    produce(&kafka, &topic, "m4", &late).await?;
    produce(&kafka, &topic, "m5", &confirmation).await?;
    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 5, Duration::from_secs(30)).await?;
    let of = |id: &str| &events.iter().find(|e| e.message_id == id).unwrap().payload;
    assert!(
        matches!(of("m4"), EventPayload::Blocked(b) if b.scope == "account:acme"),
        "{:?}",
        of("m4")
    );
    assert!(
        matches!(of("m5"), EventPayload::Submitted(_)),
        "{:?}",
        of("m5")
    );
    assert_eq!(sim.stats().submits, 3, "m4 never reached the SMSC");
    let _ = stop.send(());
    svc.await??;
    sim.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_carrier_slows_us_down_but_every_message_goes_out() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["sim"]).await?;
    let mut sc = SimConfig::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    sc.rules = vec![Rule {
        throttle_per_sec: 10,
        dlr_delay_ms: 10,
        ..Rule::default()
    }];
    let sim = Simulator::start(sc).await?;
    let mut carrier = CarrierConfig::new("sim", &format!("smpp://{}", sim.smpp_addr), "gw", "pw");
    carrier.window = 20;
    carrier.throttle_retries = 20;
    let config = config(&kafka, carrier)?;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    // All 30 at once, so the dispatcher (window 20) outruns the carrier's 10/s.
    let topic = kafka.topics.dispatch("sim");
    let producer = smsgw_kafka::Producer::new(&kafka)?;
    let mut acks = Vec::new();
    for i in 0..30 {
        let rec = smsgw_kafka::OutRecord::avro(
            &topic,
            format!("m{i}"),
            &work(&format!("m{i}"), "+447911100001"),
        )?;
        acks.push(producer.enqueue(&rec).await?);
    }
    for a in acks {
        a.await?.map_err(|(e, _)| e)?;
    }
    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 30, Duration::from_secs(60)).await?;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| !matches!(e.payload, EventPayload::Submitted(_)))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let stats = sim.stats();
    assert!(
        stats.refused > 0,
        "the simulator never throttled: {stats:?}"
    );
    assert_eq!(stats.submits - stats.refused, 30, "{stats:?}");
    let _ = stop.send(());
    svc.await??;
    sim.stop().await;
    Ok(())
}

/// A carrier that sends a malformed PDU after the bind: the dispatcher answers it with
/// generic_nack and keeps the bind; the valid MO behind it still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_pdu_is_nacked_and_the_bind_survives() -> anyhow::Result<()> {
    use futures::{SinkExt, StreamExt};
    use rusmpp::pdus::{BindTransceiverResp, DeliverSm};
    use rusmpp::tokio_codec::CommandCodec;
    use rusmpp::types::{COctetString, OctetString};
    use rusmpp::{Command, CommandId, CommandStatus, Pdu};
    use tokio::io::AsyncWriteExt;

    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["raw"]).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let fake = tokio::spawn(async move {
        let (sock, _) = listener.accept().await?;
        let mut framed = tokio_util::codec::Framed::new(sock, CommandCodec::new());
        let bind = framed.next().await.expect("a bind")?;
        assert_eq!(bind.id(), CommandId::BindTransceiver);
        let resp = BindTransceiverResp::builder()
            .system_id(COctetString::from_string("fake".into())?)
            .build();
        framed
            .send(Command::new(
                CommandStatus::EsmeRok,
                bind.sequence_number(),
                resp,
            ))
            .await?;
        // A deliver_sm whose body is garbage, written raw, then a good MO.
        let mut garbage = 19u32.to_be_bytes().to_vec();
        garbage.extend(0x05u32.to_be_bytes());
        garbage.extend(0u32.to_be_bytes());
        garbage.extend(77u32.to_be_bytes());
        garbage.extend([0xFF, 0xFF, 0xFF]);
        framed.get_mut().write_all(&garbage).await?;
        let mo = DeliverSm::builder()
            .source_addr(COctetString::from_string("447911100009".into())?)
            .destination_addr(COctetString::from_string("SHOP".into())?)
            .short_message(OctetString::from_slice(b"still here")?)
            .build();
        framed
            .send(Command::new(CommandStatus::EsmeRok, 78, mo))
            .await?;
        let mut nacked = false;
        let mut acked_mo = false;
        while !(nacked && acked_mo) {
            let cmd = framed.next().await.expect("the bind stays open")?;
            match cmd.pdu() {
                Some(Pdu::GenericNack) => nacked = cmd.sequence_number() == 77,
                Some(Pdu::DeliverSmResp(_)) => acked_mo = cmd.sequence_number() == 78,
                Some(Pdu::EnquireLink) => {
                    framed
                        .send(Command::new(
                            CommandStatus::EsmeRok,
                            cmd.sequence_number(),
                            Pdu::EnquireLinkResp,
                        ))
                        .await?
                }
                _ => {}
            }
        }
        anyhow::Ok(())
    });
    let carrier = CarrierConfig::new("raw", &format!("smpp://{addr}"), "gw", "pw");
    let config = config(&kafka, carrier)?;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    let mo: Vec<InboundMessage> =
        read_records(&kafka, &kafka.topics.inbound(), 1, Duration::from_secs(30)).await?;
    assert_eq!(mo[0].body, "still here");
    tokio::time::timeout(Duration::from_secs(10), fake).await???;
    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// The broker dies for good while the dispatcher runs: told to stop, the dispatcher still
/// stops (its final offset commit and its last carrier status give up) instead of waiting
/// for a broker that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_when_the_broker_is_gone() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let mut broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["sim"]).await?;
    let sim = Simulator::start(SimConfig::new(
        "127.0.0.1:0".parse()?,
        "127.0.0.1:0".parse()?,
    ))
    .await?;
    let carrier = CarrierConfig::new("sim", &format!("smpp://{}", sim.smpp_addr), "gw", "pw");
    let config = config(&kafka, carrier)?;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    let topic = kafka.topics.dispatch("sim");
    produce(&kafka, &topic, "m1", &work("m1", "+447911100001")).await?;
    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 1, Duration::from_secs(30)).await?;
    assert!(matches!(events[0].payload, EventPayload::Submitted(_)));
    broker.kill9();
    let _ = stop.send(());
    // Generous: the commit gives up after 10 s; before the fix this waited for ever.
    tokio::time::timeout(Duration::from_secs(60), svc)
        .await
        .map_err(|_| anyhow::anyhow!("the dispatcher did not stop without its broker"))???;
    sim.stop().await;
    Ok(())
}

/// A dispatcher killed between a concatenated message's `MessageSubmitted` and its
/// correlations: the restarted one finds the submit in the log, sends nothing, and
/// writes every part's correlation again from the event (events v5 name every part), so
/// each part's receipt can still be matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_correlation_lost_with_a_crash_is_written_again() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["sim"]).await?;
    let sim = Simulator::start(SimConfig::new(
        "127.0.0.1:0".parse()?,
        "127.0.0.1:0".parse()?,
    ))
    .await?;
    // Given the log of a crashed dispatcher: two parts submitted, no correlation yet,
    // and its dispatch record not done.
    let submitted = Event::new(
        "m1",
        EventPayload::Submitted(smsgw_domain::MessageSubmitted {
            carrier: "sim".into(),
            attempt: 1,
            carrier_message_id: "a1".into(),
            segments: 2,
            possible_duplicate: false,
            later_part_ids: vec!["a2".into()],
        }),
        1,
        smsgw_kafka::now_ms(),
    );
    produce(&kafka, &kafka.topics.events(), "m1", &submitted).await?;
    let two_parts = DispatchRequested {
        segments: 2,
        body: "x".repeat(200),
        ..work("m1", "+447911100001")
    };
    produce(&kafka, &kafka.topics.dispatch("sim"), "m1", &two_parts).await?;
    // When a dispatcher starts,
    let carrier = CarrierConfig::new("sim", &format!("smpp://{}", sim.smpp_addr), "gw", "pw");
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config(&kafka, carrier)?, sd));
    // then both parts' correlations are on the receipts topic, and nothing was sent.
    let recs: Vec<CarrierRecord> =
        read_records(&kafka, &kafka.topics.receipts(), 2, Duration::from_secs(30)).await?;
    let mut parts: Vec<(String, i32, i32)> = recs
        .iter()
        .filter_map(|r| match &r.kind {
            CarrierRecordKind::SubmitCorrelated(c) if c.message_id == "m1" => {
                Some((r.carrier_message_id.clone(), c.part, c.parts))
            }
            _ => None,
        })
        .collect();
    parts.sort();
    assert_eq!(parts, vec![("a1".into(), 1, 2), ("a2".into(), 2, 2)]);
    assert_eq!(
        sim.stats().submits,
        0,
        "the submit in the log is not sent again"
    );
    let _ = stop.send(());
    svc.await??;
    sim.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_read_again_while_on_the_wire_is_committed_only_with_its_outcome() -> anyhow::Result<()>
{
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["sim"]).await?;
    // Given a carrier that answers a submit only after 45 s (the rebalance below takes
    // seconds on Tansu; the submit must still be unanswered when it is done),
    let mut sc = SimConfig::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    sc.rules = vec![Rule {
        latency_ms: 45_000,
        ..Rule::default()
    }];
    let sim = Simulator::start(sc).await?;
    let mut carrier = CarrierConfig::new("sim", &format!("smpp://{}", sim.smpp_addr), "gw", "pw");
    carrier.response_timeout_ms = 120_000;
    let group = carrier.group();
    let config = config(&kafka, carrier)?;
    let metrics_url = format!("http://{}/metrics", config.admin_listen);
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    let topic = kafka.topics.dispatch("sim");
    produce(&kafka, &topic, "m1", &work("m1", "+447911100001")).await?;
    eventually(
        "the submit is on the wire",
        Duration::from_secs(20),
        || async { (sim.stats().submits == 1).then_some(()) },
    )
    .await?;
    // when a rebalance (another member joins the group, then leaves) has the dispatcher
    // read the record again while its submit is unanswered,
    smsgw_testkit::rebalance_group(&kafka, &group, &topic).await?;
    let repeats = || async {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        text.lines()
            .find(|l| l.starts_with("smsgw_dispatcher_redelivered_skipped_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|n| *n >= 1.0)
    };
    eventually("the record is read again", Duration::from_secs(30), repeats).await?;
    // then its offset is not committed (auto-commit runs every 500 ms) while the
    // submit has no outcome,
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.stats().submits, 1, "not sent again");
    assert_eq!(
        smsgw_testkit::group_lag(&kafka, &group, &topic)?,
        1,
        "a repeat of work on the wire was committed before its outcome: a crash now \
         would lose the message"
    );
    // and it is, once the carrier answers and the outcome is stored.
    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 1, Duration::from_secs(90)).await?;
    assert!(
        matches!(&events[0].payload, EventPayload::Submitted(_)),
        "{events:?}"
    );
    eventually(
        "committed with its outcome",
        Duration::from_secs(20),
        || async { (smsgw_testkit::group_lag(&kafka, &group, &topic).ok()? == 0).then_some(()) },
    )
    .await?;
    assert_eq!(sim.stats().submits, 1);
    let _ = stop.send(());
    svc.await??;
    sim.stop().await;
    Ok(())
}
