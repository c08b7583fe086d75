//! The status view and the idempotency index, both folded from the message event log.
//!
//! The view keeps the aggregate of the most recent `view_capacity` messages for
//! `GET /v1/messages/{id}`. The index keeps a hash of the most recent `dedupe_capacity`
//! message ids: ingest consults it so that a request whose (deterministic) id already has
//! events is not accepted twice, even after an ingest restart, because the index is
//! rebuilt from the event log before ingest takes new requests.

use crate::metrics::Metrics;
use smsgw_codec::AvroRecord;
use smsgw_domain::{Event, Message};
use smsgw_kafka::rdkafka::Message as _;
use smsgw_kafka::{tail, KafkaConfig, KafkaError, TailState};
use smsgw_runtime::Shutdown;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, RwLock};

/// Bounded map of message aggregates, oldest evicted first.
#[derive(Debug)]
pub struct View {
    messages: HashMap<String, Message>,
    order: VecDeque<String>,
    capacity: usize,
}

impl View {
    /// An empty view holding at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        View {
            messages: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Folds one event in; events the aggregate refuses are ignored.
    pub fn apply(&mut self, e: &Event) {
        if !self.messages.contains_key(&e.message_id) {
            if self.order.len() >= self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.messages.remove(&old);
                }
            }
            self.order.push_back(e.message_id.clone());
        }
        let m = self
            .messages
            .entry(e.message_id.clone())
            .or_insert_with(|| Message::new(&e.message_id));
        if let Err(err) = m.apply(e) {
            tracing::debug!(event = %e.event_id, %err, "event ignored by the view");
        }
    }

    /// The aggregate of a message, if the view holds it.
    pub fn get(&self, id: &str) -> Option<&Message> {
        self.messages.get(id)
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Bounded set of message-id hashes, oldest evicted first.
#[derive(Debug)]
pub struct Dedupe {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Dedupe {
    /// An empty index of at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Dedupe {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn hash(id: &str) -> u64 {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        h.finish()
    }

    /// Inserts an id; false if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        let h = Self::hash(id);
        if !self.set.insert(h) {
            return false;
        }
        self.order.push_back(h);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// State shared by the view task, the ingest handler and the HTTP API.
#[derive(Debug)]
pub struct Shared {
    /// Status view.
    pub view: RwLock<View>,
    /// Idempotency index.
    pub dedupe: Mutex<Dedupe>,
    /// How far the view has read the event log.
    pub tail: TailState,
}

impl Shared {
    /// Empty state.
    pub fn new(view_capacity: usize, dedupe_capacity: usize) -> Self {
        Shared {
            view: RwLock::new(View::new(view_capacity)),
            dedupe: Mutex::new(Dedupe::new(dedupe_capacity)),
            tail: TailState::default(),
        }
    }

    fn apply(&self, e: &Event) {
        self.dedupe
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&e.message_id);
        self.view
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(e);
    }
}

/// Tails the event log into `shared` until shutdown. Every ingest instance holds the
/// whole view; `shared.tail.caught_up()` says when it has read what existed at startup.
pub async fn run_view(
    kafka: &KafkaConfig,
    shared: &Shared,
    metrics: &Metrics,
    shutdown: Shutdown,
) -> Result<(), KafkaError> {
    tail(kafka, &kafka.topics.events(), None, &shared.tail, shutdown.wait(), |msg| {
        match msg.payload().map(Event::decode) {
            Some(Ok(e)) => shared.apply(&e),
            Some(Err(err)) => tracing::warn!(offset = msg.offset(), %err, "undecodable event skipped by the view"),
            None => {}
        }
        metrics.view_messages.set(shared.view.read().map(|v| v.len() as i64).unwrap_or(0));
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_forgets_the_oldest_beyond_capacity() {
        let mut d = Dedupe::new(2);
        assert!(d.insert("a"));
        assert!(!d.insert("a"));
        assert!(d.insert("b"));
        assert!(d.insert("c"));
        assert!(d.insert("a"), "a was evicted");
    }
}
