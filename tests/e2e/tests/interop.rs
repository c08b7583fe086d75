//! Interop: the whole gateway against two third-party SMPP implementations, the npm
//! `smpp` package and Perl Net::SMPP, each playing the SMSC. One scenario per peer covers
//! bind failure, unicode and GSM 03.38 long messages (decoded by the peer, not by us), a
//! receipt that arrives before its `submit_sm_resp`, a throttling storm, a full window,
//! and a disconnect with the window full.

use serde_json::{json, Value};
use smsgw_e2e::{Gateway, Peer, PeerKind};

const DLR_FIRST: &str = "4474004";
const THROTTLE: &str = "4474005";
const HOLD: &str = "4474006";
const DROP: &str = "4474007";
const WINDOW: usize = 4;
const THROTTLED: usize = 8;
/// Long enough that messages posted together are all waiting while the first are held.
const HOLD_MS: u64 = 1500;

fn msg(to: &str, body: &str) -> Value {
    json!({"to": to, "from": "SHOP", "body": body, "client_id": "interop"})
}

async fn send(gw: &Gateway, to: &str, body: &str) -> anyhow::Result<String> {
    let (code, r) = gw.post(msg(to, body)).await?;
    anyhow::ensure!(code == 202, "POST {to}: {code} {r}");
    Ok(r["id"].as_str().unwrap().to_string())
}

async fn delivered(gw: &Gateway, id: &str) -> anyhow::Result<Value> {
    let s = gw.final_status(id).await?;
    anyhow::ensure!(s["state"] == "delivered", "{id} not delivered: {s}");
    Ok(s)
}

/// The text of a (possibly concatenated) message as the peer decoded it: its submits to
/// `dest`, ordered by their concatenation sequence.
fn reassembled(peer: &Peer, dest: &str) -> anyhow::Result<(String, usize)> {
    let mut parts: Vec<Value> = peer
        .of("submit")?
        .into_iter()
        .filter(|s| s["dest"] == dest && s["status"] == 0)
        .collect();
    if parts.len() > 1 {
        let refs: Vec<&Value> = parts.iter().map(|p| &p["concat"][0]).collect();
        anyhow::ensure!(
            refs.windows(2).all(|w| w[0] == w[1]),
            "one reference: {parts:?}"
        );
        anyhow::ensure!(
            parts.iter().all(|p| p["concat"][1] == parts.len()),
            "total: {parts:?}"
        );
        parts.sort_by_key(|p| p["concat"][2].as_u64());
    }
    let text = parts.iter().map(|p| p["text"].as_str().unwrap()).collect();
    Ok((text, parts.len()))
}

