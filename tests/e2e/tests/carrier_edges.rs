//! Documented carrier behaviours of the dispatcher, each against the npm `smpp` SMSC (or
//! no SMSC at all) and a real broker, each asserting what the carrier saw and what the
//! event log recorded (issue 17):
//! - `retry_later` (0x14, ESME_RMSGQFUL): the same submit goes again after
//!   `retry_later_ms`, and the message is submitted once accepted;
//! - `response_timeout_ms`: a submit with no answer in time ends ambiguous (the carrier
//!   may have it), and the answer that comes later changes nothing;
//! - `unbound_grace_ms`: work for a carrier that cannot bind is given back, retryable and
//!   not ambiguous (nothing left), once the grace has passed, so the router tries another;
//! - a multi-part message whose second part is refused: the failure is ambiguous (the
//!   recipient may see part 1), names the part, and the third part is never sent;
//! - `max_rate` is one budget for all of a carrier's binds, not one per bind.

use smsgw_codec::AvroRecord;
use smsgw_domain::{Event, EventPayload};
use smsgw_e2e::solo::{dispatcher, submits, work};
use smsgw_e2e::{carrier_config, Peer, PeerKind};
use smsgw_kafka::{KafkaConfig, OutRecord, Producer};
use smsgw_testkit::{free_port, read_to_end, stopper, Broker};
use std::time::{Duration, Instant};

/// Writes these requests to carrier `name`'s dispatch topic.
async fn queue(
    kafka: &KafkaConfig,
    name: &str,
    work: &[smsgw_codec::DispatchRequested],
) -> anyhow::Result<()> {
    let topic = kafka.topics.dispatch(name);
    let records = work
        .iter()
        .map(|w| OutRecord::avro(&topic, &w.message_id, w))
        .collect::<Result<Vec<_>, _>>()?;
    smsgw_kafka::send_all(&Producer::new(kafka)?, &records).await?;
    Ok(())
}

/// The event log's records once it holds `n`.
async fn outcomes(kafka: &KafkaConfig, n: usize) -> anyhow::Result<Vec<Event>> {
    smsgw_testkit::read_raw(kafka, &kafka.topics.events(), n, Duration::from_secs(60))
        .await?
        .into_iter()
        .map(|(_, v)| Ok(Event::decode(&v.unwrap_or_default())?))
        .collect()
}

/// A broker with carrier c's topics, and the npm SMSC with `rules`.
async fn broker_and_peer(rules: serde_json::Value) -> anyhow::Result<(Broker, Peer, KafkaConfig)> {
    let broker = Broker::start()?;
    let peer = Peer::start(PeerKind::Npm, 0, rules).await?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["c"]).await?;
    Ok((broker, peer, kafka))
}

/// Runs a dispatcher with `config` until the event log holds `n` records, then stops it:
/// the records, and how long they took to come.
async fn dispatch_until(
    kafka: &KafkaConfig,
    config: smsgw_dispatcher::Config,
    n: usize,
) -> anyhow::Result<(Vec<Event>, Duration)> {
    let (stop, sd) = stopper();
    let t0 = Instant::now();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    let events = outcomes(kafka, n).await;
    let took = t0.elapsed();
    let _ = stop.send(());
    svc.await??;
    Ok((events?, took))
}

