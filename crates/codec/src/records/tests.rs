use super::*;
use smsgw_domain::*;
use std::path::PathBuf;

fn sample_events() -> Vec<Event> {
    let id = "0b6f6a2e-1";
    let p = vec![
        EventPayload::Accepted(MessageAccepted {
            client_id: "shop".into(),
            idempotency_key: Some("k".into()),
            client_ref: None,
            destination: "+447700900123".into(),
            sender: "SHOP".into(),
            body: "Grüße 😀".into(),
            encoding: "UCS2".into(),
            segments: 1,
            registered_delivery: Some(false),
            expires_at: Some(1_795_000_000_000),
            schedule_delivery_at: Some(1_794_990_000_000),
            callback_url: Some("https://shop.example/hooks/sms".into()),
            send_at: Some(1_794_980_000_000),
            message_type: Some("promotional".into()),
        }),
        EventPayload::Rejected(MessageRejected {
            client_id: "shop".into(),
            idempotency_key: None,
            reason_code: "invalid_destination".into(),
            reason: "bad".into(),
        }),
        EventPayload::CarrierSelected(CarrierSelected {
            carrier: "a".into(),
            attempt: 1,
            strategy: "prefix".into(),
            score: Some(0.82),
            factors: vec![ScoreFactor {
                name: "success".into(),
                value: 0.97,
                weight: 0.5,
            }],
            alternatives: vec![
                RouteAlternative {
                    carrier: "b".into(),
                    score: Some(0.61),
                    excluded: None,
                },
                RouteAlternative {
                    carrier: "c".into(),
                    score: None,
                    excluded: Some("price".into()),
                },
            ],
        }),
        EventPayload::Blocked(MessageBlocked {
            reason: "opted_out".into(),
            scope: "global".into(),
        }),
        EventPayload::Submitted(MessageSubmitted {
            carrier: "a".into(),
            attempt: 1,
            carrier_message_id: "ff01".into(),
            segments: 2,
            possible_duplicate: false,
            later_part_ids: vec!["ff02".into()],
        }),
        EventPayload::SubmitFailed(SubmitFailed {
            carrier: "a".into(),
            attempt: 1,
            command_status: Some(0x58),
            reason: "throttled".into(),
            retryable: true,
            ambiguous: false,
            carriers_tried: vec!["a".into()],
        }),
        EventPayload::Delivered(MessageDelivered {
            carrier: "a".into(),
            carrier_message_id: "ff01".into(),
            stat: "DELIVRD".into(),
        }),
        EventPayload::Undeliverable(MessageUndeliverable {
            carrier: None,
            reason: "no route".into(),
            stat: None,
            error_code: Some("001".into()),
        }),
        EventPayload::Expired(MessageExpired {
            carrier: Some("a".into()),
            reason: "timeout".into(),
        }),
        EventPayload::DeliveryFailed(DeliveryFailed {
            carrier: "a".into(),
            attempt: 1,
            reason: "carrier receipt UNDELIV".into(),
            stat: Some("UNDELIV".into()),
            error_code: Some("034".into()),
            timed_out: false,
            carriers_tried: vec!["a".into()],
        }),
        EventPayload::Cancelled(MessageCancelled {
            actor: Some("shop".into()),
            stopped_by: "dispatcher".into(),
        }),
    ];
    p.into_iter()
        .enumerate()
        .map(|(i, p)| Event::new(id, p, 1, 1_700_000_000_000 + i as i64))
        .collect()
}

#[test]
fn every_event_round_trips() {
    for e in sample_events() {
        let bytes = e.encode().unwrap();
        assert_eq!(&bytes[..2], &crate::SINGLE_OBJECT_MAGIC);
        assert_eq!(Event::decode(&bytes).unwrap(), e);
    }
}

#[test]
fn receipts_records_round_trip() {
    for kind in [
        CarrierRecordKind::SubmitCorrelated(SubmitCorrelated {
            message_id: "m".into(),
            attempt: 2,
            part: 2,
            parts: 3,
        }),
        CarrierRecordKind::ReceiptReceived(ReceiptReceived {
            stat: "DELIVRD".into(),
            error_code: None,
            raw_text: Some("id:1 stat:DELIVRD".into()),
        }),
    ] {
        let r = CarrierRecord {
            carrier: "a".into(),
            carrier_message_id: "1".into(),
            received_at: 5,
            kind,
        };
        assert_eq!(CarrierRecord::decode(&r.encode().unwrap()).unwrap(), r);
    }
}

fn dispatch() -> DispatchRequested {
    DispatchRequested {
        message_id: "m".into(),
        carrier: "a".into(),
        attempt: 1,
        carriers_tried: vec!["a".into()],
        destination: "+1".into(),
        sender: "S".into(),
        body: "b".into(),
        encoding: "GSM7".into(),
        segments: 1,
        accepted_at: 7,
        registered_delivery: None,
        expires_at: None,
        schedule_delivery_at: None,
        client_id: None,
    }
}

