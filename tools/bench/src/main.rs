//! `make bench`: throughput of one SMPP bind, with windows of 1, 10 and 100.
//!
//! Two figures per window, both against our carrier simulator on loopback:
//! - **dispatcher**: `submit_sm`/s of one dispatcher bind, Kafka included. The carrier's
//!   dispatch topic (real Tansu, in-memory storage) is preloaded; the figure is the
//!   number of `MessageSubmitted` events over the time from the first to the last one.
//!   Each submit also writes its event and its correlation record and waits for both.
//! - **session**: `submit_sm`/s of a bare rusmppc session with the same window and no
//!   Kafka: the ceiling the protocol and the simulator allow.
//!
//! Results are printed and written to `bench-results/binds.json` (or, with
//! `BENCH_WINDOW=N`, only that window, to `bench-results/binds-wN.json`; `make bench`
//! runs each window in its own process so one run's broker and sessions cannot slow
//! the next). `BENCH_QUICK=1` uses small counts, for a smoke run.

use anyhow::Context;
use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{InterfaceVersion, RegisteredDelivery};
use smsgw_carrier_sim::{Config as SimConfig, Rule, Simulator};
use smsgw_codec::{AvroRecord, DispatchRequested};
use smsgw_domain::{Event, EventPayload};
use smsgw_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use smsgw_kafka::rdkafka::Message as _;
use smsgw_kafka::{OutRecord, Producer};
use smsgw_testkit::{free_port, stopper, Broker};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn sim() -> anyhow::Result<Simulator> {
    let mut c = SimConfig::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    c.rules = vec![Rule {
        dlr_delay_ms: 100,
        ..Rule::default()
    }];
    Simulator::start(c).await
}

fn work(i: usize) -> DispatchRequested {
    DispatchRequested {
        message_id: format!("bench-{i}"),
        carrier: "sim".into(),
        attempt: 1,
        carriers_tried: vec!["sim".into()],
        destination: "+447911100001".into(),
        sender: "BENCH".into(),
        body: "benchmark message".into(),
        encoding: "GSM7".into(),
        segments: 1,
        accepted_at: smsgw_kafka::now_ms(),
        registered_delivery: None,
        expires_at: None,
        schedule_delivery_at: None,
        client_id: None,
    }
}

async fn dispatcher_rate(window: usize, n: usize) -> anyhow::Result<f64> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["sim"]).await?;
    let sim = sim().await?;
    let producer = Producer::new(&kafka)?;
    let topic = kafka.topics.dispatch("sim");
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let w = work(i);
        acks.push(
            producer
                .enqueue(&OutRecord::avro(&topic, w.message_id.clone(), &w)?)
                .await?,
        );
    }
    for a in acks {
        a.await?.map_err(|(e, _)| e)?;
    }
    let events: StreamConsumer = kafka
        .client_config(&[
            ("group.id", "bench-reader"),
            ("auto.offset.reset", "earliest"),
        ])
        .create()?;
    events.subscribe(&[&kafka.topics.events()])?;
    let mut carrier =
        smsgw_dispatcher::CarrierConfig::new("sim", &format!("smpp://{}", sim.smpp_addr), "b", "b");
    carrier.window = window;
    let mut config = smsgw_dispatcher::Config::new(kafka.clone(), vec![carrier]);
    config.webhook_listen = None;
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    let (mut first, mut last, mut seen) = (None, Instant::now(), 0);
    while seen < n {
        let m = tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .context("events stalled")??;
        let e = Event::decode(m.payload().unwrap_or_default())?;
        anyhow::ensure!(
            matches!(e.payload, EventPayload::Submitted(_)),
            "unexpected {e:?}"
        );
        first.get_or_insert_with(Instant::now);
        last = Instant::now();
        seen += 1;
    }
    let _ = stop.send(());
    svc.await??;
    sim.stop().await;
    let secs = last
        .duration_since(first.unwrap_or(last))
        .as_secs_f64()
        .max(1e-6);
    Ok((n - 1) as f64 / secs)
}

async fn session_rate(window: usize, n: usize) -> anyhow::Result<f64> {
    let sim = sim().await?;
    let (client, mut events) = rusmppc::ConnectionBuilder::new()
        .disable_interface_version_check()
        .connect(format!("smpp://{}", sim.smpp_addr))
        .await?;
    tokio::spawn(async move { while futures::StreamExt::next(&mut events).await.is_some() {} });
    client
        .bind_transceiver(
            BindTransceiver::builder()
                .system_id(COctetString::from_string("b".into())?)
                .password(COctetString::from_string("b".into())?)
                .interface_version(InterfaceVersion::Smpp3_4)
                .build(),
        )
        .await?;
    let sem = Arc::new(tokio::sync::Semaphore::new(window));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let sm = SubmitSm::builder()
                .source_addr(COctetString::from_string("BENCH".into()).expect("ascii"))
                .destination_addr(COctetString::from_string("447911100001".into()).expect("ascii"))
                .registered_delivery(RegisteredDelivery::default())
                .short_message(OctetString::from_slice(b"benchmark message").expect("short"))
                .build();
            let r = client.submit_sm(sm).await;
            drop(permit);
            r.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = client.unbind().await;
    sim.stop().await;
    anyhow::ensure!(ok == n, "{} of {n} submits failed", n - ok);
    Ok(n as f64 / secs)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    smsgw_runtime::init_telemetry();
    let mut rows = Vec::new();
    println!("submit_sm/s per bind against the simulator (loopback, 2-core box)");
    println!(
        "{:>6} {:>12} {:>22}",
        "window", "session", "dispatcher (+Kafka)"
    );
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let only: Option<usize> = std::env::var("BENCH_WINDOW")
        .ok()
        .and_then(|w| w.parse().ok());
    let sizes = if quick {
        [
            (1usize, 500usize, 100usize),
            (10, 1_000, 500),
            (100, 2_000, 1_000),
        ]
    } else {
        [
            (1, 5_000, 1_000),
            (10, 20_000, 5_000),
            (100, 50_000, 10_000),
        ]
    };
    for (window, n_session, n_dispatch) in sizes {
        if only.is_some_and(|w| w != window) {
            continue;
        }
        let session = session_rate(window, n_session).await?;
        let dispatcher = dispatcher_rate(window, n_dispatch).await?;
        println!("{window:>6} {session:>12.0} {dispatcher:>22.0}");
        rows.push(serde_json::json!({
            "window": window,
            "session_submits_per_s": session.round(),
            "dispatcher_submits_per_s": dispatcher.round(),
            "session_n": n_session,
            "dispatcher_n": n_dispatch,
        }));
    }
    std::fs::create_dir_all("bench-results")?;
    let name = match only {
        Some(w) => format!("bench-results/binds-w{w}.json"),
        None => "bench-results/binds.json".to_string(),
    };
    let out = serde_json::json!({"bench": "binds", "rows": rows, "at_ms": smsgw_kafka::now_ms()});
    std::fs::write(&name, serde_json::to_string_pretty(&out)?)?;
    println!("written to {name}");
    Ok(())
}
