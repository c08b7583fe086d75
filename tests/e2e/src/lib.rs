//! End-to-end harness: a real Tansu broker, a real SMPP SMSC (our simulator or a
//! third-party one on the npm `smpp` package), and the five services running in-process
//! through their `run(config, shutdown)` entry points, each with its own ports and a
//! unique topic prefix.

pub mod fleet;
pub mod solo;

use anyhow::Context;
use smsgw_kafka::KafkaConfig;
use smsgw_testkit::{eventually, free_port, stopper, Broker};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The carrier name every scenario uses.
pub const CARRIER: &str = "alpha";

/// An SMSC the gateway binds to, with a control port (`POST /mo`, `GET /stats`).
pub enum Smsc {
    /// Our simulator, in-process.
    Sim(smsgw_carrier_sim::Simulator),
    /// The npm `smpp` SMSC in `tests/peers`, as a node process.
    Npm {
        /// The node process.
        child: Child,
        /// SMPP address.
        smpp: SocketAddr,
        /// Control address.
        control: SocketAddr,
    },
}

/// Destinations starting with this are refused by the SMSC at submit.
pub const REJECT_PREFIX: &str = "4474002";
/// Destinations starting with this get an `UNDELIV` receipt.
pub const UNDELIV_PREFIX: &str = "4474003";

impl Smsc {
    /// Starts our simulator with the scenario rules.
    pub async fn sim() -> anyhow::Result<Self> {
        use smsgw_carrier_sim::{Config, Rule, Simulator};
        let mut c = Config::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
        c.rules = vec![
            Rule {
                prefix: REJECT_PREFIX.into(),
                reject_rate: 1.0,
                ..Rule::default()
            },
            Rule {
                prefix: UNDELIV_PREFIX.into(),
                success_rate: 0.0,
                dlr_delay_ms: 100,
                ..Rule::default()
            },
            Rule {
                dlr_delay_ms: 100,
                ..Rule::default()
            },
        ];
        Ok(Smsc::Sim(Simulator::start(c).await?))
    }

    /// Starts the npm `smpp` SMSC (needs `npm ci` in `tests/peers`).
    pub async fn npm() -> anyhow::Result<Self> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peers");
        anyhow::ensure!(
            dir.join("node_modules/smpp").exists(),
            "run `npm ci` in tests/peers (make deps does)"
        );
        let (p, c) = (free_port(), free_port());
        let rules = format!(
            r#"[{{"prefix":"{REJECT_PREFIX}","reject":true}},{{"prefix":"{UNDELIV_PREFIX}","stat":"UNDELIV"}}]"#
        );
        let child = Command::new("node")
            .arg(dir.join("npm-smpp-smsc.js"))
            .args([
                "--port",
                &p.to_string(),
                "--control",
                &c.to_string(),
                "--dlr-delay-ms",
                "100",
                "--rules",
                &rules,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting node")?;
        let control: SocketAddr = format!("127.0.0.1:{c}").parse()?;
        eventually("npm SMSC control port", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(control).await.ok()
        })
        .await?;
        Ok(Smsc::Npm {
            child,
            smpp: format!("127.0.0.1:{p}").parse()?,
            control,
        })
    }

    /// `smpp://` URL.
    pub fn url(&self) -> String {
        match self {
            Smsc::Sim(s) => format!("smpp://{}", s.smpp_addr),
            Smsc::Npm { smpp, .. } => format!("smpp://{smpp}"),
        }
    }

    fn control(&self) -> SocketAddr {
        match self {
            Smsc::Sim(s) => s.control_addr,
            Smsc::Npm { control, .. } => *control,
        }
    }

    /// Injects an MO; returns the number of sessions that got it.
    pub async fn send_mo(&self, from: &str, to: &str, body: &str) -> anyhow::Result<u64> {
        let r: serde_json::Value = reqwest::Client::new()
            .post(format!("http://{}/mo", self.control()))
            .json(&serde_json::json!({"from": from, "to": to, "body": body}))
            .send()
            .await?
            .json()
            .await?;
        Ok(r["delivered_to_sessions"].as_u64().unwrap_or(0))
    }

