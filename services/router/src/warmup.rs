//! Re-reading the recent event log at startup, so in-flight messages can be re-routed
//! and recent outcomes are learned again.

use crate::handler::observe;
use crate::state::RouterState;
use smsgw_codec::AvroRecord;
use smsgw_domain::Event;
use smsgw_kafka::{KafkaConfig, KafkaError};
use std::sync::{Arc, Mutex};

/// Folds the events of the last `lookback_ms` into `state` (no output is produced).
pub async fn warm_up(
    kafka: &KafkaConfig,
    lookback_ms: i64,
    state: &Arc<Mutex<RouterState>>,
) -> Result<(), KafkaError> {
    let st = state.clone();
    let read =
        smsgw_kafka::read_recent(kafka, kafka.topics.events(), lookback_ms, move |part, p| {
            if let Ok(e) = Event::decode(p) {
                let mut st = st.lock().unwrap_or_else(|p| p.into_inner());
                observe(&mut st, &e);
                st.note_partition(&e.message_id, part);
            }
        })
        .await?;
    tracing::info!(events = read, "router warm-up done");
    Ok(())
}
