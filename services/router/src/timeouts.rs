//! Receipt timeouts: a submitted attempt of a message type with `receipt_timeout_ms`
//! that gets no final receipt in time fails with `DeliveryFailed { timed_out: true }`,
//! which the router then re-routes like a failure receipt.
//!
//! Only types configured with a timeout do this: a receipt may just be late, and the
//! re-route then texts the recipient a second time. A late receipt is still recorded
//! (the message ends delivered) and counts for its carrier.

use crate::state::RouterState;
use smsgw_domain::{Command, Message, State};
use smsgw_kafka::{OutRecord, Owned, Producer, Topics};
use smsgw_runtime::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often timers are checked.
const TICK: Duration = Duration::from_millis(250);

/// Emits `DeliveryFailed` for every attempt whose receipt timeout passed, until shutdown.
/// Only messages of the event-log partitions this router `owned` now: with several
/// routers each timer has one owner.
pub async fn run(
    state: Arc<Mutex<RouterState>>,
    topics: Topics,
    producer: Producer,
    owned: Owned,
    shutdown: Shutdown,
) {
    let events = topics.events();
    while !shutdown.requested() {
        tokio::time::sleep(TICK).await;
        let now = smsgw_kafka::now_ms();
        let due = state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .due_timeouts(now, |p| owned.owns(&events, p));
        for (id, attempt, tried) in due {
            let snapshot = Message::snapshot(id.clone(), State::Submitted, attempt, tried);
            let reason = "no final receipt within the message type's receipt timeout".into();
            let Ok(events) = snapshot.decide(Command::TimeOut { reason }, now) else {
                continue;
            };
            let records: Vec<OutRecord> = events
                .iter()
                .filter_map(|e| OutRecord::avro(topics.events(), id.clone(), e).ok())
                .collect();
            // Not acknowledged: the warm-up after a restart re-arms the timer.
            if let Err(e) = smsgw_kafka::send_all(&producer, &records).await {
                tracing::warn!(error = %e, "receipt timeout not recorded");
            }
        }
    }
}
