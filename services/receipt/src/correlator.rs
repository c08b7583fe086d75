//! The correlation core: pure, driven by records and an injected clock.
//!
//! The receipts topic is keyed `<carrier>:<carrier message id>`, so a receipt and the
//! `SubmitCorrelated` it needs share a partition. Each record stays *pending* (its
//! offset is not committed) for as long as it is still needed: a correlation until its
//! final receipt arrives or it expires; a receipt until its correlation arrives or it is
//! given up as an orphan. After a restart the partition is re-read from the oldest
//! pending record, which rebuilds exactly this state; events emitted again carry the
//! same ids and are harmless.

use smsgw_codec::{CarrierRecord, CarrierRecordKind, ReceiptReceived};
use smsgw_domain::{classify_stat, Command, Event, Message, ReceiptOutcome, State};
use std::collections::HashMap;

/// What the loop must do after a record or a tick.
#[derive(Debug, Default, PartialEq)]
pub struct Actions {
    /// Events to write to the event log.
    pub events: Vec<Event>,
    /// Receipts nobody claimed in time: `(partition, offset, reason, record)` to
    /// dead-letter, the record kept whole so that a later life can remember it
    /// ([`Correlator::remember_given_up`]).
    pub orphans: Vec<(i32, i64, String, CarrierRecord)>,
    /// `(partition, offset)` of records no longer needed, once the above are stored.
    pub done: Vec<(i32, i64)>,
    /// Submit-to-final-receipt times (ms) of the messages settled, for the histogram.
    pub receipt_latencies_ms: Vec<i64>,
    /// Correlations paired with a receipt given up earlier as an orphan.
    pub late_pairs: u64,
}

#[derive(Debug)]
struct Correlation {
    carrier: String,
    carrier_message_id: String,
    message_id: String,
    attempt: i32,
    part: i32,
    parts: i32,
    partition: i32,
    offset: i64,
    /// When it expires, in wall time and in the partition's log time ([`Deadline`]).
    expires: Deadline,
    /// When the carrier accepted the submit (the correlation's `received_at`).
    submitted_at: i64,
}

/// When a wait ends: in wall time (read time plus the timeout) and in log time (the
/// record's own time plus the timeout). A wait ends only on evidence that what it waits
/// for is not in the log: the partition's log has moved past `log` (a later record was
/// read), or the partition was confirmed read to its end at a time past `wall`
/// ([`Correlator::read_to_end`]). Wall time alone is not evidence: while the broker is
/// down or slow the records that would end the wait are stored but not read, and giving
/// up then ends a message the carrier delivered.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    wall: i64,
    log: i64,
}

/// The final receipts of a concatenated message's parts, gathered until all are in.
#[derive(Debug, Default)]
struct Group {
    finals: std::collections::BTreeMap<i32, ReceiptReceived>,
    /// Offsets of the parts' correlations and receipts: needed until the group is settled.
    held: Vec<(i32, i64)>,
}

#[derive(Debug)]
struct Orphan {
    receipt: ReceiptReceived,
    carrier: String,
    carrier_message_id: String,
    received_at: i64,
    partition: i32,
    offset: i64,
    give_up: Deadline,
}

/// Correlation state of the partitions this instance reads.
#[derive(Debug)]
pub struct Correlator {
    correlations: HashMap<String, Correlation>,
    groups: HashMap<(String, i32), Group>,
    orphans: HashMap<String, Vec<Orphan>>,
    /// Correlations settled lately, key → (message id, attempt), oldest first, at most
    /// [`SETTLED_MEMORY`]: a dispatcher that restarts writes the correlation of a submit
    /// again when it cannot tell whether the first one was stored; a copy of one that
    /// was already settled is ignored instead of waiting to expire a finished message.
    settled: Recent<(String, i32)>,
    /// Receipts given up as orphans lately, key → receipt, oldest first, at most
    /// [`SETTLED_MEMORY`]: a correlation that comes after all (the dispatcher that wrote
    /// the submit died before its correlation was stored, and its next life writes it
    /// again once it has restarted) still pairs with its receipt, so the message ends
    /// as the carrier reported instead of expiring.
    given_up: Recent<ReceiptReceived>,
    /// Per partition, the latest record time read (`received_at`): its log time.
    log_clock: HashMap<i32, i64>,
    /// Per partition, the latest wall time at which it was confirmed read to its end.
    read_to_end_at: HashMap<i32, i64>,
    receipt_timeout_ms: i64,
    orphan_timeout_ms: i64,
}

