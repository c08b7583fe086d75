//! The SMPP server in the whole gateway: a third-party ESME (the npm `smpp` package)
//! submits over SMPP, the messages travel ingest → router → dispatcher → our simulated
//! carrier → receipt, and their delivery receipts come back to the ESME as `deliver_sm`
//! with the id it was given, on the same session, or held on Kafka while no receiver is
//! bound and delivered once one binds; a handset's reply to the account's number comes
//! to its receiver as MO.

use serde_json::Value;
use smsgw_e2e::{Gateway, Smsc, UNDELIV_PREFIX};
use smsgw_testkit::free_port;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Runs the receipts ESME script in `mode` and returns its JSON lines.
async fn esme(port: u16, mode: &str, arg: &str) -> anyhow::Result<Vec<Value>> {
    let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peers");
    anyhow::ensure!(
        peers.join("node_modules/smpp").exists(),
        "run `npm ci` in tests/peers (make deps does)"
    );
    let child = tokio::process::Command::new("node")
        .arg(peers.join("npm-smpp-esme-receipts.js"))
        .args([&port.to_string(), "esme", "pw123", mode, arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output()).await??;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(out.status.success(), "ESME exited {}: {text}", out.status);
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn of<'a>(lines: &'a [Value], case: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["case"] == case).collect()
}

async fn smpp_server(
    gw: &Gateway,
) -> anyhow::Result<(
    u16,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let line = format!(
        "esme:{}:account=acme:numbers=+447700900777",
        smsgw_smpp_server::accounts::hash_password("pw123", b"e2e-salt", 10_000)
    );
    let mut config = smsgw_smpp_server::Config::new(gw.kafka.clone(), line);
    let port = free_port();
    config.listen = format!("127.0.0.1:{port}").parse()?;
    config.admin_listen = format!("127.0.0.1:{}", free_port()).parse()?;
    let (stop, stopped) = smsgw_testkit::stopper();
    let task = tokio::spawn(async move {
        if let Err(e) = smsgw_smpp_server::run(config, stopped).await {
            panic!("smpp server: {e}");
        }
    });
    smsgw_testkit::eventually("SMPP listener", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await?;
    Ok((port, stop, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_come_back_over_smpp_on_the_session_or_after_a_rebind() -> anyhow::Result<()> {
    let smsc = Smsc::sim().await?;
    let gw = Gateway::start(&smsc.url()).await?;
    let (port, stop, task) = smpp_server(&gw).await?;

    // One transceiver session: submit two (one the carrier cannot deliver), and get both
    // receipts on it, each with the id its submit_sm_resp carried.
    let undeliverable = format!("{UNDELIV_PREFIX}00001");
    let lines = esme(port, "both", &format!("447911123501,{undeliverable}")).await?;
    let submits = of(&lines, "submit");
    assert!(submits.iter().all(|s| s["status"] == 0), "{lines:?}");
    let receipts = of(&lines, "receipt");
    assert_eq!(receipts.len(), 2, "{lines:?}");
    for (to, state, stat) in [
        ("447911123501", 2, "DELIVRD"),
        (undeliverable.as_str(), 5, "UNDELIV"),
    ] {
        let id = submits.iter().find(|s| s["to"] == to).expect("submitted")["id"].clone();
        let r = receipts
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no receipt for {id}: {lines:?}"));
        assert_eq!(r["state"], state, "{r}");
        assert_eq!(r["esm_class"], 4, "{r}");
        let text = r["text"].as_str().unwrap_or_default();
        assert!(
            text.contains(&format!("id:{}", id.as_str().unwrap())) && text.contains(stat),
            "{text}"
        );
        // The gateway agrees: the same message, in the final state the receipt reported.
        let s = gw.final_status(id.as_str().unwrap()).await?;
        assert_eq!(
            s["state"],
            if state == 2 {
                "delivered"
            } else {
                "undeliverable"
            },
            "{s}"
        );
    }

    // A transmitter submits and leaves; the receipt waits on Kafka until a receiver binds.
    let lines = esme(port, "submit", "447911123502").await?;
    let id = of(&lines, "submit")[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(gw.final_status(&id).await?["state"], "delivered");
    let lines = esme(port, "receive", "1").await?;
    let receipts = of(&lines, "receipt");
    assert_eq!(receipts.len(), 1, "{lines:?}");
    assert_eq!(receipts[0]["id"], id.as_str());
    // Answered: nothing more for the next receiver.
    let lines = tokio::time::timeout(Duration::from_secs(15), esme(port, "receive", "1")).await;
    assert!(
        lines.is_err() || of(&lines??, "receipt").is_empty(),
        "a receipt sent twice"
    );

    // query_sm and cancel_sm of a message held for later (schedule_delivery_time).
    let lines = esme(port, "cancel", "447911123504").await?;
    let q = of(&lines, "query");
    let c = of(&lines, "cancel");
    assert_eq!(
        (q[0]["status"].as_i64(), q[0]["state"].as_i64()),
        (Some(0), Some(6)),
        "ACCEPTED: {lines:?}"
    );
    assert_eq!(c[0]["status"], 0, "cancelled: {lines:?}");
    assert_eq!(
        (q[1]["status"].as_i64(), q[1]["state"].as_i64()),
        (Some(0), Some(4)),
        "DELETED: {lines:?}"
    );
    // (The npm client reads the SMPP time into a date.)
    assert!(
        q[1]["final_date"]
            .as_str()
            .is_some_and(|d| d.starts_with("20")),
        "{lines:?}"
    );
    assert_eq!(
        c[1]["status"], 0x11,
        "ESME_RCANCELFAIL the second time: {lines:?}"
    );
    let id = of(&lines, "submit")[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(gw.final_status(&id).await?["state"], "cancelled");

    // A handset answers on the account's number: the MO comes to the account's receiver.
    let sessions = smsc
        .send_mo("+447911123503", "447700900777", "Yes please")
        .await?;
    assert!(sessions >= 1, "the simulator had a bind to send the MO on");
    let lines = esme(port, "receive", "1").await?;
    let mo = of(&lines, "receipt");
    assert_eq!(mo.len(), 1, "{lines:?}");
    assert_eq!(
        (mo[0]["text"].as_str(), mo[0]["esm_class"].as_u64()),
        (Some("Yes please"), Some(0)),
        "{lines:?}"
    );

    let _ = stop.send(());
    let _ = task.await;
    gw.stop().await?;
    smsc.stop().await;
    Ok(())
}
