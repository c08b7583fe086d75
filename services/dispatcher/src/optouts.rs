//! The dispatcher's copies of the opt-out log and of the cancellations. The router
//! already blocks opted-out recipients and cancelled messages; this second check, just
//! before a message's first part is submitted, catches a STOP or a cancellation that
//! arrived after the message was routed (while it waited in the dispatch topic, the
//! window or the rate limiter). Past this check the message is sent: so a message is
//! either cancelled or sent, never both.
//!
//! Bound: before checking, the copy must be fresh as of `max_staleness_ms` ago (it
//! refreshes every `refresh_ms`, so in steady state this never waits). Hence a STOP
//! whose record is on the opt-out log at time T blocks every submit that starts after
//! T + `max_staleness_ms`.

use smsgw_codec::{DispatchRequested, OptOutIndex};
use smsgw_kafka::{now_ms, TailState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The opt-outs in force and how fresh they are.
#[derive(Debug, Clone)]
pub struct OptOutGate {
    index: Arc<Mutex<OptOutIndex>>,
    tail: Arc<TailState>,
    cancelled: Arc<Mutex<HashMap<String, Option<String>>>>,
    cancel_tail: Arc<TailState>,
    max_staleness_ms: i64,
}

impl OptOutGate {
    /// A gate over `index` and `cancelled` (message id -> who asked), fed by the tails
    /// whose freshness `tail` and `cancel_tail` report.
    pub fn new(
        index: Arc<Mutex<OptOutIndex>>,
        tail: Arc<TailState>,
        cancelled: Arc<Mutex<HashMap<String, Option<String>>>>,
        cancel_tail: Arc<TailState>,
        max_staleness_ms: i64,
    ) -> Self {
        OptOutGate {
            index,
            tail,
            cancelled,
            cancel_tail,
            max_staleness_ms,
        }
    }

    /// `Some(who asked)` if the message was cancelled. Waits until the copy is fresh
    /// enough.
    pub async fn cancelled(&self, message_id: &str) -> Option<Option<String>> {
        self.cancel_tail
            .fresh_after(now_ms() - self.max_staleness_ms)
            .await;
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(message_id)
            .cloned()
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
