//! Router metrics: `smsgw_router_*`.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use smsgw_kafka::ConsumerMetrics;

/// All router metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Event-log records by outcome.
    pub consumer: ConsumerMetrics,
    /// Decisions by kind (`routed`, `rerouted`, `scheduled`, `released`, `blocked`, `no_route`, `exhausted`, `context_lost`).
    pub decisions: IntCounterVec,
    /// Opt-out entries currently in force.
    pub optouts: IntGauge,
    /// Messages remembered for re-routing.
    pub pending: IntGauge,
    /// Messages held until their `send_at`.
    pub scheduled: IntGauge,
    /// Score-store syncs by outcome (`ok`, `error`).
    pub score_syncs: IntCounterVec,
    /// When scores were last synced with the store (Unix seconds); staleness is now
    /// minus this.
    pub score_synced_at: prometheus::Gauge,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let consumer = ConsumerMetrics::register(
            &registry,
            "smsgw_router_records_total",
            "Event-log records by outcome",
        );
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
            .register(Box::new(decisions.clone()))
            .expect("unique");
        registry
            .register(Box::new(optouts.clone()))
            .expect("unique");
        let scheduled = IntGauge::new(
            "smsgw_router_scheduled_messages",
            "Messages held until their send_at",
        )
        .expect("valid metric");
        let score_syncs = IntCounterVec::new(
            Opts::new(
                "smsgw_router_score_syncs_total",
                "Score-store syncs by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let score_synced_at = prometheus::Gauge::new(
            "smsgw_router_score_synced_at_seconds",
            "When scores were last synced with the store (Unix seconds)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(score_syncs.clone()))
            .expect("unique");
        registry
            .register(Box::new(score_synced_at.clone()))
            .expect("unique");
        for g in [&pending, &scheduled] {
            registry.register(Box::new(g.clone())).expect("unique");
        }
        Metrics {
            consumer,
            registry,
            decisions,
            optouts,
            pending,
            scheduled,
            score_syncs,
            score_synced_at,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
