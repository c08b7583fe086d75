//! Micro-benchmarks of the hot paths: a router decision, Avro encode/decode of events,
//! SMPP `submit_sm` encode/decode, GSM-7 analysis/encoding/segmentation.
//! `cargo bench -p smsgw-bench --bench micro` (also run by `make bench`).

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::{Command, CommandStatus};
use smsgw_codec::{AvroRecord, DispatchRequested};
use smsgw_domain::{Command as Cmd, Event, Message, MessageAccepted};
use smsgw_router::scoring::{draw, Candidate, CarrierProfile, Scorer, ScoringConfig};
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder};

fn accepted() -> Event {
    let a = MessageAccepted {
        client_id: "shop".into(),
        idempotency_key: Some("order-42".into()),
        client_ref: Some("ref".into()),
        destination: "+447911123456".into(),
        sender: "SHOP".into(),
        body: "Your code is 123456. It expires in 10 minutes.".into(),
        encoding: "GSM7".into(),
        segments: 1,
        registered_delivery: Some(true),
        expires_at: Some(1_800_000_600_000),
        schedule_delivery_at: None,
        callback_url: None,
        send_at: None,
        message_type: Some("otp".into()),
    };
    Message::new("0b6f6a2e-5c1d-4c9e-9f1a-2f7d3e8b9a10")
        .decide(Cmd::Accept(a), 1_800_000_000_000)
        .unwrap()
        .remove(0)
}

fn router_decision(c: &mut Criterion) {
    let mut config = ScoringConfig::default();
    let names: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        config.carriers.insert(
            n.clone(),
            CarrierProfile {
                price_per_segment: 0.005 + i as f64 * 0.001,
                ..CarrierProfile::default()
            },
        );
    }
    let mut s = Scorer::new(config);
    let now = 1_800_000_000_000;
    for (i, n) in names.iter().enumerate() {
        for k in 0..50i64 {
            s.on_final(
                n,
                "+44",
                None,
                (k + i as i64) % 7 != 0,
                Some(1_000 + k * 10),
                now - k * 1_000,
            );
        }
    }
    let cands: Vec<Candidate<'_>> = names
        .iter()
        .map(|n| Candidate {
            carrier: n,
            excluded: None,
        })
        .collect();
    c.bench_function("router: score 5 carriers and choose", |b| {
        b.iter(|| black_box(s.choose(&cands, "+44", "SHOP", None, draw("m1", 1), now)))
    });
}

fn avro(c: &mut Criterion) {
    let e = accepted();
    let bytes = e.encode().unwrap();
    c.bench_function("avro: encode MessageAccepted", |b| {
        b.iter(|| black_box(e.encode().unwrap()))
    });
    c.bench_function("avro: decode MessageAccepted", |b| {
        b.iter(|| black_box(Event::decode(&bytes).unwrap()))
    });
}

fn smpp(c: &mut Criterion) {
    let req = DispatchRequested {
        message_id: "m1".into(),
        carrier: "a".into(),
        attempt: 1,
        carriers_tried: vec!["a".into()],
        destination: "+447911123456".into(),
        sender: "SHOP".into(),
        body: "Your code is 123456. It expires in 10 minutes.".into(),
        encoding: "GSM7".into(),
        segments: 1,
        accepted_at: 0,
        registered_delivery: Some(true),
        expires_at: None,
        schedule_delivery_at: None,
        client_id: None,
    };
    let sm = smsgw_dispatcher::pdu::build_submits(&req, true, smsgw_gsm::LongMode::Udh8)
        .unwrap()
        .remove(0);
    let mut wire = BytesMut::new();
    CommandCodec::new()
        .encode(
            Command::new(CommandStatus::EsmeRok, 7, sm.clone()),
            &mut wire,
        )
        .unwrap();
    c.bench_function("smpp: build and encode submit_sm", |b| {
        b.iter_batched(
            BytesMut::new,
            |mut out| {
                let sm =
                    smsgw_dispatcher::pdu::build_submits(&req, true, smsgw_gsm::LongMode::Udh8)
                        .unwrap()
                        .remove(0);
                CommandCodec::new()
                    .encode(Command::new(CommandStatus::EsmeRok, 7, sm), &mut out)
                    .unwrap();
                out
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("smpp: decode submit_sm", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut w| black_box(CommandCodec::new().decode(&mut w).unwrap()),
            BatchSize::SmallInput,
        )
    });
}

fn gsm(c: &mut Criterion) {
    let short = "Your code is 123456. It expires in 10 minutes.";
    let long =
        "Sale! Everything in store is 20% off this weekend only {use code SPRING}. ".repeat(6);
    c.bench_function("gsm: analyse a 46-char message", |b| {
        b.iter(|| black_box(smsgw_gsm::analyse(short)))
    });
    c.bench_function("gsm: encode GSM-7 (46 chars)", |b| {
        b.iter(|| black_box(smsgw_gsm::encode(short, smsgw_gsm::Encoding::Gsm7)))
    });
    c.bench_function("gsm: segment a 444-char message into UDH parts", |b| {
        b.iter(|| {
            black_box(smsgw_gsm::parts(
                &long,
                smsgw_gsm::Encoding::Gsm7,
                smsgw_gsm::LongMode::Udh8,
                42,
            ))
        })
    });
}

criterion_group!(benches, router_decision, avro, smpp, gsm);
criterion_main!(benches);
