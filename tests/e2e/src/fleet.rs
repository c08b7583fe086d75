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
    service: &'static str,
    config: PathBuf,
    child: Option<Child>,
    /// Base URL of `/readyz`.
    admin: String,
}

/// Running service processes.
pub struct Fleet {
    dir: PathBuf,
    procs: BTreeMap<String, Proc>,
    /// Base URL of ingest's HTTP API (the first instance's).
    pub api: String,
    /// Instances of each service.
    pub instances: u32,
}

fn kafka_toml(k: &KafkaConfig, instance: u32, instances: u32) -> String {
    format!(
        "[kafka]\nbrokers = \"{}\"\nassignment = \"static\"\ninstances = {instances}\ninstance = {instance}\n[kafka.topics]\nprefix = \"{}\"\n",
        k.brokers, k.topics.prefix
    )
}

/// The process name of `service`'s instance `i`: the service's own name when it runs
/// alone, else `<service>-<i>`.
pub fn member(service: &str, i: u32, instances: u32) -> String {
    if instances == 1 {
        service.to_string()
    } else {
        format!("{service}-{i}")
    }
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
        Self::start_scaled(kafka, smsc_url, dir, receipt_timeout_ms, window, 1).await
    }

    /// Like [`Self::start_with`], with `instances` of every service sharing the
    /// partitions by instance number (`assignment = "static"`), as the chart's
    /// StatefulSets run them. The carrier gets one bind per dispatcher.
    pub async fn start_scaled(
        kafka: &KafkaConfig,
        smsc_url: &str,
        dir: &Path,
        receipt_timeout_ms: i64,
        window: usize,
        instances: u32,
    ) -> anyhow::Result<Self> {
        let port = || free_port();
        let mut procs = BTreeMap::new();
        let mut api = None;
        for i in 0..instances {
            let k = kafka_toml(kafka, i, instances);
            let (a, r, d, rc, o, oa) = (port(), port(), port(), port(), port(), port());
            let ia = port();
            api.get_or_insert(a);
            let configs: [(&'static str, String, u16); 5] = [
                (
                    "ingest",
                    // send_at from 1 s ahead, so tests can hold messages briefly.
                    format!("listen = \"127.0.0.1:{a}\"\nadmin_listen = \"127.0.0.1:{ia}\"\nauth = \"disabled\"\n[limits]\nmin_send_at_ahead_s = 1\n{k}"),
                    ia,
                ),
                (
                    "router",
                    format!("admin_listen = \"127.0.0.1:{r}\"\n[[routes]]\nprefix = \"+\"\ncarriers = [\"sim\"]\n{k}"),
                    r,
                ),
                (
                    "dispatcher",
                    format!(
                        "admin_listen = \"127.0.0.1:{d}\"\n[[carriers]]\nname = \"sim\"\nurl = \"{smsc_url}\"\nsystem_id = \"smsgw\"\npassword = \"secret\"\nbinds = {instances}\nwindow = {window}\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n{k}"
                    ),
                    d,
                ),
                (
                    "receipt",
                    // Receipts nobody claims (the first copy of a send repeated after a
                    // dispatcher kill) are dead-lettered after 10 s, not 10 min.
                    format!("admin_listen = \"127.0.0.1:{rc}\"\ntick_ms = 100\nreceipt_timeout_ms = {receipt_timeout_ms}\norphan_timeout_ms = 10000\n{k}"),
                    rc,
                ),
                (
                    "optout",
                    format!("admin_listen = \"127.0.0.1:{o}\"\napi_listen = \"127.0.0.1:{oa}\"\nauth = \"disabled\"\n{k}"),
                    o,
                ),
            ];
            for (service, text, admin_port) in configs {
                let name = member(service, i, instances);
                let config = dir.join(format!("{name}.toml"));
                std::fs::write(&config, text)?;
                procs.insert(
                    name,
                    Proc {
                        service,
                        config,
                        child: None,
                        admin: format!("http://127.0.0.1:{admin_port}"),
                    },
                );
            }
        }
        let mut fleet = Fleet {
            dir: dir.to_path_buf(),
            procs,
            api: format!("http://127.0.0.1:{}", api.unwrap_or_default()),
            instances,
        };
        let names: Vec<String> = fleet.procs.keys().cloned().collect();
        for n in &names {
            fleet.spawn(n)?;
        }
        for n in &names {
            fleet.ready(n).await?;
        }
        Ok(fleet)
    }

    /// Every process name, `<service>` or `<service>-<i>`.
    pub fn members(&self) -> Vec<String> {
        self.procs.keys().cloned().collect()
    }

    fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.procs.get_mut(name).context("no such service")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(bin(p.service)?);
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
        p.child = Some(cmd.spawn().with_context(|| format!("spawning {name}"))?);
        Ok(())
    }

    /// Waits until the service's `/readyz` answers 200 (the dispatcher: and `sim` is bound).
    pub async fn ready(&self, name: &str) -> anyhow::Result<()> {
        let p = &self.procs[name];
        let service = p.service;
        let url = format!("{}/readyz", p.admin);
        eventually(&format!("{name} ready"), Duration::from_secs(60), || {
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
                "{name}: see {}",
                self.dir.join(format!("{name}.log")).display()
            )
        })
    }

    /// Process id of each running service.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .filter_map(|(n, p)| Some((n.clone(), p.child.as_ref()?.id())))
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
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.kill9(name);
        self.spawn(name)?;
        self.ready(name).await
    }

    /// Stops the service with SIGTERM, as an orchestrator does, and waits (at most
    /// `within`) for it to exit; an error if it did not exit or exited with a failure.
    pub async fn terminate(&mut self, name: &str, within: Duration) -> anyhow::Result<()> {
        let Some(mut c) = self.procs.get_mut(name).and_then(|p| p.child.take()) else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {name} failed");
        let start = std::time::Instant::now();
        let deadline = start + within;
        loop {
            if let Some(st) = c.try_wait()? {
                println!("{name} exited {:?} after SIGTERM", start.elapsed());
                anyhow::ensure!(st.success(), "{name} exited with {st} after SIGTERM");
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                // Where it hangs, for the one reading the failure (when gdb is here).
                let stacks = self.dir.join(format!("{name}.stacks"));
                let _ = Command::new("gdb")
                    .args([
                        "-p",
                        &c.id().to_string(),
                        "-batch",
                        "-ex",
                        "thread apply all bt",
                    ])
                    .stdout(std::fs::File::create(&stacks)?)
                    .stderr(Stdio::null())
                    .status();
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "{name} did not exit within {within:?} of SIGTERM (stacks: {})",
                    stacks.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a stopped service and waits until it is ready.
    pub async fn start_member(&mut self, name: &str) -> anyhow::Result<()> {
        self.spawn(name)?;
        self.ready(name).await
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
        for n in self.members() {
            self.kill9(&n);
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
