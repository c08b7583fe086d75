use super::*;
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::values::MessageState;

fn req(body: &str, encoding: &str) -> DispatchRequested {
    DispatchRequested {
        message_id: "m".into(),
        carrier: "a".into(),
        attempt: 1,
        carriers_tried: vec!["a".into()],
        destination: "+447911123456".into(),
        sender: "SHOP".into(),
        body: body.into(),
        encoding: encoding.into(),
        segments: 1,
        accepted_at: 0,
        registered_delivery: None,
        expires_at: None,
        schedule_delivery_at: None,
        client_id: None,
    }
}

fn build_submit(r: &DispatchRequested, rd: bool) -> Result<SubmitSm, String> {
    let mut v = build_submits(r, rd, LongMode::Payload)?;
    assert_eq!(v.len(), 1);
    Ok(v.remove(0))
}

#[test]
fn long_message_in_udh8_mode_is_concatenated_parts_with_udhi() {
    let v = build_submits(&req(&"a".repeat(200), "GSM7"), true, LongMode::Udh8).unwrap();
    assert_eq!(v.len(), 2);
    for (i, s) in v.iter().enumerate() {
        assert_eq!(u8::from(s.esm_class) & 0x40, 0x40);
        let r = concat_reference("m", 1) as u8;
        assert_eq!(
            &s.short_message().as_ref()[..6],
            &[0x05, 0x00, 0x03, r, 2, i as u8 + 1]
        );
    }
}

#[test]
fn sar_mode_sets_the_sar_tlvs() {
    let v = build_submits(&req(&"😀".repeat(40), "UCS2"), true, LongMode::Sar).unwrap();
    assert_eq!(v.len(), 2);
    let seqs: Vec<u8> = v
        .iter()
        .flat_map(|s| {
            s.tlvs().iter().filter_map(|t| match t.value() {
                Some(TlvValue::SarSegmentSeqnum(n)) => Some(*n),
                _ => None,
            })
        })
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(u8::from(v[0].esm_class), 0);
}

#[test]
fn short_gsm_message_goes_in_short_message() {
    let s = build_submit(&req("hello €", "GSM7"), true).unwrap();
    assert_eq!(
        s.short_message().as_ref(),
        &[0x68, 0x65, 0x6C, 0x6C, 0x6F, 0x20, 0x1B, 0x65]
    );
    assert_eq!(u8::from(s.data_coding), 0);
    assert_eq!(s.destination_addr.as_str(), "447911123456");
    assert_eq!(s.source_addr_ton, Ton::Alphanumeric);
}

#[test]
fn ucs2_uses_data_coding_8_and_long_bodies_use_message_payload() {
    let s = build_submit(&req(&"😀".repeat(100), "UCS2"), true).unwrap();
    assert_eq!(u8::from(s.data_coding), 8);
    assert!(s.short_message().as_ref().is_empty());
    assert!(s.tlvs().iter().any(
        |t| matches!(t.value(), Some(TlvValue::MessagePayload(p)) if p.value.as_ref().len() == 400)
    ));
}

#[test]
fn responses_are_classified() {
    use rusmpp::{Command, Pdu};
    let resp = |code: u32| {
        Err(rusmppc::error::Error::UnexpectedResponse {
            response: Box::new(Command::new(
                rusmpp::CommandStatus::from(code),
                1,
                Pdu::GenericNack,
            )),
        })
    };
    assert!(matches!(classify(resp(0x58)), Attempt::Refused(0x58, _)));
    assert!(matches!(
        classify(Err(rusmppc::error::Error::ConnectionClosedByPeer)),
        Attempt::Unknown(_)
    ));
    assert!(matches!(
        classify(Err(rusmppc::error::Error::ConnectionClosed)),
        Attempt::Unknown(_)
    ));
    assert_eq!(decimal_to_hex("4096"), "1000");
    assert_eq!(decimal_to_hex("abc"), "abc");
}

fn deliver(esm: u8, text: &str) -> DeliverSm {
    DeliverSm::builder()
        .source_addr(COctetString::from_string("447911123456".to_string()).unwrap())
        .destination_addr(COctetString::from_string("SHOP".to_string()).unwrap())
        .esm_class(EsmClass::from(esm))
        .short_message(OctetString::from_slice(text.as_bytes()).unwrap())
        .build()
}

