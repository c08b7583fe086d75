//! A bounded shutdown (issue 17): SIGTERM with a backlog behind a slow, rate-limited
//! carrier (the npm `smpp` SMSC answering 1.5 s late, the carrier limited to 1 msg/s)
//! stops intake at once, gives up what has not left, records what has, unbinds once the
//! submits on the wire are answered, and exits; the next dispatcher sends the rest, and
//! nothing twice.

use smsgw_codec::AvroRecord;
use smsgw_e2e::solo::{dispatcher, preload, submits};
use smsgw_e2e::{carrier_config, Peer, PeerKind};
use smsgw_testkit::{eventually, stopper, Broker};
use std::time::Duration;

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
    // Drained, then unbound: each bind said unbind, after the SMSC had answered the last
    // submit (1.5 s after it received it), not before.
    let last = sent.iter().map(|s| s.0).fold(0.0, f64::max);
    let unbinds: Vec<f64> = peer
        .of("unbind")?
        .iter()
        .filter_map(|u| u["at"].as_f64())
        .collect();
    let binds = peer.of("bind")?.iter().filter(|b| b["ok"] == true).count();
    assert_eq!(unbinds.len(), binds, "every bind unbound at shutdown");
    for u in &unbinds {
        assert!(
            *u >= last + 1.4,
            "unbound {:.2} s after the last submit, before its answer",
            u - last
        );
    }

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
