//! Kannel 1.4.5 (Debian's `kannel`, installed by `make deps`) binds to the SMPP server
//! as its SMSC: bearerbox holds a transceiver bind with the account's credentials, and
//! messages sent through smsbox's `sendsms` (short GSM, UCS-2, and a long one Kannel
//! splits with its own UDH) must reach the ingest topic with their exact text.
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
async fn kannel_binds_as_an_esme_and_its_messages_arrive_whole() -> anyhow::Result<()> {
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
        let mut q: Vec<(&str, &str)> = vec![
            ("username", "app"),
            ("password", "app"),
            ("from", "Shop"),
            ("to", to),
            ("text", text),
            ("dlr-mask", "3"),
            ("dlr-url", "http://127.0.0.1:9/dlr"),
        ];
        q.extend_from_slice(extra);
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
    drop(boxes);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = srv.stop.send(());
    srv.task.await??;
    Ok(())
}