/// `n` as an Avro long (zig-zag, then base-128 varint).
fn avro_long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
    out
}

#[test]
fn flat_records_round_trip() {
    let d = dispatch();
    assert_eq!(DispatchRequested::decode(&d.encode().unwrap()).unwrap(), d);
    let dl = DeadLetter {
        service: "ingest".into(),
        reason: "bad".into(),
        topic: "t".into(),
        partition: 0,
        offset: 9,
        key: None,
        payload: Some(vec![0, 1, 255]),
        headers: [("content-type".to_string(), "x".to_string())].into(),
        failed_at: 3,
    };
    assert_eq!(DeadLetter::decode(&dl.encode().unwrap()).unwrap(), dl);
    let o = OptOutChanged {
        scope: "global".into(),
        number: "+1".into(),
        opted_out: true,
        source: "mo:1".into(),
        changed_at: 1,
        actor: None,
        reference: None,
    };
    assert_eq!(OptOutChanged::decode(&o.encode().unwrap()).unwrap(), o);
    assert_eq!(o.key(), "global|+1");
}

#[test]
fn ingest_reads_json_and_avro() {
    let json = br#"{"client_id":"c","to":"+447700900123","from":"SHOP","body":"hi","idempotency_key":"k1"}"#;
    let r = decode_submit_request(json, Some("application/json; charset=utf-8")).unwrap();
    assert_eq!(r.idempotency_key.as_deref(), Some("k1"));
    assert_eq!(
        decode_submit_request(&r.encode().unwrap(), None).unwrap(),
        r
    );
    assert!(matches!(
        decode_submit_request(b"{", Some("application/json")),
        Err(CodecError::Json(_))
    ));
    assert!(matches!(
        decode_submit_request(b"x", Some("text/plain")),
        Err(CodecError::ContentType(_))
    ));
    let unknown = br#"{"client_id":"c","to":"1","from":"S","body":"b","bogus":1}"#;
    assert!(decode_submit_request(unknown, Some("application/json")).is_err());
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bad in [
        &b""[..],
        b"\xc3\x01",
        b"\xc3\x01\0\0\0\0\0\0\0\0\x02",
        b"hello world!",
    ] {
        assert!(Event::decode(bad).is_err());
    }
    let mut ok = sample_events()[0].encode().unwrap();
    ok.truncate(ok.len() - 3);
    assert!(Event::decode(&ok).is_err());
}

/// Decodes `body` framed as a single object of every version of `T`'s schema, and as is.
fn decode_any<T: AvroRecord>(body: &[u8]) {
    let _ = T::decode(body);
    for fp in T::schemas().fingerprints() {
        let mut framed = vec![0xC3, 0x01];
        framed.extend_from_slice(&fp.to_le_bytes());
        framed.extend_from_slice(body);
        let _ = T::decode(&framed);
    }
}

proptest::proptest! {
    // 2,000 cases: every record type of every topic, every schema version.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        decode_any::<Event>(&bytes);
        decode_any::<CarrierRecord>(&bytes);
        decode_any::<SubmitRequest>(&bytes);
        decode_any::<DispatchRequested>(&bytes);
        decode_any::<InboundMessage>(&bytes);
        decode_any::<OptOutChanged>(&bytes);
        decode_any::<CancelRequested>(&bytes);
        decode_any::<DeadLetter>(&bytes);
        decode_any::<CarrierStatusChanged>(&bytes);
        decode_any::<CallbackProgress>(&bytes);
    }
}

/// Fields added by later schema versions, as the Debug form shows them at their
/// defaults: an older fixture's text lacks them.
const ADDED_FIELDS: [(&str, &str); 4] = [
    ("later_part_ids", ", later_part_ids: []"),
    ("possible_duplicate", ", possible_duplicate: false"),
    (
        "callback_url",
        ", callback_url: None, send_at: None, message_type: None",
    ),
    (
        "alternatives",
        ", score: None, factors: [], alternatives: []",
    ),
];

