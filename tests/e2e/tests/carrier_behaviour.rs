//! The dispatcher against a third-party SMSC (the npm `smpp` package) that throttles, in
//! the two ways real carriers do (issue 17):
//! - a fixed share of submits (`throttle_every: 5`: one in five, whatever our rate, as
//!   per-destination or per-sender limits do): the dispatcher must keep at least half of
//!   its unthrottled throughput, measured against the same SMSC in the same run;
//! - above a rate (`throttle_above: 150` per second): the dispatcher must settle near it
//!   within seconds, neither collapsing (the old limiter halved the rate on every
//!   throttle, down to 1/s) nor hammering the carrier with refused submits.
//!
//!
//! And a bounded shutdown: SIGTERM with a backlog behind a slow, rate-limited carrier
//! stops intake at once, gives up what has not left, records what has, and exits.
//!
//! Throughput is read from the SMSC's own log (the time between its first and last
//! accepted submit of a phase), so broker and startup time do not count. Each phase is a
//! dispatcher of its own for a carrier of its own, its dispatch topic preloaded before
//! it starts. The figures are printed; docs/carriers.md carries one run's.

use smsgw_codec::{AvroRecord, DispatchRequested};
use smsgw_e2e::{carrier_config, Peer, PeerKind};
use smsgw_kafka::{OutRecord, Producer};
use smsgw_testkit::{eventually, free_port, stopper, Broker};
use std::time::Duration;

const PLAIN: &str = "4475001";
const SHARE: &str = "4475002";
const RATE: &str = "4475003";
const RATE_LIMIT: f64 = 150.0;

fn work(carrier: &str, id: &str, to: &str) -> DispatchRequested {
    DispatchRequested {
        message_id: id.into(),
        carrier: carrier.into(),
        attempt: 1,
        carriers_tried: vec![carrier.into()],
        destination: to.into(),
        sender: "SHOP".into(),
        body: "hello".into(),
        encoding: "GSM7".into(),
        segments: 1,
        accepted_at: 0,
        registered_delivery: Some(false),
        expires_at: None,
        schedule_delivery_at: None,
        client_id: None,
    }
}

