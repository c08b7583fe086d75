//! router against a real Tansu broker: an accepted message becomes a carrier choice and
//! dispatch work; an opted-out recipient is blocked; a down carrier is skipped.

use smsgw_codec::{AvroRecord, CarrierStatusChanged, DispatchRequested, OptOutChanged};
use smsgw_domain::{Command, Event, EventPayload, Message, MessageAccepted};
use smsgw_router::{Config, Route};
use smsgw_testkit::{free_port, produce, read_records, stopper, Broker};
use std::time::Duration;

/// A router routing `+44` over `carriers`, its admin endpoint on a free port.
fn uk_config(kafka: &smsgw_kafka::KafkaConfig, carriers: &[&str]) -> anyhow::Result<Config> {
    let mut c = Config::new(
        kafka.clone(),
        vec![Route {
            prefix: "+44".into(),
            carriers: carriers.iter().map(|c| c.to_string()).collect(),
        }],
    );
    c.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    Ok(c)
}

fn accepted(id: &str, to: &str) -> Event {
    let a = MessageAccepted {
        client_id: "c".into(),
        idempotency_key: None,
        client_ref: None,
        destination: to.into(),
        sender: "SHOP".into(),
        body: "hi".into(),
        encoding: "GSM7".into(),
        segments: 1,
        registered_delivery: None,
        expires_at: None,
        schedule_delivery_at: None,
        callback_url: None,
        message_type: None,
        send_at: None,
    };
    Message::new(id)
        .decide(Command::Accept(a), smsgw_kafka::now_ms())
        .unwrap()
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_blocks_and_skips_down_carriers() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["a", "b"]).await?;
    let status = CarrierStatusChanged {
        carrier: "a".into(),
        up: false,
        detail: "test".into(),
        changed_at: 1,
        instance: None,
    };
    produce(&kafka, &kafka.topics.carrier_status(), "a", &status).await?;
    let optout = OptOutChanged {
        scope: "global".into(),
        number: "+447911100002".into(),
        opted_out: true,
        source: "test".into(),
        changed_at: 1,
        actor: None,
        reference: None,
    };
    produce(&kafka, &kafka.topics.optout(), &optout.key(), &optout).await?;

    let config = uk_config(&kafka, &["a", "b"])?;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_router::run(config, sd));
    let events = kafka.topics.events();
    produce(&kafka, &events, "m1", &accepted("m1", "+447911100001")).await?;
    produce(&kafka, &events, "m2", &accepted("m2", "+447911100002")).await?;

    let work: Vec<DispatchRequested> = read_records(
        &kafka,
        &kafka.topics.dispatch("b"),
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!((work[0].message_id.as_str(), work[0].attempt), ("m1", 1));
    let out: Vec<Event> = read_records(&kafka, &events, 4, Duration::from_secs(30)).await?;
    let of = |id: &str| {
        out.iter()
            .filter(|e| e.message_id == id)
            .map(|e| e.payload.kind())
            .collect::<Vec<_>>()
    };
    assert_eq!(of("m1"), ["MessageAccepted", "CarrierSelected"]);
    assert_eq!(of("m2"), ["MessageAccepted", "MessageBlocked"]);
    assert!(out
        .iter()
        .any(|e| matches!(&e.payload, EventPayload::CarrierSelected(c) if c.carrier == "b")));
    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// A message held until `send_at` survives a router restart (the schedule is rebuilt
/// from its topic) and is still routed on time; a held message that is cancelled ends as
/// cancelled at once, without waiting for its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_survive_a_restart_and_go_out_on_time() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["a"]).await?;
    let config = || uk_config(&kafka, &["a"]);
    let events = kafka.topics.events();
    let send_at = smsgw_kafka::now_ms() + 8_000;
    let mut due = accepted("due", "+447911100001");
    let mut later = accepted("later", "+447911100002");
    if let (EventPayload::Accepted(a), EventPayload::Accepted(b)) =
        (&mut due.payload, &mut later.payload)
    {
        a.send_at = Some(send_at);
        b.send_at = Some(send_at + 3_600_000);
    }

    // First life: both are held, nothing is routed.
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_router::run(config()?, sd));
    produce(&kafka, &events, "due", &due).await?;
    produce(&kafka, &events, "later", &later).await?;
    let held: Vec<Event> =
        read_records(&kafka, &kafka.topics.schedule(), 2, Duration::from_secs(30)).await?;
    assert_eq!(held.len(), 2);
    let _ = stop.send(());
    svc.await??;
    assert!(
        smsgw_kafka::now_ms() < send_at,
        "the first life must end before the message is due"
    );
    let so_far: Vec<Event> = read_records(&kafka, &events, 2, Duration::from_secs(5)).await?;
    assert!(
        so_far.iter().all(|e| e.payload.kind() == "MessageAccepted"),
        "{so_far:?}"
    );

    // Second life: the schedule is rebuilt from its topic.
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_router::run(config()?, sd));
    let cancel = smsgw_codec::CancelRequested {
        message_id: "later".into(),
        actor: Some("test".into()),
        requested_at: smsgw_kafka::now_ms(),
    };
    produce(&kafka, &kafka.topics.cancellations(), "later", &cancel).await?;
    let work: Vec<DispatchRequested> = read_records(
        &kafka,
        &kafka.topics.dispatch("a"),
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(work[0].message_id, "due");
    let out: Vec<Event> = read_records(&kafka, &events, 4, Duration::from_secs(30)).await?;
    let selected = out
        .iter()
        .find(|e| e.payload.kind() == "CarrierSelected")
        .expect("routed");
    let late = selected.occurred_at_ms - send_at;
    println!("routed {late} ms after send_at");
    assert!((0..2_000).contains(&late), "routed {late} ms after send_at");
    let cancelled = out
        .iter()
        .find(|e| e.message_id == "later" && e.payload.kind() == "MessageCancelled");
    assert!(cancelled.is_some(), "{out:?}");
    // At once: within seconds of the request, not when the message would have been due
    // (an hour on), nor when the first message was released.
    let took = cancelled.unwrap().occurred_at_ms - cancel.requested_at;
    assert!(
        (0..5_000).contains(&took),
        "cancelled {took} ms after the request"
    );
    // Both were released: the schedule topic ends with a tombstone for each.
    let mut left = std::collections::HashMap::new();
    for r in smsgw_testkit::read_raw(&kafka, &kafka.topics.schedule(), 4, Duration::from_secs(10))
        .await?
    {
        left.insert(r.0, r.1.is_some());
    }
    assert_eq!(left.get("due"), Some(&false));
    assert_eq!(left.get("later"), Some(&false));
    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// Two routers sharing the event log by instance number (static assignment): every
/// router reads the whole schedule topic, but each held message is released by the
/// router that owns its event-log partition, so each goes to dispatch exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_release_each_held_message_exactly_once() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["a"]).await?;
    let config = |instance: u32| -> anyhow::Result<Config> {
        let mut k = kafka.clone();
        k.assignment = smsgw_kafka::Assignment::Static;
        (k.instances, k.instance) = (2, instance);
        uk_config(&k, &["a"])
    };
    let (stop0, sd0) = stopper();
    let (stop1, sd1) = stopper();
    let r0 = tokio::spawn(smsgw_router::run(config(0)?, sd0));
    let r1 = tokio::spawn(smsgw_router::run(config(1)?, sd1));
    let send_at = smsgw_kafka::now_ms() + 4_000;
    let ids: Vec<String> = (0..12).map(|i| format!("held-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut e = accepted(id, &format!("+4479111000{i:02}"));
        if let EventPayload::Accepted(a) = &mut e.payload {
            a.send_at = Some(send_at);
        }
        produce(&kafka, &kafka.topics.events(), id, &e).await?;
    }
    // Every message is released; then, well after send_at, count what was dispatched.
    let _: Vec<DispatchRequested> = read_records(
        &kafka,
        &kafka.topics.dispatch("a"),
        ids.len(),
        Duration::from_secs(30),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let work = smsgw_testkit::read_all(&kafka, &kafka.topics.dispatch("a"), Duration::from_secs(3))
        .await?;
    let mut per_message = std::collections::BTreeMap::<String, usize>::new();
    for (key, _) in &work {
        *per_message.entry(key.clone()).or_default() += 1;
    }
    println!("dispatch records per held message: {per_message:?}");
    assert_eq!(
        per_message.len(),
        ids.len(),
        "every held message was released"
    );
    assert!(
        per_message.values().all(|&n| n == 1),
        "a held message was released by both routers: {per_message:?}"
    );
    let _ = stop0.send(());
    let _ = stop1.send(());
    r0.await??;
    r1.await??;
    Ok(())
}

/// A router for `+44` over carriers a (cheaper, so chosen first without evidence) and b.
fn learning_config(kafka: &smsgw_kafka::KafkaConfig) -> anyhow::Result<Config> {
    let mut c = uk_config(kafka, &["a", "b"])?;
    c.scoring.exploration = 0.0;
    for (name, price) in [("a", 0.005), ("b", 0.01)] {
        c.scoring.carriers.insert(
            name.into(),
            smsgw_router::scoring::CarrierProfile {
                price_per_segment: price,
                ..Default::default()
            },
        );
    }
    Ok(c)
}

/// The carrier the router chose for `id`'s first attempt, read from the event log.
async fn first_choice(follow: &smsgw_testkit::Follower, id: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let Some((_, Some(v))) = follow.next(Duration::from_secs(1)).await? else {
            continue;
        };
        let e = Event::decode(&v)?;
        if let (true, EventPayload::CarrierSelected(c)) = (e.message_id == id, &e.payload) {
            return Ok(c.carrier.clone());
        }
    }
    anyhow::bail!("{id} was not routed within 30 s")
}

/// Accepts `n` messages to numbers starting `prefix` and plays dispatcher and carrier for
/// them: each attempt routed to a is submitted and fails by receipt; each routed to b is
/// submitted and delivered. Returns once every message is delivered.
async fn teach_that_a_fails(
    kafka: &smsgw_kafka::KafkaConfig,
    follow: &smsgw_testkit::Follower,
    n: usize,
    prefix: &str,
) -> anyhow::Result<()> {
    let events = kafka.topics.events();
    let ids: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        produce(
            kafka,
            &events,
            id,
            &accepted(id, &format!("{prefix}{i:02}")),
        )
        .await?;
    }
    let mut open: std::collections::HashSet<&String> = ids.iter().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !open.is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} messages not delivered",
            open.len()
        );
        let Some((_, Some(v))) = follow.next(Duration::from_secs(1)).await? else {
            continue;
        };
        let e = Event::decode(&v)?;
        let EventPayload::CarrierSelected(c) = &e.payload else {
            continue;
        };
        let id = e.message_id.as_str();
        let now = smsgw_kafka::now_ms();
        let submitted = Event::new(
            id,
            EventPayload::Submitted(smsgw_domain::MessageSubmitted {
                carrier: c.carrier.clone(),
                attempt: c.attempt,
                carrier_message_id: format!("{id}-{}", c.attempt),
                segments: 1,
                possible_duplicate: false,
                later_part_ids: vec![],
            }),
            c.attempt,
            now,
        );
        produce(kafka, &events, id, &submitted).await?;
        let end = if c.carrier == "a" {
            EventPayload::DeliveryFailed(smsgw_domain::DeliveryFailed {
                carrier: "a".into(),
                attempt: c.attempt,
                reason: "carrier receipt UNDELIV".into(),
                stat: Some("UNDELIV".into()),
                error_code: Some("001".into()),
                timed_out: false,
                carriers_tried: vec!["a".into()],
            })
        } else {
            open.remove(&e.message_id);
            EventPayload::Delivered(smsgw_domain::MessageDelivered {
                carrier: c.carrier.clone(),
                carrier_message_id: format!("{id}-{}", c.attempt),
                stat: "DELIVRD".into(),
            })
        };
        produce(
            kafka,
            &events,
            id,
            &Event::new(id, end, c.attempt, now + 50),
        )
        .await?;
    }
    Ok(())
}

