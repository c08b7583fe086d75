//! The whole pipeline, end to end: five services, a real Tansu broker, a real SMSC.
//! The same scenario runs against our simulator and against the npm `smpp` SMSC.

use serde_json::json;
use smsgw_codec::{DeadLetter, OptOutChanged};
use smsgw_e2e::{Gateway, Smsc, REJECT_PREFIX, UNDELIV_PREFIX};
use smsgw_kafka::{send, OutRecord, Producer};
use smsgw_testkit::read_records;
use std::time::Duration;

fn events(status: &serde_json::Value) -> Vec<String> {
    status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

async fn scenario(smsc: Smsc) -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let gw = Gateway::start(&smsc.url()).await?;
    // Every service is ready: the broker answers (and the dispatcher's carrier is bound).
    for (name, base) in gw.admin.iter().map(|(n, b)| (*n, b.clone())) {
        let r =
            smsgw_testkit::eventually(&format!("{name} ready"), Duration::from_secs(30), || {
                let url = format!("{base}/readyz");
                async move {
                    let r = reqwest::get(url).await.ok()?;
                    let ok = r.status() == 200;
                    let body: serde_json::Value = r.json().await.ok()?;
                    (ok && (name != "dispatcher" || body["checks"]["carrier:alpha"]["up"] == true))
                        .then_some(body)
                }
            })
            .await?;
        assert_eq!(r["checks"]["kafka"]["up"], true, "{name}: {r}");
    }
    let ok_before = gw
        .metric(
            "dispatcher",
            "smsgw_dispatcher_submits_total{carrier=\"alpha\",outcome=\"ok\"}",
        )
        .await?;
    let latency_before = gw
        .metric(
            "dispatcher",
            "smsgw_dispatcher_accept_to_submit_seconds_count",
        )
        .await?;
    let msg =
        |to: &str, body: &str| json!({"to": to, "from": "SHOP", "body": body, "client_id": "e2e"});

    // Delivered.
    let (code, ok) = gw.post(msg("+447911100001", "hello from smsgw")).await?;
    assert_eq!(code, 202, "{ok}");
    // Refused by the carrier at submit: no other carrier, so undeliverable.
    let (_, rej) = gw
        .post(msg(&format!("+{REJECT_PREFIX}00002"), "refused"))
        .await?;
    // Accepted by the carrier, then an UNDELIV receipt.
    let (_, und) = gw
        .post(msg(&format!("+{UNDELIV_PREFIX}00003"), "never arrives"))
        .await?;
    // Unicode and long: goes out as UCS-2 in message_payload.
    let (_, uni) = gw
        .post(msg("+447911100004", &"Grüße 😀 ".repeat(12)))
        .await?;

    let s = gw.final_status(ok["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "delivered", "{s}");
    assert_eq!(
        events(&s),
        [
            "MessageAccepted",
            "CarrierSelected",
            "MessageSubmitted",
            "MessageDelivered"
        ]
    );
    let s = gw.final_status(rej["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "undeliverable", "{s}");
    assert!(events(&s).contains(&"SubmitFailed".to_string()), "{s}");
    let s = gw.final_status(und["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "undeliverable", "{s}");
    assert_eq!(s["history"][3]["details"]["stat"], "UNDELIV", "{s}");
    let s = gw.final_status(uni["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "delivered", "{s}");
    assert_eq!(s["history"][0]["details"]["encoding"], "UCS2");
    // Two UDH parts, each with its own receipt; delivered once both are.
    assert_eq!(s["history"][2]["details"]["segments"], 2, "{s}");

    // Invalid input is rejected with a reason.
    let (code, bad) = gw.post(msg("+44 12", "x")).await?;
    assert_eq!(code, 422);
    let s = gw.final_status(bad["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "rejected");
    assert_eq!(
        s["history"][0]["details"]["reason_code"],
        "invalid_destination"
    );

    // A duplicate idempotency key yields one message.
    let dup = json!({"to": "+447911100005", "from": "SHOP", "body": "once", "client_id": "e2e", "idempotency_key": "order-42"});
    let (_, d1) = gw.post(dup.clone()).await?;
    let (_, d2) = gw.post(dup).await?;
    assert_eq!(d1["id"], d2["id"]);
    let s = gw.final_status(d1["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "delivered");
    assert_eq!(
        events(&s)
            .iter()
            .filter(|e| *e == "MessageSubmitted")
            .count(),
        1
    );

    // An opted-out recipient is never submitted.
    let submits_before = smsc.stats().await?["submits"].as_u64().unwrap();
    assert_eq!(smsc.send_mo("+447911100006", "SHOP", " Stop ").await?, 1);
    // Wait until the STOP is in the opt-out log (the only record there).
    let stop: Vec<OptOutChanged> = read_records(
        &gw.kafka,
        &gw.kafka.topics.optout(),
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        stop[0].number == "+447911100006" && stop[0].opted_out,
        "{stop:?}"
    );
    let (_, blocked) = gw.post(msg("+447911100006", "you said stop")).await?;
    let s = gw.final_status(blocked["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "blocked", "{s}");
    assert_eq!(events(&s), ["MessageAccepted", "MessageBlocked"]);
    assert_eq!(
        smsc.stats().await?["submits"].as_u64().unwrap(),
        submits_before,
        "nothing was submitted"
    );

    // A poison record on the ingest topic is dead-lettered; the record behind it flows.
    let producer = Producer::new(&gw.kafka)?;
    let on_p0 = |payload: &[u8], ct: &str| OutRecord {
        topic: gw.kafka.topics.ingest(),
        key: Some(b"poison-test".to_vec()),
        partition: Some(0),
        payload: payload.to_vec(),
        headers: vec![("content-type".into(), ct.into())],
    };
    send(&producer, &on_p0(b"{\"client_id\": 7", "application/json")).await?;
    let behind = json!({"client_id": "e2e", "to": "+447911100007", "from": "SHOP", "body": "behind poison", "idempotency_key": "behind-1"});
    send(
        &producer,
        &on_p0(behind.to_string().as_bytes(), "application/json"),
    )
    .await?;
    let id = smsgw_ingest::handler::id_for_key("e2e", "behind-1");
    let s = gw.final_status(&id).await?;
    assert_eq!(s["state"], "delivered", "{s}");
    let dead: Vec<DeadLetter> = read_records(
        &gw.kafka,
        &gw.kafka.topics.dead_letter(),
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        dead.iter()
            .any(|d| d.service == "ingest" && d.reason.contains("undecodable")),
        "{dead:?}"
    );

    // Every submitted message got exactly one submit_sm per part at the SMSC: six
    // messages reached it, the Unicode one in two parts.
    let stats = smsc.stats().await?;
    assert_eq!(stats["submits"].as_u64().unwrap(), 7, "{stats}");

    // The key series moved during the run.
    let submits = gw
        .metric(
            "dispatcher",
            "smsgw_dispatcher_submits_total{carrier=\"alpha\",outcome=\"ok\"}",
        )
        .await?;
    assert!(
        submits >= ok_before + 5.0,
        "submits {ok_before} -> {submits}"
    );
    let latency = gw
        .metric(
            "dispatcher",
            "smsgw_dispatcher_accept_to_submit_seconds_count",
        )
        .await?;
    assert!(latency > latency_before, "ingest->submit histogram");
    assert!(
        gw.metric("receipt", "smsgw_receipt_submit_to_receipt_seconds_count")
            .await?
            >= 4.0,
        "submit->receipt histogram"
    );
    assert!(
        gw.metric("ingest", "smsgw_ingest_messages_total{result=\"accepted\"}")
            .await?
            >= 6.0
    );
    assert!(
        gw.metric(
            "router",
            "smsgw_router_decisions_total{decision=\"blocked\"}"
        )
        .await?
            >= 1.0
    );
    assert!(
        gw.metric("optout", "smsgw_optout_keywords_total{keyword=\"stop\"}")
            .await?
            >= 1.0
    );
    assert!(
        gw.metric(
            "dispatcher",
            "smsgw_dispatcher_bound_sessions{carrier=\"alpha\",mode=\"trx\"}"
        )
        .await?
            == 1.0
    );

    gw.stop().await?;
    smsc.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipeline_with_our_simulator() -> anyhow::Result<()> {
    scenario(Smsc::sim().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipeline_with_the_npm_smpp_smsc() -> anyhow::Result<()> {
    scenario(Smsc::npm().await?).await
}
