//! The dispatcher's copy of the opt-out log. The router already blocks opted-out
//! recipients; this second check, just before a message's first part is submitted,
//! catches a STOP that arrived after the message was routed (while it waited in the
//! dispatch topic, the window or the rate limiter).
//!
//! Bound: before checking, the copy must be fresh as of `max_staleness_ms` ago (it
//! refreshes every `refresh_ms`, so in steady state this never waits). Hence a STOP
//! whose record is on the opt-out log at time T blocks every submit that starts after
//! T + `max_staleness_ms`.

use smsgw_codec::{DispatchRequested, OptOutIndex};
use smsgw_kafka::{now_ms, TailState};
use std::sync::{Arc, Mutex};

/// The opt-outs in force and how fresh they are.
#[derive(Debug, Clone)]
pub struct OptOutGate {
    index: Arc<Mutex<OptOutIndex>>,
    tail: Arc<TailState>,
    max_staleness_ms: i64,
}

impl OptOutGate {
    /// A gate over `index`, fed by the tail whose freshness `tail` reports.
    pub fn new(
        index: Arc<Mutex<OptOutIndex>>,
        tail: Arc<TailState>,
        max_staleness_ms: i64,
    ) -> Self {
        OptOutGate {
            index,
            tail,
            max_staleness_ms,
        }
    }

    /// The scope that blocks this message now, if any. Waits until the copy is fresh
    /// enough.
    pub async fn blocking_scope(&self, req: &DispatchRequested) -> Option<String> {
        self.tail
            .fresh_after(now_ms() - self.max_staleness_ms)
            .await;
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .blocking_scope(&req.sender, req.client_id.as_deref(), &req.destination)
    }
}