/// What a router learned is not lost with the process: a restarted router (its offsets
/// committed past every outcome, so it reads none of them live) re-learns them from the
/// event log at startup and keeps traffic off the carrier that failed everything. The
/// first router's own first choice shows the evidence-free preference (a).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_router_relearns_outcomes_from_the_log() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["a", "b"]).await?;
    let events = kafka.topics.events();
    let follow = smsgw_testkit::Follower::new(&kafka, &events)?;
    let config = learning_config(&kafka)?;
    let group = config.group_id.clone();
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_router::run(config, sd));
    teach_that_a_fails(&kafka, &follow, 20, "+4479112000").await?;
    // Every outcome consumed (and committed) by the first router.
    smsgw_testkit::eventually(
        "the first router caught up",
        Duration::from_secs(60),
        || async { (smsgw_testkit::group_lag(&kafka, &group, &events).ok()? == 0).then_some(()) },
    )
    .await?;
    let _ = stop.send(());
    svc.await??;
    let history = smsgw_testkit::read_to_end(&kafka, &events, Duration::from_secs(30)).await?;
    let first = history
        .iter()
        .filter_map(|(_, v)| Event::decode(v.as_deref()?).ok())
        .find_map(|e| match e.payload {
            EventPayload::CarrierSelected(c) if e.message_id == "m0" => Some(c.carrier),
            _ => None,
        });
    assert_eq!(first.as_deref(), Some("a"), "without evidence a is chosen");

    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_router::run(learning_config(&kafka)?, sd));
    produce(
        &kafka,
        &events,
        "after",
        &accepted("after", "+447911200099"),
    )
    .await?;
    let chosen = first_choice(&follow, "after").await;
    let _ = stop.send(());
    svc.await??;
    assert_eq!(chosen?, "b", "the restarted router forgot that a failed");
    Ok(())
}

