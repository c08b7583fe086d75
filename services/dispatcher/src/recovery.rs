//! After a restart: never send again what the event log shows was sent, and flag what
//! may have been.
//!
//! The dispatcher stores a dispatch offset only after the attempt's outcome is in the
//! event log, so a crash leaves (a) work whose outcome was recorded but whose offset was
//! not yet committed, and (b) work that was on the wire (at most `window × binds`,
//! started in offset order). At startup it re-reads the event log back to the oldest
//! uncommitted dispatch record ([`window`]; at least `restart_lookback_ms`, at most a
//! day): work of kind (a) is skipped. Work of kind (b) cannot be told apart
//! from work that never started, so the first `window × binds` unrecorded records per
//! partition that were produced before this process started are sent again with
//! `possible_duplicate` set on `MessageSubmitted` and counted in
//! `smsgw_dispatcher_possible_duplicates_total`: the event log shows every message that
//! may have been texted twice. (After a clean shutdown nothing was on the wire; the flag
//! may then mark up to that many messages that were not duplicates.)

use smsgw_codec::AvroRecord;
use smsgw_domain::{Event, EventPayload};
use std::collections::{HashMap, HashSet};

/// How far back a restarted dispatcher reads the event log: `configured`, or further
/// when the oldest uncommitted dispatch record (produced at `oldest`) is older, with a
/// minute's margin for its outcome's clock; at most [`MAX_RECOVERY_MS`].
pub fn window(configured: i64, oldest: Option<i64>, now: i64) -> i64 {
    let needed = oldest.map_or(0, |t| now - t + 60_000);
    configured.max(needed.min(MAX_RECOVERY_MS))
}

/// The longest recovery look-back (a day): the bound on a restart's warm-up reading.
pub const MAX_RECOVERY_MS: i64 = 24 * 3_600_000;

/// What to do with a dispatch record after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its outcome is already in the event log: skip it.
    Done,
    /// It may have been sent before the crash: send, flagged.
    PossibleDuplicate,
    /// Send it.
    Fresh,
}

/// The dispatcher's memory of recent outcomes for one carrier. Pure.
#[derive(Debug, Default)]
pub struct Recovery {
    carrier: String,
    attempted: HashMap<String, i32>,
    ended: HashSet<String>,
    started_at: i64,
    window: usize,
    budget: HashMap<i32, usize>,
    /// This carrier's latest submit per message: (attempt, every part's carrier id,
    /// segments, when).
    submits: HashMap<String, (i32, Vec<String>, i32, i64)>,
    /// Partitions taken over after the start: when this dispatcher got each.
    since: HashMap<i32, i64>,
    /// Attempts this process started, oldest first (the most recent [`TAKEN_CAPACITY`]
    /// stay in `attempted`).
    taken: std::collections::VecDeque<String>,
}

/// How many attempts started by this process are remembered, so a dispatch record
/// repeated while the process lives (a router that routed the same attempt twice, a
/// partition read again after a rebalance) is not sent twice. About 10 MB.
pub const TAKEN_CAPACITY: usize = 100_000;

impl Recovery {
    /// Empty memory for `carrier`, started at `started_at`, with `window` sends in flight
    /// at most.
    pub fn new(carrier: &str, started_at: i64, window: usize) -> Self {
        Recovery {
            carrier: carrier.to_string(),
            started_at,
            window,
            ..Recovery::default()
        }
    }

    /// Learns from one event of the log.
    pub fn fold(&mut self, e: &Event) {
        let attempt = match &e.payload {
            EventPayload::Submitted(s) if s.carrier == self.carrier => {
                self.submits.insert(
                    e.message_id.clone(),
                    (
                        s.attempt,
                        s.part_ids().map(str::to_string).collect(),
                        s.segments,
                        e.occurred_at_ms,
                    ),
                );
                s.attempt
            }
            EventPayload::SubmitFailed(f) if f.carrier == self.carrier => f.attempt,
            EventPayload::Blocked(_)
            | EventPayload::Cancelled(_)
            | EventPayload::Expired(_)
            | EventPayload::Delivered(_)
            | EventPayload::Undeliverable(_) => {
                self.ended.insert(e.message_id.clone());
                return;
            }
            _ => return,
        };
        let a = self.attempted.entry(e.message_id.clone()).or_default();
        *a = (*a).max(attempt);
    }

