//! A dispatcher alone against a peer SMSC: its dispatch topic preloaded with work, and
//! what the SMSC saw read from its own log.

use crate::Peer;
use smsgw_codec::DispatchRequested;
use smsgw_kafka::{KafkaConfig, OutRecord, Producer};
use smsgw_testkit::free_port;

/// One message of work for `carrier`, first attempt, no receipt asked.
pub fn work(carrier: &str, id: &str, to: &str) -> DispatchRequested {
    DispatchRequested {
        message_id: id.into(),
        carrier: carrier.into(),
        attempt: 1,
        carriers_tried: vec![carrier.into()],
        destination: to.into(),
        sender: "SHOP".into(),
        body: "hello".into(),
        encoding: "GSM7".into(),
        segments: 1,
        accepted_at: 0,
        registered_delivery: Some(false),
        expires_at: None,
        schedule_delivery_at: None,
        client_id: None,
    }
}

/// The SMSC's submits to `prefix`: (seconds since the epoch, command status).
pub fn submits(peer: &Peer, prefix: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    Ok(peer
        .of("submit")?
        .iter()
        .filter(|s| s["dest"].as_str().is_some_and(|d| d.starts_with(prefix)))
        .map(|s| {
            (
                s["at"].as_f64().unwrap_or(0.0),
                s["status"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Preloads `n` messages to `prefix` for carrier `name` on `kafka`'s topics.
pub async fn preload(
    kafka: &KafkaConfig,
    name: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<()> {
    let topic = kafka.topics.dispatch(name);
    let records = (0..n)
        .map(|i| {
            let id = format!("{name}-{i}");
            OutRecord::avro(&topic, &id, &work(name, &id, &format!("+{prefix}{i:05}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    smsgw_kafka::send_all(&Producer::new(kafka)?, &records).await?;
    Ok(())
}

/// A dispatcher config for `carrier` alone.
pub fn dispatcher(
    kafka: &KafkaConfig,
    carrier: smsgw_dispatcher::CarrierConfig,
) -> anyhow::Result<smsgw_dispatcher::Config> {
    let mut config = smsgw_dispatcher::Config::new(kafka.clone(), vec![carrier]);
    config.webhook_listen = None;
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    Ok(config)
}
