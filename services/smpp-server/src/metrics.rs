//! SMPP server metrics: `smsgw_smpp_server_*`. Labels are fixed sets (results and
//! statuses), never account names or addresses.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// All SMPP server metrics, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Bind attempts by result (`ok`, `credentials`, `address`, `max_binds`,
    /// `already_bound`) and connections refused at the limit (`max_connections`).
    pub binds: IntCounterVec,
    /// Bound sessions now.
    pub sessions: IntGauge,
    /// `submit_sm` by result (`accepted`, `rejected`, `refused`, `throttled`,
    /// `over_quota`, `part`, `unavailable`).
    pub submits: IntCounterVec,
    /// Frames that did not decode, answered with `generic_nack`.
    pub garbage: IntCounter,
    /// Concatenated messages given up incomplete (dead-lettered).
    pub incomplete: IntCounter,
    /// `smsgw.inbound` records read by the MO router, by outcome.
    pub mo: smsgw_kafka::ConsumerMetrics,
    /// Receipts and MO by result (`delivered` receipts, `mo_delivered`, `resent`,
    /// `refused` by the ESME, `dead_lettered`).
    pub receipts: IntCounterVec,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let binds = IntCounterVec::new(
            Opts::new("smsgw_smpp_server_binds_total", "Bind attempts by result"),
            &["result"],
        )
        .expect("valid metric");
        let sessions =
            IntGauge::new("smsgw_smpp_server_sessions", "Bound sessions").expect("valid metric");
        let submits = IntCounterVec::new(
            Opts::new("smsgw_smpp_server_submits_total", "submit_sm by result"),
            &["result"],
        )
        .expect("valid metric");
        let garbage = IntCounter::new(
            "smsgw_smpp_server_garbage_pdus_total",
            "Frames that did not decode, answered with generic_nack",
        )
        .expect("valid metric");
        let incomplete = IntCounter::new(
            "smsgw_smpp_server_incomplete_messages_total",
            "Concatenated messages given up incomplete",
        )
        .expect("valid metric");
        let mo = smsgw_kafka::ConsumerMetrics::register(
            &registry,
            "smsgw_smpp_server_mo_records_total",
            "smsgw.inbound records read by the MO router, by outcome",
        );
        let receipts = IntCounterVec::new(
            Opts::new(
                "smsgw_smpp_server_receipts_total",
                "Delivery receipts to ESMEs by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        for c in [
            Box::new(receipts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(binds.clone()),
            Box::new(sessions.clone()),
            Box::new(submits.clone()),
            Box::new(garbage.clone()),
            Box::new(incomplete.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            binds,
            sessions,
            submits,
            garbage,
            incomplete,
            receipts,
            mo,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
