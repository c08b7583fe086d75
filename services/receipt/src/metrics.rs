//! Receipt metrics: `smsgw_receipt_*`.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// All receipt metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Events written, by kind.
    pub events: IntCounterVec,
    /// Receipts never claimed, dead-lettered.
    pub orphans: IntCounter,
    /// Correlations that came after their receipt was given up, paired with it still.
    pub late_pairs: IntCounter,
    /// Undecodable records, dead-lettered.
    pub dead_lettered: IntCounter,
    /// Outputs the broker did not acknowledge, sent again until stored.
    pub outputs_resent: IntCounter,
    /// Records waiting for their counterpart (`correlation`, `receipt`).
    pub waiting: IntGaugeVec,
    /// Time from the carrier accepting a submit to its final receipt being settled.
    pub submit_to_receipt: prometheus::Histogram,
    /// Status callbacks by outcome (`delivered`, `retried`, `dead_lettered`, `duplicate`,
    /// `forgotten`: an open message dropped from a full book, whose later changes get no call).
    pub callbacks: IntCounterVec,
    /// Time to settle one status callback, retries included.
    pub callback_seconds: prometheus::Histogram,
    /// Event-log records whose callbacks are queued or in progress.
    pub callback_queue: prometheus::IntGauge,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new("smsgw_receipt_events_total", "Events written by kind"),
            &["event"],
        )
        .expect("valid metric");
        let orphans = IntCounter::new("smsgw_receipt_orphans_total", "Receipts never correlated")
            .expect("valid");
        let dead_lettered =
            IntCounter::new("smsgw_receipt_dead_letters_total", "Undecodable records")
                .expect("valid");
        let waiting = IntGaugeVec::new(
            Opts::new(
                "smsgw_receipt_waiting_records",
                "Records waiting for a counterpart",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry.register(Box::new(events.clone())).expect("unique");
        let late_pairs = IntCounter::new(
            "smsgw_receipt_late_pairs_total",
            "Correlations paired with a receipt given up earlier as an orphan",
        )
        .expect("valid");
        registry
            .register(Box::new(late_pairs.clone()))
            .expect("unique");
        registry
            .register(Box::new(orphans.clone()))
            .expect("unique");
        registry
            .register(Box::new(dead_lettered.clone()))
            .expect("unique");
        let outputs_resent = IntCounter::new(
            "smsgw_receipt_outputs_resent_total",
            "Outputs the broker did not acknowledge, sent again until stored",
        )
        .expect("valid");
        registry
            .register(Box::new(outputs_resent.clone()))
            .expect("unique");
        registry
            .register(Box::new(waiting.clone()))
            .expect("unique");
        let submit_to_receipt = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "smsgw_receipt_submit_to_receipt_seconds",
                "Carrier acceptance to final receipt",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0,
            ]),
        )
        .expect("valid");
        registry
            .register(Box::new(submit_to_receipt.clone()))
            .expect("unique");
        let callbacks = IntCounterVec::new(
            Opts::new(
                "smsgw_receipt_callbacks_total",
                "Status callbacks by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let callback_seconds = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "smsgw_receipt_callback_seconds",
                "Time to settle one status callback, retries included",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]),
        )
        .expect("valid");
        let callback_queue = prometheus::IntGauge::new(
            "smsgw_receipt_callback_queue_records",
            "Event-log records whose callbacks are queued or in progress",
        )
        .expect("valid");
        registry
            .register(Box::new(callbacks.clone()))
            .expect("unique");
        registry
            .register(Box::new(callback_seconds.clone()))
            .expect("unique");
        registry
            .register(Box::new(callback_queue.clone()))
            .expect("unique");
        Metrics {
            late_pairs,
            callbacks,
            callback_seconds,
            callback_queue,
            submit_to_receipt,
            registry,
            events,
            orphans,
            dead_lettered,
            outputs_resent,
            waiting,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
