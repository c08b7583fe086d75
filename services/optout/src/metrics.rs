//! Optout metrics: `smsgw_optout_*`. Labels: kinds and sources only.

use prometheus::{IntCounterVec, Opts, Registry};
use smsgw_kafka::ConsumerMetrics;

/// All optout metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Inbound records by outcome (keyword loop).
    pub consumer: ConsumerMetrics,
    /// Inbound records by outcome (webhook loop).
    pub webhook_consumer: ConsumerMetrics,
    /// Opt-out log changes by kind (`opt_out`, `opt_in`, `bulk`) and source (`keyword`,
    /// `api`, `import`).
    pub changes: IntCounterVec,
    /// Keywords received by kind (`stop`, `start`, `help`).
    pub keywords: IntCounterVec,
    /// Auto replies requested by kind.
    pub replies: IntCounterVec,
    /// MO webhook calls by outcome (`delivered`, `retried`, `failed`).
    pub webhooks: IntCounterVec,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let consumer = ConsumerMetrics::register(
            &registry,
            "smsgw_optout_records_total",
            "Inbound records by outcome",
        );
        let webhook_consumer = ConsumerMetrics::register(
            &registry,
            "smsgw_optout_webhook_records_total",
            "Inbound records seen by the webhook loop, by outcome",
        );
        Metrics {
            consumer,
            webhook_consumer,
            changes: counter(
                "smsgw_optout_changes_total",
                "Opt-out log changes",
                &["kind", "source"],
            ),
            keywords: counter(
                "smsgw_optout_keywords_total",
                "Keywords received",
                &["keyword"],
            ),
            replies: counter(
                "smsgw_optout_replies_total",
                "Auto replies requested",
                &["keyword"],
            ),
            webhooks: counter(
                "smsgw_optout_webhook_calls_total",
                "MO webhook calls",
                &["outcome"],
            ),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
