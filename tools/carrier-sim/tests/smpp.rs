//! The simulator against a real SMPP client (rusmppc): bind, submit, receipt, MO.

use futures::StreamExt;
use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{InterfaceVersion, RegisteredDelivery};
use rusmpp::Pdu;
use smsgw_carrier_sim::{Config, Mo, Rule, Simulator};
use std::time::Duration;

#[tokio::test]
async fn bind_submit_receipt_and_mo() -> anyhow::Result<()> {
    let mut c = Config::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    c.rules = vec![Rule {
        dlr_delay_ms: 10,
        ..Rule::default()
    }];
    let sim = Simulator::start(c).await?;
    let (client, mut events) = bind(&sim).await?;
    let resp = client
        .submit_sm(
            SubmitSm::builder()
                .source_addr(COctetString::from_string("SHOP".into())?)
                .destination_addr(COctetString::from_string("447911100001".into())?)
                .registered_delivery(RegisteredDelivery::request_all())
                .short_message(OctetString::from_slice(b"hi")?)
                .build(),
        )
        .await?;
    let id = resp.message_id().as_str().to_string();
    let (seq, receipt) = next_deliver(&mut events).await?.expect("a receipt");
    client
        .deliver_sm_resp(seq, rusmpp::pdus::DeliverSmResp::default())
        .await?;
    let text = String::from_utf8_lossy(receipt.short_message().as_ref()).to_string();
    assert!(
        text.contains(&format!("id:{id} ")) && text.contains("stat:DELIVRD"),
        "{text}"
    );
    assert_eq!(
        sim.send_mo(&Mo {
            from: "+447911100006".into(),
            to: "SHOP".into(),
            body: "STOP".into()
        }),
        1
    );
    let (_, mo) = next_deliver(&mut events).await?.expect("an MO");
    assert_eq!(mo.short_message().as_ref(), b"STOP");
    assert_eq!(u8::from(mo.esm_class), 0, "an MO is not a receipt");
    assert_eq!(u8::from(receipt.esm_class), 0x04);
    assert_eq!(sim.stats().submits, 1);
    sim.stop().await;
    Ok(())
}

async fn next_deliver(
    events: &mut (impl futures::Stream<Item = rusmppc::Event> + Unpin),
) -> Result<Option<(u32, rusmpp::pdus::DeliverSm)>, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.next().await {
                Some(rusmppc::Event::Incoming(cmd)) => {
                    if let Some(Pdu::DeliverSm(d)) = cmd.pdu() {
                        return Some((cmd.sequence_number(), d.clone()));
                    }
                }
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
}

/// Waits (up to 5 s) until the simulator holds `n` receipts for an absent receiver.
async fn held_becomes(sim: &Simulator, n: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sim.stats().held_receipts != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} held, not {n}",
            sim.stats().held_receipts
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A transceiver bound to the simulator.
async fn bind(
    sim: &Simulator,
) -> anyhow::Result<(
    rusmppc::Client,
    impl futures::Stream<Item = rusmppc::Event> + Unpin,
)> {
    let (client, events) = rusmppc::ConnectionBuilder::new()
        .disable_interface_version_check()
        .connect(format!("smpp://{}", sim.smpp_addr))
        .await?;
    client
        .bind_transceiver(
            BindTransceiver::builder()
                .system_id(COctetString::from_string("t".into())?)
                .password(COctetString::from_string("p".into())?)
                .interface_version(InterfaceVersion::Smpp3_4)
                .build(),
        )
        .await?;
    Ok((client, events))
}

/// Receipts are kept as real SMSCs keep them (issue 15): one decided while no receiver
/// is bound waits for the next bind, and one sent on a connection that closes before
/// acknowledging it is sent again on the next; the ledger records what the carrier did.
#[tokio::test]
async fn receipts_wait_for_a_receiver_and_are_sent_again_until_acknowledged() -> anyhow::Result<()>
{
    let ledger = std::env::temp_dir().join(format!("sim-ledger-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&ledger);
    let mut c = Config::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    c.rules = vec![Rule {
        dlr_delay_ms: 300,
        ..Rule::default()
    }];
    c.ledger = Some(ledger.clone());
    let sim = Simulator::start(c).await?;

    // Submit, then the link goes before the receipt is decided.
    let (a, _events) = bind(&sim).await?;
    let resp = a
        .submit_sm(
            SubmitSm::builder()
                .source_addr(COctetString::from_string("SHOP".into())?)
                .destination_addr(COctetString::from_string("447911100002".into())?)
                .registered_delivery(RegisteredDelivery::request_all())
                .short_message(OctetString::from_slice(b"hi")?)
                .build(),
        )
        .await?;
    let id = resp.message_id().as_str().to_string();
    a.close().await?;
    drop(a);
    held_becomes(&sim, 1, "the receipt waits for a receiver").await;

    // The next bind gets it; it closes without acknowledging it.
    let (b, mut events) = bind(&sim).await?;
    let (_, r) = next_deliver(&mut events).await?.expect("the kept receipt");
    assert!(String::from_utf8_lossy(r.short_message().as_ref()).contains(&format!("id:{id} ")));
    b.close().await?;
    drop((b, events));
    held_becomes(&sim, 1, "the unacknowledged receipt is kept again").await;

    // So the one after gets it again, and acknowledges it.
    let (c, mut events) = bind(&sim).await?;
    let (seq, r) = next_deliver(&mut events)
        .await?
        .expect("the unacknowledged receipt");
    assert!(String::from_utf8_lossy(r.short_message().as_ref()).contains(&format!("id:{id} ")));
    c.deliver_sm_resp(seq, rusmpp::pdus::DeliverSmResp::default())
        .await?;
    assert_eq!(sim.stats().held_receipts, 0);
    assert_eq!(sim.stats().receipts, 2, "sent twice, acknowledged once");

    // The ledger: accepted once, reported once.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&ledger)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let of = |ev: &str| {
        lines
            .iter()
            .filter(|l| l["ev"] == ev && l["id"] == id.as_str())
            .count()
    };
    assert_eq!((of("accepted"), of("receipt")), (1, 1), "{lines:?}");
    let receipt = lines.iter().find(|l| l["ev"] == "receipt").unwrap();
    assert_eq!(
        (receipt["dest"].as_str(), receipt["stat"].as_str()),
        (Some("447911100002"), Some("DELIVRD"))
    );
    let accepted = lines.iter().find(|l| l["ev"] == "accepted").unwrap();
    assert_eq!(accepted["parts"], serde_json::json!([1, 1]));
    sim.stop().await;
    let _ = std::fs::remove_file(&ledger);
    Ok(())
}
