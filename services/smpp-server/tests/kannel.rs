//! Kannel 1.4.5 (Debian's `kannel`, installed by `make deps`) binds to the SMPP server
//! as its SMSC: bearerbox holds a transceiver bind with the account's credentials, and
//! messages sent through smsbox's `sendsms` (short GSM, UCS-2, and a long one Kannel
//! splits with its own UDH) must reach the ingest topic with their exact text. Then the
//! receipts owed for them are sent as `deliver_sm`, and Kannel must match each to the
//! message it sent (by the id our `submit_sm_resp` gave it) and call its `dlr-url` with
//! the right report type.
//!
//! The link sets `dest-addr-ton = 1`, as a Kannel routing international traffic does:
//! left to guess, Kannel marks a number national unless the request kept its `+`, and
//! smsbox drops the `+` of a `to` sent with `charset=UTF-8` (seen here: the UCS-2
//! message went out as a national number).

use smsgw_testkit::{eventually, free_port, Broker};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::{account, requests, start};

/// Extra `sendsms` parameters.
type Query<'a> = [(&'a str, &'a str)];

/// Kills Kannel's boxes when the test ends, however it ends.
struct Boxes(Vec<Child>);

impl Drop for Boxes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP endpoint for Kannel's `dlr-url` calls: the paths it was called with.
async fn dlr_sink() -> anyhow::Result<(
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some(path) = head.split_whitespace().nth(1) {
                keep.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(path.to_string());
            }
            let _ = sock
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    Ok((addr, seen))
}

