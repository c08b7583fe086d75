//! The SMPP server process killed with SIGKILL while a receipt it sent is unanswered:
//! the restarted process (the same config, `kafka.assignment = "static"` as on Tansu)
//! sends that receipt again to the next receiver, and not the one that was answered.

use rusmpp::CommandStatus;
use smsgw_testkit::{free_port, Broker};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::{account, owed, receipted_id, Esme};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn(config: &std::path::Path, port: u16) -> anyhow::Result<Server> {
    let child = Command::new(env!("CARGO_BIN_EXE_smsgw-smpp-server"))
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let s = Server(child);
    smsgw_testkit::eventually("SMPP listener", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await?;
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_unanswered_when_the_server_is_killed_is_sent_again_after_restart(
) -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let dir = std::env::temp_dir().join(format!("smsgw-smpp-crash-{}", free_port()));
    std::fs::create_dir_all(&dir)?;
    let (port, admin) = (free_port(), free_port());
    let config = dir.join("smpp-server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\naccounts = '''\n{}\n'''\n\n[kafka]\nbrokers = \"{}\"\nassignment = \"static\"\n\n[kafka.topics]\nprefix = \"{}\"\n",
            account("shop", "pw", ""),
            kafka.brokers,
            kafka.topics.prefix
        ),
    )?;
    let first = spawn(&config, port).await?;
    let topic = kafka.topics.smpp_receipts("shop");
    for id in ["r1", "r2"] {
        smsgw_testkit::produce(&kafka, &topic, id, &owed(id, "shop")).await?;
    }
    let mut rx = Esme::connect(([127, 0, 0, 1], port).into()).await?;
    assert_eq!(
        rx.bind_rx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );
    let a = rx.next_request(Duration::from_secs(30)).await?.expect("r1");
    let b = rx.next_request(Duration::from_secs(30)).await?.expect("r2");
    assert_eq!(
        (receipted_id(&a).as_deref(), receipted_id(&b).as_deref()),
        (Some("r1"), Some("r2"))
    );
    rx.answer(&a, CommandStatus::EsmeRok).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // r1's offset commits
    drop(first); // SIGKILL, r2 unanswered
    drop(rx);

    let _second = spawn(&config, port).await?;
    let mut rx = Esme::connect(([127, 0, 0, 1], port).into()).await?;
    assert_eq!(
        rx.bind_rx("shop", "pw").await?,
        Some(CommandStatus::EsmeRok)
    );
    let again = rx
        .next_request(Duration::from_secs(30))
        .await?
        .expect("r2 again");
    assert_eq!(receipted_id(&again).as_deref(), Some("r2"));
    rx.answer(&again, CommandStatus::EsmeRok).await?;
    assert!(
        rx.next_request(Duration::from_secs(3)).await?.is_none(),
        "r1 was answered"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
