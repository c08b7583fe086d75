//! The five services as separate processes (the binaries `cargo build --workspace`
//! makes), so a test can `kill -9` any of them and start it again, as an operator's
//! supervisor would.

use anyhow::{bail, Context};
use smsgw_kafka::KafkaConfig;
use smsgw_testkit::{eventually, free_port};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The services, by name.
pub const SERVICES: [&str; 5] = ["ingest", "router", "dispatcher", "receipt", "optout"];

/// Where `cargo` put the service binaries: next to the running executable (a binary in
/// `target/<profile>/`) or one level up (a test in `target/<profile>/deps/`).
pub fn bin(service: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("executable has no directory")?;
    let name = format!("smsgw-{service}");
    for dir in [Some(here), here.parent()].into_iter().flatten() {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{name} not built next to {}: run `cargo build --workspace` (make test builds every target)",
        exe.display()
    )
}

struct Proc {
    config: PathBuf,
    child: Option<Child>,
    /// Base URL of `/readyz`.
    admin: String,
}

/// Running service processes.
pub struct Fleet {
    dir: PathBuf,
    procs: BTreeMap<&'static str, Proc>,
    /// Base URL of ingest's HTTP API.
    pub api: String,
}

fn kafka_toml(k: &KafkaConfig) -> String {
    format!(
        "[kafka]\nbrokers = \"{}\"\nassignment = \"static\"\n[kafka.topics]\nprefix = \"{}\"\n",
        k.brokers, k.topics.prefix
    )
}

impl Fleet {
    /// Writes a config per service into `dir` (the carrier `sim` at `smsc_url`) and
    /// starts them all; returns once every `/readyz` answers 200 and the carrier is bound.
    /// `receipt_timeout_ms`: how long the receipt service waits for a final receipt.
    pub async fn start(
        kafka: &KafkaConfig,
        smsc_url: &str,
        dir: &Path,
        receipt_timeout_ms: i64,
    ) -> anyhow::Result<Self> {
        Self::start_with(kafka, smsc_url, dir, receipt_timeout_ms, 10).await
    }

    /// Like [`Self::start`], with the dispatcher's `window`.
    pub async fn start_with(
        kafka: &KafkaConfig,
        smsc_url: &str,
        dir: &Path,
        receipt_timeout_ms: i64,
        window: usize,
    ) -> anyhow::Result<Self> {
        let port = || free_port();
        let k = kafka_toml(kafka);
        let (api, r, d, rc, o, oa) = (port(), port(), port(), port(), port(), port());
        let configs: [(&'static str, String, u16); 5] = [
            ("ingest", format!("listen = \"127.0.0.1:{api}\"\nauth = \"disabled\"\n{k}"), api),
            (
                "router",
                format!("admin_listen = \"127.0.0.1:{r}\"\n[[routes]]\nprefix = \"+\"\ncarriers = [\"sim\"]\n{k}"),
                r,
            ),
            (
                "dispatcher",
                format!(
                    "admin_listen = \"127.0.0.1:{d}\"\n[[carriers]]\nname = \"sim\"\nurl = \"{smsc_url}\"\nsystem_id = \"smsgw\"\npassword = \"secret\"\nwindow = {window}\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n{k}"
                ),
                d,
            ),
            (
                "receipt",
                format!("admin_listen = \"127.0.0.1:{rc}\"\ntick_ms = 100\nreceipt_timeout_ms = {receipt_timeout_ms}\n{k}"),
                rc,
            ),
            (
                "optout",
                format!("admin_listen = \"127.0.0.1:{o}\"\napi_listen = \"127.0.0.1:{oa}\"\nauth = \"disabled\"\n{k}"),
                o,
            ),
        ];
        let mut procs = BTreeMap::new();
        for (name, text, admin_port) in configs {
            let config = dir.join(format!("{name}.toml"));
            std::fs::write(&config, text)?;
            procs.insert(
                name,
                Proc {
                    config,
                    child: None,
                    admin: format!("http://127.0.0.1:{admin_port}"),
                },
            );
        }
        let mut fleet = Fleet {
            dir: dir.to_path_buf(),
            procs,
            api: format!("http://127.0.0.1:{api}"),
        };
        for s in SERVICES {
            fleet.spawn(s)?;
        }
        for s in SERVICES {
            fleet.ready(s).await?;
        }
        Ok(fleet)
    }

    fn spawn(&mut self, service: &'static str) -> anyhow::Result<()> {
        let p = self.procs.get_mut(service).context("no such service")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{service}.log")))?;
        let mut cmd = Command::new(bin(service)?);
        cmd.arg(&p.config)
            .env(
                "RUST_LOG",
                std::env::var("SMSGW_FAULTS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        // A stray SMSGW_* variable would be read as config.
        for (k, _) in std::env::vars() {
            if k.starts_with("SMSGW_") {
                cmd.env_remove(k);
            }
        }
        p.child = Some(cmd.spawn().with_context(|| format!("spawning {service}"))?);
        Ok(())
    }

    /// Waits until the service's `/readyz` answers 200 (the dispatcher: and `sim` is bound).
    pub async fn ready(&self, service: &str) -> anyhow::Result<()> {
        let p = &self.procs[service];
        let url = format!("{}/readyz", p.admin);
        eventually(&format!("{service} ready"), Duration::from_secs(60), || {
            let url = url.clone();
            async move {
                let r = reqwest::get(url).await.ok()?;
                let ok = r.status() == 200;
                let body: serde_json::Value = r.json().await.ok()?;
                (ok && (service != "dispatcher" || body["checks"]["carrier:sim"]["up"] == true))
                    .then_some(())
            }
        })
        .await
        .with_context(|| {
            format!(
                "{service}: see {}",
                self.dir.join(format!("{service}.log")).display()
            )
        })
    }

    /// Process id of each running service.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.procs
            .iter()
            .filter_map(|(n, p)| Some((*n, p.child.as_ref()?.id())))
            .collect()
    }

    /// `kill -9` the service.
    pub fn kill9(&mut self, service: &str) {
        if let Some(mut c) = self.procs.get_mut(service).and_then(|p| p.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the service again (after [`Self::kill9`]) and waits until it is ready.
    pub async fn restart(&mut self, service: &'static str) -> anyhow::Result<()> {
        self.kill9(service);
        self.spawn(service)?;
        self.ready(service).await
    }

    /// The value of a metric series on a service's `/metrics` (0 when absent).
    pub async fn metric(&self, service: &str, series: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.procs[service].admin))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix(series))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum())
    }

    /// Stops every service with SIGTERM-free kill (the test is over).
    pub fn stop(mut self) {
        for s in SERVICES {
            self.kill9(s);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in self.procs.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