/// Golden records written by every schema version live in `schemas/events/fixtures/`.
/// The current reader must decode each of them to the event in the matching `.txt`, and
/// the writer's schema to the datum in the matching `.json`.
/// `SMSGW_BLESS=1 cargo test -p smsgw-codec` writes fixtures for the current version;
/// fixtures of older versions are never rewritten.
#[test]
fn every_schema_version_decodes_with_the_current_reader() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/events/fixtures");
    let current = Event::schemas().current_fingerprint();
    if std::env::var("SMSGW_BLESS").is_ok() {
        let vdir = dir.join(format!("{current:016x}"));
        std::fs::create_dir_all(&vdir).unwrap();
        for (i, e) in sample_events().iter().enumerate() {
            std::fs::write(vdir.join(format!("{i}.bin")), e.encode().unwrap()).unwrap();
            std::fs::write(vdir.join(format!("{i}.txt")), format!("{e:?}\n")).unwrap();
        }
    }
    let mut checked = 0;
    for version in std::fs::read_dir(&dir).expect("fixtures exist") {
        let version = version.unwrap().path();
        for f in std::fs::read_dir(&version).unwrap() {
            let f = f.unwrap().path();
            if f.extension().and_then(|e| e.to_str()) != Some("bin") {
                continue;
            }
            let bytes = std::fs::read(&f).unwrap();
            let event = Event::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            // Beside each record, the datum as the writer's schema reads it, in JSON: the
            // analytics check (tests/analytics) compares a third-party decoder's result
            // with it field for field.
            let (datum, _) = Event::schemas().decode(&bytes).unwrap();
            let datum = serde_json::Value::try_from(datum).unwrap();
            let json = format!(
                "{}\n",
                serde_json::json!({"kind": event.payload.kind(), "datum": datum})
            );
            if std::env::var("SMSGW_BLESS").is_ok() {
                std::fs::write(f.with_extension("json"), &json).unwrap();
            }
            let written = std::fs::read_to_string(f.with_extension("json"))
                .unwrap_or_else(|e| panic!("{}: {e} (SMSGW_BLESS=1 writes it)", f.display()));
            assert_eq!(written, json, "{}", f.display());
            let expected = std::fs::read_to_string(f.with_extension("txt")).unwrap();
            // Fields added after the fixture's version must read as their defaults.
            let mut actual = format!("{event:?}\n");
            for (field, added) in ADDED_FIELDS {
                if actual.contains(field) && !expected.contains(field) {
                    assert!(actual.contains(added), "{}: {actual}", f.display());
                    actual = actual.replace(added, "");
                }
            }
            assert_eq!(actual, expected, "{}", f.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 9,
        "expected a fixture per event kind, found {checked}"
    );
}

/// The fingerprint other Avro libraries compute for our event schema: fastavro 1.x
/// `fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")` gives "ba7622206c78df5f"
/// for v5 (v4: "4aa9bb9c0e079b94"), the eight header bytes as they appear in a record (the
/// little-endian u64 below).
#[test]
fn fingerprint_matches_other_avro_libraries() {
    let fp = Event::schemas().current_fingerprint();
    assert_eq!(fp, 0x5fdf_786c_2022_76ba);
    assert_eq!(
        fp.to_le_bytes(),
        [0xba, 0x76, 0x22, 0x20, 0x6c, 0x78, 0xdf, 0x5f]
    );
}

#[test]
fn canonical_form_follows_the_specification() {
    let s = r#"{"type":"record","name":"R","namespace":"a.b","doc":"x","fields":[
        {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"},"doc":"d"},
        {"name":"u","type":["null",{"type":"record","name":"S","fields":[{"name":"m","type":{"type":"map","values":"R"}}]}],"default":null}]}"#;
    let v: serde_json::Value = serde_json::from_str(s).unwrap();
    assert_eq!(
        crate::canonical(&v, None).unwrap(),
        r#"{"name":"a.b.R","type":"record","fields":[{"name":"t","type":"long"},{"name":"u","type":["null",{"name":"a.b.S","type":"record","fields":[{"name":"m","type":{"type":"map","values":"a.b.R"}}]}]}]}"#
    );
}

/// A receipts record written with schema v1 (before parts existed) reads as part 1 of 1.
#[test]
fn receipts_v1_records_decode_with_the_current_reader() {
    let v1 = crate::SchemaSet::new(
        "receipts-v1",
        &[include_str!(
            "../../../../schemas/receipts/carrier_receipt.v1.avsc"
        )],
    )
    .unwrap();
    let old = CarrierRecord {
        carrier: "a".into(),
        carrier_message_id: "1".into(),
        received_at: 5,
        kind: CarrierRecordKind::SubmitCorrelated(SubmitCorrelated {
            message_id: "m".into(),
            attempt: 2,
            part: 1,
            parts: 1,
        }),
    };
    // Build the v1 datum by hand: the v1 record has no part/parts fields.
    use apache_avro::types::Value;
    let inner = Value::Record(vec![
        ("message_id".into(), Value::String("m".into())),
        ("attempt".into(), Value::Int(2)),
    ]);
    let bytes = v1
        .encode_resolved(Value::Record(vec![
            ("carrier".into(), Value::String("a".into())),
            ("carrier_message_id".into(), Value::String("1".into())),
            ("received_at".into(), Value::TimestampMillis(5)),
            ("record".into(), Value::Union(0, Box::new(inner))),
        ]))
        .unwrap();
    assert_ne!(
        v1.current_fingerprint(),
        CarrierRecord::schemas().current_fingerprint()
    );
    assert_eq!(CarrierRecord::decode(&bytes).unwrap(), old);
}

