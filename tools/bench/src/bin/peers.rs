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
    /// Kills `name` with SIGKILL (its last life) and forgets it.
    fn kill(&mut self, name: &str) {
        if let Some(i) = self.0.iter().rposition(|(n, _)| n == name) {
            let (_, mut c) = self.0.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Whether `name`'s last life has exited (forgotten if so).
    fn exited(&mut self, name: &str) -> bool {
        let Some(i) = self.0.iter().rposition(|(n, _)| n == name) else {
            return true;
        };
        let gone = !matches!(self.0[i].1.try_wait(), Ok(None));
        if gone {
            self.0.remove(i);
        }
        gone
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

/// Kannel's two boxes as Debian installs them.
fn kannel_bins() -> anyhow::Result<(PathBuf, PathBuf)> {
    let which = |b: &str| {
        ["/usr/sbin/", "/usr/bin/"]
            .iter()
            .map(|p| PathBuf::from(format!("{p}{b}")))
            .find(|p| p.exists())
    };
    let (Some(bearerbox), Some(smsbox)) = (which("bearerbox"), which("smsbox")) else {
        bail!("Kannel is not installed (make peers-bench installs the Debian package kannel)");
    };
    Ok((bearerbox, smsbox))
}

async fn kannel(n: usize, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let (bearerbox, smsbox) = kannel_bins()?;
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

/// An env knob, or its default.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `smsgw-bench-peers kannel-faults` (issue 15, docs/reliability.md): Kannel under the
/// faults smsgw's soak survives, counted by the same ledger. `KANNEL_FAULTS_MESSAGES`
/// (30,000) requests at one every `KANNEL_FAULTS_PACE_US` (6,667: 150/s) go through
/// smsbox's sendsms, each retried until Kannel accepts it (as a producer retries), with
/// a delivery-report URL; bearerbox, with its file store, is killed with SIGKILL every
/// 20–40 s (`KANNEL_FAULTS_SEED`) and started again 300 ms later (smsbox too, when it
/// went away with it). Then, once nothing has moved for 60 s, what the client was told
/// is held against the carrier simulator's ledger ([`smsgw_ledger::check_client`]).
/// Writes `bench-results/kannel-faults.json`; exits non-zero when the ledger fails.
async fn kannel_faults(dir: &Path) -> anyhow::Result<()> {
    let n = env_or("KANNEL_FAULTS_MESSAGES", 30_000) as usize;
    let pace = Duration::from_micros(env_or("KANNEL_FAULTS_PACE_US", 6_667));
    let first_seed = env_or("KANNEL_FAULTS_SEED", smsgw_kafka::now_ms() as u64 % 1_000);
    let mut seed = first_seed;
    let (bearerbox, smsbox) = kannel_bins()?;
    // The soak's carrier: 5 ms to answer a submit, receipts 200 ms later, a ledger.
    let ledger = dir.join("carrier.jsonl");
    let mut sc = SimConfig::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?);
    sc.rules = vec![Rule {
        latency_ms: 5,
        dlr_delay_ms: 200,
        ..Rule::default()
    }];
    sc.ledger = Some(ledger.clone());
    let sim = Simulator::start(sc).await?;
    let sink = DlrSink::default();
    let dlr_base = sink.serve().await?;
    let (admin, boxp, sendsms) = (free_port()?, free_port()?, free_port()?);
    let conf = dir.join("kannel.conf");
    std::fs::write(
        &conf,
        kannel_conf(dir, sim.smpp_addr.port(), admin, boxp, sendsms),
    )?;
    let status = format!("http://127.0.0.1:{admin}/status.txt?password=bench");
    let sendsms_url = format!("http://127.0.0.1:{sendsms}/cgi-bin/sendsms");
    let mut lives = 0;
    let mut start = |procs: &mut Procs, name: &str, bin: &Path| {
        lives += 1;
        procs.spawn(
            name,
            Command::new(bin).arg(&conf).stdin(Stdio::null()),
            &dir.join(format!("{name}.{lives}.out")),
        )
    };
    let mut procs = Procs(Vec::new());
    start(&mut procs, "bearerbox", &bearerbox)?;
    wait_http(&status, "bearerbox", 30).await?;
    start(&mut procs, "smsbox", &smsbox)?;
    wait_http(&sendsms_url, "smsbox", 30).await?;

    // The load: every request retried until Kannel accepts it.
    let accepted = Arc::new(std::sync::Mutex::new(vec![false; n]));
    let load = {
        let (accepted, client, url) = (accepted.clone(), reqwest::Client::new(), sendsms_url);
        let dlr_base = dlr_base.clone();
        tokio::spawn(async move {
            let sem = Arc::new(Semaphore::new(256));
            let mut tasks = Vec::with_capacity(n);
            for i in 0..n {
                let permit = sem.clone().acquire_owned().await?;
                let (accepted, client, url) = (accepted.clone(), client.clone(), url.clone());
                let dlr = format!("{dlr_base}/dlr?id={i}&s=%d");
                tasks.push(tokio::spawn(async move {
                    let _permit = permit;
                    loop {
                        let sent = client
                            .get(&url)
                            .timeout(Duration::from_secs(10))
                            .query(&[
                                ("username", "bench"),
                                ("password", "bench"),
                                ("smsc", "sim"),
                                ("from", "BENCH"),
                                ("to", &to(i)),
                                ("text", TEXT),
                                ("dlr-mask", "3"),
                                ("dlr-url", &dlr),
                            ])
                            .send()
                            .await;
                        if let Ok(r) = sent {
                            if r.status().as_u16() == 202 {
                                accepted.lock().unwrap()[i] = true;
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }));
                tokio::time::sleep(pace).await;
            }
            for t in tasks {
                t.await?;
            }
            anyhow::Ok(())
        })
    };

    // The faults: bearerbox killed every 20-40 s while the load runs.
    let started = Instant::now();
    let mut kills = 0;
    let mut smsbox_restarts = 0;
    while !load.is_finished() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = Duration::from_millis(20_000 + (seed >> 33) % 20_001);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = async { while !load.is_finished() { tokio::time::sleep(Duration::from_millis(200)).await } } => break,
        }
        println!("{:>7.1?} kill -9 bearerbox", started.elapsed());
        procs.kill("bearerbox");
        kills += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        start(&mut procs, "bearerbox", &bearerbox)?;
        wait_http(&status, "bearerbox", 30).await?;
        // smsbox may leave when its bearerbox does: started again if it did.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if procs.exited("smsbox") {
            println!(
                "{:>7.1?} smsbox went away with it: started again",
                started.elapsed()
            );
            smsbox_restarts += 1;
            start(&mut procs, "smsbox", &smsbox)?;
        }
    }
    load.await??;
    println!(
        "{n} requests accepted in {:.1?} with {kills} kills of bearerbox",
        started.elapsed()
    );
    // Settled: neither the carrier's ledger nor the reports moved for 60 s (15 min at most).
    let moved = || {
        let size = std::fs::metadata(&ledger).map_or(0, |m| m.len());
        let reports: usize = sink.reports().values().map(Vec::len).sum();
        (size, reports)
    };
    let (mut last, mut since) = (moved(), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(900);
    while since.elapsed() < Duration::from_secs(60) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = moved();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    drop(procs);
    // An smsbox that left with its bearerbox can leave a child behind (seen: three of
    // fourteen), which no handle reaches: everything started on this config goes.
    let _ = Command::new("pkill")
        .arg("-9")
        .arg("-f")
        .arg(&conf)
        .stderr(Stdio::null())
        .status();
    sim.stop().await;
    let carrier = smsgw_ledger::parse_carrier(&std::fs::read_to_string(&ledger)?)?;
    let reports = sink.reports();
    let accepted = accepted.lock().unwrap().clone();
    let messages: Vec<smsgw_ledger::ClientMessage> = (0..n)
        .filter(|i| accepted[*i])
        .map(|i| smsgw_ledger::ClientMessage {
            dest: to(i),
            reports: reports.get(&i.to_string()).cloned().unwrap_or_default(),
        })
        .collect();
    let report = smsgw_ledger::check_client(&messages, &carrier);
    println!(
        "kannel under kill -9 of bearerbox ({kills} kills, seed {}):\n{report}",
        first_seed
    );
    let failures = report.failures();
    let mut out = serde_json::Map::new();
    out.insert(
        "kannel_faults".into(),
        serde_json::json!({
            "messages": n, "pace_us": pace.as_micros() as u64, "seed": first_seed,
            "bearerbox_kills": kills,
            "smsbox_restarts": smsbox_restarts,
            "accepted": report.accepted, "finals": report.finals,
            "never_submitted": report.never_submitted.len(), "no_report": report.no_report.len(),
            "several_reports": report.several_reports.len(),
            "contradicted": report.contradicted.len(), "carrier_submits": report.carrier_submits,
            "texted_twice_unflagged": report.texted_twice.len(),
            "failures": failures,
        }),
    );
    out.insert(
        "when".into(),
        smsgw_smpp::rfc3339(smsgw_kafka::now_ms()).into(),
    );
    smsgw_bench::write_results("kannel-faults", &out.into())?;
    if !failures.is_empty() {
        bail!("Kannel's ledger under kill -9: {}", failures.join("; "));
    }
    Ok(())
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
    if which == "kannel-faults" {
        let d = dir.join("kannel-faults");
        std::fs::create_dir_all(&d)?;
        let r = kannel_faults(&d).await;
        let _ = std::fs::remove_dir_all(&dir);
        return r;
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
