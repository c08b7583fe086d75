//! What the router remembers: opt-outs, carrier status, messages in flight.

use smsgw_domain::MessageAccepted;
use std::collections::{HashMap, HashSet, VecDeque};

/// Event ids remembered to learn from each outcome once (redeliveries come soon after).
const LEARNED_CAPACITY: usize = 100_000;

/// Ended messages remembered (ids only, about 10 MB): a rewind re-reads at most the
/// inputs since the last commit, far fewer than this.
const ENDED_CAPACITY: usize = 100_000;

/// A message the router may have to re-route.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The request.
    pub accepted: MessageAccepted,
    /// When it was accepted (ms).
    pub accepted_at: i64,
    /// Highest attempt routed so far (0: not yet).
    pub attempt_routed: i32,
    /// When the carrier last accepted it (ms), for receipt latency.
    pub submitted_at: Option<i64>,
    /// The attempt the carrier last accepted.
    pub submitted_attempt: i32,
    /// Carriers chosen so far, in attempt order.
    pub tried: Vec<String>,
    /// The event-log partition its events are on (its owner runs its timers), once seen.
    pub partition: Option<i32>,
    /// The last attempt whose failure (`DeliveryFailed`) the scorer has learned: the
    /// router's own `MessageUndeliverable` that follows it must not count it again.
    pub failure_learned: i32,
    /// Highest attempt this process routed itself (not only read of in the log).
    pub routed_here: i32,
    /// Highest attempt the log shows an outcome of (submitted, or failed).
    pub outcome_attempt: i32,
}

/// Router memory, folded from the event log, the opt-out log and carrier status.
#[derive(Debug)]
pub struct RouterState {
    optouts: smsgw_codec::OptOutIndex,
    cancelled: HashMap<String, Option<String>>,
    recent_cancels: Vec<String>,
    carriers_down: HashSet<String>,
    /// Each carrier's links as each dispatcher instance last reported them (`None`: a
    /// writer from before instances were reported).
    links: HashMap<String, HashMap<Option<String>, bool>>,
    timers: std::collections::BTreeSet<(i64, String, i32)>,
    learned: HashSet<String>,
    learned_order: VecDeque<String>,
    /// Routes (for the prefix that keys the statistics).
    pub table: crate::table::RouteTable,
    /// What was learned from outcomes, and the scoring.
    pub scorer: crate::scoring::Scorer,
    pending: HashMap<String, Pending>,
    order: VecDeque<String>,
    capacity: usize,
    /// Messages that ended, the most recent `capacity` (at most [`ENDED_CAPACITY`]; ids
    /// only): a `MessageAccepted` or a failure read again after its message ended (a
    /// restart, or a broker restart that rewinds the group to its last commit) must not
    /// route it again.
    ended: HashSet<String>,
    ended_order: VecDeque<String>,
}

impl RouterState {
    /// Empty state remembering at most `capacity` messages.
    pub fn new(
        capacity: usize,
        table: crate::table::RouteTable,
        scoring: crate::scoring::ScoringConfig,
    ) -> Self {
        RouterState {
            table,
            scorer: crate::scoring::Scorer::new(scoring),
            optouts: smsgw_codec::OptOutIndex::default(),
            cancelled: HashMap::new(),
            recent_cancels: Vec::new(),
            carriers_down: HashSet::new(),
            links: HashMap::new(),
            timers: Default::default(),
            learned: HashSet::new(),
            learned_order: VecDeque::new(),
            pending: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            ended: HashSet::new(),
            ended_order: VecDeque::new(),
        }
    }

    /// Applies an opt-out log record.
    pub fn set_optout(&mut self, change: &smsgw_codec::OptOutChanged) {
        self.optouts.apply(change);
    }

    /// The opt-out scope that blocks this message, if any (see
    /// [`smsgw_codec::OptOutIndex::blocking_scope`]).
    pub fn blocking_scope(&self, a: &MessageAccepted) -> Option<String> {
        self.optouts
            .blocking_scope(&a.sender, Some(&a.client_id), &a.destination)
    }

    /// Applies a cancellation request.
    pub fn set_cancelled(&mut self, r: smsgw_codec::CancelRequested) {
        if self.recent_cancels.len() < 100_000 {
            self.recent_cancels.push(r.message_id.clone());
        }
        self.cancelled.insert(r.message_id, r.actor);
    }

