//! optout against a real Tansu broker: STOP and START become opt-out log records; other
//! MO text does not; garbage is dead-lettered.

use smsgw_codec::{DeadLetter, InboundMessage, OptOutChanged};
use smsgw_kafka::{send, OutRecord, Producer};
use smsgw_testkit::{free_port, produce, read_records, stopper, Broker};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_update_the_optout_log() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let mut config = smsgw_optout::Config::new(kafka.clone());
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_optout::run(config, sd));
    let topic = kafka.topics.inbound();
    let mo = |id: &str, body: &str| InboundMessage {
        inbound_id: id.into(),
        carrier: "a".into(),
        from: "+447911123456".into(),
        to: "SHOP".into(),
        body: body.into(),
        received_at: 1,
    };
    produce(&kafka, &topic, "+447911123456", &mo("1", "hello there")).await?;
    send(
        &Producer::new(&kafka)?,
        &OutRecord {
            topic: topic.clone(),
            key: None,
            partition: None,
            payload: b"junk".to_vec(),
            headers: vec![],
        },
    )
    .await?;
    produce(&kafka, &topic, "+447911123456", &mo("2", "stop")).await?;
    produce(&kafka, &topic, "+447911123456", &mo("3", "START")).await?;
    let log: Vec<OptOutChanged> =
        read_records(&kafka, &kafka.topics.optout(), 2, Duration::from_secs(30)).await?;
    assert_eq!(
        log.iter().map(|o| o.opted_out).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(log[0].key(), "sender:SHOP|+447911123456");
    let dead: Vec<DeadLetter> = read_records(
        &kafka,
        &kafka.topics.dead_letter(),
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(dead[0].service, "optout");
    let _ = stop.send(());
    svc.await??;
    Ok(())
}
