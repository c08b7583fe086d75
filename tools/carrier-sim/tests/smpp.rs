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
    let (client, mut events) = rusmppc::ConnectionBuilder::new()
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
