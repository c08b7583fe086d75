//! An HTTP carrier end to end: the generic connector submits with a templated JSON body
//! and a bearer token, takes the id from the response, rides out a 429, sends again
//! after `retry_later_ms` on a 503, records a 400 as a permanent failure; the carrier's signed receipt and MO webhooks settle messages and
//! opt recipients out; unsigned or unreadable calls are refused (and dead-lettered).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use smsgw_codec::DeadLetter;
use smsgw_dispatcher::http::{HttpAuth, HttpConfig, WebhookConfig};
use smsgw_e2e::Gateway;
use smsgw_testkit::read_records;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "hook-secret";
const TOKEN: &str = "tok-123";

/// What the fake carrier saw, and where to send receipts.
#[derive(Default)]
struct Carrier {
    requests: Vec<Value>,
    /// When each request came, ms since the epoch.
    request_at: Vec<i64>,
    throttled_once: bool,
    unavailable_once: bool,
    /// What smsgw's receipt webhook answered to each receipt the carrier sent.
    receipt_answers: Vec<u16>,
    next_id: u64,
    receipts_to: String,
}

type Shared = Arc<Mutex<Carrier>>;

fn sign(ts: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(ts.as_bytes());
    m.update(b".");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

async fn call_webhook(url: &str, body: &Value, signed: bool) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).unwrap();
    let ts = (smsgw_kafka::now_ms() / 1000).to_string();
    let sig = if signed {
        sign(&ts, &bytes)
    } else {
        sign(&ts, b"something else")
    };
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("X-Carrier-Signature", sig)
        .header("X-Carrier-Timestamp", ts)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