    /// Learns from one raw event-log record.
    pub fn fold_bytes(&mut self, bytes: &[u8]) {
        if let Ok(e) = Event::decode(bytes) {
            self.fold(&e);
        }
    }

    /// The verdict on a dispatch record of `partition`, produced at `produced_at`.
    pub fn check(
        &mut self,
        partition: i32,
        produced_at: Option<i64>,
        message_id: &str,
        attempt: i32,
    ) -> Verdict {
        if self.ended.contains(message_id)
            || self
                .attempted
                .get(message_id)
                .is_some_and(|a| *a >= attempt)
        {
            return Verdict::Done;
        }
        let started = self
            .since
            .get(&partition)
            .copied()
            .unwrap_or(self.started_at);
        let budget = self.budget.entry(partition).or_insert(self.window);
        let verdict = if produced_at.is_some_and(|t| t < started) && *budget > 0 {
            *budget -= 1;
            Verdict::PossibleDuplicate
        } else {
            if produced_at.is_none_or(|t| t >= started) {
                *budget = 0; // new work: everything older was already seen
            }
            Verdict::Fresh
        };
        self.take(message_id, attempt);
        verdict
    }

    /// Notes that this process started `attempt` of `message_id`: the same record read
    /// again is [`Verdict::Done`].
    fn take(&mut self, message_id: &str, attempt: i32) {
        let a = self.attempted.entry(message_id.to_string()).or_default();
        *a = (*a).max(attempt);
        self.taken.push_back(message_id.to_string());
        if self.taken.len() > TAKEN_CAPACITY {
            if let Some(old) = self.taken.pop_front() {
                self.attempted.remove(&old);
            }
        }
    }

    /// A submit whose `MessageSubmitted` is in the log but whose message has not ended:
    /// its correlation (written just after the event) may have been lost with the
    /// process, and without it the receipt is never matched and the message never ends.
    /// `(every part's carrier id, submitted at)` of such a submit of `attempt`, to write
    /// the correlations again (the receipt service ignores a copy of one it has already
    /// settled). A concatenated message's event names every part since events v5; one
    /// written before names only its first part, and then nothing is returned.
    pub fn unsettled_submit(&self, message_id: &str, attempt: i32) -> Option<(Vec<String>, i64)> {
        if self.ended.contains(message_id) {
            return None;
        }
        let (a, ids, segments, at) = self.submits.get(message_id)?;
        let complete = ids.len() as i32 >= *segments;
        (*a == attempt && complete).then(|| (ids.clone(), *at))
    }

    /// `partition` became this dispatcher's at `at` (a rebalance): its previous owner
    /// may have had up to a window of its records on the wire, so the first unrecorded
    /// records produced before `at` are sent flagged, as after a restart.
    pub fn assigned(&mut self, partition: i32, at: i64) {
        self.budget.remove(&partition);
        self.since.insert(partition, at);
    }

    /// `partition` is no longer this dispatcher's.
    pub fn revoked(&mut self, partition: i32) {
        self.budget.remove(&partition);
        self.since.remove(&partition);
    }

    /// Outcomes remembered.
    pub fn len(&self) -> usize {
        self.attempted.len() + self.ended.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The attempts this process has on their way, and the records that repeat them while
/// they are (a partition revoked and given back, or a router that routed an attempt
/// twice). A repeat must not be reported finished before the original's outcome is
/// stored: its offset would be committed, and a crash before that outcome would lose the
/// message for good (the record is never read again). So a repeat waits, and is
/// reported with the original. Pure; `T` is where a record came from.
#[derive(Debug)]
pub struct InFlight<T> {
    waiting: HashMap<(String, i32), Vec<T>>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            waiting: HashMap::new(),
        }
    }
}

impl<T> InFlight<T> {
    /// `attempt` of `message_id` was sent on its way by this process.
    pub fn start(&mut self, message_id: &str, attempt: i32) {
        self.waiting
            .entry((message_id.to_string(), attempt))
            .or_default();
    }