fn kannel_bin(name: &str) -> anyhow::Result<PathBuf> {
    ["/usr/sbin/", "/usr/bin/"]
        .iter()
        .map(|p| PathBuf::from(format!("{p}{name}")))
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow::anyhow!("Kannel's {name} is missing: apt-get install kannel (make deps does)")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kannel_binds_as_an_esme_its_messages_arrive_whole_and_its_receipts_match(
) -> anyhow::Result<()> {
    let (bearerbox, smsbox) = (kannel_bin("bearerbox")?, kannel_bin("smsbox")?);
    let broker = Broker::start()?;
    let kafka = broker.kafka();
    broker.bootstrap(&kafka, &[]).await?;
    let srv = start(&kafka, &account("kannel", "pw123", ":account=acme"), |_| {}).await?;

    let dir = std::env::temp_dir().join(format!(
        "smsgw-kannel-esme-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let (admin, boxp, sendsms) = (free_port(), free_port(), free_port());
    let d = dir.display();
    let conf = dir.join("kannel.conf");
    std::fs::write(
        &conf,
        format!(
            r#"group = core
admin-port = {admin}
admin-password = test
status-password = test
smsbox-port = {boxp}
box-allow-ip = 127.0.0.1
log-level = 1
log-file = "{d}/bearerbox.log"
dlr-storage = internal

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {sendsms}
log-level = 1
log-file = "{d}/smsbox.log"

group = sendsms-user
username = app
password = app
max-messages = 5
concatenation = true

group = smsc
smsc = smpp
smsc-id = smsgw
host = 127.0.0.1
port = {smpp}
transceiver-mode = true
smsc-username = kannel
smsc-password = pw123
system-type = ""
enquire-link-interval = 30
reconnect-delay = 1
dest-addr-ton = 1
dest-addr-npi = 1
"#,
            smpp = srv.addr.port()
        ),
    )?;
    let mut boxes = Boxes(Vec::new());
    let quiet = || Stdio::null();
    boxes.0.push(
        Command::new(bearerbox)
            .arg(&conf)
            .stdin(quiet())
            .stdout(quiet())
            .stderr(quiet())
            .spawn()?,
    );
    let http = reqwest::Client::new();
    let status = format!("http://127.0.0.1:{admin}/status.txt?password=test");
    eventually(
        "Kannel's bind to smsgw online",
        Duration::from_secs(30),
        || async {
            let s = http.get(&status).send().await.ok()?.text().await.ok()?;
            s.contains("online").then_some(())
        },
    )
    .await?;
    boxes.0.push(
        Command::new(smsbox)
            .arg(&conf)
            .stdin(quiet())
            .stdout(quiet())
            .stderr(quiet())
            .spawn()?,
    );
    let (dlr_addr, dlrs) = dlr_sink().await?;
    let url = format!("http://127.0.0.1:{sendsms}/cgi-bin/sendsms");
    let long = "Kannel splits this long message into parts with its own UDH. ".repeat(4);
    let sends: [(&str, &str, &Query); 3] = [
        ("447911123401", "Hello from Kannel", &[]),
        (
            "447911123402",
            "Привет от Kannel",
            &[("coding", "2"), ("charset", "UTF-8")],
        ),
        ("447911123403", &long, &[]),
    ];
    for (to, text, extra) in sends {
        let dlr_url = format!("http://{dlr_addr}/dlr?to={to}&type=%d");
        let mut q: Vec<(&str, &str)> = vec![
            ("username", "app"),
            ("password", "app"),
            ("from", "Shop"),
            ("to", to),
            ("text", text),
            ("dlr-mask", "3"),
            ("dlr-url", &dlr_url),
        ];
        q.extend_from_slice(extra);
        let q: Vec<(String, String)> = q
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = eventually("smsbox accepting sendsms", Duration::from_secs(30), || {
            let (http, url, q) = (http.clone(), url.clone(), q.clone());
            async move { http.get(&url).query(&q).send().await.ok() }
        })
        .await?;
        assert!(r.status().is_success(), "sendsms: {}", r.text().await?);
    }

    let got = eventually(
        "Kannel's three messages on the ingest topic",
        Duration::from_secs(30),
        || {
            let kafka = kafka.clone();
            async move {
                let got = requests(&kafka).await.ok()?;
                (got.len() >= 3).then_some(got)
            }
        },
    )
    .await?;
    let mut bodies: Vec<(String, String)> = got
        .values()
        .map(|r| (r.to.clone(), r.body.clone()))
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![
            ("+447911123401".to_string(), "Hello from Kannel".to_string()),
            ("+447911123402".to_string(), "Привет от Kannel".to_string()),
            ("+447911123403".to_string(), long.clone()),
        ]
    );
    assert!(got
        .values()
        .all(|r| r.client_id == "acme" && r.registered_delivery == Some(true)));

    // The receipts owed for them (as the receipt service writes them): Kannel matches
    // each by our id and calls its dlr-url, 1 for delivered and 2 for failed.
    for r in got.values() {
        let failed = r.to.ends_with('2');
        let owed = smsgw_codec::SmppReceipt {
            message_id: r.message_id.clone().unwrap_or_default(),
            event_id: "e".into(),
            system_id: "kannel".into(),
            client_id: "acme".into(),
            status: if failed { "undelivered" } else { "delivered" }.into(),
            error_code: None,
            source: r.from.clone(),
            destination: r.to.clone(),
            submitted_at: smsgw_kafka::now_ms(),
            done_at: smsgw_kafka::now_ms(),
        };
        let topic = kafka.topics.smpp_receipts("kannel");
        smsgw_testkit::produce(&kafka, &topic, &owed.message_id, &owed).await?;
    }
    let mut reports = eventually(
        "Kannel's three delivery reports",
        Duration::from_secs(30),
        || {
            let dlrs = dlrs.clone();
            async move {
                let d = dlrs.lock().unwrap_or_else(|p| p.into_inner()).clone();
                (d.len() >= 3).then_some(d)
            }
        },
    )
    .await?;
    reports.sort();
    assert_eq!(
        reports,
        [
            "/dlr?to=447911123401&type=1",
            "/dlr?to=447911123402&type=2",
            "/dlr?to=447911123403&type=1"
        ]
    );
    drop(boxes);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = srv.stop.send(());
    srv.task.await??;
    Ok(())
}