/// The score store is optional at run time: with ScyllaDB unreachable the router routes
/// from its own evidence, and counts the failed syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_score_store_down_the_router_scores_from_local_evidence() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["a", "b"]).await?;
    let events = kafka.topics.events();
    let follow = smsgw_testkit::Follower::new(&kafka, &events)?;
    let mut config = learning_config(&kafka)?;
    // Nothing listens there.
    config.scoring.store = smsgw_router::store::StoreConfig::Scylla {
        nodes: vec![format!("127.0.0.1:{}", free_port())],
        keyspace: "smsgw".into(),
        username: None,
        password: None,
        writer: Some("r1".into()),
        sync_ms: 200,
        create_schema: true,
    };
    let admin = format!("http://{}/metrics", config.admin_listen);
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_router::run(config, sd));
    let learned = teach_that_a_fails(&kafka, &follow, 12, "+4479113000").await;
    produce(
        &kafka,
        &events,
        "after",
        &accepted("after", "+447911300099"),
    )
    .await?;
    let chosen = first_choice(&follow, "after").await;
    let metrics = reqwest::get(&admin).await?.text().await?;
    let _ = stop.send(());
    svc.await??;
    learned?;
    assert_eq!(chosen?, "b", "local evidence steers traffic off a");
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("smsgw_router_score_syncs_total") && l.contains("error"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "failed syncs counted:\n{metrics}");
    Ok(())
}