    /// A record repeating `attempt` of `message_id`: kept to be reported with the
    /// original when that is on its way (`None`), given back when it is not.
    pub fn repeat(&mut self, message_id: &str, attempt: i32, at: T) -> Option<T> {
        match self.waiting.get_mut(&(message_id.to_string(), attempt)) {
            Some(w) => {
                w.push(at);
                None
            }
            None => Some(at),
        }
    }

    /// The original ended (its outcome stored, or given up at shutdown): the records
    /// that waited for it, to be reported the same way.
    pub fn end(&mut self, message_id: &str, attempt: i32) -> Vec<T> {
        self.waiting
            .remove(&(message_id.to_string(), attempt))
            .unwrap_or_default()
    }

    /// Attempts on their way.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing is on its way.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgw_domain::{MessageBlocked, MessageSubmitted};

    fn submitted(id: &str, carrier: &str, attempt: i32) -> Event {
        Event::new(
            id,
            EventPayload::Submitted(MessageSubmitted {
                carrier: carrier.into(),
                attempt,
                carrier_message_id: "x".into(),
                segments: 1,
                possible_duplicate: false,
                later_part_ids: vec![],
            }),
            attempt,
            1,
        )
    }

    #[test]
    fn recorded_work_is_skipped_unrecorded_work_is_flagged_up_to_the_window() {
        let mut r = Recovery::new("a", 1_000, 2);
        r.fold(&submitted("m1", "a", 1));
        r.fold(&submitted("m9", "b", 1)); // another carrier's
        r.fold(&Event::new(
            "m2",
            EventPayload::Blocked(MessageBlocked {
                reason: "opted_out".into(),
                scope: "global".into(),
            }),
            0,
            1,
        ));
        assert_eq!(r.check(0, Some(10), "m1", 1), Verdict::Done);
        assert_eq!(r.check(0, Some(10), "m2", 1), Verdict::Done);
        assert_eq!(
            r.check(0, Some(10), "m1", 2),
            Verdict::PossibleDuplicate,
            "a later attempt"
        );
        assert_eq!(r.check(0, Some(10), "m9", 1), Verdict::PossibleDuplicate);
        assert_eq!(
            r.check(0, Some(10), "m3", 1),
            Verdict::Fresh,
            "window of 2 used up"
        );
        assert_eq!(
            r.check(1, Some(10), "m4", 1),
            Verdict::PossibleDuplicate,
            "per partition"
        );
    }

    #[test]
    fn an_attempt_this_process_started_is_not_sent_again_when_its_record_repeats() {
        // Given a dispatcher that took attempt 1 of m1 (fresh work),
        let mut r = Recovery::new("a", 1_000, 5);
        assert_eq!(r.check(0, Some(2_000), "m1", 1), Verdict::Fresh);
        // when a second dispatch record for the same attempt arrives (a router that
        // routed it twice), then it is done; a later attempt is new work.
        assert_eq!(r.check(0, Some(3_000), "m1", 1), Verdict::Done);
        assert_eq!(r.check(0, Some(3_000), "m1", 2), Verdict::Fresh);
        // The memory is bounded: the oldest attempts are forgotten first.
        for i in 0..TAKEN_CAPACITY {
            r.check(0, Some(4_000), &format!("x{i}"), 1);
        }
        assert!(r.len() <= TAKEN_CAPACITY + 1, "{}", r.len());
        assert_eq!(r.check(0, Some(5_000), "m1", 2), Verdict::Fresh);
    }

    #[test]
    fn the_look_back_reaches_the_oldest_uncommitted_record_within_a_day() {
        let now = 100 * 3_600_000;
        // Given nothing uncommitted, or recent work, the configured window;
        assert_eq!(window(120_000, None, now), 120_000);
        assert_eq!(window(120_000, Some(now - 5_000), now), 120_000);
        // given work uncommitted for ten minutes, back to it with a minute's margin;
        assert_eq!(window(120_000, Some(now - 600_000), now), 660_000);
        // given a week-old record, a day at most.
        assert_eq!(
            window(120_000, Some(now - 7 * 86_400_000), now),
            MAX_RECOVERY_MS
        );
    }

    #[test]
    fn work_produced_after_the_start_is_never_flagged() {
        let mut r = Recovery::new("a", 1_000, 5);
        assert_eq!(r.check(0, Some(1_000), "m1", 1), Verdict::Fresh);
        assert_eq!(
            r.check(0, Some(999), "m2", 1),
            Verdict::Fresh,
            "seen newer work"
        );
        assert_eq!(r.check(1, None, "m3", 1), Verdict::Fresh);
    }

