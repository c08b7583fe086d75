//! smsgw-admin: operator commands.
//!
//! - `smsgw-admin bootstrap CONFIG` creates every topic (Tansu never auto-creates them),
//!   with the partition counts of the config's `[layout]` and a dispatch topic per carrier.
//! - `smsgw-admin check-config SERVICE FILE` loads and validates a service's config the
//!   way the service does at start (environment overrides included), so a bad config is
//!   caught before a deploy; the Helm chart's tests run it on every rendered config.
//! - `smsgw-admin hash-key NAME [RATE]` reads an API key on stdin and prints the
//!   `name:sha256hex[:rate]` line for the `api_keys` setting (only the hash is stored;
//!   `:account=`, `:accounts=`, `:senders=` and `:role=admin` are added by hand, see
//!   docs/operations.md "API security").
//! - `smsgw-admin demo API SMSC_CONTROL` sends the demo messages of `make run` through the
//!   HTTP API and prints each one's final state.
//! - `smsgw-admin ledger CONFIG CARRIER_LEDGER...` reads the whole event log and the
//!   carrier simulator's ledger file(s) and prints the ledger check (`smsgw-ledger`):
//!   accepted, final states, lost, several finals, contradicted, texted twice (flagged or
//!   not). Exits 1 on any loss, contradiction or unflagged duplicate.

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};
use smsgw_kafka::{KafkaConfig, TopicLayout};
use std::time::{Duration, Instant};

/// Config of `bootstrap`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapConfig {
    /// Brokers and topic names.
    kafka: KafkaConfig,
    /// Partition counts and retention.
    #[serde(default)]
    layout: TopicLayout,
    /// Carriers that get a dispatch topic.
    carriers: Vec<String>,
}

/// Loads `file` as `service`'s config and validates it.
fn check_config(service: &str, file: &std::path::Path) -> anyhow::Result<()> {
    use smsgw_runtime::load_config;
    let checked = match service {
        "ingest" => load_config::<smsgw_ingest::Config>(Some(file))?.validate(),
        "router" => load_config::<smsgw_router::Config>(Some(file))?.validate(),
        "dispatcher" => load_config::<smsgw_dispatcher::Config>(Some(file))?.validate(),
        "receipt" => load_config::<smsgw_receipt::Config>(Some(file))?.validate(),
        "optout" => load_config::<smsgw_optout::Config>(Some(file))?.validate(),
        "smpp-server" => load_config::<smsgw_smpp_server::Config>(Some(file))?.validate(),
        other => bail!(
            "unknown service {other:?}: ingest, router, dispatcher, receipt, optout or smpp-server"
        ),
    };
    checked.map_err(|e| anyhow::anyhow!("{service}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    smsgw_runtime::init_telemetry();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("hash-key") => {
            let name = args
                .get(1)
                .context("usage: smsgw-admin hash-key NAME [RATE] < key")?;
            let mut key = String::new();
            std::io::stdin().read_line(&mut key)?;
            let key = key.trim();
            anyhow::ensure!(key.len() >= 16, "use a key of at least 16 characters");
            let hash = smsgw_runtime::auth::hash_key(key);
            match args.get(2) {
                Some(rate) => println!("{name}:{hash}:{rate}"),
                None => println!("{name}:{hash}"),
            }
            Ok(())
        }
        Some("check-config") => {
            let (Some(service), Some(file)) = (args.get(1), args.get(2)) else {
                bail!("usage: smsgw-admin check-config SERVICE FILE");
            };
            check_config(service, std::path::Path::new(file))?;
            println!("{service}: {file} is valid");
            Ok(())
        }
        Some("bootstrap") => {
            let path = args.get(1).context("usage: smsgw-admin bootstrap CONFIG")?;
            let c: BootstrapConfig = smsgw_runtime::load_config(Some(std::path::Path::new(path)))?;
            c.kafka.validate().map_err(anyhow::Error::msg)?;
            let specs = c.layout.specs(&c.kafka.topics, &c.carriers);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match smsgw_kafka::bootstrap_topics(&c.kafka, &specs).await {
                    Ok(()) => break,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("bootstrap: broker not ready ({e}); retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            for s in &specs {
                println!("topic {} ({} partitions)", s.name, s.partitions);
            }
            Ok(())
        }
        Some("demo") => {
            let api = args
                .get(1)
                .context("usage: smsgw-admin demo API_URL SMSC_CONTROL_URL")?;
            let smsc = args
                .get(2)
                .context("usage: smsgw-admin demo API_URL SMSC_CONTROL_URL")?;
            demo(api, smsc).await
        }
        Some("ledger") => {
            let usage = "usage: smsgw-admin ledger CONFIG CARRIER_LEDGER...";
            let path = args.get(1).context(usage)?;
            anyhow::ensure!(args.len() > 2, usage);
            let c: BootstrapConfig = smsgw_runtime::load_config(Some(std::path::Path::new(path)))?;
            let report = ledger(&c.kafka, &args[2..]).await?;
            println!("{report}");
            let failures = report.failures();
            for f in &failures {
                eprintln!("FAIL: {f}");
            }
            if !failures.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        _ => bail!(
            "usage: smsgw-admin bootstrap CONFIG | check-config SERVICE FILE | hash-key NAME \
             | demo API_URL SMSC_CONTROL_URL | ledger CONFIG CARRIER_LEDGER..."
        ),
    }
}

/// The ledger check over the whole event log of `kafka` and the carrier ledger `files`.
async fn ledger(kafka: &KafkaConfig, files: &[String]) -> anyhow::Result<smsgw_ledger::Report> {
    use smsgw_codec::AvroRecord;
    let mut carrier = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?;
        carrier.extend(smsgw_ledger::parse_carrier(&text).with_context(|| f.clone())?);
    }
    let events = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), 0usize)));
    let sink = events.clone();
    // Everything since the epoch: the whole log, up to its end at the time of the call.
    smsgw_kafka::read_recent(
        kafka,
        kafka.topics.events(),
        smsgw_kafka::now_ms(),
        move |_, v| {
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            match smsgw_domain::Event::decode(v) {
                Ok(e) => s.0.push(e),
                Err(_) => s.1 += 1,
            }
        },
    )
    .await?;
    let (events, undecodable) =
        std::mem::take(&mut *events.lock().unwrap_or_else(|e| e.into_inner()));
    if undecodable > 0 {
        eprintln!("{undecodable} records of the event log did not decode (dead-lettered input is expected here)");
    }
    Ok(smsgw_ledger::check(&events, &carrier))
}