#[test]
fn text_receipt_is_parsed_and_id_normalised() {
    let d = deliver(0x04, "id:00AB12 sub:001 dlvrd:001 submit date:2611261200 done date:2611261201 stat:DELIVRD err:000 text:hi");
    match classify_deliver("a", &d, 5) {
        Delivered::Receipt(r) => {
            assert_eq!(r.key(), "a:ab12");
            assert!(
                matches!(r.kind, CarrierRecordKind::ReceiptReceived(ref x) if x.stat == "DELIVRD")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tlv_receipt_wins_over_text() {
    let mut d = deliver(0x04, "");
    d.push_tlv(MessageDeliveryRequestTlvValue::ReceiptedMessageId(
        COctetString::from_string("77".to_string()).unwrap(),
    ));
    d.push_tlv(MessageDeliveryRequestTlvValue::MessageState(
        MessageState::Undeliverable,
    ));
    match classify_deliver("a", &d, 5) {
        Delivered::Receipt(r) => {
            assert_eq!(r.carrier_message_id, "77");
            assert!(
                matches!(r.kind, CarrierRecordKind::ReceiptReceived(ref x) if x.stat == "UNDELIV")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreadable_receipt_is_reported_not_dropped() {
    assert!(matches!(
        classify_deliver("a", &deliver(0x04, "garbage"), 5),
        Delivered::BadReceipt(_, _)
    ));
}

#[test]
fn plain_deliver_is_an_mo() {
    match classify_deliver("a", &deliver(0x00, "STOP"), 5) {
        Delivered::Mo(m) => assert_eq!(
            (m.from.as_str(), m.to.as_str(), m.body.as_str()),
            ("+447911123456", "SHOP", "STOP")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn udh_mo_part_is_recognised_and_the_header_is_not_text() {
    let mut octets = vec![0x05, 0x00, 0x03, 0x2A, 2, 1];
    octets.extend(b"hello ");
    let d = DeliverSm::builder()
        .source_addr(COctetString::from_string("447911123456".into()).unwrap())
        .destination_addr(COctetString::from_string("SHOP".into()).unwrap())
        .esm_class(EsmClass::from(0x40))
        .short_message(OctetString::from_slice(&octets).unwrap())
        .build();
    match classify_deliver("a", &d, 5) {
        Delivered::MoPart(m, c) => {
            assert_eq!(m.body, "hello ");
            assert_eq!((c.reference, c.total, c.seq), (0x2A, 2, 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_message_sets_receipts_validity_and_schedule() {
    let mut r = req("hi", "GSM7");
    let s = build_submit(&r, true).unwrap();
    assert_eq!(u8::from(s.registered_delivery) & 0x03, 0x01);
    assert!(s.validity_period.is_empty() && s.schedule_delivery_time.is_empty());
    r.registered_delivery = Some(false);
    r.expires_at = Some(1_795_696_496_789);
    r.schedule_delivery_at = Some(1_795_690_000_000);
    let s = build_submit(&r, true).unwrap();
    assert_eq!(
        u8::from(s.registered_delivery) & 0x03,
        0x00,
        "message says no"
    );
    assert_eq!(s.validity_period.to_string(), "261126123456700+");
    assert_eq!(s.schedule_delivery_time.to_string(), "261126104640000+");
    r.registered_delivery = Some(true);
    assert_eq!(
        u8::from(build_submit(&r, false).unwrap().registered_delivery) & 0x03,
        0x01,
        "message says yes over the carrier's no"
    );
}

// A carrier's deliver_sm, arbitrary: 2,000 cases.
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Any esm_class, data_coding and body (up to the 254 bytes short_message holds) is
    /// classified as a receipt, an MO (whole or a part) or a bad receipt; never a panic,
    /// and a bad receipt's text stays bounded.
    #[test]
    fn prop_any_deliver_sm_is_classified(
        esm in proptest::prelude::any::<u8>(),
        coding in proptest::prelude::any::<u8>(),
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..254),
        from in "[0-9A-Za-z+]{0,20}",
    ) {
        let d = DeliverSm::builder()
            .source_addr(COctetString::from_string(from).unwrap())
            .destination_addr(COctetString::from_string("SHOP".into()).unwrap())
            .esm_class(EsmClass::from(esm))
            .data_coding(rusmpp::values::DataCoding::from(coding))
            .short_message(OctetString::from_slice(&body).unwrap())
            .build();
        match classify_deliver("a", &d, 5) {
            Delivered::BadReceipt(_, text) => proptest::prop_assert!(text.len() <= 4 * 254),
            Delivered::Receipt(_) | Delivered::Mo(_) | Delivered::MoPart(..) => {}
        }
    }
}