    #[test]
    fn a_partition_taken_over_mid_run_gets_the_restart_treatment() {
        // Given a dispatcher started at 1_000 that has been sending fresh work on
        // partition 0,
        let mut r = Recovery::new("a", 1_000, 2);
        assert_eq!(r.check(0, Some(1_500), "m1", 1), Verdict::Fresh);
        // when partition 1 is taken over from another dispatcher at 5_000,
        r.assigned(1, 5_000);
        // then its first records from before the takeover may have been on the wire
        // (flagged, up to the window), later ones are fresh,
        assert_eq!(r.check(1, Some(4_000), "m2", 1), Verdict::PossibleDuplicate);
        assert_eq!(r.check(1, Some(4_100), "m3", 1), Verdict::PossibleDuplicate);
        assert_eq!(r.check(1, Some(4_200), "m4", 1), Verdict::Fresh);
        // and partition 0 is untouched.
        assert_eq!(r.check(0, Some(900), "m5", 1), Verdict::Fresh);
        // Revoked and assigned again later: a new window of doubt.
        r.revoked(1);
        r.assigned(1, 9_000);
        assert_eq!(r.check(1, Some(8_000), "m6", 1), Verdict::PossibleDuplicate);
    }

    #[test]
    fn a_submit_recorded_but_not_ended_may_need_its_correlation_again() {
        // Given a log with m1 submitted (single part) and not ended, m2 submitted and
        // delivered, and m3 submitted in two parts,
        let mut r = Recovery::new("a", 1_000, 2);
        r.fold(&submitted("m1", "a", 1));
        r.fold(&submitted("m2", "a", 1));
        r.fold(&Event::new(
            "m2",
            EventPayload::Delivered(smsgw_domain::MessageDelivered {
                carrier: "a".into(),
                carrier_message_id: "x".into(),
                stat: "DELIVRD".into(),
            }),
            2,
            900,
        ));
        // m3 in two parts written before events v5 (first part only), m5 in two parts
        // naming both,
        let mut two = submitted("m3", "a", 1);
        if let EventPayload::Submitted(s) = &mut two.payload {
            s.segments = 2;
        }
        r.fold(&two);
        let mut both = submitted("m5", "a", 1);
        if let EventPayload::Submitted(s) = &mut both.payload {
            s.segments = 2;
            s.later_part_ids = vec!["y".into()];
        }
        r.fold(&both);
        // then m1's and m5's correlations (every part of m5) are written again, and
        // only for their attempt.
        assert_eq!(
            r.unsettled_submit("m1", 1).map(|(ids, _)| ids),
            Some(vec!["x".to_string()])
        );
        assert_eq!(
            r.unsettled_submit("m5", 1).map(|(ids, _)| ids),
            Some(vec!["x".to_string(), "y".to_string()])
        );
        assert_eq!(r.unsettled_submit("m1", 2), None);
        assert_eq!(r.unsettled_submit("m2", 1), None, "ended");
        assert_eq!(r.unsettled_submit("m3", 1), None, "parts unknown");
        assert_eq!(r.unsettled_submit("m4", 1), None, "never submitted here");
    }

    #[test]
    fn a_repeat_of_work_on_its_way_is_reported_with_it_never_before() {
        // Given attempt 1 of m1 on its way,
        let mut f = InFlight::default();
        f.start("m1", 1);
        // when its record is read again (partition revoked and given back) twice,
        // then both repeats wait; a repeat of another attempt, or of work not on its
        // way, is given back at once;
        assert_eq!(f.repeat("m1", 1, 10), None);
        assert_eq!(f.repeat("m1", 1, 11), None);
        assert_eq!(f.repeat("m1", 2, 12), Some(12));
        assert_eq!(f.repeat("m2", 1, 13), Some(13));
        // and when the original ends, the repeats are reported with it, once.
        assert_eq!(f.end("m1", 1), vec![10, 11]);
        assert!(f.end("m1", 1).is_empty());
        assert!(f.is_empty());
        assert_eq!(
            f.repeat("m1", 1, 14),
            Some(14),
            "ended: nothing to wait for"
        );
    }
}