    /// Cancellations applied since the last call.
    pub fn take_recent_cancellations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.recent_cancels)
    }

    /// `Some(who asked)` if the message was cancelled.
    pub fn cancelled(&self, id: &str) -> Option<Option<String>> {
        self.cancelled.get(id).cloned()
    }

    /// Opt-outs in force.
    pub fn optout_count(&self) -> usize {
        self.optouts.len()
    }

    /// Applies a carrier status record.
    /// Records what dispatcher `instance` says of its links to `carrier`. The carrier
    /// is down only when every instance that reported it says down: with several
    /// dispatchers, one losing its bind leaves the carrier usable through the others.
    pub fn set_carrier_up(&mut self, carrier: &str, instance: Option<&str>, up: bool) {
        let links = self.links.entry(carrier.to_string()).or_default();
        links.insert(instance.map(str::to_string), up);
        let up = links.values().any(|&u| u);
        self.scorer.set_down(carrier, !up);
        if up {
            self.carriers_down.remove(carrier);
        } else {
            self.carriers_down.insert(carrier.to_string());
        }
    }

    /// False only when the carrier reported itself down.
    pub fn is_up(&self, carrier: &str) -> bool {
        !self.carriers_down.contains(carrier)
    }

    /// Remembers an accepted message; false if it was already known (a duplicate).
    pub fn remember(&mut self, id: &str, accepted: MessageAccepted, accepted_at: i64) -> bool {
        if self.pending.contains_key(id) || self.ended.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.pending.remove(&old);
            }
        }
        self.order.push_back(id.to_string());
        self.pending.insert(
            id.to_string(),
            Pending {
                accepted,
                accepted_at,
                attempt_routed: 0,
                submitted_at: None,
                submitted_attempt: 0,
                failure_learned: 0,
                routed_here: 0,
                outcome_attempt: 0,
                tried: Vec::new(),
                partition: None,
            },
        );
        true
    }

    /// Notes that `attempt` was routed; false if it (or a later one) already was.
    pub fn note_routed(&mut self, id: &str, attempt: i32) -> bool {
        match self.pending.get_mut(id) {
            Some(p) if p.attempt_routed >= attempt => false,
            Some(p) => {
                p.attempt_routed = attempt;
                true
            }
            None => true,
        }
    }

    /// Notes that this process routed `attempt` (its outputs are its own to store).
    pub fn note_routed_here(&mut self, id: &str, attempt: i32) {
        if let Some(p) = self.pending.get_mut(id) {
            p.routed_here = p.routed_here.max(attempt);
        }
    }

    /// Notes the carrier of `attempt` (once).
    pub fn note_tried(&mut self, id: &str, attempt: i32, carrier: &str) {
        if let Some(p) = self.pending.get_mut(id) {
            if p.tried.len() < attempt as usize {
                p.tried.push(carrier.to_string());
            }
        }
    }

    /// The remembered message.
    pub fn get(&self, id: &str) -> Option<&Pending> {
        self.pending.get(id)
    }

    /// Learns from an outcome event (any reader of the log: live or warming up).
    pub fn learn(&mut self, e: &smsgw_domain::Event) {
        use smsgw_domain::EventPayload as P;
        // At-least-once delivery repeats events: learn from each event id once, so the
        // statistics (and the rows written to the score store) do not count it twice.
        if !self.learned.insert(e.event_id.clone()) {
            return;
        }
        self.learned_order.push_back(e.event_id.clone());
        if self.learned_order.len() > LEARNED_CAPACITY {
            if let Some(old) = self.learned_order.pop_front() {
                self.learned.remove(&old);
            }
        }
        let t = e.occurred_at_ms;
        let outcome = match &e.payload {
            P::Submitted(x) => Some(x.attempt),
            P::SubmitFailed(x) => Some(x.attempt),
            P::DeliveryFailed(x) => Some(x.attempt),
            _ => None,
        };
        if let (Some(a), Some(p)) = (outcome, self.pending.get_mut(&e.message_id)) {
            p.outcome_attempt = p.outcome_attempt.max(a);
        }
        let ctx = self.pending.get(&e.message_id).map(|p| {
            (
                self.table.prefix_of(&p.accepted.destination).to_string(),
                p.accepted.message_type.clone(),
                p.submitted_at,
                p.failure_learned >= p.attempt_routed.max(1),
            )
        });
        if let P::CarrierSelected(c) = &e.payload {
            self.scorer.on_routed(&c.carrier, t);
            self.note_tried(&e.message_id, c.attempt, &c.carrier);
        }
        let Some((prefix, mt, submitted_at, end_learned)) = ctx else {
            return;
        };
        let mt = mt.as_deref();
        let latency = submitted_at.map(|s| t - s);
        match &e.payload {
            P::Submitted(x) => {
                self.scorer.on_submitted(&x.carrier, &prefix, mt, t);
                if let Some(p) = self.pending.get_mut(&e.message_id) {
                    p.submitted_at = Some(t);
                    p.submitted_attempt = x.attempt;
                }
                let timeout = self.scorer.config().policy(mt).receipt_timeout_ms;
                if let Some(ms) = timeout {
                    self.timers
                        .insert((t + ms, e.message_id.clone(), x.attempt));
                }
            }
            P::SubmitFailed(x) => self.scorer.on_submit_error(&x.carrier, &prefix, mt, t),
            P::Delivered(x) => self
                .scorer
                .on_final(&x.carrier, &prefix, mt, true, latency, t),
            // Each failed attempt is learned from its own event: a carrier whose receipts
            // all fail is avoided even when the next carrier delivers every message.
            P::DeliveryFailed(x) => {
                let latency = latency.filter(|_| !x.timed_out);
                self.scorer
                    .on_final(&x.carrier, &prefix, mt, false, latency, t);
                if let Some(p) = self.pending.get_mut(&e.message_id) {
                    p.failure_learned = p.failure_learned.max(x.attempt);
                }
            }
            // The end of a message whose last attempt's failure was not learned yet
            // (a writer from before DeliveryFailed existed, or the router's "context
            // lost" end).
            P::Undeliverable(x) if x.stat.is_some() && !end_learned => {
                if let Some(c) = &x.carrier {
                    self.scorer.on_final(c, &prefix, mt, false, latency, t);
                }
            }
            P::Expired(x) if !end_learned => {
                if let Some(c) = &x.carrier {
                    self.scorer.on_final(c, &prefix, mt, false, None, t);
                }
            }
            _ => {}
        }
    }

    /// Remembers that message `id`'s events are on event-log `partition`.
    pub fn note_partition(&mut self, id: &str, partition: i32) {
        if let Some(p) = self.pending.get_mut(id) {
            p.partition = Some(partition);
        }
    }

    /// Submitted attempts whose receipt timeout passed at `now` with no final receipt and
    /// no later attempt, of the messages whose partition is `mine` (a message whose
    /// partition was never seen counts as mine): `(message id, attempt, carriers
    /// tried)`. Other routers' timers are dropped: each message's timer has one owner.
    pub fn due_timeouts(
        &mut self,
        now: i64,
        mine: impl Fn(i32) -> bool,
    ) -> Vec<(String, i32, Vec<String>)> {
        let mut due = Vec::new();
        while let Some(first) = self.timers.first() {
            if first.0 > now {
                break;
            }
            let (_, id, attempt) = self.timers.pop_first().expect("non-empty");
            if let Some(p) = self.pending.get(&id) {
                if p.submitted_attempt == attempt
                    && p.attempt_routed == attempt
                    && p.partition.is_none_or(&mine)
                {
                    due.push((id, attempt, p.tried.clone()));
                }
            }
        }
        due
    }

    /// Forgets a message that reached a final state.
    pub fn forget(&mut self, id: &str) {
        self.pending.remove(id);
        // `order` keeps the stale id; it is skipped when it reaches the front.
        if self.ended.insert(id.to_string()) {
            self.ended_order.push_back(id.to_string());
            if self.ended_order.len() > self.capacity.min(ENDED_CAPACITY) {
                if let Some(old) = self.ended_order.pop_front() {
                    self.ended.remove(&old);
                }
            }
        }
    }

    /// True if the message ended (within the last `capacity` ends seen).
    pub fn has_ended(&self, id: &str) -> bool {
        self.ended.contains(id)
    }

    /// Messages remembered.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RouterState {
        RouterState::new(
            10,
            crate::table::RouteTable::new(vec![]),
            crate::scoring::ScoringConfig::default(),
        )
    }

    #[test]
    fn ended_messages_are_remembered_up_to_the_capacity() {
        // Given a router remembering 10 messages, when 15 end,
        let mut st = state();
        for i in 0..15 {
            st.forget(&format!("m{i}"));
        }
        // then the last 10 are known to have ended, the oldest are not.
        assert!(st.has_ended("m14") && st.has_ended("m5"));
        assert!(!st.has_ended("m4") && !st.has_ended("m0"));
    }

    #[test]
    fn a_carrier_is_down_only_when_every_dispatcher_says_so() {
        // Given two dispatchers bound to carrier a,
        let mut st = state();
        st.set_carrier_up("a", Some("0"), true);
        st.set_carrier_up("a", Some("1"), true);
        // when one loses its bind, a is still up (through the other);
        st.set_carrier_up("a", Some("1"), false);
        assert!(st.is_up("a"));
        // when the other loses it too, a is down;
        st.set_carrier_up("a", Some("0"), false);
        assert!(!st.is_up("a"));
        // and one rebind brings it back.
        st.set_carrier_up("a", Some("1"), true);
        assert!(st.is_up("a"));
        // A v1 writer (no instance) counts as one more dispatcher.
        st.set_carrier_up("b", None, false);
        assert!(!st.is_up("b") && st.is_up("c"));
    }
}