/// The SMSC's submits to `prefix`: (seconds since the epoch, command status).
fn submits(peer: &Peer, prefix: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    Ok(peer
        .of("submit")?
        .iter()
        .filter(|s| s["dest"].as_str().is_some_and(|d| d.starts_with(prefix)))
        .map(|s| {
            (
                s["at"].as_f64().unwrap_or(0.0),
                s["status"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Preloads `n` messages to `prefix` for carrier `name` on `kafka`'s topics.
async fn preload(
    kafka: &smsgw_kafka::KafkaConfig,
    name: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<()> {
    let topic = kafka.topics.dispatch(name);
    let records = (0..n)
        .map(|i| {
            let id = format!("{name}-{i}");
            OutRecord::avro(&topic, &id, &work(name, &id, &format!("+{prefix}{i:05}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    smsgw_kafka::send_all(&Producer::new(kafka)?, &records).await?;
    Ok(())
}

/// A dispatcher config for `carrier` alone.
fn dispatcher(
    kafka: &smsgw_kafka::KafkaConfig,
    carrier: smsgw_dispatcher::CarrierConfig,
) -> anyhow::Result<smsgw_dispatcher::Config> {
    let mut config = smsgw_dispatcher::Config::new(kafka.clone(), vec![carrier]);
    config.webhook_listen = None;
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    Ok(config)
}

/// Preloads `n` messages to `prefix` for carrier `name`, runs a dispatcher for it until
/// the SMSC accepted all of them, and returns the SMSC's submits of the phase.
async fn phase(
    broker: &Broker,
    peer: &Peer,
    name: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<(f64, u64)>> {
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[name]).await?;
    preload(&kafka, name, prefix, n).await?;

    let mut carrier = carrier_config(name, &peer.url);
    // A submit may be throttled several times in a row while the rate settles; it must
    // not fail over (there is no other carrier here).
    carrier.throttle_retries = 30;
    carrier.registered_delivery = false;
    let config = dispatcher(&kafka, carrier)?;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    let done = eventually(
        &format!("the SMSC accepted all {n} submits of {name}"),
        Duration::from_secs(120),
        || async {
            let s = submits(peer, prefix).ok()?;
            (s.iter().filter(|(_, st)| *st == 0).count() >= n).then_some(s)
        },
    )
    .await;
    let _ = stop.send(());
    svc.await??;
    done
}

/// Accepted submits per second over the phase (first submit to last acceptance).
fn throughput(s: &[(f64, u64)]) -> f64 {
    let first = s.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    let last = s
        .iter()
        .filter(|x| x.1 == 0)
        .map(|x| x.0)
        .fold(0.0, f64::max);
    s.iter().filter(|x| x.1 == 0).count() as f64 / (last - first).max(1e-3)
}

/// Accepted and throttled submits per second of the phase, from its first submit.
fn curve(s: &[(f64, u64)]) -> Vec<(usize, usize)> {
    let first = s.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (at, status) in s {
        let sec = (at - first) as usize;
        if out.len() <= sec {
            out.resize(sec + 1, (0, 0));
        }
        if *status == 0 {
            out[sec].0 += 1;
        } else {
            out[sec].1 += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_keeps_throughput_and_meets_a_carrier_rate() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let broker = Broker::start()?;
    let rules = serde_json::json!([
        {"prefix": SHARE, "throttle_every": 5},
        {"prefix": RATE, "throttle_above": RATE_LIMIT},
    ]);
    let peer = Peer::start(PeerKind::Npm, 0, rules).await?;

    // Long enough (several seconds each) that the limiter's first probe of a carrier
    // that throttles a share (two cuts, then undone) is a small part of the phase.
    let plain = phase(&broker, &peer, "plain", PLAIN, 1_500).await?;
    let share = phase(&broker, &peer, "share", SHARE, 1_500).await?;
    let rate = phase(&broker, &peer, "rate", RATE, 1_500).await?;

    let (t_plain, t_share) = (throughput(&plain), throughput(&share));
    let throttled = share.iter().filter(|x| x.1 == 0x58).count();
    println!(
        "unthrottled {t_plain:.0}/s; one in five throttled {t_share:.0}/s ({:.0} %), {throttled} throttles",
        100.0 * t_share / t_plain
    );
    assert!(throttled >= 300, "the SMSC throttled only {throttled}");
    assert!(
        t_share >= 0.5 * t_plain,
        "a carrier throttling one submit in five cost more than half the throughput: {t_share:.0}/s against {t_plain:.0}/s"
    );

    let c = curve(&rate);
    println!("throttled above {RATE_LIMIT}/s, per second (accepted, throttled): {c:?}");
    // From the third second on (the first interval finds the rate, the first second's
    // burst is spent), the dispatcher runs near the carrier's rate and few submits are
    // refused. The last second is partial.
    let settled = &c[2..c.len() - 1];
    anyhow::ensure!(!settled.is_empty(), "the phase was too short: {c:?}");
    let accepted: usize = settled.iter().map(|x| x.0).sum();
    let refused: usize = settled.iter().map(|x| x.1).sum();
    let mean = accepted as f64 / settled.len() as f64;
    assert!(
        mean >= 0.7 * RATE_LIMIT,
        "settled at {mean:.0}/s against a carrier taking {RATE_LIMIT}/s: {c:?}"
    );
    assert!(
        (refused as f64) <= 0.25 * (accepted + refused) as f64,
        "{refused} of {} submits refused after settling: {c:?}",
        accepted + refused
    );
    Ok(())
}

const SLOW: &str = "4475004";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_backlog_gives_up_unsent_work_records_the_rest_and_exits(
) -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let broker = Broker::start()?;
    // The SMSC answers each submit 1.5 s late; the carrier allows 1 submit/s; 100
    // messages wait. At SIGTERM one or two submits are on the wire and the rest of the
    // window waits for the rate limit.
    let peer = Peer::start(
        PeerKind::Npm,
        0,
        serde_json::json!([{"prefix": SLOW, "hold_ms": 1500}]),
    )
    .await?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &["slow"]).await?;
    const N: usize = 100;
    preload(&kafka, "slow", SLOW, N).await?;
    let mut carrier = carrier_config("slow", &peer.url);
    carrier.max_rate = Some(1.0);
    carrier.registered_delivery = false;
    let mut config = dispatcher(&kafka, carrier.clone())?;
    config.drain_timeout_ms = 5_000;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(config, sd));
    eventually(
        "two submits on the wire",
        Duration::from_secs(60),
        || async { (submits(&peer, SLOW).ok()?.len() >= 2).then_some(()) },
    )
    .await?;
    let at_stop = submits(&peer, SLOW)?.len();
    let t0 = std::time::Instant::now();
    let _ = stop.send(());
    svc.await??;
    let took = t0.elapsed();
    // The old drain waited for the whole window to pass the 1/s limit (about 10 s).
    assert!(
        took < Duration::from_secs(5),
        "the dispatcher took {took:?} to stop"
    );
    let sent = submits(&peer, SLOW)?;
    assert!(
        sent.len() <= at_stop + 1,
        "{} submits after SIGTERM",
        sent.len() - at_stop
    );
    // Every submit the SMSC accepted has its outcome recorded.
    let recorded = |events: &[(String, Option<Vec<u8>>)]| {
        events
            .iter()
            .filter_map(|(_, v)| smsgw_domain::Event::decode(v.as_deref()?).ok())
            .filter(|e| matches!(e.payload, smsgw_domain::EventPayload::Submitted(_)))
            .count()
    };
    let events = smsgw_testkit::read_raw(
        &kafka,
        &kafka.topics.events(),
        sent.len(),
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(
        recorded(&events),
        sent.len(),
        "outcomes recorded for what the SMSC accepted"
    );

    // The next owner sends the rest, and nothing twice.
    carrier.max_rate = None;
    carrier.window = 50;
    let (stop, sd) = stopper();
    let svc = tokio::spawn(smsgw_dispatcher::run(dispatcher(&kafka, carrier)?, sd));
    let all = eventually(
        "every message submitted",
        Duration::from_secs(60),
        || async {
            let s = submits(&peer, SLOW).ok()?;
            (s.iter().filter(|x| x.1 == 0).count() >= N).then_some(())
        },
    )
    .await;
    let _ = stop.send(());
    svc.await??;
    all?;
    let dests: Vec<String> = peer
        .of("submit")?
        .iter()
        .filter_map(|s| s["dest"].as_str().map(str::to_string))
        .collect();
    let unique: std::collections::HashSet<&String> = dests.iter().collect();
    assert_eq!(
        (dests.len(), unique.len()),
        (N, N),
        "each message submitted exactly once across the shutdown"
    );
    Ok(())
}