/// A failed attempt of a message the router no longer remembers (evicted at
/// `pending_capacity`, here 2) is re-routed to the next carrier: its context is read
/// back from the event log, instead of the message ending "context lost".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_message_is_re_routed_from_its_context_in_the_log() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["a", "b"]).await?;
    let mut config = uk_config(&kafka, &["a", "b"])?;
    config.pending_capacity = 2;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_router::run(config, sd));
    let events = kafka.topics.events();
    // Given m1 routed, then three more messages that push it out of memory,
    for i in 1..=4 {
        let id = format!("m{i}");
        produce(
            &kafka,
            &events,
            &id,
            &accepted(&id, &format!("+44791110000{i}")),
        )
        .await?;
    }
    let log = |kafka: smsgw_kafka::KafkaConfig, events: String| async move {
        smsgw_testkit::read_to_end(&kafka, &events, Duration::from_secs(10))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, v)| Event::decode(&v?).ok())
            .collect::<Vec<Event>>()
    };
    let routed = smsgw_testkit::eventually("four messages routed", Duration::from_secs(30), || {
        let (kafka, events) = (kafka.clone(), events.clone());
        async move {
            let evs = log(kafka, events).await;
            let chosen: Vec<(String, String)> = evs
                .iter()
                .filter_map(|e| match &e.payload {
                    EventPayload::CarrierSelected(c) => {
                        Some((e.message_id.clone(), c.carrier.clone()))
                    }
                    _ => None,
                })
                .collect();
            (chosen.len() == 4).then_some(chosen)
        }
    })
    .await?;
    let first = routed.iter().find(|(id, _)| id == "m1").unwrap().1.clone();
    // when m1's receipt says it failed on that carrier,
    let failed = Event::new(
        "m1",
        EventPayload::DeliveryFailed(smsgw_domain::DeliveryFailed {
            carrier: first.clone(),
            attempt: 1,
            reason: "UNDELIV".into(),
            stat: Some("UNDELIV".into()),
            error_code: None,
            timed_out: false,
            carriers_tried: vec![first.clone()],
        }),
        1,
        smsgw_kafka::now_ms(),
    );
    produce(&kafka, &events, "m1", &failed).await?;
    // then it goes to the other carrier as attempt 2, and does not end.
    let next = smsgw_testkit::eventually("m1 decided again", Duration::from_secs(30), || {
        let (kafka, events) = (kafka.clone(), events.clone());
        async move {
            log(kafka, events)
                .await
                .into_iter()
                .find_map(|e| match &e.payload {
                    EventPayload::CarrierSelected(c) if e.message_id == "m1" && c.attempt == 2 => {
                        Some(c.carrier.clone())
                    }
                    EventPayload::Undeliverable(u) if e.message_id == "m1" => {
                        Some(format!("undeliverable: {}", u.reason))
                    }
                    _ => None,
                })
        }
    })
    .await?;
    let other = if first == "a" { "b" } else { "a" };
    assert_eq!(next, other);
    let _ = stop.send(());
    svc.await??;
    Ok(())
}