async fn demo(api: &str, smsc: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    // The API answers (a 404 for a message that does not exist): it is listening. Its
    // probes are on the admin port, not here.
    wait_up(&http, &format!("{api}/v1/messages/demo-probe")).await?;
    // The opted-out recipient texts STOP first, through the simulated carrier.
    // The carrier can only deliver it once the dispatcher's session is bound: retry
    // until a session takes it.
    let stop = json!({"from": "+447911100003", "to": "SMSGW", "body": "STOP"});
    let mut r = Value::Null;
    for _ in 0..60 {
        r = http
            .post(format!("{smsc}/mo"))
            .json(&stop)
            .send()
            .await?
            .json()
            .await?;
        if r["delivered_to_sessions"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "MO \"STOP\" from +4479*******03 to SMSGW reached {} session(s)",
        r["delivered_to_sessions"]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let demos = [
        ("delivered", "+447911100001", "Your order has shipped."),
        (
            "unicode, two parts",
            "+447911100002",
            "Grüße aus smsgw 😀 — this one needs UCS-2 and more than seventy characters.",
        ),
        (
            "opted out",
            "+447911100003",
            "You said STOP, so you never get this.",
        ),
        (
            "carrier rejects",
            "+447400200004",
            "The simulated carrier refuses this destination.",
        ),
        (
            "handset unreachable",
            "+447400300005",
            "Accepted by the carrier, then UNDELIV.",
        ),
        ("invalid", "+44 12", "Not a phone number."),
    ];
    let mut ids = Vec::new();
    for (label, to, body) in demos {
        let resp = http
            .post(format!("{api}/v1/messages"))
            .json(&json!({"to": to, "from": "SMSGW", "body": body, "client_id": "demo"}))
            .send()
            .await?;
        let code = resp.status().as_u16();
        let v: Value = resp.json().await?;
        println!(
            "POST {label:<20} -> {code} {}",
            v["id"].as_str().unwrap_or("?")
        );
        ids.push((label, v["id"].as_str().unwrap_or_default().to_string()));
    }
    println!("\nFinal states (rebuilt from the event log by GET /v1/messages/{{id}}):");
    for (label, id) in ids {
        let s = final_state(&http, api, &id).await?;
        let events: Vec<&str> = s["history"]
            .as_array()
            .map(|h| h.iter().filter_map(|e| e["event"].as_str()).collect())
            .unwrap_or_default();
        let last = &s["history"]
            .as_array()
            .and_then(|h| h.last().cloned())
            .unwrap_or(Value::Null)["details"];
        let why = last["reason"]
            .as_str()
            .or(last["stat"].as_str())
            .unwrap_or("");
        println!(
            "  {label:<20} {:<14} {}  [{}]",
            s["state"].as_str().unwrap_or("?"),
            why,
            events.join(" > ")
        );
    }
    Ok(())
}

async fn wait_up(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{url} did not answer within 60 s")
}

async fn final_state(http: &reqwest::Client, api: &str, id: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let r = http.get(format!("{api}/v1/messages/{id}")).send().await?;
        if r.status().is_success() {
            let v: Value = r.json().await?;
            if v["final"] == true {
                return Ok(v);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("message {id} did not reach a final state within 60 s")
}
