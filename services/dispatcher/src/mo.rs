//! Reassembly of concatenated MO messages: parts (UDH or SAR) are held, unacknowledged,
//! until every part is in; then the whole text goes to the inbound topic and every part
//! is acknowledged. Parts still missing after the timeout are given up on: what arrived
//! is forwarded (marked incomplete) so nothing received is lost.

use smsgw_codec::InboundMessage;
use smsgw_gsm::Concat;
use std::collections::{BTreeMap, HashMap};

type Key = (String, String, u16, u8);

#[derive(Debug)]
struct Buffer<A> {
    first: InboundMessage,
    parts: BTreeMap<u8, String>,
    acks: Vec<A>,
    started_ms: i64,
}

/// Parts waiting for their siblings. `A` is whatever acknowledges a part later.
#[derive(Debug)]
pub struct Reassembler<A> {
    buffers: HashMap<Key, Buffer<A>>,
    timeout_ms: i64,
}

/// Marker appended to a message whose parts did not all arrive.
pub const INCOMPLETE: &str = " [incomplete]";

impl<A> Reassembler<A> {
    /// Gives up on a message `timeout_ms` after its first part.
    pub fn new(timeout_ms: i64) -> Self {
        Reassembler {
            buffers: HashMap::new(),
            timeout_ms,
        }
    }

    /// Adds a part; returns the whole message and the acknowledgements to send once the
    /// last part is in.
    pub fn add(
        &mut self,
        part: InboundMessage,
        c: Concat,
        ack: A,
        now_ms: i64,
    ) -> Option<(InboundMessage, Vec<A>)> {
        let key = (part.from.clone(), part.to.clone(), c.reference, c.total);
        let text = part.body.clone();
        let b = self.buffers.entry(key.clone()).or_insert_with(|| Buffer {
            first: part,
            parts: BTreeMap::new(),
            acks: Vec::new(),
            started_ms: now_ms,
        });
        b.parts.insert(c.seq, text);
        b.acks.push(ack);
        if b.parts.len() < c.total as usize {
            return None;
        }
        let b = self.buffers.remove(&key)?;
        Some(finish(b, false))
    }

    /// Messages whose parts did not all arrive in time, with what did arrive.
    pub fn expire(&mut self, now_ms: i64) -> Vec<(InboundMessage, Vec<A>)> {
        let late: Vec<Key> = self
            .buffers
            .iter()
            .filter(|(_, b)| now_ms - b.started_ms >= self.timeout_ms)
            .map(|(k, _)| k.clone())
            .collect();
        late.into_iter()
            .filter_map(|k| self.buffers.remove(&k))
            .map(|b| finish(b, true))
            .collect()
    }

    /// Messages waiting for parts.
    pub fn waiting(&self) -> usize {
        self.buffers.len()
    }
}

fn finish<A>(b: Buffer<A>, incomplete: bool) -> (InboundMessage, Vec<A>) {
    let mut m = b.first;
    m.body = b.parts.into_values().collect::<String>();
    if incomplete {
        m.body.push_str(INCOMPLETE);
    }
    (m, b.acks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(body: &str) -> InboundMessage {
        InboundMessage {
            inbound_id: format!("id-{body}"),
            carrier: "a".into(),
            from: "+447911100001".into(),
            to: "SHOP".into(),
            body: body.into(),
            received_at: 0,
        }
    }

    fn c(seq: u8, total: u8) -> Concat {
        Concat {
            reference: 7,
            total,
            seq,
        }
    }

    #[test]
    fn parts_in_any_order_make_one_message_and_every_part_is_acked() {
        let mut r = Reassembler::new(1000);
        assert!(r.add(part("world"), c(2, 3), 2, 0).is_none());
        assert!(r.add(part("hello "), c(1, 3), 1, 1).is_none());
        let (m, acks) = r.add(part("!"), c(3, 3), 3, 2).unwrap();
        assert_eq!(m.body, "hello world!");
        assert_eq!(acks, vec![2, 1, 3]);
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn missing_parts_are_given_up_on_without_losing_what_came() {
        let mut r = Reassembler::new(1000);
        r.add(part("hello "), c(1, 2), 1, 0);
        assert!(r.expire(999).is_empty());
        let out = r.expire(1000);
        assert_eq!(out[0].0.body, format!("hello {INCOMPLETE}"));
        assert_eq!(out[0].1, vec![1]);
    }
}
