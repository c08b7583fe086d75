//! Optout metrics: `smsgw_optout_*`.

use prometheus::{IntCounterVec, Opts, Registry};
use smsgw_kafka::ConsumerMetrics;

/// All optout metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Inbound records by outcome.
    pub consumer: ConsumerMetrics,
    /// Opt-out log changes by kind (`opt_out`, `opt_in`).
    pub changes: IntCounterVec,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let consumer = ConsumerMetrics::register(
            &registry,
            "smsgw_optout_records_total",
            "Inbound records by outcome",
        );
        let changes = IntCounterVec::new(
            Opts::new("smsgw_optout_changes_total", "Opt-out log changes"),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(changes.clone()))
            .expect("unique");
        Metrics {
            consumer,
            registry,
            changes,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
