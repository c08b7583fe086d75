//! Cancellation, end to end against the npm `smpp` SMSC: a message waiting behind a full
//! window is stopped by the dispatcher's last check; a delivered one gets 409; and in a
//! randomized race of sends and cancels every message is either cancelled or sent, never
//! both, with the API's answer matching what happened.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use smsgw_e2e::{Gateway, Peer, PeerKind};
use std::time::Duration;

const SLOW: &str = "4474006";

async fn delete(gw: &Gateway, id: &str) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/messages/{id}", gw.api))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

async fn post(gw: &Gateway, to: &str) -> anyhow::Result<String> {
    let (code, r) = gw
        .post(json!({"to": to, "from": "SHOP", "body": "cancel me?", "client_id": "c"}))
        .await?;
    anyhow::ensure!(code == 202, "{r}");
    Ok(r["id"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_or_sent_never_both() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let seed: u64 = std::env::var("SMSGW_CANCEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("SMSGW_CANCEL_SEED={seed}");
    let peer = Peer::start(PeerKind::Npm, 0, json!([{"prefix": SLOW, "hold_ms": 2000}])).await?;
    let gw = Gateway::start_with(&peer.url, |c| c.window = 1).await?;

    // Warm up, then a delivered message cannot be cancelled.
    let done = post(&gw, "+447911140000").await?;
    assert_eq!(gw.final_status(&done).await?["state"], "delivered");
    let (code, body) = delete(&gw, &done).await?;
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("already_submitted")),
        "{body}"
    );
    assert_eq!(delete(&gw, "no-such-message").await?.0, 404);

    // One message holds the only window slot for 2 s; the next waits at the dispatcher
    // and is stopped there.
    let slow = post(&gw, &format!("+{SLOW}00001")).await?;
    smsgw_testkit::eventually(
        "the slow one holds the window",
        Duration::from_secs(10),
        || async {
            let held = peer.of("submit").ok()?;
            held.iter()
                .any(|s| s["dest"].as_str().is_some_and(|d| d.starts_with(SLOW)))
                .then_some(())
        },
    )
    .await?;
    let waiting = post(&gw, "+447911140001").await?;
    smsgw_testkit::eventually("routed", Duration::from_secs(10), || async {
        let s = gw.status(&waiting).await.ok().flatten()?;
        (s["state"] == "routed").then_some(())
    })
    .await?;
    let (code, body) = delete(&gw, &waiting).await?;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let s = gw.final_status(&waiting).await?;
    assert_eq!(s["state"], "cancelled");
    let last = s["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["details"]["stopped_by"], "dispatcher", "{s}");
    assert_eq!(gw.final_status(&slow).await?["state"], "delivered");

    // The race: sends and cancels at random moments, around the moment the window opens.
    // A slow message holds the only window slot for 2 s; each of 20 messages is cancelled
    // 0 to 3 s after it was accepted, so cancels land both before and after their submit
    // (the first at once, the last after 3 s, so each outcome happens at least once).
    let blocker = post(&gw, &format!("+{SLOW}00002")).await?;
    smsgw_testkit::eventually("the window is held", Duration::from_secs(10), || async {
        let held = peer.of("submit").ok()?;
        (held
            .iter()
            .filter(|s| s["dest"].as_str().is_some_and(|d| d.starts_with(SLOW)))
            .count()
            == 2)
            .then_some(())
    })
    .await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let to = format!("+4479111402{i:02}");
        let delay = match i {
            0 => 0,
            19 => 3_000,
            _ => rng.random_range(0..3_000u64),
        };
        let id = post(&gw, &to).await?;
        let api = gw.api.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let r = reqwest::Client::new()
                .delete(format!("{api}/v1/messages/{id}"))
                .send()
                .await?;
            anyhow::Ok((to, id, r.status().as_u16()))
        }));
    }
    let submits = |dest: &str| -> anyhow::Result<usize> {
        Ok(peer
            .of("submit")?
            .iter()
            .filter(|s| s["dest"] == dest)
            .count())
    };
    let (mut cancelled, mut sent) = (0, 0);
    for t in tasks {
        let (to, id, code) = t.await??;
        let s = gw.final_status(&id).await?;
        let state = s["state"].as_str().unwrap().to_string();
        let at_smsc = submits(&to[1..])?;
        match state.as_str() {
            "cancelled" => {
                cancelled += 1;
                assert_eq!(at_smsc, 0, "{to} cancelled yet submitted (seed {seed})");
                assert!(code == 200 || code == 202, "{to}: {code} but cancelled");
            }
            "delivered" => {
                sent += 1;
                assert_eq!(at_smsc, 1, "{to} delivered, submitted {at_smsc} times");
                assert!(
                    code == 409 || code == 202,
                    "{to}: {code} but sent (seed {seed})"
                );
            }
            other => panic!("{to} ended {other}: {s}"),
        }
    }
    println!("race: {cancelled} cancelled, {sent} sent");
    assert_eq!(cancelled + sent, 20);
    assert!(
        cancelled > 0 && sent > 0,
        "the race must produce both outcomes (seed {seed})"
    );
    assert_eq!(gw.final_status(&blocker).await?["state"], "delivered");
    gw.stop().await?;
    Ok(())
}
