//! The SMPP server against ESMEs nobody here wrote: the npm `smpp` package, Perl
//! Net::SMPP and PyPI `smpplib` (scripts in `tests/peers`, installed by `make deps`).
//! Each refuses a wrong password, binds, submits short, UCS-2 and long messages (each
//! client's own way of making them long) and an invalid destination; every accepted
//! message must be on the ingest topic under the id the client was given, with its text
//! exactly as the client meant it.

use serde_json::Value;
use smsgw_testkit::Broker;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{account, requests, start};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a peer script to its end and returns its JSON lines by case.
async fn run_peer(
    mut cmd: tokio::process::Command,
) -> anyhow::Result<std::collections::HashMap<String, Value>> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(out.status.success(), "peer exited {}: {text}", out.status);
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)?;
            Ok((v["case"].as_str().unwrap_or_default().to_string(), v))
        })
        .collect()
}

/// What one peer's run must show: the bind refusal and acceptance, `accepted` cases
/// (case, destination, text; cases sharing a destination are the parts of one message,
/// so they share its id), and the invalid destination refused.
async fn check(
    kafka: &smsgw_kafka::KafkaConfig,
    got: &std::collections::HashMap<String, Value>,
    accepted: &[(&[&str], &str, &str)],
) -> anyhow::Result<()> {
    let status = |case: &str| got.get(case).and_then(|v| v["status"].as_i64());
    assert_eq!(
        status("bad_password"),
        Some(0x0E),
        "ESME_RINVPASWD: {got:?}"
    );
    assert_eq!(status("bind"), Some(0), "{got:?}");
    assert_eq!(
        status("bad_destination"),
        Some(0x0B),
        "ESME_RINVDSTADR: {got:?}"
    );
    assert_eq!(status("unbind"), Some(0), "{got:?}");
    let stored = requests(kafka).await?;
    for (cases, to, text) in accepted {
        let ids: Vec<&str> = cases
            .iter()
            .map(|c| {
                assert_eq!(status(c), Some(0), "{c}: {got:?}");
                got[*c]["id"].as_str().unwrap_or_default()
            })
            .collect();
        assert!(
            ids.iter().all(|i| *i == ids[0] && !i.is_empty()),
            "{cases:?}: {ids:?}"
        );
        let r = stored
            .get(ids[0])
            .unwrap_or_else(|| panic!("{cases:?}: id {} not on the ingest topic", ids[0]));
        assert_eq!((r.to.as_str(), r.body.as_str()), (*to, *text), "{cases:?}");
        assert_eq!(r.client_id, "acme");
        assert_eq!(r.registered_delivery, Some(true));
    }
    // The accepted ones and the invalid destination (kept for the event log), nothing
    // else: a wrong password submits nothing.
    assert_eq!(stored.len(), accepted.len() + 1);
    Ok(())
}

async fn serve(attrs: &str) -> anyhow::Result<(Broker, smsgw_kafka::KafkaConfig, common::Running)> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let line = account("esme", "pw123", &format!(":account=acme{attrs}"));
    let srv = start(&kafka, &line, |_| {}).await?;
    Ok((broker, kafka, srv))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_smpp_client() -> anyhow::Result<()> {
    let peers = root().join("tests/peers");
    anyhow::ensure!(
        peers.join("node_modules/smpp").exists(),
        "run `npm ci` in tests/peers (make deps does)"
    );
    // The npm client writes GSM-7 under data_coding 1: the account says so.
    let (_broker, kafka, srv) = serve(":ia5=gsm7").await?;
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(peers.join("npm-smpp-esme.js"))
        .args([&srv.addr.port().to_string(), "esme", "pw123"]);
    let got = run_peer(cmd).await?;
    let long = ["npm long message."; 12].join(" ");
    check(
        &kafka,
        &got,
        &[
            (&["short"], "+447911123101", "Hello from npm: $5 @ shop"),
            (&["unicode"], "+447911123102", "Привет, мир"),
            (&["payload"], "+447911123103", &long),
            (
                &["udh_1", "udh_2"],
                "+447911123104",
                "first half, second half",
            ),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perl_net_smpp_client() -> anyhow::Result<()> {
    let probe = std::process::Command::new("perl")
        .args(["-MNet::SMPP", "-e1"])
        .status();
    anyhow::ensure!(
        probe.is_ok_and(|s| s.success()),
        "Perl Net::SMPP is missing: apt-get install libnet-smpp-perl (make deps does)"
    );
    let (_broker, kafka, srv) = serve("").await?;
    let mut cmd = tokio::process::Command::new("perl");
    cmd.arg(root().join("tests/peers/perl-smpp-esme.pl")).args([
        &srv.addr.port().to_string(),
        "esme",
        "pw123",
    ]);
    let got = run_peer(cmd).await?;
    check(
        &kafka,
        &got,
        &[
            (&["short"], "+447911123201", "Hello from Perl"),
            (&["unicode"], "+447911123202", "Привет Perl"),
            (
                &["sar_1", "sar_2"],
                "+447911123203",
                "Perl long message, in two SAR parts",
            ),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smpplib_client() -> anyhow::Result<()> {
    let python = root().join(".venv-smpplib/bin/python");
    anyhow::ensure!(
        python.exists(),
        "smpplib is missing: make .venv-smpplib/bin/python (make deps does)"
    );
    let (_broker, kafka, srv) = serve("").await?;
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(root().join("tests/peers/smpplib-esme.py")).args([
        &srv.addr.port().to_string(),
        "esme",
        "pw123",
    ]);
    let got = run_peer(cmd).await?;
    let long = "smpplib long message. ".repeat(10);
    check(
        &kafka,
        &got,
        &[
            (&["short"], "+447911123301", "Hello from smpplib"),
            (&["unicode"], "+447911123302", "Привет из smpplib"),
            (&["long_1", "long_2"], "+447911123303", &long),
        ],
    )
    .await
}