fn of<'a>(events: &'a [Event], id: &str) -> Vec<&'a EventPayload> {
    events
        .iter()
        .filter(|e| e.message_id == id)
        .map(|e| &e.payload)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_later_sends_the_same_submit_again_after_its_delay() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    const P: &str = "4475101";
    let (_broker, peer, kafka) =
        broker_and_peer(serde_json::json!([{"prefix": P, "queue_full_first": 2}])).await?;
    queue(&kafka, "c", &[work("c", "m1", &format!("+{P}00001"))]).await?;
    let mut carrier = carrier_config("c", &peer.url);
    carrier.retry_later_ms = 800;
    let (events, _) = dispatch_until(&kafka, dispatcher(&kafka, carrier)?, 1).await?;
    assert!(
        matches!(of(&events, "m1")[..], [EventPayload::Submitted(_)]),
        "{events:?}"
    );
    let seen = submits(&peer, P)?;
    let statuses: Vec<u64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(statuses, [0x14, 0x14, 0], "queue full twice, then accepted");
    for pair in seen.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            (0.75..3.0).contains(&gap),
            "resent {gap:.3} s later, retry_later_ms is 0.8 s"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_unanswered_in_time_is_ambiguous_and_its_late_answer_changes_nothing(
) -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    const SLOW: &str = "4475102";
    const FAST: &str = "4475103";
    let (_broker, peer, kafka) =
        broker_and_peer(serde_json::json!([{"prefix": SLOW, "hold_ms": 2000}])).await?;
    let mut carrier = carrier_config("c", &peer.url);
    carrier.response_timeout_ms = 500;
    carrier.binds = 1;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(dispatcher(&kafka, carrier)?, sd));
    queue(&kafka, "c", &[work("c", "slow", &format!("+{SLOW}00001"))]).await?;
    let first = outcomes(&kafka, 1).await;
    // The bind still works after the timeout.
    queue(&kafka, "c", &[work("c", "fast", &format!("+{FAST}00001"))]).await?;
    let both = outcomes(&kafka, 2).await;
    // Past the moment the SMSC answered the slow submit (2 s after it had it).
    let answered_by = submits(&peer, SLOW)?.first().map(|s| s.0).unwrap_or(0.0) + 2.5;
    while (smsgw_kafka::now_ms() as f64) / 1000.0 < answered_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = read_to_end(&kafka, &kafka.topics.events(), Duration::from_secs(30)).await;
    let _ = stop.send(());
    svc.await??;
    let (first, both, all) = (first?, both?, all?);
    match of(&first, "slow")[..] {
        [EventPayload::SubmitFailed(f)] => {
            assert!(f.ambiguous && f.retryable, "{f:?}");
            assert_eq!(f.command_status, None, "{f:?}");
            assert!(f.reason.contains("outcome unknown"), "{f:?}");
        }
        ref other => panic!("slow: {other:?}"),
    }
    assert!(
        matches!(of(&both, "fast")[..], [EventPayload::Submitted(_)]),
        "{both:?}"
    );
    assert_eq!(
        all.len(),
        2,
        "the late answer was recorded: {:?}",
        all.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_for_a_carrier_that_cannot_bind_is_given_back_after_the_grace() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["c"]).await?;
    queue(&kafka, "c", &[work("c", "m1", "+447510400001")]).await?;
    // Nothing listens there.
    let mut carrier = carrier_config("c", &format!("smpp://127.0.0.1:{}", free_port()));
    carrier.unbound_grace_ms = 3_000;
    let (events, took) = dispatch_until(&kafka, dispatcher(&kafka, carrier)?, 1).await?;
    match of(&events, "m1")[..] {
        [EventPayload::SubmitFailed(f)] => {
            assert!(f.retryable && !f.ambiguous, "{f:?}");
            assert!(f.reason.contains("not bound within 3000 ms"), "{f:?}");
            assert_eq!(f.carriers_tried, ["c"], "{f:?}");
        }
        ref other => panic!("{other:?}"),
    }
    assert!(
        took >= Duration::from_secs(3),
        "given back after {took:?}, before the grace"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_part_message_refused_at_part_two_fails_ambiguous_and_stops() -> anyhow::Result<()>
{
    smsgw_testkit::init_logs();
    const P: &str = "4475105";
    let (_broker, peer, kafka) =
        broker_and_peer(serde_json::json!([{"prefix": P, "reject_part": 2}])).await?;
    let mut long = work("c", "m1", &format!("+{P}00001"));
    long.body = "abcdefghij".repeat(40); // 400 GSM characters: 3 parts of 153
    long.segments = 3;
    queue(&kafka, "c", &[long]).await?;
    let carrier = carrier_config("c", &peer.url);
    let (events, _) = dispatch_until(&kafka, dispatcher(&kafka, carrier)?, 1).await?;
    match of(&events, "m1")[..] {
        [EventPayload::SubmitFailed(f)] => {
            assert!(f.ambiguous, "part 1 reached the carrier: {f:?}");
            assert_eq!(f.command_status, Some(0x45), "{f:?}");
            assert!(f.reason.starts_with("part 2 of 3"), "{f:?}");
        }
        ref other => panic!("{other:?}"),
    }
    let parts: Vec<(u64, u64)> = peer
        .of("submit")?
        .iter()
        .map(|s| {
            (
                s["concat"][2].as_u64().unwrap_or(0),
                s["status"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(parts, [(1, 0), (2, 0x45)], "part 3 must not be sent");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_is_one_budget_for_all_of_a_carriers_binds() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    const P: &str = "4475106";
    const N: usize = 100;
    let (_broker, peer, kafka) = broker_and_peer(serde_json::json!([])).await?;
    let all: Vec<_> = (0..N)
        .map(|i| work("c", &format!("m{i}"), &format!("+{P}{i:05}")))
        .collect();
    queue(&kafka, "c", &all).await?;
    let mut carrier = carrier_config("c", &peer.url);
    carrier.binds = 3;
    carrier.window = 10;
    carrier.max_rate = Some(20.0);
    dispatch_until(&kafka, dispatcher(&kafka, carrier)?, N).await?;
    let seen = submits(&peer, P)?;
    assert_eq!(seen.len(), N);
    let binds = peer.of("bind")?.iter().filter(|b| b["ok"] == true).count();
    assert_eq!(binds, 3, "three binds");
    let conns: std::collections::HashSet<u64> = peer
        .of("submit")?
        .iter()
        .filter_map(|s| s["conn"].as_u64())
        .collect();
    // One second's burst (20), then 20/s: the other 80 take 4 s. Three budgets of 20/s
    // would take 1.3 s.
    let span = seen.last().unwrap().0 - seen.first().unwrap().0;
    println!("{N} submits over {span:.2} s on {} binds", conns.len());
    assert!(
        (3.6..8.0).contains(&span),
        "{N} submits at 20/s after a burst of 20 took {span:.2} s"
    );
    Ok(())
}

/// The gauge `smsgw_dispatcher_inbound_in_flight_pdus` for carrier c.
async fn in_flight(metrics: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(metrics).await?.text().await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("smsgw_dispatcher_inbound_in_flight_pdus{carrier=\"c\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0))
}

/// A flood of MO from the carrier while the broker is down (issue 16): at most
/// `inbound_in_flight` PDUs of the bind are being stored at once, the rest wait in TCP
/// (not in tasks or queues), and once the broker is back every one is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_inbound_pdus_is_bounded_and_nothing_is_lost() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    const N: usize = 300;
    let (mut broker, peer, kafka) = broker_and_peer(serde_json::json!([])).await?;
    let mut carrier = carrier_config("c", &peer.url);
    carrier.inbound_in_flight = 8;
    carrier.binds = 1;
    let config = dispatcher(&kafka, carrier)?;
    let metrics = format!("http://{}/metrics", config.admin_listen);
    let ready = format!("http://{}/readyz", config.admin_listen);
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    // Started (its tails caught up, its work assigned, its dispatch loop running: one
    // message submitted) and bound. A broker that dies during the dispatcher's start-up
    // makes it exit, for its supervisor to restart; that is not what this test is about.
    queue(&kafka, "c", &[work("c", "w1", "+447511400001")]).await?;
    smsgw_testkit::eventually("ready", Duration::from_secs(60), || async {
        let r = reqwest::get(&ready).await.ok()?;
        (r.status() == 200 && !submits(&peer, "447511400001").ok()?.is_empty()).then_some(())
    })
    .await?;
    broker.kill9();
    for i in 0..N {
        let sessions = peer
            .send_mo(&format!("+4479114{i:05}"), "SHOP", &format!("flood {i}"))
            .await?;
        anyhow::ensure!(sessions == 1, "MO {i} reached {sessions} sessions");
    }
    let held = smsgw_testkit::eventually("the bound reached", Duration::from_secs(20), || async {
        (in_flight(&metrics).await.ok()? >= 8.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = in_flight(&metrics).await;
    broker.restart()?;
    let stored = smsgw_testkit::eventually("every MO stored", Duration::from_secs(90), || async {
        let n = read_to_end(&kafka, &kafka.topics.inbound(), Duration::from_secs(20))
            .await
            .ok()?
            .len();
        (n >= N).then_some(n)
    })
    .await;
    let _ = stop.send(());
    svc.await??;
    held?;
    assert_eq!(after?, 8.0, "PDUs being stored at once, with {N} sent");
    assert_eq!(stored?, N, "each MO stored once");
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1 (and `smsc.test`) it signed, made with
/// the openssl command line in `dir`: (CA, server key, server certificate).
fn certificates(
    dir: &std::path::Path,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=smsgw test CA",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "smsc.key",
        "-out",
        "smsc.csr",
        "-subj",
        "/CN=smsc.test",
    ])?;
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:smsc.test\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "smsc.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "smsc.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ])?;
    Ok((
        dir.join("ca.pem"),
        dir.join("smsc.key"),
        dir.join("smsc.pem"),
    ))
}

/// `smpps://` (issue 16): against the npm SMSC in its TLS mode, a dispatcher that trusts
/// the carrier's CA binds and submits over TLS; one that does not (web PKI roots only)
/// never binds, and its work is given back after the grace: a certificate is never taken
/// on trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpp_over_tls_binds_only_to_a_verified_server() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    const P: &str = "4475107";
    let dir = tempdir()?;
    let (ca, key, cert) = certificates(&dir)?;
    let broker = Broker::start()?;
    let peer = Peer::start_tls(
        PeerKind::Npm,
        0,
        serde_json::json!([]),
        Some((key.as_path(), cert.as_path())),
    )
    .await?;
    assert!(peer.url.starts_with("smpps://"), "{}", peer.url);
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["c", "u"]).await?;
    queue(&kafka, "c", &[work("c", "m1", &format!("+{P}00001"))]).await?;
    queue(&kafka, "u", &[work("u", "m2", &format!("+{P}00002"))]).await?;
    let mut trusted = carrier_config("c", &peer.url);
    trusted.tls_ca_file = Some(ca.to_string_lossy().into_owned());
    trusted.binds = 1;
    let mut untrusted = carrier_config("u", &peer.url);
    untrusted.unbound_grace_ms = 3_000;
    let mut config = dispatcher(&kafka, trusted)?;
    config.carriers.push(untrusted);
    let (events, _) = dispatch_until(&kafka, config, 2).await?;
    assert!(
        matches!(of(&events, "m1")[..], [EventPayload::Submitted(_)]),
        "{events:?}"
    );
    match of(&events, "m2")[..] {
        [EventPayload::SubmitFailed(f)] => {
            assert!(f.reason.contains("not bound"), "{f:?}")
        }
        ref other => panic!("m2: {other:?}"),
    }
    // The SMSC saw one bind (the trusted one) and one submit, in TLS.
    let binds = peer.of("bind")?.iter().filter(|b| b["ok"] == true).count();
    assert_eq!(binds, 1, "only the verified client bound");
    assert_eq!(submits(&peer, P)?.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("smsgw-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
