//! ingest against a real Tansu broker: HTTP and Kafka in, events and dead letters out.

use smsgw_codec::DeadLetter;
use smsgw_domain::{Event, EventPayload};
use smsgw_kafka::{send, OutRecord, Producer};
use smsgw_testkit::{eventually, read_records, read_to_end, Broker};
use std::time::Duration;

mod common;
use common::start_ingest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_kafka_requests_become_events_and_poison_is_dead_lettered() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let (config, stop, svc) = start_ingest(&kafka)?;
    let base = format!("http://{}", config.listen);
    let admin = format!("http://{}", config.admin_listen);
    let http = reqwest::Client::new();
    eventually("HTTP up", Duration::from_secs(20), || async {
        http.get(format!("{admin}/healthz")).send().await.ok()
    })
    .await?;

    // A poison record, then a valid JSON record behind it on the same partition.
    let producer = Producer::new(&kafka)?;
    let poison = OutRecord {
        topic: kafka.topics.ingest(),
        key: Some(b"k".to_vec()),
        partition: Some(0),
        payload: b"\x00garbage".to_vec(),
        headers: vec![],
    };
    send(&producer, &poison).await?;
    let good = OutRecord {
        topic: kafka.topics.ingest(),
        key: Some(b"k".to_vec()),
        partition: Some(0),
        payload:
            br#"{"client_id":"c","to":"+447911123456","from":"SHOP","body":"behind the poison"}"#
                .to_vec(),
        headers: vec![("content-type".into(), "application/json".into())],
    };
    send(&producer, &good).await?;

    // The same idempotency key twice over HTTP: one id, one event.
    let body = serde_json::json!({"to": "+447911123457", "from": "SHOP", "body": "hi", "idempotency_key": "dup-1"});
    let r1: serde_json::Value = http
        .post(format!("{base}/v1/messages"))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let r2: serde_json::Value = http
        .post(format!("{base}/v1/messages"))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(r1["id"], r2["id"]);
    let bad = http
        .post(format!("{base}/v1/messages"))
        .json(&serde_json::json!({"to": "12", "from": "SHOP", "body": "x"}))
        .send()
        .await?;
    assert_eq!(bad.status(), 422);
    let bad: serde_json::Value = bad.json().await?;
    assert_eq!(bad["reason_code"], "invalid_destination");
    // The gateway's own client id (its opt-out replies) cannot be used from outside.
    let reserved = http
        .post(format!("{base}/v1/messages"))
        .json(&serde_json::json!({"to": "+447911123456", "from": "SHOP", "body": "x", "client_id": smsgw_codec::SYSTEM_CLIENT}))
        .send()
        .await?;
    assert_eq!(reserved.status(), 422);
    assert_eq!(
        reserved.json::<serde_json::Value>().await?["error"],
        "reserved_client"
    );
    // Nor can an HTTP caller mark a message as an SMPP account's (its receipts go there).
    let smpp_ref = http
        .post(format!("{base}/v1/messages"))
        .json(&serde_json::json!({"to": "+447911123456", "from": "SHOP", "body": "x", "client_ref": "smpp:victim"}))
        .send()
        .await?;
    assert_eq!(smpp_ref.status(), 422);
    assert_eq!(
        smpp_ref.json::<serde_json::Value>().await?["error"],
        "reserved_client_ref"
    );

    // Three events: the JSON record accepted, the HTTP message accepted once, the bad one rejected.
    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 3, Duration::from_secs(30)).await?;
    let accepted = events
        .iter()
        .filter(|e| matches!(e.payload, EventPayload::Accepted(_)))
        .count();
    let rejected = events
        .iter()
        .filter(|e| matches!(e.payload, EventPayload::Rejected(_)))
        .count();
    assert_eq!((accepted, rejected), (2, 1));
    let dl: Vec<DeadLetter> = read_records(
        &kafka,
        &kafka.topics.dead_letter(),
        1,
        Duration::from_secs(30),
    )
    .await?;
    let dl = &dl[0];
    assert_eq!(dl.offset, 0);
    assert!(dl.reason.contains("undecodable"), "{}", dl.reason);

    // The status API folds the event log.
    let id = r1["id"].as_str().unwrap().to_string();
    let status = eventually(
        "status of the HTTP message",
        Duration::from_secs(20),
        || async {
            let r = http
                .get(format!("{base}/v1/messages/{id}"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())?;
            r.json::<serde_json::Value>().await.ok()
        },
    )
    .await?;
    assert_eq!(status["state"], "accepted");
    // No duplicate was written for the second POST: ingest answers only after its write is
    // acknowledged, so everything it wrote is below the end offsets read now.
    let written = read_to_end(&kafka, &kafka.topics.events(), Duration::from_secs(30)).await?;
    assert_eq!(written.len(), 3, "a duplicate event was written");

    // A batch: each item is validated and deduplicated like a single message.
    let batch = serde_json::json!({"messages": [
        {"to": "+447911100011", "from": "SHOP", "body": "one", "client_id": "shop", "idempotency_key": "b-1"},
        {"to": "12", "from": "SHOP", "body": "bad number", "client_id": "shop"},
        {"to": "+447911100011", "from": "SHOP", "body": "one", "client_id": "shop", "idempotency_key": "b-1"},
        {"to": "+447911100012", "from": "SHOP", "body": "x", "client_id": "smsgw-optout"},
    ]});
    let r: serde_json::Value = http
        .post(format!("{base}/v1/messages/batch"))
        .json(&batch)
        .send()
        .await?
        .json()
        .await?;
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{r}");
    assert_eq!(results[0]["status"], "accepted", "{r}");
    assert_eq!(results[1]["reason_code"], "invalid_destination", "{r}");
    assert_eq!(results[2]["id"], results[0]["id"], "same key, same message");
    assert_eq!(results[3]["error"], "reserved_client", "{r}");
    // One more accepted (the duplicate is dropped by ingest) and one more rejected.
    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 5, Duration::from_secs(30)).await?;
    let accepted = events
        .iter()
        .filter(|e| matches!(e.payload, EventPayload::Accepted(_)))
        .count();
    assert_eq!(accepted, 3);
    let written = read_to_end(&kafka, &kafka.topics.events(), Duration::from_secs(30)).await?;
    assert_eq!(
        written.len(),
        5,
        "the duplicate in the batch became a second message"
    );
    let too_many = serde_json::json!({"messages": vec![serde_json::json!({"to": "+447911100013", "from": "SHOP", "body": "x"}); 1001]});
    let r = http
        .post(format!("{base}/v1/messages/batch"))
        .json(&too_many)
        .send()
        .await?;
    assert_eq!(r.status(), 400);

    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// Tenants isolated by their keys (issue 16): a key speaks for its account (and the
