//! Gateway-held sends: messages accepted with a `send_at` wait here, not in a consumer.
//!
//! The router's event handler writes such a `MessageAccepted` event, unchanged, to the
//! compacted schedule topic (key: message id) and moves on, so no partition waits. The
//! [`run`] task tails that topic into a [`Schedule`] (rebuilt from the topic after a
//! restart), and when a message falls due, or is cancelled, routes it through the same
//! handler code as any accepted message, then writes a tombstone for it. On startup the
//! held messages are remembered by the router before the event-log warm-up, so a message
//! released just before a crash (routed, tombstone not yet written) is seen routed by the
//! warm-up and is not routed twice.
//!
//! Every router reads the whole schedule topic, but a held message is released only by
//! the router that owns the event-log partition it came from (the [`OWNER_HEADER`] of
//! its schedule record), so with several routers each message has exactly one releaser.

use crate::handler::RouterHandler;
use smsgw_codec::AvroRecord;
use smsgw_domain::{Event, EventPayload};
use smsgw_kafka::{KafkaConfig, OutRecord, Owned, Producer, TailState};
use smsgw_runtime::Shutdown;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages that are due at most this far ahead (ms) are routed at once, not held.
pub const HOLD_THRESHOLD_MS: i64 = 1_000;

/// Header of a schedule record: the event-log partition of the message it holds, whose
/// owner releases it. A record without it (written before the header existed) belongs
/// to the event-log partition numbered like its own schedule partition.
pub const OWNER_HEADER: &str = "smsgw-partition";

/// The held messages, by due time. Pure.
#[derive(Debug, Default)]
pub struct Schedule {
    by_time: BTreeSet<(i64, String)>,
    held: HashMap<String, (i64, i32, Event)>,
}

impl Schedule {
    /// Holds `event` (a `MessageAccepted` with `send_at`) until its time, for the owner
    /// of event-log partition `partition`. Re-holding the same message replaces it.
    pub fn hold(&mut self, event: Event, partition: i32) {
        let EventPayload::Accepted(a) = &event.payload else {
            return;
        };
        let at = a.send_at.unwrap_or(event.occurred_at_ms);
        self.remove(&event.message_id);
        self.by_time.insert((at, event.message_id.clone()));
        self.held
            .insert(event.message_id.clone(), (at, partition, event));
    }

    /// Forgets a message (released, or a tombstone read back).
    pub fn remove(&mut self, id: &str) {
        if let Some((at, _, _)) = self.held.remove(id) {
            self.by_time.remove(&(at, id.to_string()));
        }
    }

    /// Every held message.
    pub fn held(&self) -> impl Iterator<Item = &Event> {
        self.held.values().map(|(_, _, e)| e)
    }

    /// True if the message is held.
    pub fn contains(&self, id: &str) -> bool {
        self.held.contains_key(id)
    }

    /// The held messages due at `now_ms`, plus any of `early` (cancelled ones), of the
    /// event-log partitions `mine` says are this router's, each with its partition. They
    /// stay held until [`Self::remove`].
    pub fn due(
        &self,
        now_ms: i64,
        early: &[String],
        mine: impl Fn(i32) -> bool,
    ) -> Vec<(Event, i32)> {
        let mut ids: Vec<&String> = self
            .by_time
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|(_, id)| id)
            .collect();
        // A cancelled message that is also due is released once.
        for id in early {
            if self.held.contains_key(id) && !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.into_iter()
            .filter_map(|id| self.held.get(id))
            .filter(|(_, p, _)| mine(*p))
            .map(|(_, p, e)| (e.clone(), *p))
            .collect()
    }

    /// When the next message falls due.
    pub fn next_due(&self) -> Option<i64> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// The event-log partition a schedule record belongs to: its [`OWNER_HEADER`], else its
/// own partition number.
fn owner_partition(m: &smsgw_kafka::Incoming<'_>) -> i32 {
    m.header(OWNER_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or(m.partition)
}

/// Marks each output for the schedule topic as belonging to event-log `partition`.
pub fn stamp_owner(out: &mut [OutRecord], schedule_topic: &str, partition: i32) {
    for rec in out.iter_mut().filter(|r| r.topic == schedule_topic) {
        rec.headers.retain(|(k, _)| k != OWNER_HEADER);
        rec.headers
            .push((OWNER_HEADER.to_string(), partition.to_string()));
    }
}

/// Tails the schedule topic into `schedule`; returns the tail's state.
pub fn spawn_schedule_tail(
    kafka: &KafkaConfig,
    schedule: Arc<Mutex<Schedule>>,
    shutdown: Shutdown,
) -> (Arc<TailState>, tokio::task::JoinHandle<()>) {
    let state = Arc::new(TailState::default());
    let (kafka, st) = (kafka.clone(), state.clone());
    let task = tokio::spawn(async move {
        let topic = kafka.topics.schedule();
        let r = smsgw_kafka::tail(&kafka, &topic, None, &st, shutdown.wait(), |m| {
            let Some(key) = m.key.map(String::from_utf8_lossy) else {
                return;
            };
            let mut s = schedule.lock().unwrap_or_else(|p| p.into_inner());
            match m.payload.map(Event::decode) {
                None => s.remove(&key),
                Some(Ok(e)) => s.hold(e, owner_partition(m)),
                Some(Err(e)) => tracing::warn!(error = %e, "undecodable schedule record skipped"),
            }
        })
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "schedule tail stopped");
        }
    });
    (state, task)
}

