//! Process plumbing shared by the smsgw binaries.
//!
//! A service's `main` calls [`load_config`] (a TOML file, then `SMSGW_`-prefixed
//! environment overrides with `__` between levels, e.g. `SMSGW_KAFKA__BROKERS`),
//! [`init_telemetry`], and hands [`shutdown_signal`] to the service's `run`. Inside, the
//! service serves `/metrics` and `/healthz` with [`serve_admin`] and masks phone numbers
//! in logs with [`mask_number`].

pub mod auth;
pub mod egress;
pub mod webhook;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use prometheus::{Encoder, Registry, TextEncoder};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// Wall clock, Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Startup errors: all fatal, reported before the service does anything.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The config file or an override is invalid.
    #[error("config: {0}")]
    Config(String),
    /// The admin endpoint could not bind.
    #[error("admin endpoint {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Loads `T` from the TOML file at `path` (if given) with `SMSGW_` environment overrides.
pub fn load_config<T: DeserializeOwned>(path: Option<&Path>) -> Result<T, RuntimeError> {
    let mut fig = Figment::new();
    if let Some(p) = path {
        if !p.exists() {
            return Err(RuntimeError::Config(format!(
                "{} does not exist",
                p.display()
            )));
        }
        fig = fig.merge(Toml::file(p));
    }
    // SMSGW_CONFIG and SMSGW_LOG_FORMAT steer the process, not the config.
    fig.merge(
        Env::prefixed("SMSGW_")
            .ignore(&["config", "log_format"])
            .split("__"),
    )
    .extract()
    .map_err(|e| RuntimeError::Config(e.to_string()))
}

/// The config path from the first command-line argument or `SMSGW_CONFIG`.
pub fn config_path_from_args() -> Option<std::path::PathBuf> {
    std::env::args_os()
        .nth(1)
        .map(Into::into)
        .or_else(|| std::env::var_os("SMSGW_CONFIG").map(Into::into))
}

/// Logs to stderr; `RUST_LOG` filters (default `info`), `SMSGW_LOG_FORMAT=json` for JSON.
pub fn init_telemetry() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("SMSGW_LOG_FORMAT").as_deref() == Ok("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

/// What `/readyz` reports: named checks (the broker, carriers, stores), each up or down
/// with a detail. Ready when every check that gates readiness is up and at least one
/// check has reported.
#[derive(Debug, Clone, Default)]
pub struct Health {
    checks: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Check>>>,
}

#[derive(Debug, Clone)]
struct Check {
    up: bool,
    gates: bool,
    detail: String,
}

impl Health {
    /// Records a check. `gates`: whether it being down makes the service not ready
    /// (otherwise it is only reported).
    pub fn set(&self, name: &str, up: bool, gates: bool, detail: impl Into<String>) {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name.to_string(),
                Check {
                    up,
                    gates,
                    detail: detail.into(),
                },
            );
    }

    /// Whether the service is ready, and every check as JSON.
    pub fn report(&self) -> (bool, serde_json::Value) {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let ready = !checks.is_empty() && checks.values().all(|c| c.up || !c.gates);
        let body = checks
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    serde_json::json!({"up": c.up, "gates_readiness": c.gates, "detail": c.detail}),
                )
            })
            .collect::<serde_json::Map<_, _>>();
        (ready, serde_json::json!({"ready": ready, "checks": body}))
    }
}

/// Serves `GET /metrics` (Prometheus text), `GET /healthz` (the process is alive) and
/// `GET /readyz` (its dependencies are reachable: 200 or 503 with every check) until
/// `shutdown`. Binding happens before this returns, so a bad address fails at startup.
/// Waits for a service's side tasks after its input stopped, all within `within`:
/// a task still running then is named in a warning and aborted, so a shutdown never
/// hangs on one (what it had not finished is redone after the restart, as after a
/// crash).
pub async fn join_within(
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    for (name, mut task) in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!(
                task = name,
                within_ms = within.as_millis() as u64,
                "shutdown: task did not stop in time; aborted"
            );
            task.abort();
        }
    }
}