/// A router killed after its `CarrierSelected` was stored but before its dispatch work
/// was: the next life reads the routing back in its warm-up, reads the uncommitted
/// `MessageAccepted` again, and writes the dispatch work (only that) once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_work_that_died_with_the_last_router_is_written_again() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["a", "b"]).await?;
    let events = kafka.topics.events();
    // Given the log of a dead router: m1 accepted and routed to b, no dispatch work,
    // nothing committed;
    let m1 = accepted("m1", "+447911100001");
    produce(&kafka, &events, "m1", &m1).await?;
    let mut dead = Message::new("m1");
    dead.apply(&m1)?;
    let selected = dead
        .decide(
            Command::Route {
                carrier: "b".into(),
                strategy: "scored".into(),
                explain: Default::default(),
            },
            smsgw_kafka::now_ms(),
        )?
        .remove(0);
    produce(&kafka, &events, "m1", &selected).await?;
    // when a router starts,
    let config = uk_config(&kafka, &["a", "b"])?;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_router::run(config, sd));
    // then m1's attempt 1 is dispatched to b, and no second routing is logged.
    let work: Vec<DispatchRequested> = read_records(
        &kafka,
        &kafka.topics.dispatch("b"),
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!((work[0].message_id.as_str(), work[0].attempt), ("m1", 1));
    let _ = stop.send(());
    svc.await??;
    let log = smsgw_testkit::read_to_end(&kafka, &events, Duration::from_secs(30)).await?;
    assert_eq!(
        log.len(),
        2,
        "only the two events of the dead router's life"
    );
    let nothing_for_a =
        smsgw_testkit::read_to_end(&kafka, &kafka.topics.dispatch("a"), Duration::from_secs(30))
            .await?;
    assert!(nothing_for_a.is_empty());
    Ok(())
}
