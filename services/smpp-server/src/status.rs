//! What `query_sm` and `cancel_sm` need to know: the state of the messages submitted over
//! SMPP, folded from the event log.
//!
//! Data flow: a tail of `smsgw.events` ([`run`]) feeds every event to [`Book::apply`];
//! the book keeps only messages whose `MessageAccepted` names an SMPP account
//! (`client_ref` `smpp:<system_id>`), at most `capacity` of them (the oldest forgotten
//! first), each as a few bytes: its account, its SMPP `message_state`, when it ended and
//! its error code. A session asks [`Book::get`] with its own `system_id`: another
//! account's message is answered as one that does not exist.

use rusmpp::values::MessageState;
use smsgw_codec::{AvroRecord, SMPP_CLIENT_REF_PREFIX};
use smsgw_domain::{Event, EventPayload};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// One SMPP message's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The account that submitted it.
    pub system_id: String,
    /// Its SMPP state.
    pub state: MessageState,
    /// When it reached a final state (Unix ms).
    pub final_at: Option<i64>,
    /// The carrier's error code, when one was given and fits a `u8`.
    pub error_code: u8,
}

impl Status {
    /// Whether a cancellation can still stop it (nothing has gone to a carrier yet).
    pub fn cancellable(&self) -> bool {
        self.state == MessageState::Accepted
    }

    /// Whether it has ended.
    pub fn is_final(&self) -> bool {
        self.final_at.is_some()
    }
}

/// The SMPP state an event moves a message to, with its end time and error code;
/// `None` for events that change nothing an ESME sees.
fn state_after(e: &Event) -> Option<(MessageState, bool, u8)> {
    let err = |code: Option<&String>| code.and_then(|c| c.parse::<u8>().ok()).unwrap_or(0);
    Some(match &e.payload {
        EventPayload::Accepted(_) | EventPayload::CarrierSelected(_) => {
            (MessageState::Accepted, false, 0)
        }
        EventPayload::Submitted(_)
        | EventPayload::SubmitFailed(_)
        | EventPayload::DeliveryFailed(_) => (MessageState::Enroute, false, 0),
        EventPayload::Delivered(_) => (MessageState::Delivered, true, 0),
        EventPayload::Undeliverable(u) => (
            MessageState::Undeliverable,
            true,
            err(u.error_code.as_ref()),
        ),
        EventPayload::Expired(_) => (MessageState::Expired, true, 0),
        EventPayload::Blocked(_) | EventPayload::Rejected(_) => (MessageState::Rejected, true, 0),
        EventPayload::Cancelled(_) => (MessageState::Deleted, true, 0),
    })
}

/// The states of SMPP messages, bounded.
#[derive(Debug)]
pub struct Book {
    inner: Mutex<(HashMap<String, Status>, VecDeque<String>)>,
    capacity: usize,
}

impl Book {
    /// At most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Book {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity,
        }
    }

    /// Folds one event in. A state never goes back: a final state stays (a re-read
    /// older event is ignored).
    pub fn apply(&self, e: &Event) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if let EventPayload::Accepted(a) = &e.payload {
            let Some(system_id) = a
                .client_ref
                .as_deref()
                .and_then(|r| r.strip_prefix(SMPP_CLIENT_REF_PREFIX))
            else {
                return;
            };
            if !map.contains_key(&e.message_id) {
                if order.len() >= self.capacity {
                    if let Some(old) = order.pop_front() {
                        map.remove(&old);
                    }
                }
                order.push_back(e.message_id.clone());
                map.insert(
                    e.message_id.clone(),
                    Status {
                        system_id: system_id.to_string(),
                        state: MessageState::Accepted,
                        final_at: None,
                        error_code: 0,
                    },
                );
            }
            return;
        }
        let Some(s) = map.get_mut(&e.message_id) else {
            return;
        };
        let Some((state, ended, error_code)) = state_after(e) else {
            return;
        };
        if s.is_final() {
            return;
        }
        s.state = state;
        s.error_code = error_code;
        if ended {
            s.final_at = Some(e.occurred_at_ms);
        }
    }

    /// The state of message `id` if `system_id` submitted it.
    pub fn get(&self, id: &str, system_id: &str) -> Option<Status> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(id).filter(|s| s.system_id == system_id).cloned()
    }
}

/// Tails the event log into `book` until `shutdown`.
pub async fn run(
    kafka: &smsgw_kafka::KafkaConfig,
    book: &Book,
    state: &smsgw_kafka::TailState,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), smsgw_kafka::KafkaError> {
    smsgw_kafka::tail(kafka, &kafka.topics.events(), None, state, shutdown, |m| {
        if let Some(Ok(e)) = m.payload.map(Event::decode) {
            book.apply(&e);
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgw_domain::{MessageDelivered, MessageSubmitted};

    fn accepted(id: &str, client_ref: Option<&str>) -> Event {
        smsgw_testkit::accepted_event(id, |a| a.client_ref = client_ref.map(str::to_string))
    }

    fn submitted(id: &str) -> Event {
        Event::new(
            id,
            EventPayload::Submitted(MessageSubmitted {
                carrier: "c".into(),
                attempt: 1,
                carrier_message_id: "x".into(),
                segments: 1,
                possible_duplicate: false,
                later_part_ids: vec![],
            }),
            1,
            20,
        )
    }

    fn delivered(id: &str) -> Event {
        Event::new(
            id,
            EventPayload::Delivered(MessageDelivered {
                carrier: "c".into(),
                carrier_message_id: "x".into(),
                stat: "DELIVRD".into(),
            }),
            1,
            30,
        )
    }

    #[test]
    fn given_an_smpp_message_when_it_moves_on_then_its_state_follows_and_stays_final() {
        let b = Book::new(10);
        b.apply(&accepted("m", Some("smpp:shop")));
        let s = b.get("m", "shop").unwrap();
        assert!(s.cancellable() && !s.is_final());
        b.apply(&submitted("m"));
        assert_eq!(b.get("m", "shop").unwrap().state, MessageState::Enroute);
        assert!(!b.get("m", "shop").unwrap().cancellable());
        b.apply(&delivered("m"));
        b.apply(&submitted("m")); // re-read: a final state stays
        let s = b.get("m", "shop").unwrap();
        assert_eq!((s.state, s.final_at), (MessageState::Delivered, Some(30)));
    }

    #[test]
    fn given_other_messages_then_the_book_neither_keeps_nor_shows_them() {
        let b = Book::new(1);
        b.apply(&accepted("http", Some("order-1")));
        b.apply(&delivered("http"));
        assert!(b.get("http", "shop").is_none(), "not an SMPP message");
        b.apply(&accepted("m", Some("smpp:shop")));
        assert!(b.get("m", "bank").is_none(), "another account's");
        b.apply(&accepted("n", Some("smpp:shop")));
        assert!(
            b.get("m", "shop").is_none(),
            "the oldest is forgotten at capacity"
        );
        assert!(b.get("n", "shop").is_some());
    }
}