/// A bounded memory of recent keys: at most [`SETTLED_MEMORY`], the oldest forgotten
/// first.
#[derive(Debug)]
struct Recent<V> {
    map: HashMap<String, V>,
    order: std::collections::VecDeque<String>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
        }
    }
}

impl<V> Recent<V> {
    fn insert(&mut self, key: String, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > SETTLED_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// How many settled correlations are remembered (a copy comes within seconds).
pub const SETTLED_MEMORY: usize = 100_000;

impl Correlator {
    /// `receipt_timeout_ms`: how long a submitted message waits for its final receipt
    /// before it is expired; `orphan_timeout_ms`: how long a receipt waits for its
    /// correlation before it is dead-lettered.
    pub fn new(receipt_timeout_ms: i64, orphan_timeout_ms: i64) -> Self {
        Correlator {
            correlations: HashMap::new(),
            groups: HashMap::new(),
            orphans: HashMap::new(),
            settled: Recent::default(),
            given_up: Recent::default(),
            log_clock: HashMap::new(),
            read_to_end_at: HashMap::new(),
            receipt_timeout_ms,
            orphan_timeout_ms,
        }
    }

    /// Drops the state of a partition this instance no longer reads (a rebalance): its
    /// next owner re-reads the partition from its oldest uncommitted record, which
    /// rebuilds that state there.
    pub fn revoke(&mut self, partition: i32) {
        self.correlations.retain(|_, c| c.partition != partition);
        for list in self.orphans.values_mut() {
            list.retain(|o| o.partition != partition);
        }
        self.orphans.retain(|_, l| !l.is_empty());
        for g in self.groups.values_mut() {
            g.held.retain(|(p, _)| *p != partition);
        }
        self.log_clock.remove(&partition);
        self.read_to_end_at.remove(&partition);
    }

    /// `partition` was confirmed read to its end at wall time `at`: every record stored
    /// before `at` has been read, so a wait whose wall deadline is at or before `at`
    /// waits for something that is not in the log.
    pub fn read_to_end(&mut self, partition: i32, at: i64) {
        let e = self.read_to_end_at.entry(partition).or_insert(at);
        *e = (*e).max(at);
    }

    /// Partitions with a wait past its wall deadline at `now` and no evidence yet to end
    /// it: the loop should confirm they were read to their end.
    pub fn needs_end_check(&self, now_ms: i64) -> Vec<i32> {
        let waits = self
            .correlations
            .values()
            .map(|c| (c.partition, c.expires))
            .chain(
                self.orphans
                    .values()
                    .flatten()
                    .map(|o| (o.partition, o.give_up)),
            );
        let mut ps: Vec<i32> = waits
            .filter(|(p, d)| d.wall <= now_ms && !self.is_over(*p, *d))
            .map(|(p, _)| p)
            .collect();
        ps.sort_unstable();
        ps.dedup();
        ps
    }

    /// True when the evidence says the wait ending at `d` on `partition` is over.
    fn is_over(&self, partition: i32, d: Deadline) -> bool {
        self.log_clock.get(&partition).is_some_and(|t| *t >= d.log)
            || self
                .read_to_end_at
                .get(&partition)
                .is_some_and(|t| *t >= d.wall)
    }

    /// Remembers a receipt an earlier life gave up as an orphan (read back from the
    /// dead-letter topic at start, [`crate::given_up_receipt`]), as if this life had
    /// given it up: the dispatcher's next life may write its correlation again only
    /// after this service restarted too. Anything but a receipt is ignored.
    pub fn remember_given_up(&mut self, rec: CarrierRecord) {
        let key = rec.key();
        if let CarrierRecordKind::ReceiptReceived(r) = rec.kind {
            self.given_up.insert(key, r);
        }
    }

    /// Records waiting for their counterpart.
    pub fn waiting(&self) -> (usize, usize) {
        (
            self.correlations.len(),
            self.orphans.values().map(Vec::len).sum(),
        )
    }

    /// Takes one record of the receipts topic.
    pub fn on_record(
        &mut self,
        partition: i32,
        offset: i64,
        rec: CarrierRecord,
        now_ms: i64,
    ) -> Actions {
        let key = rec.key();
        let mut a = Actions::default();
        let clock = self.log_clock.entry(partition).or_insert(rec.received_at);
        *clock = (*clock).max(rec.received_at);
        match rec.kind {
            CarrierRecordKind::SubmitCorrelated(c) => {
                if self.settled.map.get(&key) == Some(&(c.message_id.clone(), c.attempt)) {
                    // A copy of a correlation already settled (see `settled`).
                    a.done.push((partition, offset));
                    return a;
                }
                if let Some(old) = self.correlations.remove(&key) {
                    // The carrier reused an id: the older correlation can no longer be matched.
                    a.done.push((old.partition, old.offset));
                }
                let mut corr = Some(Correlation {
                    carrier: rec.carrier,
                    carrier_message_id: rec.carrier_message_id,
                    message_id: c.message_id,
                    attempt: c.attempt,
                    part: c.part,
                    parts: c.parts,
                    partition,
                    offset,
                    expires: Deadline {
                        wall: now_ms + self.receipt_timeout_ms,
                        log: rec.received_at + self.receipt_timeout_ms,
                    },
                    submitted_at: rec.received_at,
                });
                for o in self.orphans.remove(&key).unwrap_or_default() {
                    if let Some(c) = corr.take() {
                        corr = self.settle(c, &o.receipt, (o.partition, o.offset), now_ms, &mut a);
                    } else {
                        a.done.push((o.partition, o.offset));
                    }
                }
                if let Some(c) = corr.take_if(|_| self.given_up.map.contains_key(&key)) {
                    // Its receipt was given up before it came (see `given_up`); the
                    // receipt's record is done already.
                    let r = self.given_up.map.remove(&key).expect("checked");
                    let own = (c.partition, c.offset);
                    corr = self.settle(c, &r, own, now_ms, &mut a);
                    a.late_pairs += 1;
                }
                if let Some(c) = corr {
                    self.correlations.insert(key, c);
                }
            }
            CarrierRecordKind::ReceiptReceived(r) => match self.correlations.remove(&key) {
                Some(corr) => {
                    if let Some(c) = self.settle(corr, &r, (partition, offset), now_ms, &mut a) {
                        self.correlations.insert(key, c);
                    }
                }
                None => self.orphans.entry(key).or_default().push(Orphan {
                    receipt: r,
                    carrier: rec.carrier,
                    carrier_message_id: rec.carrier_message_id,
                    received_at: rec.received_at,
                    partition,
                    offset,
                    give_up: Deadline {
                        wall: now_ms + self.orphan_timeout_ms,
                        log: rec.received_at + self.orphan_timeout_ms,
                    },
                }),
            },
        }
        a
    }

    /// Applies a receipt to its correlation. Returns the correlation if it still waits
    /// (the receipt was intermediate). A single-part message settles at once; a part of
    /// a concatenated message waits for its siblings, keeping its offsets held.
    fn settle(
        &mut self,
        c: Correlation,
        r: &ReceiptReceived,
        receipt_at: (i32, i64),
        now_ms: i64,
        a: &mut Actions,
    ) -> Option<Correlation> {
        if classify_stat(&r.stat) == ReceiptOutcome::Intermediate {
            a.done.push(receipt_at);
            return Some(c);
        }
        if c.parts <= 1 {
            a.receipt_latencies_ms.push(now_ms - c.submitted_at);
            self.remember_settled(&c);
            emit_receipt(&c, r, now_ms, a);
            a.done.extend([(c.partition, c.offset), receipt_at]);
            return None;
        }
        let gk = (c.message_id.clone(), c.attempt);
        let g = self.groups.entry(gk.clone()).or_default();
        g.finals.insert(c.part, r.clone());
        g.held.extend([(c.partition, c.offset), receipt_at]);
        if g.finals.len() as i32 >= c.parts {
            let g = self.groups.remove(&gk).expect("present");
            // The message is as good as its worst part.
            let rank = |r: &ReceiptReceived| match classify_stat(&r.stat) {
                ReceiptOutcome::Undeliverable => 0,
                ReceiptOutcome::Expired => 1,
                _ => 2,
            };
            let worst = g
                .finals
                .values()
                .min_by_key(|r| rank(r))
                .expect("non-empty");
            a.receipt_latencies_ms.push(now_ms - c.submitted_at);
            emit_receipt(&c, worst, now_ms, a);
            a.done.extend(g.held);
        }
        None
    }

    fn remember_settled(&mut self, c: &Correlation) {
        let key = format!("{}:{}", c.carrier, c.carrier_message_id);
        self.settled.insert(key, (c.message_id.clone(), c.attempt));
    }

    /// Expires what waited too long.
    pub fn on_tick(&mut self, now_ms: i64) -> Actions {
        let mut a = Actions::default();
        let expired: Vec<String> = self
            .correlations
            .iter()
            .filter(|(_, c)| self.is_over(c.partition, c.expires))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            let c = self.correlations.remove(&k).expect("present");
            let snapshot = Message::snapshot(
                c.message_id.clone(),
                State::Submitted,
                c.attempt,
                vec![c.carrier.clone()],
            );
            let reason = format!(
                "no final receipt within {} s",
                self.receipt_timeout_ms / 1000
            );
            if let Ok(events) = snapshot.decide(Command::Expire { reason }, now_ms) {
                a.events.extend(events);
            }
            a.done.push((c.partition, c.offset));
            if let Some(g) = self.groups.remove(&(c.message_id.clone(), c.attempt)) {
                a.done.extend(g.held);
            }
        }
        let mut orphans = std::mem::take(&mut self.orphans);
        let mut given_up = Vec::new();
        for (key, list) in orphans.iter_mut() {
            list.retain(|o| {
                if !self.is_over(o.partition, o.give_up) {
                    return true;
                }
                let reason = format!(
                    "receipt for unknown carrier message id {} of {} (stat {})",
                    o.carrier_message_id, o.carrier, o.receipt.stat
                );
                let record = CarrierRecord {
                    carrier: o.carrier.clone(),
                    carrier_message_id: o.carrier_message_id.clone(),
                    received_at: o.received_at,
                    kind: CarrierRecordKind::ReceiptReceived(o.receipt.clone()),
                };
                a.orphans.push((o.partition, o.offset, reason, record));
                a.done.push((o.partition, o.offset));
                given_up.push((key.clone(), o.receipt.clone()));
                false
            });
        }
        for (key, receipt) in given_up {
            self.given_up.insert(key, receipt);
        }
        orphans.retain(|_, l| !l.is_empty());
        self.orphans = orphans;
        a
    }
}

/// Emits the event a final receipt implies.
fn emit_receipt(c: &Correlation, r: &ReceiptReceived, now_ms: i64, a: &mut Actions) {
    let snapshot = Message::snapshot(
        c.message_id.clone(),
        State::Submitted,
        c.attempt,
        vec![c.carrier.clone()],
    );
    let command = Command::RecordReceipt {
        carrier: c.carrier.clone(),
        carrier_message_id: c.carrier_message_id.clone(),
        stat: r.stat.clone(),
        error_code: r.error_code.clone(),
    };
    if let Ok(events) = snapshot.decide(command, now_ms) {
        a.events.extend(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgw_codec::SubmitCorrelated;
    use smsgw_domain::EventPayload;

    fn corr(id: &str) -> CarrierRecord {
        CarrierRecord {
            carrier: "a".into(),
            carrier_message_id: id.into(),
            received_at: 0,
            kind: CarrierRecordKind::SubmitCorrelated(SubmitCorrelated {
                message_id: format!("m-{id}"),
                attempt: 1,
                part: 1,
                parts: 1,
            }),
        }
    }

    fn dlr(id: &str, stat: &str) -> CarrierRecord {
        CarrierRecord {
            carrier: "a".into(),
            carrier_message_id: id.into(),
            received_at: 0,
            kind: CarrierRecordKind::ReceiptReceived(ReceiptReceived {
                stat: stat.into(),
                error_code: None,
                raw_text: None,
            }),
        }
    }

    #[test]
    fn receipt_after_correlation_delivers() {
        let mut c = Correlator::new(1000, 100);
        assert_eq!(c.on_record(0, 1, corr("x"), 0), Actions::default());
        let a = c.on_record(0, 2, dlr("x", "DELIVRD"), 5);
        assert!(matches!(a.events[0].payload, EventPayload::Delivered(_)));
        assert_eq!(a.events[0].message_id, "m-x");
        assert_eq!(sorted(&a.done), vec![(0, 1), (0, 2)]);
        assert_eq!(c.waiting(), (0, 0));
    }

    #[test]
    fn a_copy_of_a_settled_correlation_is_ignored_but_a_reused_id_is_not() {
        // Given x correlated and delivered,
        let mut c = Correlator::new(1000, 100);
        c.on_record(0, 1, corr("x"), 0);
        c.on_record(0, 2, dlr("x", "DELIVRD"), 5);
        // when a restarted dispatcher writes x's correlation again,
        let a = c.on_record(0, 3, corr("x"), 10);
        // then it is done at once and nothing waits to expire the delivered message;
        assert_eq!(a.done, vec![(0, 3)]);
        assert_eq!(c.waiting(), (0, 0));
        assert!(c.on_tick(10_000).events.is_empty());
        // but the carrier reusing x for another message is a new correlation.
        let mut other = corr("x");
        if let CarrierRecordKind::SubmitCorrelated(s) = &mut other.kind {
            s.message_id = "m-other".into();
        }
        c.on_record(0, 4, other, 20);
        assert_eq!(c.waiting(), (1, 0));
    }

    #[test]
    fn receipt_before_correlation_is_kept_then_matched() {
        let mut c = Correlator::new(1000, 100);
        assert_eq!(
            c.on_record(0, 1, dlr("x", "UNDELIV"), 0),
            Actions::default()
        );
        assert_eq!(c.waiting(), (0, 1));
        let a = c.on_record(0, 2, corr("x"), 5);
        assert!(matches!(
            a.events[0].payload,
            EventPayload::DeliveryFailed(_)
        ));
        assert_eq!(sorted(&a.done), vec![(0, 1), (0, 2)]);
    }

    #[test]
    fn intermediate_receipt_keeps_waiting() {
        let mut c = Correlator::new(1000, 100);
        c.on_record(0, 1, corr("x"), 0);
        let a = c.on_record(0, 2, dlr("x", "ENROUTE"), 1);
        assert!(a.events.is_empty());
        assert_eq!(a.done, vec![(0, 2)]);
        assert_eq!(c.waiting(), (1, 0));
    }

    #[test]
    fn silence_expires_and_orphans_are_given_up_once_the_partition_is_read_to_its_end() {
        // Given a correlation x and a receipt y nobody claims, read at 0,
        let mut c = Correlator::new(1000, 100);
        c.on_record(0, 1, corr("x"), 0);
        c.on_record(0, 2, dlr("y", "DELIVRD"), 0);
        // when the wall clock passes their timeouts, nothing ends on that alone: the
        // loop is asked to confirm the partition was read to its end;
        assert_eq!(c.on_tick(5_000), Actions::default());
        assert_eq!(c.needs_end_check(5_000), vec![0]);
        assert!(c.needs_end_check(50).is_empty(), "before the deadline");
        // a confirmation from before a deadline ends nothing,
        c.read_to_end(0, 50);
        assert_eq!(c.on_tick(5_000), Actions::default());
        // one past the orphan's gives it up,
        c.read_to_end(0, 100);
        let a = c.on_tick(5_000);
        assert_eq!(a.orphans.len(), 1);
        assert_eq!(a.done, vec![(0, 2)]);
        // and one past the correlation's expires it.
        c.read_to_end(1, 5_000); // another partition's says nothing of this one
        assert_eq!(c.on_tick(5_000), Actions::default());
        c.read_to_end(0, 1_000);
        let a = c.on_tick(5_000);
        assert!(matches!(a.events[0].payload, EventPayload::Expired(_)));
        assert_eq!(a.done, vec![(0, 1)]);
        assert!(c.needs_end_check(5_000).is_empty());
    }

    #[test]
    fn an_orphan_outlives_an_outage_and_meets_its_correlation() {
        // Given a receipt read at 0 whose correlation the broker stored only after an
        // outage far longer than the orphan timeout (nothing read, nothing confirmed),
        let mut c = Correlator::new(1000, 100);
        c.on_record(0, 1, dlr("x", "DELIVRD"), 0);
        assert_eq!(c.on_tick(60_000), Actions::default());
        // when the correlation is read at last, then the message is delivered.
        let a = c.on_record(0, 2, corr("x"), 60_000);
        assert!(matches!(a.events[0].payload, EventPayload::Delivered(_)));
        assert_eq!(sorted(&a.done), vec![(0, 1), (0, 2)]);
    }

    #[test]
    fn a_correlation_written_again_after_its_receipt_was_given_up_still_pairs_with_it() {
        // Given a receipt x given up as an orphan (the dispatcher that submitted x died
        // before storing its correlation),
        let mut c = Correlator::new(1000, 100);
        c.on_record(0, 1, at(dlr("x", "DELIVRD"), 1_000), 0);
        c.on_record(0, 2, at(corr("other"), 1_200), 0);
        let a = c.on_tick(0);
        assert_eq!((a.orphans.len(), a.done.clone()), (1, vec![(0, 1)]));
        // when its next life writes the correlation again (with the submit's time),
        let a = c.on_record(0, 3, at(corr("x"), 990), 0);
        // then the message ends as the carrier reported, the correlation is done, and
        // the pairing is counted as late.
        assert!(
            matches!(a.events[0].payload, EventPayload::Delivered(_)),
            "{a:?}"
        );
        assert_eq!(a.events[0].message_id, "m-x");
        assert!(a.done.contains(&(0, 3)));
        assert_eq!(a.late_pairs, 1);
        assert_eq!(c.waiting(), (1, 0), "only `other` waits");
    }

    #[test]
    fn a_receipt_an_earlier_life_gave_up_pairs_with_a_correlation_after_a_restart() {
        // Given the record of a receipt x given up as an orphan by the last life, as its
        // dead letter keeps it,
        let mut first = Correlator::new(1000, 100);
        first.on_record(0, 1, at(dlr("x", "DELIVRD"), 1_000), 0);
        first.on_record(0, 2, at(corr("other"), 1_200), 0);
        let (_, _, _, given_up) = first.on_tick(0).orphans.remove(0);
        // when a new life remembers it and then reads x's correlation,
        let mut c = Correlator::new(1000, 100);
        c.remember_given_up(given_up);
        let a = c.on_record(0, 3, at(corr("x"), 990), 0);
        // then the message ends as the carrier reported.
        assert!(
            matches!(a.events[0].payload, EventPayload::Delivered(_)),
            "{a:?}"
        );
        assert_eq!((a.late_pairs, c.waiting()), (1, (0, 0)));
    }

    #[test]
    fn the_log_moving_past_a_deadline_ends_the_wait() {
        // Given an orphan y (carrier time 1_000) and a correlation x (carrier time 1_000),
        let mut c = Correlator::new(1000, 100);
        c.on_record(0, 1, at(dlr("y", "DELIVRD"), 1_000), 0);
        c.on_record(0, 2, at(corr("x"), 1_000), 0);
        // when a later record of the partition shows the log 100 ms on, the orphan is
        // given up without any confirmation; the correlation waits on;
        c.on_record(0, 3, at(corr("z"), 1_100), 0);
        let a = c.on_tick(0);
        assert_eq!((a.orphans.len(), a.events.len()), (1, 0));
        // and a record 1 s on expires x (z is younger).
        c.on_record(0, 4, at(dlr("w", "DELIVRD"), 2_000), 0);
        let a = c.on_tick(0);
        assert_eq!(a.events.len(), 1);
        assert_eq!(a.events[0].message_id, "m-x");
    }

    /// `r` as written at carrier time `t`.
    fn at(mut r: CarrierRecord, t: i64) -> CarrierRecord {
        r.received_at = t;
        r
    }

    fn sorted(v: &[(i32, i64)]) -> Vec<(i32, i64)> {
        let mut v = v.to_vec();
        v.sort();
        v
    }

    fn part(id: &str, n: i32, of: i32) -> CarrierRecord {
        CarrierRecord {
            carrier: "a".into(),
            carrier_message_id: id.into(),
            received_at: 0,
            kind: CarrierRecordKind::SubmitCorrelated(SubmitCorrelated {
                message_id: "m".into(),
                attempt: 1,
                part: n,
                parts: of,
            }),
        }
    }

    #[test]
    fn a_concatenated_message_settles_when_every_part_has_and_as_its_worst_part() {
        let mut c = Correlator::new(1000, 100);
        c.on_record(0, 1, part("p1", 1, 2), 0);
        c.on_record(0, 2, part("p2", 2, 2), 0);
        let a = c.on_record(0, 3, dlr("p1", "DELIVRD"), 1);
        assert!(
            a.events.is_empty() && a.done.is_empty(),
            "part 1 alone settles nothing: {a:?}"
        );
        let a = c.on_record(0, 4, dlr("p2", "UNDELIV"), 2);
        assert!(matches!(
            a.events[0].payload,
            EventPayload::DeliveryFailed(_)
        ));
        let mut done = a.done.clone();
        done.sort();
        assert_eq!(done, vec![(0, 1), (0, 2), (0, 3), (0, 4)]);
        assert_eq!(c.waiting(), (0, 0));
    }

    #[test]
    fn replaying_the_same_records_emits_the_same_event_ids() {
        let run = || {
            let mut c = Correlator::new(1000, 100);
            c.on_record(0, 1, corr("x"), 0);
            c.on_record(0, 2, dlr("x", "DELIVRD"), 7).events
        };
        assert_eq!(run()[0].event_id, run()[0].event_id);
    }
}
