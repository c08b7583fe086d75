//! Router configuration.

use serde::Deserialize;
use smsgw_kafka::KafkaConfig;
use std::net::SocketAddr;

/// Everything the router needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Brokers, client properties and topic names.
    pub kafka: KafkaConfig,
    /// Address of `/metrics` and `/healthz`.
    #[serde(default = "default_admin")]
    pub admin_listen: SocketAddr,
    /// Consumer group on the event log.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Ordered carrier lists by destination prefix; the longest matching prefix wins.
    pub routes: Vec<Route>,
    /// How often (ms) the opt-out copy proves it is complete. A message is routed only
    /// once the copy holds every opt-out acknowledged before the message was accepted,
    /// so this bounds the latency the opt-out check adds.
    #[serde(default = "default_refresh")]
    pub optout_refresh_ms: u64,
    /// Accepted messages remembered for re-routing after a failed attempt.
    #[serde(default = "default_pending")]
    pub pending_capacity: usize,
    /// On startup, how far back (ms) the event log is re-read to remember messages that
    /// are still in flight, so their failed attempts can be re-routed.
    #[serde(default = "default_lookback")]
    pub warmup_lookback_ms: i64,
    /// A failed attempt of a message no longer remembered (past `pending_capacity` or
    /// the warm-up) has its context read back from its event-log partition: at most this
    /// many records are read back per look-up before the message ends "context lost".
    #[serde(default = "default_lookup_records")]
    pub context_lookup_max_records: i64,
    /// Records awaiting broker acknowledgement at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How carriers are scored (see docs/routing.md).
    #[serde(default)]
    pub scoring: crate::scoring::ScoringConfig,
}

/// One routing rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// E.164 prefix, with `+` (`+` alone matches everything).
    pub prefix: String,
    /// Carriers that serve the prefix; the scorer picks among them (ties: this order).
    pub carriers: Vec<String>,
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9101))
}
fn default_group() -> String {
    "smsgw-router".into()
}
fn default_refresh() -> u64 {
    10
}
fn default_pending() -> usize {
    500_000
}
fn default_lookback() -> i64 {
    3_600_000
}
fn default_lookup_records() -> i64 {
    5_000_000
}
fn default_in_flight() -> usize {
    2_000
}

impl Config {
    /// A config with defaults and the given routes.
    pub fn new(kafka: KafkaConfig, routes: Vec<Route>) -> Self {
        Config {
            kafka,
            admin_listen: default_admin(),
            group_id: default_group(),
            routes,
            optout_refresh_ms: default_refresh(),
            pending_capacity: default_pending(),
            context_lookup_max_records: default_lookup_records(),
            warmup_lookback_ms: default_lookback(),
            max_in_flight: default_in_flight(),
            scoring: Default::default(),
        }
    }

    /// Fails fast on values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        if self.routes.is_empty() {
            return Err("routes is empty: nothing could be sent".into());
        }
        for r in &self.routes {
            if !r.prefix.starts_with('+') || !r.prefix[1..].chars().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "route prefix {:?} must be + followed by digits",
                    r.prefix
                ));
            }
            if r.carriers.is_empty() {
                return Err(format!("route {} has no carriers", r.prefix));
            }
            for c in &r.carriers {
                if c.is_empty()
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
                {
                    return Err(format!("carrier name {c:?} must be [A-Za-z0-9_-]"));
                }
            }
        }
        self.scoring.validate()?;
        if self.optout_refresh_ms == 0
            || self.pending_capacity == 0
            || self.max_in_flight == 0
            || self.context_lookup_max_records <= 0
        {
            return Err(
                "optout_refresh_ms, pending_capacity, context_lookup_max_records and max_in_flight must be positive".into(),
            );
        }
        Ok(())
    }
}
