//! STOPs race sends to the same recipients, end to end (npm `smpp` SMSC, real broker,
//! five services). For each recipient, messages are posted at random moments while a
//! STOP arrives from the handset at another random moment. The claim checked: no
//! submit reaches the SMSC for that recipient later than the STOP's opt-out record
//! (its `changed_at`) plus the dispatcher's staleness bound plus transit slack; the STOP
//! confirmation is sent although the recipient is now opted out; and the race really
//! happened (some messages delivered, some blocked).
//!
//! The seed is printed; `SMSGW_RACE_SEED=<n>` replays a run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use smsgw_codec::{InboundMessage, OptOutChanged};
use smsgw_e2e::{Gateway, Peer, PeerKind};
use smsgw_testkit::read_records;
use std::collections::HashMap;
use std::time::Duration;

const RECIPIENTS: usize = 8;
const SENDS: usize = 10;
const SPAN_MS: u64 = 3000;
const STALENESS_MS: i64 = 250;
/// Socket transit and the time from `changed_at` to the record being on the log.
const SLACK_MS: i64 = 100;
const REPLY: &str = "You are unsubscribed from SHOP. Reply START to resubscribe.";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stops_racing_sends_never_let_a_late_submit_through() -> anyhow::Result<()> {
    smsgw_testkit::init_logs();
    let seed: u64 = std::env::var("SMSGW_RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("SMSGW_RACE_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let peer = Peer::start(PeerKind::Npm, 0, json!([])).await?;
    let gw = Gateway::start_full(
        &peer.url,
        |_| {},
        |o| o.defaults.stop_reply = Some(REPLY.into()),
    )
    .await?;

    // Warm up: every consumer group joined and every tail caught up, so the race below
    // is between STOPs and sends, not against start-up.
    let (_, warm) = gw
        .post(
            json!({"to": "+447911139999", "from": "SHOP", "body": "warm-up", "client_id": "race"}),
        )
        .await?;
    let s = gw.final_status(warm["id"].as_str().unwrap()).await?;
    assert_eq!(s["state"], "delivered", "{s}");

    let recipients: Vec<String> = (0..RECIPIENTS)
        .map(|i| format!("+4479111300{i:02}"))
        .collect();
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for r in &recipients {
        let stop_at = rng.random_range(300..SPAN_MS - 500);
        let mut times: Vec<u64> = (0..SENDS).map(|_| rng.random_range(0..SPAN_MS)).collect();
        times.sort();
        for (i, t) in times.into_iter().enumerate() {
            let (api, r) = (gw.api.clone(), r.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(started + Duration::from_millis(t)).await;
                let body = json!({"to": r, "from": "SHOP", "body": format!("offer {i}"), "client_id": "race"});
                let resp: serde_json::Value = reqwest::Client::new()
                    .post(format!("{api}/v1/messages"))
                    .json(&body)
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::Ok(Some((r, resp["id"].as_str().unwrap_or_default().to_string())))
            }));
        }
        let (r, mo_url) = (r.clone(), peer.mo_url()?);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(started + Duration::from_millis(stop_at)).await;
            let sent: serde_json::Value = reqwest::Client::new()
                .post(mo_url)
                .json(&json!({"from": r, "to": "SHOP", "body": "Stop."}))
                .send()
                .await?
                .json()
                .await?;
            anyhow::ensure!(
                sent["delivered_to_sessions"] == 1,
                "STOP reached no session"
            );
            anyhow::Ok(None)
        }));
    }
    let mut messages: Vec<(String, String)> = Vec::new();
    for t in tasks {
        if let Some(m) = t.await?? {
            messages.push(m);
        }
    }

    // Every message ends; count how the race went.
    let mut states: HashMap<String, usize> = HashMap::new();
    for (_, id) in &messages {
        let s = gw.final_status(id).await?;
        *states
            .entry(s["state"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        if std::env::var("SMSGW_RACE_DEBUG").is_ok() {
            println!("{s}");
        }
    }
    println!("final states: {states:?}");
    assert_eq!(states.values().sum::<usize>(), RECIPIENTS * SENDS);
    assert!(
        states.get("blocked").copied().unwrap_or(0) > 0,
        "{states:?}"
    );
    assert!(
        states.get("delivered").copied().unwrap_or(0) > 0,
        "{states:?}"
    );

    let stops: Vec<OptOutChanged> = read_records(
        &gw.kafka,
        &gw.kafka.topics.optout(),
        RECIPIENTS,
        Duration::from_secs(30),
    )
    .await?;
    let mo: Vec<InboundMessage> = read_records(
        &gw.kafka,
        &gw.kafka.topics.inbound(),
        RECIPIENTS,
        Duration::from_secs(30),
    )
    .await?;
    let submits = peer.of("submit")?;
    let (mut worst_lateness, mut worst_processing) = (i64::MIN, 0);
    for r in &recipients {
        let stop = stops
            .iter()
            .find(|s| &s.number == r && s.opted_out)
            .unwrap_or_else(|| panic!("no STOP on the log for {r}"));
        let arrived = mo.iter().find(|m| &m.from == r).unwrap().received_at;
        worst_processing = worst_processing.max(stop.changed_at - arrived);
        let to_r: Vec<&serde_json::Value> = submits
            .iter()
            .filter(|s| s["dest"].as_str() == Some(&r[1..]))
            .collect();
        let mut confirmed = false;
        for s in to_r {
            let at = (s["at"].as_f64().unwrap() * 1000.0) as i64;
            if s["text"] == REPLY {
                confirmed = true;
                continue;
            }
            worst_lateness = worst_lateness.max(at - stop.changed_at);
            assert!(
                at <= stop.changed_at + STALENESS_MS + SLACK_MS,
                "{r}: submit at {at}, STOP on the log at {} (seed {seed})",
                stop.changed_at
            );
        }
        assert!(confirmed, "{r} got no STOP confirmation");
    }
    println!(
        "STOP at the gateway -> on the opt-out log: at most {worst_processing} ms; \
         latest submit relative to the log record: {worst_lateness} ms (bound {STALENESS_MS} ms)"
    );
    gw.stop().await?;
    Ok(())
}
