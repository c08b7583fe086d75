//! Dispatcher metrics: `smsgw_dispatcher_*`. Labels: carrier names and outcomes only.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

/// All dispatcher metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Submits by carrier and outcome (`ok`, `failed`, `throttled`).
    pub submits: IntCounterVec,
    /// Submits whose outcome is unknown (link broke or timed out after the PDU left):
    /// a retry elsewhere may text the recipient twice.
    pub ambiguous: IntCounterVec,
    /// Sends after a restart that may repeat a send from before the crash (flagged
    /// `possible_duplicate` in the event log).
    pub possible_duplicates: IntCounterVec,
    /// Dispatch records skipped after a restart because their outcome was already
    /// recorded.
    pub redelivered: IntCounterVec,
    /// Inbound PDUs by carrier and kind (`receipt`, `mo`, `bad_receipt`).
    pub inbound: IntCounterVec,
    /// Bound sessions by carrier and mode (`trx`, `tx`, `rx`).
    pub bound: IntGaugeVec,
    /// `submit_sm` awaiting a response, by carrier (over all its binds).
    pub window_in_use: IntGaugeVec,
    /// Inbound PDUs (receipts, MO) being stored, by carrier (at most `inbound_in_flight`
    /// per bind).
    pub inbound_in_flight: IntGaugeVec,
    /// Binds attempted by carrier and outcome.
    pub binds: IntCounterVec,
    /// Submit errors by carrier and kind (`throttle`, `retry_later`, `fail_retryable`,
    /// `fail_permanent`, `ambiguous`, `not_sent`).
    pub submit_errors: IntCounterVec,
    /// Dispatch records dead-lettered by carrier.
    pub dead_lettered: IntCounterVec,
    /// Age of the dispatch record being taken, by carrier and partition (time lag).
    pub consumer_lag: prometheus::GaugeVec,
    /// Time from acceptance to `submit_sm_resp`, seconds.
    pub accept_to_submit: Histogram,
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
        let submits = counter(
            "smsgw_dispatcher_submits_total",
            "submit_sm by carrier and outcome",
            &["carrier", "outcome"],
        );
        let ambiguous = counter(
            "smsgw_dispatcher_ambiguous_submits_total",
            "Submits with unknown outcome",
            &["carrier"],
        );
        let possible_duplicates = counter(
            "smsgw_dispatcher_possible_duplicates_total",
            "Sends after a restart that may repeat a send from before the crash",
            &["carrier"],
        );
        let redelivered = counter(
            "smsgw_dispatcher_redelivered_skipped_total",
            "Dispatch records skipped after a restart: outcome already recorded",
            &["carrier"],
        );
        let inbound = counter(
            "smsgw_dispatcher_inbound_pdus_total",
            "deliver_sm by carrier and kind",
            &["carrier", "kind"],
        );
        let binds = counter(
            "smsgw_dispatcher_binds_total",
            "Bind attempts by carrier and outcome",
            &["carrier", "outcome"],
        );
        let submit_errors = counter(
            "smsgw_dispatcher_submit_errors_total",
            "Submit errors by carrier and kind",
            &["carrier", "kind"],
        );
        let dead_lettered = counter(
            "smsgw_dispatcher_dead_letters_total",
            "Dead-lettered records by carrier",
            &["carrier"],
        );
        let bound = IntGaugeVec::new(
            Opts::new("smsgw_dispatcher_bound_sessions", "Bound sessions"),
            &["carrier", "mode"],
        )
        .expect("valid");
        registry.register(Box::new(bound.clone())).expect("unique");
        let window_in_use = IntGaugeVec::new(
            Opts::new(
                "smsgw_dispatcher_window_in_use_submits",
                "submit_sm awaiting a response",
            ),
            &["carrier"],
        )
        .expect("valid");
        registry
            .register(Box::new(window_in_use.clone()))
            .expect("unique");
        let inbound_in_flight = IntGaugeVec::new(
            Opts::new(
                "smsgw_dispatcher_inbound_in_flight_pdus",
                "Inbound PDUs being stored",
            ),
            &["carrier"],
        )
        .expect("valid");
        registry
            .register(Box::new(inbound_in_flight.clone()))
            .expect("unique");
        let consumer_lag = prometheus::GaugeVec::new(
            Opts::new(
                "smsgw_dispatcher_consumer_lag_seconds",
                "Age of the dispatch record being taken",
            ),
            &["carrier", "partition"],
        )
        .expect("valid");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("unique");
        let accept_to_submit = Histogram::with_opts(
            HistogramOpts::new(
                "smsgw_dispatcher_accept_to_submit_seconds",
                "Acceptance to submit_sm_resp",
            )
            .buckets(vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
        )
        .expect("valid");
        registry
            .register(Box::new(accept_to_submit.clone()))
            .expect("unique");
        Metrics {
            registry,
            submits,
            ambiguous,
            possible_duplicates,
            redelivered,
            inbound,
            bound,
            window_in_use,
            inbound_in_flight,
            binds,
            submit_errors,
            dead_lettered,
            consumer_lag,
            accept_to_submit,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
