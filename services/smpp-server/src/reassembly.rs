//! Parts of a concatenated submit held until the last one is in, then joined into one
//! message before it is accepted. Bounded: a session holds at most `max_messages`
//! incomplete messages, and one incomplete after `timeout_ms` is given up on (the
//! session dead-letters what arrived and tells nobody it was accepted). Pure, with the
//! clock passed in.

use crate::submit::Envelope;
use smsgw_gsm::Concat;
use std::collections::{BTreeMap, HashMap};

type Key = (String, String, u16, u8);

/// An incomplete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The gateway id the whole message will get, given when its first part came.
    pub message_id: String,
    /// The first part's envelope.
    pub envelope: Envelope,
    /// Text octets by part number.
    pub parts: BTreeMap<u8, Vec<u8>>,
    /// When its first part came (Unix ms).
    pub started_ms: i64,
}

/// What adding a part did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// More parts to come; the message will get this id.
    Waiting(String),
    /// The last part: the whole message, its octets in part order.
    Complete(Pending, Vec<u8>),
    /// Already `max_messages` incomplete messages: the part is refused.
    Full,
}

/// The incomplete messages of one session.
#[derive(Debug)]
pub struct Reassembler {
    pending: HashMap<Key, Pending>,
    max_messages: usize,
    timeout_ms: i64,
}

impl Reassembler {
    /// At most `max_messages` incomplete at once, each for at most `timeout_ms`.
    pub fn new(max_messages: usize, timeout_ms: i64) -> Self {
        Reassembler {
            pending: HashMap::new(),
            max_messages,
            timeout_ms,
        }
    }

    /// Adds a part received at `now_ms`; `new_id` names the message if this part
    /// starts one.
    pub fn add(
        &mut self,
        envelope: Envelope,
        c: Concat,
        octets: Vec<u8>,
        now_ms: i64,
        new_id: impl FnOnce() -> String,
    ) -> Added {
        let key = (
            envelope.from.clone(),
            envelope.to.clone(),
            c.reference,
            c.total,
        );
        if !self.pending.contains_key(&key) && self.pending.len() >= self.max_messages {
            return Added::Full;
        }
        let p = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            message_id: new_id(),
            envelope,
            parts: BTreeMap::new(),
            started_ms: now_ms,
        });
        // A part sent again (after a lost response) replaces the first copy.
        p.parts.insert(c.seq, octets);
        if p.parts.len() < usize::from(c.total) {
            return Added::Waiting(p.message_id.clone());
        }
        let Some(p) = self.pending.remove(&key) else {
            return Added::Full;
        };
        let octets = p.parts.values().flatten().copied().collect();
        Added::Complete(p, octets)
    }

    /// Messages still incomplete `timeout_ms` after their first part, removed.
    pub fn expire(&mut self, now_ms: i64) -> Vec<Pending> {
        let timeout = self.timeout_ms;
        let late: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms - p.started_ms >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        late.into_iter()
            .filter_map(|k| self.pending.remove(&k))
            .collect()
    }

    /// Every incomplete message, removed (the session is closing).
    pub fn drain(&mut self) -> Vec<Pending> {
        self.pending.drain().map(|(_, p)| p).collect()
    }

    /// Incomplete messages held.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(to: &str) -> Envelope {
        Envelope {
            from: "Shop".into(),
            to: to.into(),
            receipt: false,
            expires_at: None,
            deliver_at: None,
            data_coding: 0,
        }
    }

    fn c(reference: u16, total: u8, seq: u8) -> Concat {
        Concat {
            reference,
            total,
            seq,
        }
    }

    #[test]
    fn parts_in_any_order_join_in_part_order_under_the_first_parts_id() {
        let mut r = Reassembler::new(4, 60_000);
        let id = || "m1".to_string();
        assert_eq!(
            r.add(env("+44"), c(9, 3, 3), b"C".to_vec(), 0, id),
            Added::Waiting("m1".into())
        );
        assert_eq!(
            r.add(env("+44"), c(9, 3, 1), b"A".to_vec(), 1, || unreachable!()),
            Added::Waiting("m1".into())
        );
        match r.add(env("+44"), c(9, 3, 2), b"B".to_vec(), 2, || unreachable!()) {
            Added::Complete(p, octets) => {
                assert_eq!(
                    (p.message_id.as_str(), octets.as_slice()),
                    ("m1", &b"ABC"[..])
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(r.is_empty());
    }

    #[test]
    fn a_resent_part_replaces_its_first_copy() {
        let mut r = Reassembler::new(4, 60_000);
        r.add(env("+44"), c(1, 2, 1), b"x".to_vec(), 0, || "m".into());
        r.add(env("+44"), c(1, 2, 1), b"A".to_vec(), 0, || unreachable!());
        let Added::Complete(_, octets) =
            r.add(env("+44"), c(1, 2, 2), b"B".to_vec(), 0, || unreachable!())
        else {
            panic!()
        };
        assert_eq!(octets, b"AB");
    }

    #[test]
    fn a_full_session_refuses_new_messages_but_completes_started_ones() {
        let mut r = Reassembler::new(1, 60_000);
        r.add(env("+1"), c(1, 2, 1), b"A".to_vec(), 0, || "m".into());
        assert_eq!(
            r.add(env("+2"), c(1, 2, 1), b"A".to_vec(), 0, || "n".into()),
            Added::Full
        );
        assert!(matches!(
            r.add(env("+1"), c(1, 2, 2), b"B".to_vec(), 0, || unreachable!()),
            Added::Complete(..)
        ));
    }

    #[test]
    fn an_incomplete_message_is_given_up_after_the_timeout() {
        let mut r = Reassembler::new(4, 1_000);
        r.add(env("+1"), c(1, 2, 1), b"A".to_vec(), 0, || "m".into());
        assert!(r.expire(999).is_empty());
        let gone = r.expire(1_000);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].parts.len(), 1);
        assert!(r.is_empty());
    }

    proptest! {
        /// Whatever the order, a message of n parts completes exactly at its n-th
        /// distinct part, with every part's octets in part order.
        #[test]
        fn completes_exactly_at_the_last_distinct_part(order in Just((1u8..=6).collect::<Vec<_>>()).prop_shuffle()) {
            let mut r = Reassembler::new(2, 60_000);
            let total = order.len() as u8;
            for (i, seq) in order.iter().enumerate() {
                let got = r.add(env("+1"), c(5, total, *seq), vec![*seq], 0, || "m".into());
                if i + 1 < order.len() {
                    prop_assert_eq!(got, Added::Waiting("m".into()));
                } else {
                    let Added::Complete(_, octets) = got else { return Err(TestCaseError::fail("not complete")) };
                    prop_assert_eq!(octets, (1..=total).collect::<Vec<_>>());
                }
            }
        }
    }
}