async fn send(
    State(c): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok-123") {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "auth"})));
    }
    let to = req["to"].as_str().unwrap_or("").to_string();
    let (id, hook) = {
        let mut c = c.lock().unwrap();
        c.requests.push(req.clone());
        c.request_at.push(smsgw_kafka::now_ms());
        if to.ends_with("98") && !c.unavailable_once {
            c.unavailable_once = true;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "maintenance"})),
            );
        }
        if to.ends_with("99") && !c.throttled_once {
            c.throttled_once = true;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"error": "slow down"})),
            );
        }
        if to.starts_with("+4474002") {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "unknown subscriber"})),
            );
        }
        c.next_id += 1;
        (c.next_id, c.receipts_to.clone())
    };
    // The answer is kept for the test to check (a panic in this task would go unseen).
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = call_webhook(
            &hook,
            &json!({"data": {"ref": id, "state": "delivered"}}),
            true,
        )
        .await;
        c.lock().unwrap().receipt_answers.push(r.status().as_u16());
    });
    (StatusCode::OK, Json(json!({"messages": [{"id": id}]})))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_carrier_end_to_end() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let shared: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/send", post(send))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = HttpConfig {
        method: "POST".into(),
        body: r#"{"to":"{{to}}","text":"{{body}}","ref":"{{message_id}}"}"#.into(),
        content_type: "application/json".into(),
        headers: Default::default(),
        auth: HttpAuth::Bearer {
            token: TOKEN.into(),
        },
        id_pointer: Some("/messages/0/id".into()),
        id_regex: None,
        timeout_ms: 5000,
        webhook: Some(serde_json::from_value::<WebhookConfig>(json!({
            "secret": SECRET,
            "signature_header": "X-Carrier-Signature",
            "timestamp_header": "X-Carrier-Timestamp",
            "receipt_id_pointer": "/data/ref",
            "receipt_status_pointer": "/data/state",
            "statuses": {"delivered": "DELIVRD", "failed": "UNDELIV"},
            "mo_from_pointer": "/msisdn",
            "mo_to_pointer": "/to",
            "mo_body_pointer": "/text"
        }))?),
    };
    let gw = Gateway::start_with(&format!("http://{addr}/send"), |c| {
        c.http = Some(http);
        c.retry_later_ms = 700;
    })
    .await?;
    let receipts = format!(
        "{}/v1/carriers/{}/receipts",
        gw.webhooks,
        smsgw_e2e::CARRIER
    );
    let mo = format!("{}/v1/carriers/{}/mo", gw.webhooks, smsgw_e2e::CARRIER);
    shared.lock().unwrap().receipts_to = receipts.clone();

    let post = |to: &str, body: &str| {
        gw.post(json!({"to": to, "from": "SHOP", "body": body, "client_id": "http"}))
    };
    let text = "Say \"hi\" & 😀 — \\ ok";
    let (_, a) = post("+447911100001", text).await?;
    let (_, b) = post("+447911100099", "throttled once").await?;
    let (_, u) = post("+447911100098", "unavailable once").await?;
    let (_, c) = post("+447400200001", "refused").await?;
    let a_id = a["id"].as_str().unwrap();
    let s = gw.final_status(a_id).await?;
    assert_eq!(s["state"], "delivered", "{s}");
    let s = gw.final_status(b["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "delivered", "{s}");
    let s = gw.final_status(u["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "delivered", "{s}");
    let s = gw.final_status(c["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "undeliverable", "{s}");
    let failed = &s["history"][2]["details"];
    assert_eq!(failed["command_status"], 400, "{s}");
    assert_eq!(failed["retryable"], false, "{s}");
    {
        let c = shared.lock().unwrap();
        let sent = c
            .requests
            .iter()
            .find(|r| r["to"] == "+447911100001")
            .unwrap();
        assert_eq!(sent["text"], text, "the JSON template escaped the text");
        assert_eq!(sent["ref"], a_id);
        let tries = c
            .requests
            .iter()
            .filter(|r| r["to"] == "+447911100099")
            .count();
        assert_eq!(tries, 2, "429 then success");
        let at: Vec<i64> = c
            .requests
            .iter()
            .zip(&c.request_at)
            .filter(|(r, _)| r["to"] == "+447911100098")
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(at.len(), 2, "503 then success");
        assert!(
            (700..3_000).contains(&(at[1] - at[0])),
            "sent again {} ms after the 503, retry_later_ms is 700",
            at[1] - at[0]
        );
    }
    // Every receipt the carrier sent was taken (a, b and u were delivered; the carrier
    // records the webhook's answer just after it came).
    let answers =
        smsgw_testkit::eventually("three receipt answers", Duration::from_secs(10), || {
            let a = shared.lock().unwrap().receipt_answers.clone();
            async move { (a.len() >= 3).then_some(a) }
        })
        .await?;
    assert_eq!(answers, [200, 200, 200], "receipt webhook answers");

    // Refused calls: a bad signature, then a signed but unreadable receipt.
    let r = call_webhook(
        &receipts,
        &json!({"data": {"ref": 1, "state": "failed"}}),
        false,
    )
    .await;
    assert_eq!(r.status(), 401);
    let r = call_webhook(&receipts, &json!({"nothing": "here"}), true).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await?.contains("/data/ref"));
    let dead: Vec<DeadLetter> = read_records(
        &gw.kafka,
        &gw.kafka.topics.dead_letter(),
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        dead[0].reason.contains("unreadable receipt webhook"),
        "{dead:?}"
    );

    // An MO STOP through the webhook opts the recipient out; the same signed call sent
    // again (a replay: same timestamp, same signature) is refused.
    let stop_body =
        serde_json::to_vec(&json!({"msisdn": "447911100005", "to": "SHOP", "text": "STOP"}))?;
    let ts = (smsgw_kafka::now_ms() / 1000).to_string();
    let sig = sign(&ts, &stop_body);
    let stop_call = || {
        reqwest::Client::new()
            .post(&mo)
            .header("content-type", "application/json")
            .header("X-Carrier-Signature", sig.clone())
            .header("X-Carrier-Timestamp", ts.clone())
            .body(stop_body.clone())
            .send()
    };
    assert_eq!(stop_call().await?.status(), 200);
    let replayed = stop_call().await?;
    assert_eq!(replayed.status(), 401);
    assert!(replayed.text().await?.contains("replayed"));
    let stop: Vec<smsgw_codec::OptOutChanged> = read_records(
        &gw.kafka,
        &gw.kafka.topics.optout(),
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(stop[0].number, "+447911100005");
    let (_, d) = post("+447911100005", "after stop").await?;
    let s = gw.final_status(d["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "blocked", "{s}");

    gw.stop().await?;
    Ok(())
}
