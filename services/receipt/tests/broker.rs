//! receipt against a real Tansu broker: a receipt that beats its correlation, and a
//! correlation that survives a restart because its offset was held back.

use smsgw_codec::{CarrierRecord, CarrierRecordKind, ReceiptReceived, SubmitCorrelated};
use smsgw_domain::{Event, EventPayload};
use smsgw_testkit::{free_port, produce, read_records, stopper, Broker};
use std::time::Duration;

fn corr(id: &str, msg: &str) -> CarrierRecord {
    CarrierRecord {
        carrier: "a".into(),
        carrier_message_id: id.into(),
        received_at: 1,
        kind: CarrierRecordKind::SubmitCorrelated(SubmitCorrelated {
            message_id: msg.into(),
            attempt: 1,
            part: 1,
            parts: 1,
        }),
    }
}

fn dlr(id: &str, stat: &str) -> CarrierRecord {
    CarrierRecord {
        carrier: "a".into(),
        carrier_message_id: id.into(),
        received_at: 2,
        kind: CarrierRecordKind::ReceiptReceived(ReceiptReceived {
            stat: stat.into(),
            error_code: None,
            raw_text: None,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_correlate_in_either_order_and_across_a_restart() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let topic = kafka.topics.receipts();
    let config = || {
        let mut c = smsgw_receipt::Config::new(kafka.clone());
        c.admin_listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        c.tick_ms = 50;
        c
    };

    // First life: a receipt before its correlation, and a correlation with no receipt yet.
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(config(), sd));
    let early = dlr("1a", "DELIVRD");
    produce(&kafka, &topic, &early.key(), &early).await?;
    let c1 = corr("1a", "m1");
    produce(&kafka, &topic, &c1.key(), &c1).await?;
    let c2 = corr("2b", "m2");
    produce(&kafka, &topic, &c2.key(), &c2).await?;
    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 1, Duration::from_secs(30)).await?;
    assert_eq!(events[0].message_id, "m1");
    assert!(matches!(events[0].payload, EventPayload::Delivered(_)));
    tokio::time::sleep(Duration::from_millis(1500)).await; // let an auto-commit happen
    let _ = stop.send(());
    svc.await??;

    // Second life: the receipt for m2 arrives now; the correlation is re-read, not lost.
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(config(), sd));
    let late = dlr("2b", "UNDELIV");
    produce(&kafka, &topic, &late.key(), &late).await?;
    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 2, Duration::from_secs(30)).await?;
    let m2 = events
        .iter()
        .find(|e| e.message_id == "m2")
        .expect("m2 resolved after restart");
    assert!(matches!(m2.payload, EventPayload::DeliveryFailed(_)));
    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// An output the broker does not acknowledge is sent again until it is stored (issue 15).
/// Before, the task logged and returned after the correlator had dropped the message's
/// state: its final event was lost until the service restarted, and the partition's
/// commit was stuck. Here the event log does not exist yet when the receipt timeout
/// expires a message, so the broker refuses the `MessageExpired`; once the topic is
/// created, the event arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_final_event_is_sent_again_until_stored() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let layout = smsgw_kafka::TopicLayout::default();
    let (events, rest): (Vec<_>, Vec<_>) = layout
        .specs(&kafka.topics, &[])
        .into_iter()
        .partition(|s| s.name == kafka.topics.events());
    smsgw_kafka::bootstrap_topics(&kafka, &rest).await?;
    let mut config = smsgw_receipt::Config::new(kafka.clone());
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    config.tick_ms = 50;
    config.receipt_timeout_ms = 1_000;
    config.callbacks.enabled = false;
    // librdkafka fails a record for a missing topic after 1 s instead of 30 s.
    config
        .kafka
        .properties
        .insert("topic.metadata.propagation.max.ms".into(), "1000".into());
    let admin = format!("http://{}/metrics", config.admin_listen);
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(config, sd));

    let c = corr("9z", "m9");
    produce(&kafka, &kafka.topics.receipts(), &c.key(), &c).await?;
    // The receipt timeout expires the message, the broker refuses its event, and the
    // service sends it again; only then does the event log appear.
    smsgw_testkit::eventually("the event re-sent", Duration::from_secs(30), || async {
        let text = reqwest::get(&admin).await.ok()?.text().await.ok()?;
        text.lines()
            .any(|l| l.starts_with("smsgw_receipt_outputs_resent_total ") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await?;
    smsgw_kafka::bootstrap_topics(&kafka, &events).await?;

    let got: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 1, Duration::from_secs(60)).await?;
    assert_eq!(got[0].message_id, "m9");
    assert!(
        matches!(got[0].payload, EventPayload::Expired(_)),
        "{:?}",
        got[0].payload
    );
    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// A correlation and its receipt paired, their final event not yet stored (the events
/// topic does not exist yet), and the receipts partition read again after a rebalance:
/// neither record is committed before the event is stored. Handled again, the settled
/// correlation would be skipped and committed at once, and a crash then would leave the
/// receipt with nothing to pair with: a delivered message that never ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_read_again_before_its_event_is_stored_is_committed_only_with_it(
) -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    let layout = smsgw_kafka::TopicLayout::default();
    let (events, rest): (Vec<_>, Vec<_>) = layout
        .specs(&kafka.topics, &[])
        .into_iter()
        .partition(|s| s.name == kafka.topics.events());
    smsgw_kafka::bootstrap_topics(&kafka, &rest).await?;
    let mut config = smsgw_receipt::Config::new(kafka.clone());
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    config.callbacks.enabled = false;
    let group = config.group_id.clone();
    let topic = kafka.topics.receipts();
    let admin = format!("http://{}/metrics", config.admin_listen);
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(config, sd));
    // Given a correlation and its final receipt, paired (the event on its way),
    let (c, r) = (corr("7y", "m7"), dlr("7y", "DELIVRD"));
    produce(&kafka, &topic, &c.key(), &c).await?;
    produce(&kafka, &topic, &r.key(), &r).await?;
    smsgw_testkit::eventually("paired", Duration::from_secs(30), || async {
        let text = reqwest::get(&admin).await.ok()?.text().await.ok()?;
        text.lines()
            .any(|l| l.starts_with("smsgw_receipt_events_total{") && l.contains("MessageDelivered"))
            .then_some(())
    })
    .await?;
    // when the group rebalances, so that both are read again from the last commit,
    smsgw_testkit::rebalance_group(&kafka, &group, &topic).await?;
    tokio::time::sleep(Duration::from_secs(5)).await; // assigned again; auto-commit 500 ms
                                                      // then neither is committed while the event is not stored,
    assert_eq!(
        smsgw_testkit::group_lag(&kafka, &group, &topic)?,
        2,
        "a record read again was committed before the event its first reading caused"
    );
    // and once the event log exists, the event is stored once and both are committed.
    smsgw_kafka::bootstrap_topics(&kafka, &events).await?;
    let got: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 1, Duration::from_secs(90)).await?;
    assert!(
        matches!(got[0].payload, EventPayload::Delivered(_)),
        "{got:?}"
    );
    smsgw_testkit::eventually("committed", Duration::from_secs(60), || async {
        (smsgw_testkit::group_lag(&kafka, &group, &topic).ok()? == 0).then_some(())
    })
    .await?;
    let all =
        smsgw_testkit::read_to_end(&kafka, &kafka.topics.events(), Duration::from_secs(30)).await?;
    assert_eq!(all.len(), 1, "one final event");
    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// A receipt read just before the broker went down, whose correlation the broker stores
