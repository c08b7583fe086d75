//! optout against a real Tansu broker: keywords become opt-out log records with their
//! audit and get their replies; other MO reach the sender's webhook (retried, signed,
//! dead-lettered when it keeps failing); the API adds, checks, lists, imports and
//! removes opt-outs, and its state is rebuilt from the log after a restart.

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use smsgw_codec::{DeadLetter, InboundMessage, OptOutChanged, SubmitRequest, SYSTEM_CLIENT};
use smsgw_kafka::{send, KafkaConfig, OutRecord, Producer};
use smsgw_optout::config::Profile;
use smsgw_testkit::{eventually, free_port, produce, read_records, stopper, Broker};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn local() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

fn mo(id: &str, to: &str, body: &str) -> InboundMessage {
    InboundMessage {
        inbound_id: id.into(),
        carrier: "a".into(),
        from: "+447911123456".into(),
        to: to.into(),
        body: body.into(),
        received_at: 1,
    }
}

/// A webhook receiver that fails its first call, then checks signatures.
async fn receiver(calls: Arc<Mutex<Vec<(String, bool)>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/mo",
        post(move |headers: HeaderMap, body: String| {
            let calls = calls.clone();
            async move {
                let ts: i64 = headers["x-smsgw-timestamp"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let sig = headers["x-smsgw-signature"].to_str().unwrap().to_string();
                let ok = sig == smsgw_runtime::webhook::signature(b"hook-key", ts, body.as_bytes());
                let mut c = calls.lock().unwrap();
                c.push((body, ok));
                if c.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

const OPS: &str = "k-ops";
const CRM: &str = "k-crm";
const SHOP_KEY: &str = "k-shop";

fn config(kafka: &KafkaConfig, hook: SocketAddr) -> smsgw_optout::Config {
    let mut c = smsgw_optout::Config::new(kafka.clone());
    // An admin key, an account's key, and a key limited to sender SHOP.
    let h = smsgw_runtime::auth::hash_key;
    c.api_keys = Some(format!(
        "ops:{}:role=admin\ncrm-sync:{}:account=acme\nshop:{}:senders=SHOP",
        h(OPS),
        h(CRM),
        h(SHOP_KEY)
    ));
    c.admin_listen = local();
    c.api_listen = local();
    c.defaults.stop_reply = Some("You will get no more messages from {sender}.".into());
    c.defaults.help_reply = Some("Reply STOP to opt out.".into());
    c.webhook_retry.initial_backoff_ms = 20;
    c.webhook_retry.max_attempts = 3;
    c.senders.insert(
        "SHOP".into(),
        Profile {
            webhook_url: Some(format!("http://{hook}/mo")),
            webhook_secret: Some("hook-key".into()),
            ..Profile::default()
        },
    );
    c.senders.insert(
        "DEAD".into(),
        Profile {
            webhook_url: Some(format!("http://{hook}/nowhere")),
            ..Profile::default()
        },
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keywords_webhooks_and_the_api() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let hook = receiver(calls.clone()).await;
    let cfg = config(&kafka, hook);
    let api = format!("http://{}/v1/optouts", cfg.api_listen);
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_optout::run(cfg.clone(), sd));
    let topic = kafka.topics.inbound();
    produce(&kafka, &topic, "k", &mo("1", "SHOP", "hello there")).await?;
    produce(&kafka, &topic, "k", &mo("x", "DEAD", "nobody listens")).await?;
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
    produce(&kafka, &topic, "k", &mo("2", "SHOP", " Stop. ")).await?;
    produce(&kafka, &topic, "k", &mo("3", "SHOP", "unstop")).await?;
    produce(&kafka, &topic, "k", &mo("4", "SHOP", "help")).await?;

    // Keywords: two log records with their audit.
    let log: Vec<OptOutChanged> =
        read_records(&kafka, &kafka.topics.optout(), 2, Duration::from_secs(30)).await?;
    assert_eq!(
        log.iter().map(|o| o.opted_out).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(log[0].key(), "sender:SHOP|+447911123456");
    assert_eq!(
        (
            log[0].source.as_str(),
            log[0].actor.as_deref(),
            log[0].reference.as_deref()
        ),
        ("keyword", Some("mo:a"), Some("2"))
    );
    // Replies: STOP and HELP (no START reply configured), from the gateway itself, on
    // the replies topic (never the public ingest topic).
    let replies: Vec<SubmitRequest> =
        read_records(&kafka, &kafka.topics.replies(), 2, Duration::from_secs(30)).await?;
    assert!(replies
        .iter()
        .all(|r| r.client_id == SYSTEM_CLIENT && r.to == "+447911123456" && r.from == "SHOP"));
    let reply_to = |id: &str| {
        replies
            .iter()
            .find(|r| r.idempotency_key.as_deref() == Some(id))
            .map(|r| r.body.as_str())
    };
    assert_eq!(
        reply_to("reply:2"),
        Some("You will get no more messages from SHOP.")
    );
    assert_eq!(reply_to("reply:4"), Some("Reply STOP to opt out."));

    // The webhook: failed once, then delivered, signed; keywords never reach it.
    eventually("webhook delivered", Duration::from_secs(30), || async {
        (calls.lock().unwrap().len() >= 2).then_some(())
    })
    .await?;
    {
        let c = calls.lock().unwrap();
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c
            .iter()
            .all(|(body, ok)| *ok && body.contains("hello there")));
    }
    // A webhook that keeps failing: dead-lettered with the reason.
    let dead: Vec<DeadLetter> = read_records(
        &kafka,
        &kafka.topics.dead_letter(),
        3,
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        dead.iter()
            .any(|d| d.reason.contains("MO webhook failed after 3 attempts")),
        "{dead:?}"
    );
    assert!(
        dead.iter().any(|d| d.reason.contains("undecodable")),
        "{dead:?}"
    );

    // The API. The audit actor is the key's name, whatever `X-Actor` says.
    let http = reqwest::Client::new();
    assert_eq!(
        http.put(format!("{api}/global/+447911100001"))
            .send()
            .await?
            .status(),
        401,
        "no key"
    );
    let r = http
        .put(format!("{api}/global/+447911100001"))
        .header("x-api-key", OPS)
        .header("x-actor", "someone-else")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(
        (body["source"].as_str(), body["actor"].as_str()),
        (Some("api"), Some("ops"))
    );
    // Roles: the global list needs an admin key; an account's key manages its own
    // account's list, a sender-limited key its sender's list, and nothing else.
    for (key, method, path) in [
        (CRM, "PUT", "global/+447911100001"),
        (CRM, "DELETE", "global/+447911100001"),
        (CRM, "GET", "global/+447911100001"),
        (CRM, "PUT", "account:other/+447911100001"),
        (CRM, "PUT", "sender:SHOP/+447911100001"),
        (SHOP_KEY, "PUT", "sender:OTHER/+447911100001"),
        (SHOP_KEY, "PUT", "account:acme/+447911100001"),
        (SHOP_KEY, "GET", "?scope=global"),
    ] {
        let url = if path.starts_with('?') {
            format!("{api}{path}")
        } else {
            format!("{api}/{path}")
        };
        let r = http
            .request(method.parse()?, url)
            .header("x-api-key", key)
            .send()
            .await?;
        assert_eq!(r.status(), 403, "{key} {method} {path}");
    }
    let r = http
        .post(format!("{api}/import?scope=global"))
        .header("x-api-key", CRM)
        .body("+447911100001\n")
        .send()
        .await?;
    assert_eq!(r.status(), 403, "an account key imports into global");
    let r = http
        .post(format!("{api}/import?scope=account:acme"))
        .header("x-api-key", CRM)
        .header("x-actor", "someone-else")
        .body("number\n+447911100002\n+447911100003,opt_out\nnot-a-number\n+447911100004,opt_in\n")
        .send()
        .await?;
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["imported"], 3, "{body}");
    assert_eq!(body["errors"][0]["line"], 4, "{body}");
    let list: serde_json::Value = http
        .get(format!("{api}?scope=account:acme"))
        .header("x-api-key", CRM)
        .send()
        .await?
        .json()
        .await?;
    let numbers: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["number"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["+447911100002", "+447911100003"]);
    assert_eq!(
        http.put(format!("{api}/pool:x/+447911100001"))
            .header("x-api-key", OPS)
            .send()
            .await?
            .status(),
        400
    );
    assert_eq!(
        http.delete(format!("{api}/global/+447911100001"))
            .header("x-api-key", OPS)
            .send()
            .await?
            .status(),
        200
    );
    // Only an admin key may say a change came from a carrier.
    let r: serde_json::Value = http
        .put(format!("{api}/sender:SHOP/+447911100008"))
        .header("x-api-key", SHOP_KEY)
        .header("x-source", "carrier")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (r["source"].as_str(), r["actor"].as_str()),
        (Some("api"), Some("shop"))
    );
    http.put(format!("{api}/sender:SHOP/+447911100009"))
        .header("x-api-key", OPS)
        .header("x-source", "carrier")
        .send()
        .await?;

    // Every API change is on the log, with its audit.
    let log: Vec<OptOutChanged> =
        read_records(&kafka, &kafka.topics.optout(), 9, Duration::from_secs(30)).await?;
    let imported: Vec<&OptOutChanged> = log.iter().filter(|o| o.source == "import").collect();
    assert_eq!(imported.len(), 3);
    assert!(imported
        .iter()
        .all(|o| o.actor.as_deref() == Some("crm-sync") && o.scope == "account:acme"));
    assert!(
        log.iter()
            .all(|o| o.actor.as_deref() != Some("someone-else")),
        "an X-Actor header reached the audit trail"
    );

    // Restart: the state comes back from the log.
    let _ = stop.send(());
    svc.await??;
    let cfg = config(&kafka, hook);
    let api = format!("http://{}/v1/optouts", cfg.api_listen);
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_optout::run(cfg, sd));
    let state = |scope: &'static str, n: &'static str| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let r = http
                .get(format!("{api}/{scope}/{n}"))
                .header("x-api-key", OPS)
                .send()
                .await
                .ok()?;
            r.json::<serde_json::Value>().await.ok()
        }
    };
    let s = eventually("API after restart", Duration::from_secs(30), || {
        state("sender:SHOP", "+447911100009")
    })
    .await?;
    assert_eq!(s["opted_out"], true);
    assert_eq!(s["source"], "carrier");
    assert_eq!(
        state("global", "+447911100001").await.unwrap()["opted_out"],
        false
    );
    assert_eq!(
        state("account:acme", "+447911100004").await.unwrap()["opted_out"],
        false
    );
    assert_eq!(
        state("sender:SHOP", "+447911123456").await.unwrap()["source"],
        "keyword"
    );
    let _ = stop.send(());
    svc.await??;
    Ok(())
}