/// Releases held messages as they fall due (or are cancelled) until `shutdown`: only
/// those of the event-log partitions this router `owned` now.
pub async fn run(
    handler: RouterHandler,
    producer: Producer,
    schedule: Arc<Mutex<Schedule>>,
    owned: Owned,
    shutdown: Shutdown,
) {
    let topic = handler.topics.schedule();
    let events = handler.topics.events();
    // Cancelled held messages not released yet: kept until their owner (this router, once
    // it owns the partition, or another) has released them and the tombstone is read.
    let mut cancelled: Vec<String> = Vec::new();
    loop {
        if shutdown.requested() {
            return;
        }
        let now = smsgw_kafka::now_ms();
        cancelled.extend(handler.take_recent_cancellations());
        let due = {
            let s = schedule.lock().unwrap_or_else(|p| p.into_inner());
            handler.metrics.scheduled.set(s.len() as i64);
            let due = s.due(now, &cancelled, |p| owned.owns(&events, p));
            cancelled.retain(|id| s.contains(id) && !due.iter().any(|(e, _)| e.message_id == *id));
            due
        };
        for (event, partition) in due {
            let id = event.message_id.clone();
            // Routes it (or cancels, blocks, expires it); nothing if already routed.
            // The release waits for a fresh opt-out copy, which shutdown stops.
            let released = tokio::select! {
                biased;
                _ = shutdown.clone().wait() => return,
                r = handler.release(&event, now) => r,
            };
            let mut out = match released {
                Ok(out) => out,
                Err(e) => {
                    tracing::warn!(error = ?e, "held message could not be released; it stays held");
                    continue;
                }
            };
            // Held again (quiet hours): still the same partition's.
            stamp_owner(&mut out, &topic, partition);
            out.push(OutRecord::tombstone(topic.clone(), id.clone()));
            // In order: the decision, its dispatch work, then the held copy's removal.
            match smsgw_kafka::send_in_order(&producer, &out).await {
                Ok(()) => schedule
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id),
                Err(e) => {
                    tracing::warn!(error = %e, "release not acknowledged; retrying");
                }
            }
        }
        let wait = schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_due()
            .map_or(200, |at| (at - smsgw_kafka::now_ms()).clamp(5, 200));
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgw_domain::{Command, Message, MessageAccepted};

    fn held(id: &str, at: i64) -> Event {
        Message::new(id)
            .decide(
                Command::Accept(MessageAccepted {
                    client_id: "c".into(),
                    idempotency_key: None,
                    client_ref: None,
                    destination: "+447911123456".into(),
                    sender: "SHOP".into(),
                    body: "hi".into(),
                    encoding: "GSM7".into(),
                    segments: 1,
                    registered_delivery: None,
                    expires_at: None,
                    schedule_delivery_at: None,
                    callback_url: None,
                    send_at: Some(at),
                    message_type: None,
                }),
                0,
            )
            .unwrap()
            .remove(0)
    }

    #[test]
    fn releases_in_time_order_and_only_when_due() {
        let mut s = Schedule::default();
        s.hold(held("b", 2_000), 0);
        s.hold(held("a", 1_000), 0);
        s.hold(held("c", 3_000), 0);
        let all = |_| true;
        assert!(s.due(999, &[], all).is_empty());
        let ids =
            |v: Vec<(Event, i32)>| v.into_iter().map(|(e, _)| e.message_id).collect::<Vec<_>>();
        assert_eq!(ids(s.due(2_000, &[], all)), ["a", "b"]);
        assert_eq!(s.next_due(), Some(1_000));
        s.remove("a");
        assert_eq!(s.next_due(), Some(2_000));
        assert_eq!(
            ids(s.due(2_000, &["c".into(), "zz".into()], all)),
            ["b", "c"],
            "cancelled ones early"
        );
    }

    #[test]
    fn re_holding_replaces_and_tombstones_remove() {
        let mut s = Schedule::default();
        s.hold(held("a", 5_000), 0);
        s.hold(held("a", 1_000), 0);
        assert_eq!(s.len(), 1);
        assert_eq!(s.due(1_000, &[], |_| true).len(), 1);
        s.remove("a");
        assert!(s.is_empty() && s.next_due().is_none());
    }

    #[test]
    fn a_held_message_is_released_only_by_the_owner_of_its_partition() {
        // Given messages held for event-log partitions 0..4 and two routers that split
        // the partitions the way static assignment does,
        let mut s = Schedule::default();
        for p in 0..4 {
            s.hold(held(&format!("m{p}"), 1_000), p);
        }
        let router = |i: u32| {
            s.due(1_000, &["m1".into()], |p| smsgw_kafka::owner_of(p, 2) == i)
                .into_iter()
                .map(|(e, p)| (e.message_id, p))
                .collect::<Vec<_>>()
        };
        // when both look for due messages, each releases only its own, and together
        // they release each message exactly once.
        let (mut a, mut b) = (router(0), router(1));
        a.sort();
        b.sort();
        assert_eq!(a, [("m0".to_string(), 0), ("m2".to_string(), 2)]);
        assert_eq!(b, [("m1".to_string(), 1), ("m3".to_string(), 3)]);
    }

    #[test]
    fn stamping_marks_only_schedule_records_and_replaces_an_old_mark() {
        let mut out = vec![
            OutRecord::tombstone("s", "a"),
            OutRecord::tombstone("events", "a"),
        ];
        stamp_owner(&mut out, "s", 4);
        stamp_owner(&mut out, "s", 5);
        assert_eq!(
            out[0].headers,
            [(OWNER_HEADER.to_string(), "5".to_string())]
        );
        assert!(out[1].headers.is_empty());
    }
}