async fn interop(kind: PeerKind) -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let rules = json!([
        {"prefix": DLR_FIRST, "dlr_first": true},
        {"prefix": THROTTLE, "throttle_first": THROTTLED},
        {"prefix": HOLD, "hold_ms": HOLD_MS},
        {"prefix": DROP, "drop_at": 3},
    ]);
    let peer = Peer::start(kind, 2, rules).await?;
    let gw = Gateway::start_with(&peer.url, |c| {
        c.window = WINDOW;
        c.reconnect_min_ms = 100;
        c.reconnect_max_ms = 400;
    })
    .await?;

    // Bind failure: the first two binds are refused; the gateway backs off and binds.
    let first = send(&gw, "+447911100001", "after two refused binds").await?;
    delivered(&gw, &first).await?;
    let binds = peer.of("bind")?;
    let oks: Vec<bool> = binds.iter().map(|b| b["ok"] == true).collect();
    assert_eq!(oks[..3], [false, false, true], "{binds:?}");
    assert_eq!(binds[2]["mode"], "trx");

    // Unicode with emoji (surrogate pairs) and GSM 03.38 with extension characters, both
    // long: the peer's own decoder must read back exactly what was sent.
    let unicode = "Emoji 😀🎉 ünïcödé — ".repeat(6);
    let gsm = "Price {EUR} [ok] ~5€ | ".repeat(9);
    for (to, body) in [("+447911100002", &unicode), ("+447911100003", &gsm)] {
        let id = send(&gw, to, body).await?;
        let s = delivered(&gw, &id).await?;
        let (text, parts) = reassembled(&peer, &to[1..])?;
        assert!(parts >= 2, "{to}: {parts} parts");
        assert_eq!(&text, body, "{kind:?} decoded {to} differently");
        assert_eq!(s["history"][2]["details"]["segments"], parts, "{s}");
    }

    // The message's validity and carrier-side schedule reach the SMSC as absolute times.
    let later = smsgw_kafka::now_ms() + 120_000;
    let (code, r) = gw
        .post(
            json!({"to": "+447911100004", "from": "SHOP", "body": "timed", "client_id": "interop",
            "validity_period_s": 3600, "schedule_delivery_at": later}),
        )
        .await?;
    assert_eq!(code, 202, "{r}");
    delivered(&gw, r["id"].as_str().unwrap()).await?;
    let timed = peer
        .of("submit")?
        .into_iter()
        .find(|s| s["dest"] == "447911100004")
        .unwrap();
    // The peer parsed both times itself: the schedule is the one asked for, and the
    // validity ends an hour after acceptance (so 58 minutes after the schedule).
    let (validity, schedule) = (
        timed["validity_ms"].as_i64().expect("validity"),
        timed["schedule_ms"].as_i64().expect("schedule"),
    );
    assert!((schedule - later).abs() < 1000, "{timed} vs {later}");
    let gap = validity - schedule;
    assert!((3_470_000..3_490_000).contains(&gap), "{timed}");

    // A receipt before its submit_sm_resp still settles the message.
    let early = send(&gw, &format!("+{DLR_FIRST}00001"), "receipt first").await?;
    delivered(&gw, &early).await?;
    assert!(
        peer.of("dlr")?.iter().any(|d| d["before_resp"] == true),
        "the peer sent a receipt before the response"
    );

    // A throttling storm: every message still goes out, each accepted exactly once.
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(send(&gw, &format!("+{THROTTLE}{i:05}"), "storm").await?);
    }
    for id in &ids {
        delivered(&gw, id).await?;
    }
    let storm: Vec<Value> = peer
        .of("submit")?
        .into_iter()
        .filter(|s| s["dest"].as_str().unwrap().starts_with(THROTTLE))
        .collect();
    let throttled = storm.iter().filter(|s| s["status"] == 0x58).count();
    let accepted = storm.iter().filter(|s| s["status"] == 0).count();
    assert_eq!((throttled, accepted), (THROTTLED, 6), "{storm:?}");
    let counted = gw
        .metric(
            "dispatcher",
            "smsgw_dispatcher_submit_errors_total{carrier=\"alpha\",kind=\"throttle\"}",
        )
        .await?;
    assert_eq!(counted, THROTTLED as f64, "throttles counted by kind");

    // A full window: the peer holds every response for HOLD_MS; never more than WINDOW
    // submits are outstanding, and the window does fill.
    let to: Vec<String> = (0..12).map(|i| format!("+{HOLD}{i:05}")).collect();
    let ids =
        futures::future::try_join_all(to.iter().map(|to| send(&gw, to, "slow carrier"))).await?;
    for id in &ids {
        delivered(&gw, id).await?;
    }
    let most = peer
        .of("submit")?
        .iter()
        .filter(|s| s["dest"].as_str().unwrap().starts_with(HOLD))
        .map(|s| s["outstanding"].as_u64().unwrap())
        .max();
    assert_eq!(most, Some(WINDOW as u64), "window use");

    // A disconnect with submits outstanding: their outcome is unknown, so each fails as
    // ambiguous, and is sent again (the carrier may not have it; a resend is the
    // duplicate the log flags) until the attempts run out; the gateway rebinds and
    // carries on. Every copy the SMSC saw is an ambiguous attempt in the log.
    let ok_binds = |p: &Peer| -> anyhow::Result<usize> {
        Ok(p.of("bind")?.iter().filter(|b| b["ok"] == true).count())
    };
    let before = ok_binds(&peer)?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(send(&gw, &format!("+{DROP}{i:05}"), "into the void").await?);
    }
    let mut cut = 0;
    for id in &ids {
        let s = gw.final_status(id).await?;
        assert_ne!(s["state"], "delivered", "{s}");
        let failures: Vec<&serde_json::Value> = s["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "SubmitFailed")
            .collect();
        assert!(!failures.is_empty(), "no SubmitFailed: {s}");
        for f in &failures {
            assert_eq!(f["details"]["ambiguous"], true, "{s}");
        }
        cut += failures.len();
    }
    assert!(!peer.of("drop")?.is_empty(), "the SMSC dropped the link");
    let ambiguous = gw
        .metric(
            "dispatcher",
            "smsgw_dispatcher_ambiguous_submits_total{carrier=\"alpha\"}",
        )
        .await?;
    assert_eq!(
        ambiguous, cut as f64,
        "ambiguous submits are counted and visible"
    );
    let after = send(&gw, "+447911100009", "after the drop").await?;
    delivered(&gw, &after).await?;
    assert!(ok_binds(&peer)? > before, "rebound after the drop");
    let drop_submits = peer
        .of("submit")?
        .iter()
        .filter(|s| s["dest"].as_str().unwrap().starts_with(DROP))
        .count();
    assert_eq!(drop_submits, cut, "every copy the SMSC saw is in the log");

    gw.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interop_with_the_npm_smpp_package() -> anyhow::Result<()> {
    interop(PeerKind::Npm).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interop_with_perl_net_smpp() -> anyhow::Result<()> {
    interop(PeerKind::Perl).await
}

/// A transmitter + receiver pair, twice: submits spread over both transmitters, receipts
/// arrive on the receivers, and every message is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tx_rx_binds_with_the_npm_smpp_package() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let peer = Peer::start(PeerKind::Npm, 0, json!([])).await?;
    let gw = Gateway::start_with(&peer.url, |c| {
        c.bind_mode = smsgw_dispatcher::config::BindMode::TxRx;
        c.binds = 2;
        c.window = 2;
    })
    .await?;
    let to: Vec<String> = (0..12).map(|i| format!("+4479111{i:05}")).collect();
    let ids = futures::future::try_join_all(to.iter().map(|to| send(&gw, to, "pairs"))).await?;
    for id in &ids {
        delivered(&gw, id).await?;
    }
    let binds = peer.of("bind")?;
    let conn_of = |mode: &str| -> Vec<u64> {
        binds
            .iter()
            .filter(|b| b["mode"] == mode && b["ok"] == true)
            .map(|b| b["conn"].as_u64().unwrap())
            .collect()
    };
    let (tx, rx) = (conn_of("tx"), conn_of("rx"));
    assert_eq!((tx.len(), rx.len()), (2, 2), "{binds:?}");
    let submits = peer.of("submit")?;
    for t in &tx {
        assert!(
            submits.iter().any(|s| s["conn"] == *t),
            "transmitter {t} took no submits: {submits:?}"
        );
    }
    assert!(submits
        .iter()
        .all(|s| tx.contains(&s["conn"].as_u64().unwrap())));
    let dlrs = peer.of("dlr")?;
    assert_eq!(dlrs.len(), 12);
    assert!(dlrs
        .iter()
        .all(|d| rx.contains(&d["conn"].as_u64().unwrap())));
    gw.stop().await?;
    Ok(())
}
