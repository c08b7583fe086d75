//! Where learned carrier statistics are kept besides memory.
//!
//! `memory` (the default, for one machine): the router learns from the event log and
//! re-learns the last `warmup_lookback_ms` of it on restart; nothing else is needed.
//!
//! `scylla`: every `sync_ms` each router writes its own decayed statistics to ScyllaDB
//! (`schemas/cql/carrier_scores.cql`, one row per key and router, absolute values, so a
//! repeated write changes nothing) and reads every router's rows back. Its scores then
//! use the outcomes all routers saw, at most `sync_ms` (plus one write) old, and a
//! restarted router starts from what it had written.

use crate::metrics::Metrics;
use crate::scoring::StatsRow;
use crate::state::RouterState;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use serde::Deserialize;
use smsgw_runtime::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// The CQL that creates the keyspace and table (keyspace `smsgw`, renamed on use).
pub const SCHEMA: &str = include_str!("../../../schemas/cql/carrier_scores.cql");

/// Score store settings (`[scoring.store]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// In memory only; rebuilt from the event log on restart.
    #[default]
    Memory,
    /// ScyllaDB or Cassandra, shared by all routers.
    Scylla {
        /// Contact points, `host:port`.
        nodes: Vec<String>,
        /// Keyspace.
        #[serde(default = "default_keyspace")]
        keyspace: String,
        /// User name, if the cluster authenticates.
        #[serde(default)]
        username: Option<String>,
        /// Password (or `env:NAME`).
        #[serde(default)]
        password: Option<String>,
        /// This router's name in the table (unset: the host name, else a random id).
        #[serde(default)]
        writer: Option<String>,
        /// How often statistics are written and read back (ms): the staleness bound of
        /// other routers' evidence.
        #[serde(default = "default_sync")]
        sync_ms: u64,
        /// Create the keyspace and table at startup.
        #[serde(default = "yes")]
        create_schema: bool,
    },
}

fn default_keyspace() -> String {
    "smsgw".into()
}
fn default_sync() -> u64 {
    5_000
}
fn yes() -> bool {
    true
}

