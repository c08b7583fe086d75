//! `smsgw-bench-peers [kannel|jasmin|all]`: the same load as `smsgw-bench-pipeline`
//! pushed through Kannel 1.4.5 (Debian) and Jasmin 0.11.0 (PyPI), each against our SMPP
//! carrier simulator with receipts 500 ms after submit (the simulator smsgw's run uses).
//!
//! Each peer gets its ordinary ingestion path (Kannel's smsbox `sendsms`, Jasmin's HTTP
//! API `/send`) with a delivery-report URL per message, and a tuned configuration that is
//! written out in full here and in docs/benchmarks.md: Kannel with its file store,
//! `log-level = 1`, one transceiver bind with a window of 50 and no throughput cap;
//! Jasmin with 4 connectors, `submit_throughput 0` (unlimited), DLR lookup and thrower
//! inside jasmind. The figure is messages over the time from the first request to the
//! last delivered receipt; CPU (cores) and peak RSS are summed over the peer's processes.
//!
//! Writes `bench-results/peers.json`. Knobs: `BENCH_PEER_MESSAGES` (Kannel 20,000,
//! Jasmin 2,000: Jasmin runs at about 1/20 of Kannel's rate), `BENCH_QUICK=1`.

use anyhow::{bail, Context};
use smsgw_bench::{free_port, usage, DlrSink};
use smsgw_carrier_sim::{Config as SimConfig, Rule, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// HTTP requests in flight towards the peer's API.
const CONCURRENCY: usize = 32;
/// Receipt delay at the simulator, as in smsgw's own run.
const DLR_DELAY_MS: u64 = 500;

/// Processes of one peer, killed when dropped.
struct Procs(Vec<(String, Child)>);

impl Procs {
    fn spawn(&mut self, name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
        let out = std::fs::File::create(log)?;
        let child = cmd
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.0.push((name.to_string(), child));
        Ok(())
    }
    /// Every process started, and their descendants (a wrapper script's children).
    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.0.iter().map(|(_, c)| c.id()).collect();
        let mut i = 0;
        while i < pids.len() {
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", pids[i]))
                .unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
            i += 1;
        }
        pids
    }
    /// Summed CPU seconds and peak RSS (kB) of every process and descendant.
    fn usage(&self) -> (f64, u64) {
        self.pids()
            .iter()
            .map(|p| usage(*p))
            .fold((0.0, 0), |(c, m), (c2, m2)| (c + c2, m + m2))
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        let descendants = self.pids();
        let _ = Command::new("kill")
            .arg("-9")
            .args(descendants.iter().map(|p| p.to_string()))
            .stderr(Stdio::null())
            .status();
        for (_, c) in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_http(url: &str, what: &str, secs: u64) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if let Ok(t) = r.text().await {
                return Ok(t);
            }
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer at {url} within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `n` messages through `build(i)` with `CONCURRENCY` requests in flight; `ok`
/// decides whether the peer accepted one.
async fn load(
    n: usize,
    offset: usize,
    build: impl Fn(usize) -> reqwest::RequestBuilder,
    ok: fn(u16, &str) -> bool,
) -> anyhow::Result<()> {
    let sem = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for i in offset..offset + n {
        let permit = sem.clone().acquire_owned().await?;
        let req = build(i);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let r = req.send().await?;
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if !ok(status, &body) {
                bail!("request {i} refused: {status} {body}");
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn wait_dlrs(sink: &DlrSink, target: usize, what: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = sink.counts().0;
    loop {
        let (d, f) = sink.counts();
        if d >= target {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(900) || f > 0 {
            bail!(
                "{what}: {d} of {target} delivered, {f} failed receipts {:?}",
                sink.failures()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = sink.counts().0;
        println!(
            "  {what}: {now}/{target} delivered ({:.0}/s)",
            (now - last) as f64 / 2.0
        );
        last = now;
    }
}

fn to(i: usize) -> String {
    format!("4479{:08}", i % 100_000_000)
}

const TEXT: &str = "Your code is 123456. It expires in 10 minutes.";

/// A peer's measured run.
struct Run {
    messages: usize,
    secs: f64,
    cores: f64,
    peak_rss_mb: f64,
}

impl Run {
    fn json(&self, config: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "messages": self.messages,
            "throughput_msg_per_s": self.messages as f64 / self.secs,
            "seconds": self.secs,
            "cores": self.cores,
            "peak_rss_mb": self.peak_rss_mb,
            "config": config,
        })
    }
}

/// Warm-up, then `n` messages; the processes' CPU and memory over the measured part.
async fn measure(
    procs: &Procs,
    sink: &DlrSink,
    n: usize,
    build: impl Fn(usize) -> reqwest::RequestBuilder + Clone,
    ok: fn(u16, &str) -> bool,
) -> anyhow::Result<Run> {
    let warm = 200;
    println!("  warm-up: {warm} messages");
    load(warm, 0, build.clone(), ok).await?;
    wait_dlrs(sink, warm, "warm-up").await?;
    println!("  throughput: {n} messages");
    let cpu0 = procs.usage().0;
    let t0 = Instant::now();
    load(n, warm, build, ok).await?;
    println!("  requests accepted in {:.1} s", t0.elapsed().as_secs_f64());
    wait_dlrs(sink, warm + n, "throughput").await?;
    let secs = sink
        .last_delivered()
        .map_or(t0.elapsed(), |l| l - t0)
        .as_secs_f64();
    let (cpu1, rss) = procs.usage();
    Ok(Run {
        messages: n,
        secs,
        cores: (cpu1 - cpu0) / secs,
        peak_rss_mb: rss as f64 / 1024.0,
    })
}

async fn simulator() -> anyhow::Result<Simulator> {
    let mut sc = SimConfig::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    sc.rules = vec![Rule {
        dlr_delay_ms: DLR_DELAY_MS,
        ..Rule::default()
    }];
    Simulator::start(sc).await
}

/// Kannel's configuration: the tuned one the figures are for.
fn kannel_conf(dir: &Path, smsc: u16, admin: u16, smsbox: u16, sendsms: u16) -> String {
    let d = dir.display();
    format!(
        r#"group = core
admin-port = {admin}
admin-password = bench
status-password = bench
smsbox-port = {smsbox}
box-allow-ip = 127.0.0.1
log-level = 1
log-file = "{d}/bearerbox.log"
store-type = file
store-location = "{d}/kannel.store"
dlr-storage = internal

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {sendsms}
log-level = 1
log-file = "{d}/smsbox.log"

group = sendsms-user
username = bench
password = bench
max-messages = 1

group = smsc
smsc = smpp
smsc-id = sim
host = 127.0.0.1
port = {smsc}
transceiver-mode = true
smsc-username = kannel
smsc-password = bench
system-type = ""
max-pending-submits = 50
enquire-link-interval = 30
"#
    )
}

async fn kannel(n: usize, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let which = |b: &str| {
        ["/usr/sbin/", "/usr/bin/"]
            .iter()
            .map(|p| PathBuf::from(format!("{p}{b}")))
            .find(|p| p.exists())
    };
    let (Some(bearerbox), Some(smsbox)) = (which("bearerbox"), which("smsbox")) else {
        bail!("Kannel is not installed (make peers-bench installs the Debian package kannel)");
    };
    let sim = simulator().await?;
    let sink = DlrSink::default();
    let dlr_base = sink.serve().await?;
    let (admin, boxp, sendsms) = (free_port()?, free_port()?, free_port()?);
    let conf = dir.join("kannel.conf");
    std::fs::write(
        &conf,
        kannel_conf(dir, sim.smpp_addr.port(), admin, boxp, sendsms),
    )?;
    let mut procs = Procs(Vec::new());
    procs.spawn(
        "bearerbox",
        Command::new(bearerbox).arg(&conf).stdin(Stdio::null()),
        &dir.join("bearerbox.out"),
    )?;
    let status = format!("http://127.0.0.1:{admin}/status.txt?password=bench");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = wait_http(&status, "bearerbox", 30).await?;
        if s.contains("online") {
            break;
        }
        if Instant::now() > deadline {
            bail!("Kannel's SMPP bind did not come online: {s}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    procs.spawn(
        "smsbox",
        Command::new(smsbox).arg(&conf).stdin(Stdio::null()),
        &dir.join("smsbox.out"),
    )?;
    let sendsms_url = format!("http://127.0.0.1:{sendsms}/cgi-bin/sendsms");
    wait_http(&sendsms_url, "smsbox", 30).await?;
    let client = reqwest::Client::new();
    let build = move |i: usize| {
        // Kannel's %d in the dlr-url is the report type: 1 delivered, 2 failed.
        let dlr = format!("{dlr_base}/dlr?id={i}&s=%d");
        client.get(&sendsms_url).query(&[
            ("username", "bench"),
            ("password", "bench"),
            ("smsc", "sim"),
            ("from", "BENCH"),
            ("to", &to(i)),
            ("text", TEXT),
            ("dlr-mask", "3"),
            ("dlr-url", &dlr),
        ])
    };
    let run = measure(&procs, &sink, n, build, |s, _| s == 202 || s == 200).await?;
    println!(
        "kannel: {:.0} msg/s to the last receipt ({n} in {:.1} s), {:.2} cores, {:.1} MB peak RSS (bearerbox + smsbox)",
        run.messages as f64 / run.secs,
        run.secs,
        run.cores,
        run.peak_rss_mb
    );
    drop(procs);
    sim.stop().await;
    Ok(run.json(serde_json::json!({
        "version": "1.4.5 (Debian)",
        "store": "file", "log_level": 1, "binds": "1 transceiver",
        "max_pending_submits": 50, "throughput": "unlimited",
        "ingestion": "smsbox sendsms HTTP, dlr-mask=3, 32 requests in flight",
    })))
}

/// Jasmin's configuration file (ports on 127.0.0.1, quiet logs).
fn jasmin_cfg(amqp: u16, redis: u16, jcli: u16, http: u16, smpps: u16, spec: &Path) -> String {
    format!(
        r#"[amqp-broker]
host = 127.0.0.1
port = {amqp}
spec = {spec}

[redis-client]
host = 127.0.0.1
port = {redis}

[jcli]
bind = 127.0.0.1
port = {jcli}
authentication = False

[http-api]
bind = 127.0.0.1
port = {http}
log_level = WARNING

[smpp-server]
bind = 127.0.0.1
port = {smpps}
log_level = WARNING

[router]
log_level = WARNING

[sm-listener]
log_level = WARNING
"#,
        spec = spec.display()
    )
}

/// Connectors Jasmin gets: it keeps one message in flight per connector.
const JASMIN_CONNECTORS: usize = 4;

/// The jCli session that provisions Jasmin (not persisted: after every start).
fn jasmin_provisioning(smsc: u16) -> Vec<String> {
    let mut lines = Vec::new();
    for c in 0..JASMIN_CONNECTORS {
        for l in [
            "smppccm -a".to_string(),
            format!("cid sim{c}"),
            "host 127.0.0.1".into(),
            format!("port {smsc}"),
            "username jasmin".into(),
            "password bench".into(),
            // The default is 1 msg/s per connector.
            "submit_throughput 0".into(),
            "ok".into(),
            format!("smppccm -1 sim{c}"),
        ] {
            lines.push(l);
        }
    }
    let all: Vec<String> = (0..JASMIN_CONNECTORS)
        .map(|c| format!("smppc(sim{c})"))
        .collect();
    for l in [
        "filter -a",
        "type TransparentFilter",
        "fid all",
        "ok",
        "group -a",
        "gid bench",
        "ok",
        "user -a",
        "username bench",
        "password bench",
        "gid bench",
        "uid bench",
        "ok",
        "mtrouter -a",
        "type DefaultRoute",
        "connector smppc(sim0)",
        "rate 0.00",
        "ok",
        "mtrouter -a",
        "type RandomRoundrobinMTRoute",
        "order 10",
        "filters all",
    ] {
        lines.push(l.to_string());
    }
    lines.push(format!("connectors {}", all.join(";")));
    lines.extend(["rate 0.00".to_string(), "ok".into()]);
    lines
}

/// Drives jCli: one line at a time, each answered by a prompt; any error stops.
async fn jcli(port: u16, lines: &[String]) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut buf = vec![0u8; 65536];
    let mut read_prompt = async |sock: &mut tokio::net::TcpStream| -> anyhow::Result<String> {
        let mut out = String::new();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
                .await
                .context("jCli did not answer")??;
            if n == 0 {
                bail!("jCli closed the connection: {out}");
            }
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
            if out.trim_end().ends_with('>') || out.trim_end().ends_with("jcli :") {
                return Ok(out);
            }
        }
    };
    // jCli shows its first prompt only after a line.
    sock.write_all(b"\r\n").await?;
    read_prompt(&mut sock).await?;
    for l in lines {
        sock.write_all(format!("{l}\r\n").as_bytes()).await?;
        let out = read_prompt(&mut sock).await?;
        if ["Error", "Unknown", "invalid", "Cannot"]
            .iter()
            .any(|e| out.contains(e))
        {
            bail!("jCli refused `{l}`: {out}");
        }
    }
    sock.write_all(b"quit\r\n").await?;
    Ok(())
}

async fn wait_port(port: u16, what: &str, secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn jasmin(n: usize, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let venv =
        PathBuf::from(std::env::var("JASMIN_VENV").unwrap_or_else(|_| ".venv-jasmin".into()));
    let jasmind = venv.join("bin/jasmind.py");
    let spec = std::fs::read_dir(venv.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/txamqp/specs/standard/amqp0-9-1.stripped.xml")
        })
        .find(|p| p.exists());
    let (true, Some(spec)) = (jasmind.exists(), spec) else {
        bail!(
            "Jasmin is not installed in {} (make bench-peers-deps)",
            venv.display()
        );
    };
    let sim = simulator().await?;
    let sink = DlrSink::default();
    let dlr_base = sink.serve().await?;
    let (amqp, dist, redis, jcli_port, http, smpps) = (
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    );
    let mut procs = Procs(Vec::new());
    procs.spawn(
        "redis",
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &redis.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(dir),
        &dir.join("redis.out"),
    )?;
    let rabbit = dir.join("rabbit");
    std::fs::create_dir_all(&rabbit)?;
    std::fs::write(rabbit.join("enabled_plugins"), "[].")?;
    procs.spawn(
        "rabbitmq",
        Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", &rabbit)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", amqp.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_NODENAME", format!("bench{amqp}@localhost"))
            .env("RABBITMQ_MNESIA_BASE", rabbit.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", rabbit.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                rabbit.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", rabbit.join("none"))
            .stdin(Stdio::null()),
        &dir.join("rabbitmq.out"),
    )?;
    wait_port(redis, "redis", 20).await?;
    wait_port(amqp, "RabbitMQ", 60).await?;
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/jasmin/store"))?;
    std::fs::create_dir_all(root.join("var/log/jasmin"))?;
    let cfg = dir.join("jasmin.cfg");
    std::fs::write(&cfg, jasmin_cfg(amqp, redis, jcli_port, http, smpps, &spec))?;
    // jasmind takes a lock at the fixed path /tmp/jasmind and refuses to start while it
    // exists; a killed run leaves it behind. One Jasmin runs on the machine at a time.
    let _ = std::fs::remove_file("/tmp/jasmind.lock");
    procs.spawn(
        "jasmind",
        Command::new(&jasmind)
            .env("ROOT_PATH", &root)
            .arg("-c")
            .arg(&cfg)
            .args(["--enable-dlr-lookup", "--enable-dlr-thrower"])
            .stdin(Stdio::null()),
        &dir.join("jasmind.out"),
    )?;
    wait_port(jcli_port, "jCli", 60).await?;
    wait_port(http, "Jasmin's HTTP API", 60).await?;
    jcli(jcli_port, &jasmin_provisioning(sim.smpp_addr.port())).await?;
    // Connectors bind asynchronously.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stats().binds < JASMIN_CONNECTORS as u64 {
        if Instant::now() > deadline {
            bail!("Jasmin's connectors did not bind: {:?}", sim.stats());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = reqwest::Client::new();
    let send_url = format!("http://127.0.0.1:{http}/send");
    let build = move |i: usize| {
        let dlr = format!("{dlr_base}/dlr/{i}");
        client.get(&send_url).query(&[
            ("username", "bench"),
            ("password", "bench"),
            ("from", "BENCH"),
            ("to", &to(i)),
            ("content", TEXT),
            ("dlr", "yes"),
            ("dlr-url", &dlr),
            ("dlr-level", "2"),
            ("dlr-method", "GET"),
        ])
    };
    let run = measure(&procs, &sink, n, build, |s, b| {
        s == 200 && b.starts_with("Success")
    })
    .await?;
    println!(
        "jasmin: {:.0} msg/s to the last receipt ({n} in {:.1} s), {:.2} cores, {:.1} MB peak RSS (jasmind + RabbitMQ + Redis)",
        run.messages as f64 / run.secs,
        run.secs,
        run.cores,
        run.peak_rss_mb
    );
    drop(procs);
    let _ = std::fs::remove_file("/tmp/jasmind.lock");
    sim.stop().await;
    Ok(run.json(serde_json::json!({
        "version": "0.11.0 (PyPI)",
        "connectors": JASMIN_CONNECTORS, "submit_throughput": "0 (unlimited)",
        "route": "RandomRoundrobinMTRoute over the connectors",
        "dlr": "lookup and thrower inside jasmind, dlr-level=2, GET",
        "ingestion": "HTTP API /send, 32 requests in flight",
    })))
}

#[tokio::main]
async fn main() {
    smsgw_bench::finish(smsgw_bench::until_signalled(run()).await)
}

async fn run() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let messages = |full: usize| {
        std::env::var("BENCH_PEER_MESSAGES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { full / 10 } else { full })
    };
    let dir = std::env::temp_dir().join(format!("smsgw-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut out = serde_json::Map::new();
    if which == "kannel" || which == "all" {
        println!("kannel 1.4.5: {} messages", messages(20_000));
        let d = dir.join("kannel");
        std::fs::create_dir_all(&d)?;
        out.insert("kannel".into(), kannel(messages(20_000), &d).await?);
    }
    if which == "jasmin" || which == "all" {
        println!("jasmin 0.11.0: {} messages", messages(2_000));
        let d = dir.join("jasmin");
        std::fs::create_dir_all(&d)?;
        out.insert("jasmin".into(), jasmin(messages(2_000), &d).await?);
    }
    out.insert(
        "when".into(),
        smsgw_smpp::rfc3339(smsgw_kafka::now_ms()).into(),
    );
    smsgw_bench::write_results("peers", &out.into())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