pub async fn serve_admin(
    addr: SocketAddr,
    registry: Registry,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, RuntimeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { addr, source })?;
    let app = admin_router(registry, health);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    }))
}

/// The admin routes, for services that merge them into their own HTTP server.
pub fn admin_router(registry: Registry, health: Health) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    let (ready, body) = health.report();
                    let code = if ready {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(body))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut buf = Vec::new();
                    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
                    String::from_utf8(buf).unwrap_or_default()
                }
            }),
        )
}

/// Resolves a secret setting: `env:NAME` reads the environment variable `NAME` (so
/// Kubernetes Secrets can be injected as variables); anything else is the value itself.
pub fn secret(value: &str) -> Result<String, String> {
    match value.strip_prefix("env:") {
        Some(name) => {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
        }
        None => Ok(value.to_string()),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary: for outside values copied
/// into records, reasons and logs.
pub fn clip_str(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Masks a phone number for logs: keeps the first four and last two characters.
pub fn mask_number(n: &str) -> String {
    let chars: Vec<char> = n.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < 4 || i >= chars.len() - 2 {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_side_task_that_never_stops_is_aborted_at_the_deadline() {
        // Given one task that finishes and one that never does,
        let quick = tokio::spawn(async {});
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stuck = tokio::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        // when shutdown waits for both within 5 s (on the paused test clock),
        let start = tokio::time::Instant::now();
        join_within(
            vec![("quick", quick), ("stuck", stuck)],
            Duration::from_secs(5),
        )
        .await;
        // then it returns exactly at the deadline, and the stuck task was aborted (its
        // sender dropped with it).
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(rx.await.is_err());
    }

    #[test]
    fn masks_the_middle_of_a_number() {
        assert_eq!(mask_number("+447700900123"), "+447*******23");
        assert_eq!(mask_number("12345"), "*****");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        name: String,
        inner: Inner,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: u16,
        #[serde(default)]
        properties: std::collections::BTreeMap<String, String>,
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn env_overrides_file_and_unknown_fields_fail() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "name = \"a\"\n[inner]\nport = 1\n")?;
            jail.set_env("SMSGW_INNER__PORT", "2");
            jail.set_env("SMSGW_CONFIG", "c.toml");
            jail.set_env("SMSGW_INNER__PROPERTIES__SASL_MECHANISM", "PLAIN");
            jail.set_env("SMSGW_LOG_FORMAT", "json");
            let d: Demo = load_config(Some(Path::new("c.toml"))).unwrap();
            assert_eq!((d.name.as_str(), d.inner.port), ("a", 2));
            // Env keys cannot hold dots (figment splits on them): `_` stands in, and
            // KafkaConfig turns it back into `.`.
            assert_eq!(
                d.inner.properties.get("sasl_mechanism").map(String::as_str),
                Some("PLAIN")
            );
            jail.create_file("bad.toml", "name = \"a\"\nbogus = 1\n[inner]\nport = 1\n")?;
            assert!(load_config::<Demo>(Some(Path::new("bad.toml"))).is_err());
            Ok(())
        });
    }
}

/// A shutdown signal many tasks can wait on: created from the future `main` (or a test)
/// passes in, cloned into every task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: tokio::sync::watch::Receiver<bool>,
}

impl Shutdown {
    /// Starts watching `signal`; every clone resolves once it does.
    pub fn new(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = tx.send(true);
        });
        Shutdown { rx }
    }

    /// Resolves when shutdown was requested (at once if it already was).
    pub async fn wait(mut self) {
        let _ = self.rx.wait_for(|stop| *stop).await;
    }

    /// True once shutdown was requested.
    pub fn requested(&self) -> bool {
        *self.rx.borrow()
    }
}