impl StoreConfig {
    /// Fails fast on values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if let StoreConfig::Scylla {
            nodes,
            keyspace,
            sync_ms,
            password,
            ..
        } = self
        {
            if nodes.is_empty() || *sync_ms == 0 {
                return Err("scoring.store: nodes must not be empty, sync_ms positive".into());
            }
            if keyspace.is_empty()
                || !keyspace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!(
                    "scoring.store.keyspace {keyspace:?} must be [A-Za-z0-9_]"
                ));
            }
            if let Some(p) = password {
                smsgw_runtime::secret(p).map_err(|e| format!("scoring.store.password: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Why the store failed. Every variant is retried at the next sync; meanwhile the
/// router scores with what it has (its own evidence and the last rows read).
#[derive(Debug, Error)]
pub enum StoreError {
    /// No session: the cluster is unreachable or refused us.
    #[error("connect: {0}")]
    Connect(String),
    /// A statement failed.
    #[error("query: {0}")]
    Query(String),
}

fn query_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Query(e.to_string())
}

const COLUMNS: &str = "carrier, prefix, message_type, writer, delivered, finished, latency_sum, latency_n, submits, errors, as_of";

/// The ScyllaDB adapter.
pub struct ScyllaStore {
    session: Session,
    insert: PreparedStatement,
    select: PreparedStatement,
}

type Row = (
    String,
    String,
    String,
    String,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    CqlTimestamp,
);

impl ScyllaStore {
    /// Connects, creates the schema if asked, and prepares the statements.
    pub async fn connect(
        nodes: &[String],
        keyspace: &str,
        credentials: Option<(String, String)>,
        create_schema: bool,
    ) -> Result<Self, StoreError> {
        let mut b = SessionBuilder::new().known_nodes(nodes);
        if let Some((u, p)) = credentials {
            b = b.user(u, p);
        }
        let session = b
            .build()
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        if create_schema {
            for stmt in schema_statements(keyspace) {
                session.query_unpaged(stmt, ()).await.map_err(query_err)?;
            }
        }
        let table = format!("{keyspace}.carrier_scores");
        let insert = session
            .prepare(format!(
                "INSERT INTO {table} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await
            .map_err(query_err)?;
        let select = session
            .prepare(format!("SELECT {COLUMNS} FROM {table}"))
            .await
            .map_err(query_err)?;
        Ok(ScyllaStore {
            session,
            insert,
            select,
        })
    }

    /// Writes rows (upserts: writing the same row twice leaves one row).
    pub async fn save(&self, rows: &[StatsRow]) -> Result<(), StoreError> {
        for r in rows {
            let values = (
                &r.carrier,
                &r.prefix,
                &r.message_type,
                &r.writer,
                r.delivered,
                r.finished,
                r.latency_sum,
                r.latency_n,
                r.submits,
                r.errors,
                CqlTimestamp(r.as_of),
            );
            self.session
                .execute_unpaged(&self.insert, values)
                .await
                .map_err(query_err)?;
        }
        Ok(())
    }

    /// Reads every row (the table holds carriers × prefixes × types × routers).
    pub async fn load(&self) -> Result<Vec<StatsRow>, StoreError> {
        let mut out = Vec::new();
        let mut pager = self
            .session
            .execute_iter(self.select.clone(), ())
            .await
            .map_err(query_err)?
            .rows_stream::<Row>()
            .map_err(query_err)?;
        use futures::StreamExt;
        while let Some(row) = pager.next().await {
            let (carrier, prefix, message_type, writer, d, f, ls, ln, s, e, at) =
                row.map_err(query_err)?;
            out.push(StatsRow {
                carrier,
                prefix,
                message_type,
                writer,
                delivered: d,
                finished: f,
                latency_sum: ls,
                latency_n: ln,
                submits: s,
                errors: e,
                as_of: at.0,
            });
        }
        Ok(out)
    }
}

/// The schema's statements for `keyspace`.
pub fn schema_statements(keyspace: &str) -> Vec<String> {
    let without_comments: String = SCHEMA
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace(
                "KEYSPACE IF NOT EXISTS smsgw",
                &format!("KEYSPACE IF NOT EXISTS {keyspace}"),
            )
            .replace(
                "smsgw.carrier_scores",
                &format!("{keyspace}.carrier_scores"),
            )
        })
        .collect()
}

/// This router's name in the store.
pub fn writer_name(configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| format!("router-{:08x}", rand_u32()))
}

fn rand_u32() -> u32 {
    let t = smsgw_kafka::now_ms() as u64;
    (t ^ (t >> 17) ^ u64::from(std::process::id())) as u32
}

/// Keeps the store and the router's scorer in step until shutdown.
pub async fn run(
    config: StoreConfig,
    state: Arc<Mutex<RouterState>>,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    let StoreConfig::Scylla {
        nodes,
        keyspace,
        username,
        password,
        writer,
        sync_ms,
        create_schema,
    } = config
    else {
        return;
    };
    let writer = writer_name(writer.as_deref());
    let credentials = username.map(|u| {
        let p = password
            .as_deref()
            .and_then(|p| smsgw_runtime::secret(p).ok())
            .unwrap_or_default();
        (u, p)
    });
    let mut store = None;
    while !shutdown.requested() {
        if store.is_none() {
            match ScyllaStore::connect(&nodes, &keyspace, credentials.clone(), create_schema).await
            {
                Ok(s) => store = Some(s),
                Err(e) => {
                    metrics.score_syncs.with_label_values(&["error"]).inc();
                    tracing::warn!(error = %e, "score store unavailable; scoring from local evidence");
                }
            }
        }
        if let Some(s) = &store {
            match sync(s, &state, &writer).await {
                Ok(()) => {
                    metrics.score_syncs.with_label_values(&["ok"]).inc();
                    metrics
                        .score_synced_at
                        .set(smsgw_kafka::now_ms() as f64 / 1000.0);
                }
                Err(e) => {
                    metrics.score_syncs.with_label_values(&["error"]).inc();
                    tracing::warn!(error = %e, "score sync failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sync_ms)) => {}
            _ = shutdown.clone().wait() => {}
        }
    }
}

/// One round: write this router's rows, read everyone's.
pub async fn sync(
    store: &ScyllaStore,
    state: &Mutex<RouterState>,
    writer: &str,
) -> Result<(), StoreError> {
    let now = smsgw_kafka::now_ms();
    let rows = state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .scorer
        .export(writer, now);
    store.save(&rows).await?;
    let all = store.load().await?;
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .scorer
        .absorb(&all, writer, smsgw_kafka::now_ms());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_splits_into_statements_for_any_keyspace() {
        let s = schema_statements("gw_test");
        assert_eq!(s.len(), 2);
        assert!(s[0].starts_with("CREATE KEYSPACE IF NOT EXISTS gw_test"));
        assert!(s[1].starts_with("CREATE TABLE IF NOT EXISTS gw_test.carrier_scores"));
        assert!(!s[1].contains("counter"), "no counter columns");
    }

    #[test]
    fn store_config_parses_and_validates() {
        let parse = |s: &str| serde_json::from_str::<StoreConfig>(s);
        assert_eq!(parse(r#"{"kind": "memory"}"#).unwrap(), StoreConfig::Memory);
        let c = parse(r#"{"kind": "scylla", "nodes": ["10.0.0.1:9042"]}"#).unwrap();
        assert!(c.validate().is_ok());
        let bad = parse(r#"{"kind": "scylla", "nodes": []}"#).unwrap();
        assert!(bad.validate().is_err());
        assert!(parse(r#"{"kind": "scylla", "nodes": ["a:1"], "bogus": 1}"#).is_err());
    }
}
