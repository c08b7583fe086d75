//! Ingest metrics: `smsgw_ingest_*`.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use smsgw_kafka::ConsumerMetrics;

/// All ingest metrics, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Ingest-topic records by outcome (`processed`, `dead_lettered`, `dropped`).
    pub consumer: ConsumerMetrics,
    /// Requests by result (`accepted`, `rejected`, `duplicate`).
    pub messages: IntCounterVec,
    /// HTTP responses by route and status.
    pub http: IntCounterVec,
    /// Messages held by the status view.
    pub view_messages: IntGauge,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let consumer = ConsumerMetrics::register(
            &registry,
            "smsgw_ingest_records_total",
            "Ingest-topic records by outcome",
        );
        let messages = IntCounterVec::new(
            Opts::new("smsgw_ingest_messages_total", "Requests by result"),
            &["result"],
        )
        .expect("valid metric");
        let http = IntCounterVec::new(
            Opts::new(
                "smsgw_ingest_http_responses_total",
                "HTTP responses by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let view_messages = IntGauge::new(
            "smsgw_ingest_view_messages",
            "Messages held by the status view",
        )
        .expect("valid metric");
        for c in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http.clone()),
            Box::new(view_messages.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            consumer,
            registry,
            messages,
            http,
            view_messages,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
