//! Shared parts of the benchmark binaries (`smsgw-bench`, `smsgw-bench-pipeline`,
//! `smsgw-bench-peers`): reading a process's CPU and peak memory from `/proc`,
//! percentiles, free ports, and the receiver for the HTTP delivery-report callbacks that
//! Kannel and Jasmin make.
//!
//! Data flow for a peer run: requests go out over the peer's HTTP API with a
//! `dlr-url` pointing at [`DlrSink`]; the sink records when each message's final receipt
//! came back; the run's throughput is messages over the time from the first request to
//! the last receipt, the same definition `smsgw-bench-pipeline` uses for smsgw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// CPU seconds (user + system) and peak RSS (kB) of a process, from /proc.
pub fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12 (in clock ticks).
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

/// The value at quantile `p` (0..=1) of `v` (sorted in place); 0 when empty.
pub fn percentile(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `work` until it ends or the process gets SIGINT/SIGTERM; on a signal `work` is
/// dropped, so the processes it started (whose handles kill them on drop) do not outlive
/// an interrupted or timed-out bench and skew the next one.
pub async fn until_signalled<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}

/// Ends a bench binary: prints the error, if any, and exits with its status. Not a return
/// from `main`: the runtime's shutdown would wait for the blocking broker calls of
/// readers that were dropped (librdkafka's own timeouts), minutes after the results.
pub fn finish(result: anyhow::Result<()>) -> ! {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

/// Writes a bench's results to `bench-results/<name>.json` and says so.
pub fn write_results(name: &str, results: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::create_dir_all("bench-results")?;
    let path = format!("bench-results/{name}.json");
    std::fs::write(&path, serde_json::to_string_pretty(results)?)?;
    println!("wrote {path}");
    Ok(())
}

/// A TCP port that was free a moment ago on 127.0.0.1 (for peers that want a number in
/// their configuration file rather than an already-bound socket).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Receives delivery-report callbacks: `GET /dlr?id=<our id>&s=<status>` (Kannel's
/// `dlr-url` with `%d`) or `GET /dlr/<our id>?message_status=<stat>&...` (Jasmin's, which
/// adds its own `id`). A status of `1` (Kannel's "delivered to phone") or `DELIVRD`
/// counts as delivered; anything else is kept as a failure.
#[derive(Clone, Default)]
pub struct DlrSink {
    inner: Arc<Mutex<DlrSeen>>,
}

#[derive(Default)]
struct DlrSeen {
    delivered: HashMap<String, Instant>,
    failed: HashMap<String, String>,
    /// Every report per id, in arrival order (`true`: delivered).
    reports: HashMap<String, Vec<bool>>,
}

impl DlrSink {
    /// Serves the sink on an ephemeral port; returns the base URL (`http://127.0.0.1:N`).
    pub async fn serve(&self) -> anyhow::Result<String> {
        use axum::extract::{Path, Query, State};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route(
                "/dlr",
                axum::routing::get(
                    |State(s): State<DlrSink>, Query(q): Query<HashMap<String, String>>| async move {
                        s.record(q.get("id"), q.get("s"))
                    },
                ),
            )
            .route(
                "/dlr/{reference}",
                axum::routing::get(
                    |State(s): State<DlrSink>,
                     Path(r): Path<String>,
                     Query(q): Query<HashMap<String, String>>| async move {
                        s.record(Some(&r), q.get("message_status"))
                    },
                ),
            )
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(format!("http://{addr}"))
    }

    fn record(&self, id: Option<&String>, status: Option<&String>) -> &'static str {
        let (id, status) = (
            id.cloned().unwrap_or_default(),
            status.cloned().unwrap_or_default(),
        );
        let mut seen = self.inner.lock().unwrap();
        let ok = status == "1" || status.eq_ignore_ascii_case("DELIVRD");
        seen.reports.entry(id.clone()).or_default().push(ok);
        if ok {
            seen.delivered.entry(id).or_insert_with(Instant::now);
        } else {
            seen.failed.insert(id, status);
        }
        "ok"
    }

    /// Messages with a delivered receipt, and with a failed one.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.inner.lock().unwrap();
        (s.delivered.len(), s.failed.len())
    }

    /// Every report received per id, in arrival order (`true`: delivered).
    pub fn reports(&self) -> HashMap<String, Vec<bool>> {
        self.inner.lock().unwrap().reports.clone()
    }

    /// When the last delivered receipt arrived.
    pub fn last_delivered(&self) -> Option<Instant> {
        self.inner.lock().unwrap().delivered.values().copied().max()
    }

    /// A few failure statuses, for the error message when a run does not complete.
    pub fn failures(&self) -> Vec<(String, String)> {
        let s = self.inner.lock().unwrap();
        s.failed
            .iter()
            .take(5)
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect()
    }
}
