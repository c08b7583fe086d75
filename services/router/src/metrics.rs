//! Router metrics: `smsgw_router_*`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use smsgw_kafka::ConsumerMetrics;

/// All router metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Event-log records by outcome.
    pub consumer: ConsumerMetrics,
    /// Decisions by kind (`routed`, `rerouted`, `blocked`, `no_route`, `exhausted`, `context_lost`).
    pub decisions: IntCounterVec,
    /// Opt-out entries currently in force.
    pub optouts: IntGauge,
    /// Messages remembered for re-routing.
    pub pending: IntGauge,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let records = IntCounterVec::new(
            Opts::new("smsgw_router_records_total", "Event-log records by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let decisions = IntCounterVec::new(
            Opts::new("smsgw_router_decisions_total", "Routing decisions by kind"),
            &["decision"],
        )
        .expect("valid metric");
        let optouts = IntGauge::new("smsgw_router_optout_entries", "Opt-outs in force")
            .expect("valid metric");
        let pending = IntGauge::new(
            "smsgw_router_pending_messages",
            "Messages remembered for re-routing",
        )
        .expect("valid metric");
        registry
            .register(Box::new(records.clone()))
            .expect("unique");
        registry
            .register(Box::new(decisions.clone()))
            .expect("unique");
        registry
            .register(Box::new(optouts.clone()))
            .expect("unique");
        registry
            .register(Box::new(pending.clone()))
            .expect("unique");
        let get = |o: &str| -> IntCounter { records.with_label_values(&[o]) };
        Metrics {
            consumer: ConsumerMetrics {
                processed: get("processed"),
                dead_lettered: get("dead_lettered"),
                dropped: get("dropped"),
            },
            registry,
            decisions,
            optouts,
            pending,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
