//! Status callbacks against a real local HTTP receiver that sometimes fails and sometimes
//! is slow, over a real Tansu broker: per message the calls arrive in event order, once
//! per status, signed; a receiver that never answers 2xx ends in the dead-letter topic;
//! and a second life that re-reads the whole event log makes no call at all.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use smsgw_codec::DeadLetter;
use smsgw_domain::{Event, EventPayload, MessageDelivered, MessageSubmitted, MessageUndeliverable};
use smsgw_receipt::Config;
use smsgw_runtime::webhook::{signature, Retry};
use smsgw_testkit::{eventually, free_port, produce, read_records, stopper, Broker};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "cb-key";

#[derive(Default)]
struct Seen {
    /// Calls answered 2xx: (message id, status).
    ok: Vec<(String, String)>,
    /// Every request, including the ones we failed on purpose.
    requests: usize,
    bad_signatures: usize,
    /// Requests so far per (message id, status).
    attempts: HashMap<(String, String), u32>,
}

type Shared = Arc<Mutex<Seen>>;

/// Fails the first call of every status of the even-numbered messages with 500, and
/// answers the first call of every status of messages 1, 4, 7, 10 after 400 ms; `/dead`
/// always answers 503. Checks the signature of every call. What fails depends only on the
/// call, never on how calls interleave, so no status fails more than once (the service
/// makes three attempts).
async fn receive(
    State(seen): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = (
        v["message_id"].as_str().unwrap().to_string(),
        v["status"].as_str().unwrap().to_string(),
    );
    let attempt = {
        let mut s = seen.lock().unwrap();
        s.requests += 1;
        let ts: i64 = headers["x-smsgw-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let sig = headers["x-smsgw-signature"].to_str().unwrap();
        if sig != signature(SECRET.as_bytes(), ts, body.as_bytes()) {
            s.bad_signatures += 1;
        }
        let a = s.attempts.entry(key.clone()).or_default();
        *a += 1;
        *a
    };
    if uri.path() == "/dead" {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let n: u32 = key.0.trim_start_matches('m').parse().unwrap_or(0);
    if attempt == 1 && n.is_multiple_of(2) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if attempt == 1 && n % 3 == 1 {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    seen.lock().unwrap().ok.push(key);
    StatusCode::OK
}

fn accepted(id: &str, url: Option<String>) -> Event {
    smsgw_testkit::accepted_event(id, |a| a.callback_url = url)
}

fn config(kafka: &smsgw_kafka::KafkaConfig, group: &str) -> anyhow::Result<Config> {
    let mut c = Config::new(kafka.clone());
    c.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    c.group_id = format!("{group}-receipts");
    c.callbacks.group_id = group.into();
    c.callbacks.secret = Some(SECRET.into());
    // The receiver runs on loopback, which a message's own URL may not reach by default.
    c.callbacks.allow_internal_hosts = vec!["127.0.0.1".into()];
    c.callbacks.retry = Retry {
        max_attempts: 3,
        initial_backoff_ms: 20,
        max_backoff_ms: 100,
        timeout_ms: 2_000,
    };
    Ok(c)
}

async fn scrape(admin: std::net::SocketAddr, outcome: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .map(|r| r.text());
    let Ok(text) = text else { return 0.0 };
    let text = text.await.unwrap_or_default();
    let series = format!("smsgw_receipt_callbacks_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_ordered_signed_once_and_dead_lettered_when_refused() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["a"]).await?;
    let seen: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route("/cb", post(receive))
        .route("/dead", post(receive))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://127.0.0.1:{port}/cb");

    // The log: 12 messages accepted, submitted (the submit recorded twice, as an
    // at-least-once producer may), then delivered or undelivered; one whose receiver
    // refuses everything; one with no callback target at all.
    let events = kafka.topics.events();
    let mut expected: HashMap<String, Vec<&str>> = HashMap::new();
    let mut status_records = 0;
    for i in 0..12 {
        let id = format!("m{i}");
        let sub = Event::new(
            &id,
            EventPayload::Submitted(MessageSubmitted {
                carrier: "a".into(),
                attempt: 1,
                carrier_message_id: format!("c{i}"),
                segments: 1,
                possible_duplicate: false,
                later_part_ids: vec![],
            }),
            1,
            2_000,
        );
        let last = if i % 3 == 0 {
            EventPayload::Undeliverable(MessageUndeliverable {
                carrier: Some("a".into()),
                reason: "receipt".into(),
                stat: Some("UNDELIV".into()),
                error_code: Some("034".into()),
            })
        } else {
            EventPayload::Delivered(MessageDelivered {
                carrier: "a".into(),
                carrier_message_id: format!("c{i}"),
                stat: "DELIVRD".into(),
            })
        };
        let final_status = if i % 3 == 0 {
            "undelivered"
        } else {
            "delivered"
        };
        for e in [
            accepted(&id, Some(url.clone())),
            sub.clone(),
            sub,
            Event::new(&id, last, 1, 3_000),
        ] {
            produce(&kafka, &events, &id, &e).await?;
            status_records += 1;
        }
        expected.insert(id, vec!["accepted", "submitted", final_status]);
    }
    let dead = accepted("m-dead", Some(format!("http://127.0.0.1:{port}/dead")));
    produce(&kafka, &events, "m-dead", &dead).await?;
    status_records += 1;
    produce(&kafka, &events, "m-none", &accepted("m-none", None)).await?;

    let c = config(&kafka, "cb-first")?;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(c, sd));
    let ok = eventually("36 callbacks answered", Duration::from_secs(60), || async {
        let s = seen.lock().unwrap();
        (s.ok.len() >= 36).then_some(s.ok.clone())
    })
    .await?;
    let dl: Vec<DeadLetter> = read_records(
        &kafka,
        &kafka.topics.dead_letter(),
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert!(dl[0].reason.contains("/dead"), "{}", dl[0].reason);
    assert!(dl[0].reason.contains("3 attempts"), "{}", dl[0].reason);
    let body: serde_json::Value = serde_json::from_slice(dl[0].payload.as_ref().unwrap())?;
    assert_eq!(
        (body["message_id"].as_str(), body["status"].as_str()),
        (Some("m-dead"), Some("accepted"))
    );
    let _ = stop.send(());
    svc.await??;

    // Order per message, no duplicate status, every signature valid.
    let mut got: HashMap<String, Vec<String>> = HashMap::new();
    for (id, status) in &ok {
        got.entry(id.clone()).or_default().push(status.clone());
    }
    for (id, want) in &expected {
        assert_eq!(
            got.get(id)
                .map(|v| v.iter().map(String::as_str).collect::<Vec<_>>()),
            Some(want.clone()),
            "{id}"
        );
    }
    assert!(!got.contains_key("m-none") && !got.contains_key("m-dead"));
    let (requests, bad) = {
        let s = seen.lock().unwrap();
        (s.requests, s.bad_signatures)
    };
    assert_eq!(bad, 0, "every call verifies");
    // 36 answered, 18 first calls failed on purpose (6 even messages × 3 statuses), and
    // three calls to the receiver that refuses everything.
    assert_eq!(requests, 36 + 18 + 3, "calls made");
    println!("{requests} requests for 36 callbacks and one dead letter");

    // Second life, new consumer group: every event is read again, none is called again.
    let c = config(&kafka, "cb-second")?;
    let admin = c.admin_listen;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(c, sd));
    let dupes = status_records as f64;
    eventually(
        "every re-read event recognised as done",
        Duration::from_secs(60),
        || async { (scrape(admin, "duplicate").await >= dupes).then_some(()) },
    )
    .await?;
    let _ = stop.send(());
    svc.await??;
    let s = seen.lock().unwrap();
    assert_eq!(s.requests, requests, "no call after the restart");
    Ok(())
}

/// The calls a receiver saw, and whether it may answer them yet.
type Held = (Arc<Mutex<Vec<String>>>, tokio::sync::watch::Receiver<bool>);

/// Calls queued while a rebalance has the events partition read again are not committed
/// before they are made: the records read again are neither called twice nor skipped as
/// duplicates (which would commit them, and a crash then would never call them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_again_while_their_calls_wait_are_committed_only_once_called(
) -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["a"]).await?;
    // Given a receiver that holds every call until the test releases it,
    let (release, released) = tokio::sync::watch::channel(false);
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route(
            "/cb",
            post(
                |State((calls, mut released)): State<Held>, body: String| async move {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    calls
                        .lock()
                        .unwrap()
                        .push(v["status"].as_str().unwrap().to_string());
                    let _ = released.wait_for(|r| *r).await;
                    StatusCode::OK
                },
            ),
        )
        .with_state((calls.clone(), released));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://127.0.0.1:{port}/cb");
    let group = "cb-reread";
    let mut c = config(&kafka, group)?;
    c.callbacks.retry.timeout_ms = 60_000;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_receipt::run(c, sd));
    // and a message's accepted and delivered events, the first call held,
    let events = kafka.topics.events();
    let delivered = Event::new(
        "m1",
        EventPayload::Delivered(MessageDelivered {
            carrier: "a".into(),
            carrier_message_id: "c1".into(),
            stat: "DELIVRD".into(),
        }),
        1,
        3_000,
    );
    produce(&kafka, &events, "m1", &accepted("m1", Some(url))).await?;
    produce(&kafka, &events, "m1", &delivered).await?;
    eventually(
        "the first call is held",
        Duration::from_secs(30),
        || async { (!calls.lock().unwrap().is_empty()).then_some(()) },
    )
    .await?;
    // when the callbacks group rebalances and both events are read again,
    smsgw_testkit::rebalance_group(&kafka, group, &events).await?;
    tokio::time::sleep(Duration::from_secs(5)).await; // assigned again; auto-commit 500 ms
                                                      // then neither is committed while its call waits,
    assert_eq!(
        smsgw_testkit::group_lag(&kafka, group, &events)?,
        2,
        "an event read again was committed before its call was made"
    );
    // and once the receiver answers, each status is called once and both are committed.
    release.send(true)?;
    eventually("committed", Duration::from_secs(60), || async {
        (smsgw_testkit::group_lag(&kafka, group, &events).ok()? == 0).then_some(())
    })
    .await?;
    assert_eq!(*calls.lock().unwrap(), vec!["accepted", "delivered"]);
    let _ = stop.send(());
    svc.await??;
    Ok(())
}