/// only after it is back (a dispatcher's producer retrying through the outage), is
/// matched: the orphan timeout ends a wait only on evidence that the correlation is not
/// in the log, and an outage longer than the timeout is no such evidence. Before, the
/// receipt was dead-lettered during the outage and the message, delivered by the
/// carrier, never ended delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_outlives_a_broker_outage_longer_than_the_orphan_timeout() -> anyhow::Result<()> {
    let mut broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let mut config = smsgw_receipt::Config::new(kafka.clone());
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    config.callbacks.enabled = false;
    config.tick_ms = 50;
    config.orphan_timeout_ms = 4_000;
    let admin = format!("http://{}/metrics", config.admin_listen);
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(config, sd));
    // Given a receipt waiting for its correlation,
    let r = dlr("5q", "DELIVRD");
    produce(&kafka, &kafka.topics.receipts(), &r.key(), &r).await?;
    smsgw_testkit::eventually("the receipt waits", Duration::from_secs(30), || async {
        let text = reqwest::get(&admin).await.ok()?.text().await.ok()?;
        text.lines()
            .any(|l| {
                l.starts_with("smsgw_receipt_waiting_records{")
                    && l.contains("receipt")
                    && l.ends_with(" 1")
            })
            .then_some(())
    })
    .await?;
    // when the broker is down for twice the orphan timeout and the correlation is
    // stored as soon as it is back,
    broker.kill9();
    tokio::time::sleep(Duration::from_secs(8)).await;
    broker.restart()?;
    let c = corr("5q", "m5");
    produce(&kafka, &kafka.topics.receipts(), &c.key(), &c).await?;
    // then the message is delivered and nothing was dead-lettered.
    let got: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 1, Duration::from_secs(30)).await?;
    assert_eq!(got[0].message_id, "m5");
    assert!(
        matches!(got[0].payload, EventPayload::Delivered(_)),
        "{got:?}"
    );
    let dead =
        smsgw_testkit::read_to_end(&kafka, &kafka.topics.dead_letter(), Duration::from_secs(30))
            .await?;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// A receipt given up as an orphan by one life still pairs with a correlation that comes
/// only after the service restarted (issue 15): a dispatcher killed between its submit
/// event and its correlation writes the correlation again in its next life, which can
/// be after this service's own restart. The given-up receipt is kept whole in its dead
/// letter and remembered at start; before, the restart forgot it and the delivered
/// message then expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_given_up_before_a_restart_pairs_with_a_late_correlation() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let config = || {
        let mut c = smsgw_receipt::Config::new(kafka.clone());
        c.admin_listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        c.callbacks.enabled = false;
        c.tick_ms = 50;
        c.orphan_timeout_ms = 1_000;
        c
    };
    // Given a receipt given up as an orphan (dead-lettered) by the first life,
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(config(), sd));
    let r = dlr("7z", "DELIVRD");
    produce(&kafka, &kafka.topics.receipts(), &r.key(), &r).await?;
    let dead: Vec<smsgw_codec::DeadLetter> = read_records(
        &kafka,
        &kafka.topics.dead_letter(),
        1,
        Duration::from_secs(60),
    )
    .await?;
    assert!(dead[0].reason.contains("7z"), "{dead:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await; // let an auto-commit happen
    let _ = stop.send(());
    svc.await??;
    // when the service starts again and only then the correlation comes,
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(config(), sd));
    let c = corr("7z", "m7");
    produce(&kafka, &kafka.topics.receipts(), &c.key(), &c).await?;
    // then the message ends as the carrier reported, not expired.
    let got: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 1, Duration::from_secs(30)).await?;
    assert_eq!(got[0].message_id, "m7");
    assert!(
        matches!(got[0].payload, EventPayload::Delivered(_)),
        "{got:?}"
    );
    let _ = stop.send(());
    svc.await??;
    Ok(())
}