#[test]
fn opt_outs_block_by_global_sender_and_account_scope_but_not_system_replies() {
    let change = |scope: &str, number: &str, opted_out: bool| OptOutChanged {
        scope: scope.into(),
        number: number.into(),
        opted_out,
        source: "api".into(),
        changed_at: 0,
        actor: None,
        reference: None,
    };
    let mut ix = OptOutIndex::default();
    let to = "+447911100001";
    assert_eq!(ix.blocking_scope("SHOP", Some("acme"), to), None);
    ix.apply(&change("account:acme", to, true));
    assert_eq!(
        ix.blocking_scope("SHOP", Some("acme"), to).as_deref(),
        Some("account:acme")
    );
    assert_eq!(ix.blocking_scope("SHOP", Some("other"), to), None);
    assert_eq!(ix.blocking_scope("SHOP", Some(SYSTEM_CLIENT), to), None);
    ix.apply(&change(&sender_scope("+447700900000"), to, true));
    assert_eq!(
        ix.blocking_scope("447700900000", None, to).as_deref(),
        Some("sender:447700900000")
    );
    ix.apply(&change(GLOBAL_SCOPE, to, true));
    assert_eq!(ix.blocking_scope("X", None, to).as_deref(), Some("global"));
    ix.apply(&change(GLOBAL_SCOPE, to, false));
    ix.apply(&change("account:acme", to, false));
    assert_eq!(ix.blocking_scope("X", Some("acme"), to), None);
    assert_eq!(ix.len(), 1);
}

/// A record whose array length is forged (400 M items in a few bytes) is refused before
/// anything is allocated for it. apache-avro's own limit (512 M items) let
/// `Vec::reserve` ask for tens of GB, which aborts the process (issue 16).
#[test]
fn a_forged_sequence_length_is_refused_without_allocating_it() {
    let d = dispatch();
    let good = d.encode().unwrap();
    // After the 10-byte header: "m" (02 6d), "a" (02 61), attempt 1 (02), then the
    // array's block count 1 (02).
    assert_eq!(&good[10..16], &[0x02, b'm', 0x02, b'a', 0x02, 0x02]);
    let count = avro_long(400_000_000);
    let mut forged = good[..15].to_vec();
    forged.extend_from_slice(&count);
    forged.extend_from_slice(&good[16..]);
    let err = DispatchRequested::decode(&forged).unwrap_err();
    assert!(
        err.to_string().contains("allocat") || err.to_string().contains("ength"),
        "{err}"
    );
}

/// The same for a map (the dead letter's headers): 500 M entries forged in a few bytes.
#[test]
fn a_forged_map_length_is_refused_without_allocating_it() {
    let dl = DeadLetter {
        service: "s".into(),
        reason: "r".into(),
        topic: "t".into(),
        partition: 0,
        offset: 0,
        key: None,
        payload: None,
        headers: [("a".to_string(), "b".to_string())].into(),
        failed_at: 0,
    };
    let good = dl.encode().unwrap();
    let block = [0x02, 0x02, b'a', 0x02, b'b', 0x00];
    let at = good
        .windows(block.len())
        .position(|w| w == block)
        .expect("the map's one block");
    let count = avro_long(500_000_000);
    let mut forged = good[..at].to_vec();
    forged.extend_from_slice(&count);
    forged.extend_from_slice(&good[at + 1..]);
    let err = DeadLetter::decode(&forged).unwrap_err();
    assert!(err.to_string().contains("allocat"), "{err}");
}

/// A carrier status written with schema v1 (one status per carrier) reads with no
/// instance, and keeps the v1 key.
#[test]
fn carrier_status_v1_records_decode_with_the_current_reader() {
    let v1 = crate::SchemaSet::new(
        "carrier-status-v1",
        &[include_str!(
            "../../../../schemas/carrier_status/carrier_status_changed.v1.avsc"
        )],
    )
    .unwrap();
    use apache_avro::types::Value;
    let bytes = v1
        .encode_resolved(Value::Record(vec![
            ("carrier".into(), Value::String("a".into())),
            ("up".into(), Value::Boolean(false)),
            ("detail".into(), Value::String("unbound".into())),
            ("changed_at".into(), Value::TimestampMillis(5)),
        ]))
        .unwrap();
    let old = CarrierStatusChanged::decode(&bytes).unwrap();
    assert_eq!(old.instance, None);
    assert_eq!((old.key().as_str(), old.up), ("a", false));
    let new = CarrierStatusChanged {
        instance: Some("1".into()),
        ..old
    };
    assert_eq!(new.key(), "a/1");
    assert_eq!(
        CarrierStatusChanged::decode(&new.encode().unwrap()).unwrap(),
        new
    );
}