    /// The SMSC's counters (`submits`, `receipts`, ...).
    pub async fn stats(&self) -> anyhow::Result<serde_json::Value> {
        Ok(reqwest::Client::new()
            .get(format!("http://{}/stats", self.control()))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Stops the SMSC.
    pub async fn stop(self) {
        match self {
            Smsc::Sim(s) => s.stop().await,
            Smsc::Npm { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A carrier pointing at `smsc_url` with the test's quick reconnects.
pub fn carrier_config(name: &str, smsc_url: &str) -> smsgw_dispatcher::CarrierConfig {
    let mut carrier = smsgw_dispatcher::CarrierConfig::new(name, smsc_url, "smsgw", "secret");
    carrier.reconnect_min_ms = 100;
    carrier.reconnect_max_ms = 1000;
    carrier.response_timeout_ms = 5000;
    carrier
}

/// The five services running against one broker.
pub struct Gateway {
    /// The broker (dropped last).
    pub broker: Broker,
    /// Kafka config with this gateway's topic prefix.
    pub kafka: KafkaConfig,
    /// Base URL of the HTTP API.
    pub api: String,
    /// Base URL of the dispatcher's carrier webhooks.
    pub webhooks: String,
    /// Base URL of each service's `/metrics`, `/healthz` and `/readyz`.
    pub admin: Vec<(&'static str, String)>,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

fn local() -> SocketAddr {
    format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address")
}

impl Gateway {
    /// Starts a broker, creates the topics and starts the services, routing `+44` to
    /// [`CARRIER`] at `smsc_url`.
    pub async fn start(smsc_url: &str) -> anyhow::Result<Self> {
        Self::start_with(smsc_url, |_| {}).await
    }

    /// Like [`Gateway::start`], with the carrier's settings adjusted by `configure`.
    pub async fn start_with(
        smsc_url: &str,
        configure: impl FnOnce(&mut smsgw_dispatcher::CarrierConfig),
    ) -> anyhow::Result<Self> {
        Self::start_full(smsc_url, configure, |_| {}).await
    }

    /// Like [`Gateway::start_with`], with the optout service's settings adjusted too.
    pub async fn start_full(
        smsc_url: &str,
        configure: impl FnOnce(&mut smsgw_dispatcher::CarrierConfig),
        configure_optout: impl FnOnce(&mut smsgw_optout::Config),
    ) -> anyhow::Result<Self> {
        let mut carrier = carrier_config(CARRIER, smsc_url);
        configure(&mut carrier);
        let routes = vec![smsgw_router::Route {
            prefix: "+44".into(),
            carriers: vec![CARRIER.into()],
        }];
        Self::start_carriers(vec![carrier], routes, |_| {}, configure_optout).await
    }

    /// Starts the gateway with these carriers and routes, the router's settings
    /// adjusted by `configure_router`.
    pub async fn start_carriers(
        carriers: Vec<smsgw_dispatcher::CarrierConfig>,
        routes: Vec<smsgw_router::Route>,
        configure_router: impl FnOnce(&mut smsgw_router::Config),
        configure_optout: impl FnOnce(&mut smsgw_optout::Config),
    ) -> anyhow::Result<Self> {
        let broker = Broker::start()?;
        let kafka = broker.kafka();
        let names: Vec<&str> = carriers.iter().map(|c| c.name.as_str()).collect();
        broker.bootstrap(&kafka, &names).await?;
        let mut stops = Vec::new();
        let mut tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)> = Vec::new();
        let mut admin: Vec<(&'static str, String)> = Vec::new();

        // A port drawn by `local()` can be taken by a parallel test's server before
        // ingest binds it: then ingest stops at once (its admin port may still answer),
        // and it is started again on other ports.
        let mut tries = 0;
        let api = loop {
            let mut ingest = smsgw_ingest::Config::new(kafka.clone());
            ingest.auth = smsgw_runtime::auth::AuthMode::Disabled;
            ingest.listen = local();
            ingest.admin_listen = local();
            let (listen, admin_url) = (ingest.listen, format!("http://{}", ingest.admin_listen));
            let (tx, sd) = stopper();
            let task: JoinHandle<anyhow::Result<()>> =
                tokio::spawn(async move { Ok(smsgw_ingest::run(ingest, sd).await?) });
            // Ingest answers /healthz only once its API listens.
            let http = reqwest::Client::new();
            let up = eventually("ingest up", Duration::from_secs(30), || async {
                if task.is_finished() {
                    return Some(false);
                }
                let ok = http
                    .get(format!("{admin_url}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                ok.then(|| !task.is_finished())
            })
            .await?;
            if up {
                admin.push(("ingest", admin_url));
                stops.push(tx);
                tasks.push(("ingest", task));
                break format!("http://{listen}");
            }
            tries += 1;
            let why = task.await.map(|r| r.err().map(|e| format!("{e:#}")));
            anyhow::ensure!(tries < 5, "ingest did not start: {why:?}");
            eprintln!("ingest stopped at start ({why:?}); trying other ports");
        };

        let mut router = smsgw_router::Config::new(kafka.clone(), routes);
        router.admin_listen = local();
        configure_router(&mut router);
        admin.push(("router", format!("http://{}", router.admin_listen)));
        let (tx, sd) = stopper();
        stops.push(tx);
        tasks.push((
            "router",
            tokio::spawn(async move { Ok(smsgw_router::run(router, sd).await?) }),
        ));

        let webhook_listen = local();
        let webhooks = format!("http://{webhook_listen}");
        let mut dispatcher = smsgw_dispatcher::Config::new(kafka.clone(), carriers);
        dispatcher.webhook_listen = Some(webhook_listen);
        dispatcher.admin_listen = local();
        admin.push(("dispatcher", format!("http://{}", dispatcher.admin_listen)));
        let (tx, sd) = stopper();
        stops.push(tx);
        tasks.push((
            "dispatcher",
            tokio::spawn(async move { Ok(smsgw_dispatcher::run(dispatcher, sd).await?) }),
        ));

        let mut receipt = smsgw_receipt::Config::new(kafka.clone());
        receipt.admin_listen = local();
        admin.push(("receipt", format!("http://{}", receipt.admin_listen)));
        receipt.tick_ms = 100;
        let (tx, sd) = stopper();
        stops.push(tx);
        tasks.push((
            "receipt",
            tokio::spawn(async move { Ok(smsgw_receipt::run(receipt, sd).await?) }),
        ));

        let mut optout = smsgw_optout::Config::new(kafka.clone());
        optout.auth = smsgw_runtime::auth::AuthMode::Disabled;
        optout.admin_listen = local();
        admin.push(("optout", format!("http://{}", optout.admin_listen)));
        optout.api_listen = local();
        configure_optout(&mut optout);
        let (tx, sd) = stopper();
        stops.push(tx);
        tasks.push((
            "optout",
            tokio::spawn(async move { Ok(smsgw_optout::run(optout, sd).await?) }),
        ));

        let gw = Gateway {
            broker,
            kafka,
            api,
            webhooks,
            admin,
            stops,
            tasks,
        };
        let http = reqwest::Client::new();
        let ingest_admin = gw.admin_url("ingest")?;
        eventually("ingest HTTP API", Duration::from_secs(30), || async {
            http.get(format!("{ingest_admin}/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await?;
        Ok(gw)
    }

    /// Base URL of `service`'s `/metrics`, `/healthz` and `/readyz`.
    pub fn admin_url(&self, service: &str) -> anyhow::Result<String> {
        self.admin
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, u)| u.clone())
            .with_context(|| format!("no service {service}"))
    }

    /// The value of a metric sample (`name{labels}` as exposed, exact match on the part
    /// before the value), summed over matching lines; 0 when absent.
    pub async fn metric(&self, service: &str, series: &str) -> anyhow::Result<f64> {
        let base = self.admin_url(service)?;
        let text = reqwest::get(format!("{base}/metrics"))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(k, _)| *k == series)
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum())
    }

    /// `POST /v1/messages`; returns (status, body).
    pub async fn post(&self, body: serde_json::Value) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/messages", self.api))
            .json(&body)
            .send()
            .await?;
        Ok((r.status().as_u16(), r.json().await?))
    }

    /// `GET /v1/messages/{id}`, if found.
    pub async fn status(&self, id: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/messages/{id}", self.api))
            .send()
            .await?;
        if r.status() == 404 {
            return Ok(None);
        }
        Ok(Some(r.json().await?))
    }

    /// Waits until the message reaches a final state and returns its status.
    pub async fn final_status(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        eventually(
            &format!("final state of {id}"),
            Duration::from_secs(60),
            || async {
                self.status(id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|s| s["final"] == true)
            },
        )
        .await
    }

    /// Stops every service and reports any that failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        for s in self.stops {
            let _ = s.send(());
        }
        for (name, t) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(30), t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => anyhow::bail!("{name} failed: {e:#}"),
                Ok(Err(e)) => anyhow::bail!("{name} panicked: {e}"),
                Err(_) => anyhow::bail!("{name} did not stop within 30 s"),
            }
        }
        Ok(())
    }
}

/// Which third-party SMPP implementation plays the SMSC in an interop test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// The npm `smpp` package (`tests/peers/npm-smpp-smsc.js`).
    Npm,
    /// Perl Net::SMPP (`tests/peers/perl-smpp-smsc.pl`).
    Perl,
}

/// A third-party SMSC whose every bind, submit (with the text as *it* decoded it),
/// receipt and dropped connection lands in a JSON-lines log.
pub struct Peer {
    child: Child,
    /// `smpp://` URL.
    pub url: String,
    log: PathBuf,
    control: Option<SocketAddr>,
}

impl Peer {
    /// Starts `kind` with `--bind-fail bind_fail` and the given rules (see the scripts).
    pub async fn start(
        kind: PeerKind,
        bind_fail: u32,
        rules: serde_json::Value,
    ) -> anyhow::Result<Self> {
        Self::start_tls(kind, bind_fail, rules, None).await
    }

    /// Like [`Peer::start`]; with `tls` (the key and certificate PEM files), the npm SMSC
    /// serves SMPP over TLS and its URL is `smpps://`.
    pub async fn start_tls(
        kind: PeerKind,
        bind_fail: u32,
        rules: serde_json::Value,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> anyhow::Result<Self> {
        // A port drawn by `free_port` can be taken by another test's server before the
        // peer binds it (the peer then exits at once): draw again, five tries.
        let mut tries = 0;
        loop {
            match Self::start_once(kind, bind_fail, &rules, tls).await {
                Ok(p) => return Ok(p),
                Err(e) if tries < 4 => {
                    eprintln!("{e:#}; trying other ports");
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_once(
        kind: PeerKind,
        bind_fail: u32,
        rules: &serde_json::Value,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> anyhow::Result<Self> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peers");
        let port = free_port();
        let log =
            std::env::temp_dir().join(format!("smsgw-peer-{}-{port}.jsonl", std::process::id()));
        std::fs::write(&log, "")?;
        let common = [
            "--port".to_string(),
            port.to_string(),
            "--log".into(),
            log.to_string_lossy().into_owned(),
            "--bind-fail".into(),
            bind_fail.to_string(),
            "--rules".into(),
            rules.to_string(),
            "--dlr-delay-ms".into(),
            "100".into(),
        ];
        let control_port = free_port();
        let mut cmd = match kind {
            PeerKind::Npm => {
                anyhow::ensure!(
                    dir.join("node_modules/smpp").exists(),
                    "run `npm ci` in tests/peers (make deps does)"
                );
                let mut c = Command::new("node");
                c.arg(dir.join("npm-smpp-smsc.js"))
                    .args(["--control", &control_port.to_string()]);
                if let Some((key, cert)) = tls {
                    c.arg("--tls-key").arg(key).arg("--tls-cert").arg(cert);
                }
                c
            }
            PeerKind::Perl => {
                let probe = Command::new("perl").args(["-MNet::SMPP", "-e1"]).status();
                anyhow::ensure!(
                    probe.is_ok_and(|s| s.success()),
                    "Perl Net::SMPP is missing: apt-get install libnet-smpp-perl (make deps does)"
                );
                let mut c = Command::new("perl");
                c.arg(dir.join("perl-smpp-smsc.pl"));
                c
            }
        };
        let mut child = cmd
            .args(common)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the {kind:?} SMSC"))?;
        // Both print one line once they listen. (Not a probe connection: the Perl peer
        // counts connections for --bind-fail.)
        let stdout = child.stdout.take().context("peer stdout")?;
        let ready = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .context("peer SMSC did not start within 20 s")???;
        if !line.contains("ready") {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("peer SMSC said {line:?}");
        }
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        Ok(Peer {
            child,
            url: if tls.is_some() {
                format!("smpps://{addr}")
            } else {
                format!("smpp://{addr}")
            },
            log,
            control: (kind == PeerKind::Npm).then(|| {
                format!("127.0.0.1:{control_port}")
                    .parse()
                    .expect("address")
            }),
        })
    }

    /// Every event the peer logged so far.
    pub fn events(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(&self.log)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("peer log line {l:?}")))
            .collect()
    }

    /// The npm peer's MO injection URL (`POST {from, to, body}`).
    pub fn mo_url(&self) -> anyhow::Result<String> {
        let control = self.control.context("only the npm peer takes MO")?;
        Ok(format!("http://{control}/mo"))
    }

    /// Injects an MO through the npm peer's control port; returns the sessions that got it.
    pub async fn send_mo(&self, from: &str, to: &str, body: &str) -> anyhow::Result<u64> {
        let r: serde_json::Value = reqwest::Client::new()
            .post(self.mo_url()?)
            .json(&serde_json::json!({"from": from, "to": to, "body": body}))
            .send()
            .await?
            .json()
            .await?;
        Ok(r["delivered_to_sessions"].as_u64().unwrap_or(0))
    }

    /// Logged events of kind `ev` (`bind`, `submit`, `dlr`, `drop`).
    pub fn of(&self, ev: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(self
            .events()?
            .into_iter()
            .filter(|e| e["ev"] == ev)
            .collect())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The Perl peer forks a child per connection: take those down first.
        let _ = Command::new("pkill")
            .args(["-P", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
