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
//! Throughput is read from the SMSC's own log (the time between its first and last
//! accepted submit of a phase), so broker and startup time do not count. Each phase is a
//! dispatcher of its own for a carrier of its own, its dispatch topic preloaded before
//! it starts. The figures are printed; docs/carriers.md carries one run's.

use smsgw_e2e::solo::{dispatcher, preload, submits};
use smsgw_e2e::{carrier_config, Peer, PeerKind};
use smsgw_testkit::{eventually, stopper, Broker};
use std::time::Duration;

const PLAIN: &str = "4475001";
const SHARE: &str = "4475002";
const RATE: &str = "4475003";
const RATE_LIMIT: f64 = 150.0;

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