/// accounts listed on it) and sends only as its senders; another account's messages are
/// not found for it, by GET or DELETE; idempotency keys are per account, so one tenant
/// cannot pre-claim another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_by_their_keys() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let mut config = common::config(&kafka)?;
    config.auth = smsgw_runtime::auth::AuthMode::Keys;
    let h = smsgw_runtime::auth::hash_key;
    config.api_keys = Some(format!(
        "shop:{}:senders=SHOP\nvictim:{}\nagency:{}:accounts=shop\nbulk:{}:5",
        h("k-shop"),
        h("k-victim"),
        h("k-agency"),
        h("k-bulk")
    ));
    // The agency's account may send three messages a day.
    config.daily_quotas.insert("agency".into(), 3);
    let base = format!("http://{}/v1/messages", config.listen);
    let (stop, svc) = common::start(config);
    let http = reqwest::Client::new();
    let post = |key: &'static str, body: serde_json::Value, client_header: Option<&'static str>| {
        let mut r = http.post(&base).header("x-api-key", key).json(&body);
        if let Some(c) = client_header {
            r = r.header("x-client-id", c);
        }
        async move {
            let r = r.send().await?;
            let code = r.status().as_u16();
            anyhow::Ok((code, r.json::<serde_json::Value>().await?))
        }
    };
    let msg = |from: &str| serde_json::json!({"to": "+447911100001", "from": from, "body": "hi", "idempotency_key": "order-1"});
    let up = eventually("ingest listening", Duration::from_secs(30), || async {
        post("k-victim", msg("BANK"), None).await.ok()
    })
    .await?;
    assert_eq!(up.0, 202, "{}", up.1);
    let victims = up.1["id"].as_str().unwrap().to_string();

    // The same idempotency key from another account is another message.
    let (code, shop) = post("k-shop", msg("SHOP"), None).await?;
    assert_eq!(code, 202, "{shop}");
    let shops = shop["id"].as_str().unwrap().to_string();
    assert_ne!(
        shops, victims,
        "one account pre-claimed another's idempotency key"
    );

    // Claiming another account, by body or header, or another sender: 403.
    let mut as_victim = msg("SHOP");
    as_victim["client_id"] = "victim".into();
    let (code, r) = post("k-shop", as_victim, None).await?;
    assert_eq!(
        (code, r["error"].as_str()),
        (403, Some("forbidden_client")),
        "{r}"
    );
    let (code, r) = post("k-shop", msg("SHOP"), Some("victim")).await?;
    assert_eq!(
        (code, r["error"].as_str()),
        (403, Some("forbidden_client")),
        "{r}"
    );
    let (code, r) = post("k-shop", msg("BANK"), None).await?;
    assert_eq!(
        (code, r["error"].as_str()),
        (403, Some("forbidden_sender")),
        "{r}"
    );
    // An agency key may act for the accounts on it.
    let mut for_shop = msg("SHOP");
    for_shop["client_id"] = "shop".into();
    for_shop["idempotency_key"] = "order-2".into();
    let (code, r) = post("k-agency", for_shop, None).await?;
    assert_eq!(code, 202, "{r}");

    // A batch is checked item by item.
    let batch = serde_json::json!({"messages": [
        {"to": "+447911100002", "from": "SHOP", "body": "mine"},
        {"to": "+447911100003", "from": "SHOP", "body": "theirs", "client_id": "victim"},
    ]});
    let r: serde_json::Value = http
        .post(format!("{base}/batch"))
        .header("x-api-key", "k-shop")
        .json(&batch)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(r["results"][0]["status"], "accepted", "{r}");
    assert_eq!(r["results"][1]["error"], "forbidden_client", "{r}");

    // A daily quota: the agency's own account takes three messages, the fourth is 429
    // and says why; messages for the shop account it acts for are not counted.
    for i in 0..4 {
        let mut m = msg("AG");
        m["idempotency_key"] = format!("q-{i}").into();
        let (code, r) = post("k-agency", m, None).await?;
        if i < 3 {
            assert_eq!(code, 202, "{r}");
        } else {
            assert_eq!(
                (code, r["error"].as_str()),
                (429, Some("quota_exceeded")),
                "{r}"
            );
            assert!(
                r["reason"].as_str().unwrap().contains("daily quota of 3"),
                "{r}"
            );
        }
    }

    // Rate limits count messages: a batch of 20 on a 5/s key is taken once, and the
    // key's next request waits for the debt to be paid back.
    let twenty: Vec<serde_json::Value> = (0..20)
        .map(|i| serde_json::json!({"to": format!("+4479111000{i:02}"), "from": "BULK", "body": "b"}))
        .collect();
    let r = http
        .post(format!("{base}/batch"))
        .header("x-api-key", "k-bulk")
        .json(&serde_json::json!({ "messages": twenty }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let (code, r) = post("k-bulk", msg("BULK"), None).await?;
    assert_eq!(
        (code, r["error"].as_str()),
        (429, Some("rate_limited")),
        "{r}"
    );

    // Reading and cancelling: the owner sees its message; another account gets 404.
    let get = |key: &'static str, id: String| {
        let r = http
            .get(format!("{base}/{id}"))
            .header("x-api-key", key)
            .send();
        async move { anyhow::Ok(r.await?.status().as_u16()) }
    };
    eventually(
        "the owner sees its message",
        Duration::from_secs(30),
        || async { (get("k-victim", victims.clone()).await.ok()? == 200).then_some(()) },
    )
    .await?;
    assert_eq!(get("k-shop", victims.clone()).await?, 404);
    assert_eq!(get("k-agency", victims.clone()).await?, 404);
    eventually(
        "the agency sees the shop's message",
        Duration::from_secs(30),
        || async { (get("k-agency", shops.clone()).await.ok()? == 200).then_some(()) },
    )
    .await?;
    let r = http
        .delete(format!("{base}/{victims}"))
        .header("x-api-key", "k-shop")
        .send()
        .await?;
    assert_eq!(r.status(), 404);

    // What reached the log: only the allowed messages, no cancellation.
    let events = read_to_end(&kafka, &kafka.topics.events(), Duration::from_secs(30)).await?;
    let mut owners: Vec<String> = events
        .iter()
        .filter_map(|(_, v)| <Event as smsgw_codec::AvroRecord>::decode(v.as_deref()?).ok())
        .filter_map(|e| match e.payload {
            EventPayload::Accepted(a) => Some(a.client_id),
            _ => None,
        })
        .collect();
    owners.sort();
    let mut expected = vec!["agency", "agency", "agency"];
    expected.extend(vec!["bulk"; 20]);
    expected.extend(["shop", "shop", "shop", "victim"]);
    assert_eq!(owners, expected);
    let cancels = read_to_end(
        &kafka,
        &kafka.topics.cancellations(),
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        cancels.is_empty(),
        "another account's cancellation was written"
    );

    // Guessing keys: after ten failures a source is refused before its key is checked,
    // even the right key (last: it shuts this test's address out for a while).
    for _ in 0..10 {
        let (code, _) = post("k-guess", msg("SHOP"), None).await?;
        assert_eq!(code, 401);
    }
    let (code, r) = post("k-shop", msg("SHOP"), None).await?;
    assert_eq!(
        (code, r["error"].as_str()),
        (429, Some("too_many_failures")),
        "{r}"
    );

    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// A poison record close to the broker's size limit (issue 16): its dead letter used to
/// copy it whole, came out over the limit, and ingest exited and re-read it for ever.
/// The dead letter is now bounded (a truncated payload with the original size and hash)
/// and the record behind it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_limit_poison_record_is_dead_lettered_bounded_and_the_partition_moves_on(
) -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let (_, stop, svc) = start_ingest(&kafka)?;

    let producer = Producer::new(&kafka)?;
    // It fits the producer's 1,000,000-byte limit; a dead letter that copied it whole
    // (the key twice: as the record's key and in the dead letter) would not.
    let big = vec![0xFFu8; 985_000];
    let key = vec![b'k'; 8_000];
    send(
        &producer,
        &OutRecord {
            topic: kafka.topics.ingest(),
            key: Some(key.clone()),
            partition: Some(0),
            payload: big.clone(),
            headers: vec![("x-junk".into(), "j".repeat(1_200))],
        },
    )
    .await?;
    send(
        &producer,
        &OutRecord {
            topic: kafka.topics.ingest(),
            key: Some(b"k".to_vec()),
            partition: Some(0),
            payload: br#"{"client_id":"c","to":"+447911123456","from":"SHOP","body":"behind the big one"}"#
                .to_vec(),
            headers: vec![("content-type".into(), "application/json".into())],
        },
    )
    .await?;

    let events: Vec<Event> =
        read_records(&kafka, &kafka.topics.events(), 1, Duration::from_secs(60)).await?;
    assert!(
        matches!(&events[0].payload, EventPayload::Accepted(a) if a.body == "behind the big one"),
        "{events:?}"
    );
    let dls: Vec<DeadLetter> = read_records(
        &kafka,
        &kafka.topics.dead_letter(),
        1,
        Duration::from_secs(30),
    )
    .await?;
    let dl = &dls[0];
    let payload = dl.payload.as_deref().unwrap_or_default();
    assert!(
        payload.len() <= smsgw_kafka::DEAD_LETTER_PAYLOAD_MAX,
        "{}",
        payload.len()
    );
    assert_eq!(payload, &big[..payload.len()], "a prefix of the original");
    assert!(dl
        .key
        .as_ref()
        .is_some_and(|k| k.len() <= smsgw_kafka::DEAD_LETTER_FIELD_MAX));
    assert_eq!(dl.headers["smsgw-dl-payload-bytes"], "985000");
    assert_eq!(dl.headers["smsgw-dl-key-bytes"], "8000");
    use sha2::Digest;
    assert_eq!(
        dl.headers["smsgw-dl-payload-sha256"],
        hex::encode(sha2::Sha256::digest(&big))
    );
    assert!(dl.headers["x-junk"].len() <= smsgw_kafka::DEAD_LETTER_FIELD_MAX);
    assert!(!svc.is_finished(), "ingest is still running");
    let _ = stop.send(());
    svc.await??;
    Ok(())
}
