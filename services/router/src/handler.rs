//! The event-log handler: route accepted messages, re-route failed attempts, block
//! opted-out recipients.

use crate::metrics::Metrics;
use crate::schedule::HOLD_THRESHOLD_MS;
use crate::scoring::Candidate;
use crate::state::RouterState;
use smsgw_codec::{AvroRecord, DispatchRequested};
use smsgw_domain::{Command, Event, EventPayload, Message, State};
use smsgw_kafka::{HandleError, Handler, Incoming, OutRecord, TailState, Topics};
use std::sync::{Arc, Mutex};

/// Strategy name recorded on `CarrierSelected`.
pub const STRATEGY: &str = "scored";

/// Updates router memory from any event (also used to warm up after a restart).
pub fn observe(state: &mut RouterState, e: &Event) {
    state.learn(e);
    match &e.payload {
        EventPayload::Accepted(a) => {
            state.remember(&e.message_id, a.clone(), e.occurred_at_ms);
        }
        EventPayload::CarrierSelected(c) => {
            state.note_routed(&e.message_id, c.attempt);
        }
        EventPayload::Rejected(_)
        | EventPayload::Blocked(_)
        | EventPayload::Delivered(_)
        | EventPayload::Undeliverable(_)
        | EventPayload::Expired(_)
        | EventPayload::Cancelled(_) => state.forget(&e.message_id),
        EventPayload::Submitted(_)
        | EventPayload::SubmitFailed(_)
        | EventPayload::DeliveryFailed(_) => {}
    }
}

/// Handles event-log records.
#[derive(Debug, Clone)]
pub struct RouterHandler {
    /// Topic names.
    pub topics: Topics,
    /// Router memory.
    pub state: Arc<Mutex<RouterState>>,
    /// Freshness of the opt-out copy.
    pub optout: Arc<TailState>,
    /// Metrics.
    pub metrics: Metrics,
    /// Where to rebuild a forgotten message's context from (none in unit tests).
    pub lookup: Option<ContextLookup>,
}

/// Rebuilding a message's re-route context from the event log when the router no longer
/// remembers it (evicted at `pending_capacity`, or older than the warm-up): its events
/// are read back from the failure's own partition (same key, so same partition) until
/// its `MessageAccepted`.
#[derive(Debug, Clone)]
pub struct ContextLookup {
    /// The broker.
    pub kafka: smsgw_kafka::KafkaConfig,
    /// The most records read back per look-up.
    pub max_records: i64,
}

/// What to do with a message, decided under the state lock.
enum Plan {
    Nothing,
    /// A failure of a message the router does not remember: read its context back from
    /// the log, then plan again.
    LookUp,
    Decide(Box<Decision>),
    /// Quiet hours: hold the message (its `MessageAccepted`, `send_at` set) until then.
    Hold(Box<Event>),
    /// Dispatch work an earlier life may not have stored: written again, alone.
    Redispatch(Box<DispatchRequested>),
}

struct Decision {
    snapshot: Message,
    command: Command,
    dispatch: Option<DispatchRequested>,
    decision: &'static str,
}

fn decide(
    snapshot: Message,
    command: Command,
    dispatch: Option<DispatchRequested>,
    decision: &'static str,
) -> Plan {
    Plan::Decide(Box::new(Decision {
        snapshot,
        command,
        dispatch,
        decision,
    }))
}

impl RouterHandler {
    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn plan(&self, e: &Event, may_look_up: bool) -> Plan {
        let mut st = self.lock();
        let id = &e.message_id;
        let (state, attempt, tried) = match &e.payload {
            EventPayload::Accepted(a) => {
                st.remember(id, a.clone(), e.occurred_at_ms);
                (State::Accepted, 0, vec![])
            }
            EventPayload::SubmitFailed(f) => {
                st.learn(e);
                (State::SubmitFailed, f.attempt, f.carriers_tried.clone())
            }
            EventPayload::DeliveryFailed(f) => {
                st.learn(e);
                (State::DeliveryFailed, f.attempt, f.carriers_tried.clone())
            }
            _ => {
                observe(&mut st, e);
                return Plan::Nothing;
            }
        };
        if st.has_ended(id) {
            // Read again after the message ended (a restart, or a rewind to the last
            // commit): routing it again would text the recipient twice.
            return Plan::Nothing;
        }
        let Some(p) = st.get(id).cloned() else {
            if may_look_up {
                return Plan::LookUp;
            }
            // A failed attempt of a message we do not remember, and its context was not
            // found in the log either. Give up rather than leave it unfinished.
            let snapshot = Message::snapshot(id.clone(), state, attempt, tried);
            let command = Command::GiveUp {
                reason: "re-route context lost (message older than the router's memory)".into(),
                receipt: receipt_of(e),
            };
            return decide(snapshot, command, None, "context_lost");
        };
        if p.attempt_routed > attempt {
            // Duplicate input: this attempt was already routed.
            let next = attempt + 1;
            if next == p.attempt_routed && p.routed_here < next && p.outcome_attempt < next {
                // Routed by an earlier life (the log shows its `CarrierSelected`), and
                // nothing of the attempt since. Its dispatch record is written beside
                // that event, not with it, so it may have died with that life: sent
                // again (the dispatcher takes an attempt once).
                if let Some(carrier) = p.tried.get(attempt as usize) {
                    let tried = p.tried[..next as usize].to_vec();
                    return Plan::Redispatch(Box::new(dispatch_request(
                        id, &p, carrier, next, tried,
                    )));
                }
            }
            return Plan::Nothing;
        }
        // The failure names the carriers its writer knew of; the router knows them all.
        let mut tried = tried;
        for c in &p.tried {
            if !tried.contains(c) {
                tried.insert(0, c.clone());
            }
        }
        let snapshot = Message::snapshot(id.clone(), state, attempt, tried.clone());
        if let Some(actor) = st.cancelled(id) {
            st.forget(id);
            let command = Command::Cancel {
                actor,
                stopped_by: "router".into(),
            };
            return decide(snapshot, command, None, "cancelled");
        }
        if let Some(scope) = st.blocking_scope(&p.accepted) {
            st.forget(id);
            return decide(
                snapshot,
                Command::Block {
                    reason: "opted_out".into(),
                    scope,
                },
                None,
                "blocked",
            );
        }
        // The validity period ends the message (and any chase for another carrier).
        if p.accepted
            .expires_at
            .is_some_and(|x| x <= e.occurred_at_ms.max(smsgw_kafka::now_ms()))
        {
            st.forget(id);
            let reason = "validity period ended before it could be routed".to_string();
            return decide(snapshot, Command::Expire { reason }, None, "expired");
        }
        if let EventPayload::SubmitFailed(f) = &e.payload {
            if !f.retryable {
                let reason = format!("permanent failure on {}: {}", f.carrier, f.reason);
                return decide(
                    snapshot,
                    Command::GiveUp {
                        reason,
                        receipt: None,
                    },
                    None,
                    "permanent_failure",
                );
            }
        }
        let max = st.scorer.config().max_attempts;
        if attempt >= max {
            let reason = format!("{attempt} attempts made, the most allowed");
            return decide(
                snapshot,
                Command::GiveUp {
                    reason,
                    receipt: receipt_of(e),
                },
                None,
                "max_attempts",
            );
        }
        let now = e.occurred_at_ms.max(smsgw_kafka::now_ms());
        let policy = st
            .scorer
            .config()
            .policy(p.accepted.message_type.as_deref());
        if attempt == 0 && policy.quiet_hours {
            let (from, to) = (
                st.scorer.config().quiet_start_hour,
                st.scorer.config().quiet_end_hour,
            );
            if let Some(until) = crate::quiet::quiet_until(&p.accepted.destination, now, from, to) {
                let mut held = e.clone();
                if let EventPayload::Accepted(a) = &mut held.payload {
                    a.send_at = Some(until);
                }
                return Plan::Hold(Box::new(held));
            }
        }
        // A submit cut mid-way (`ambiguous`) may have reached the carrier: it proves
        // nothing about the carrier, so it stays a candidate. Ending the message
        // undeliverable would be false whenever the carrier had it (the ledger check
        // counts such ends); sending again is the duplicate the log flags.
        let exclude: Vec<String> = match &e.payload {
            EventPayload::SubmitFailed(f) if f.ambiguous => {
                tried.iter().filter(|c| **c != f.carrier).cloned().collect()
            }
            _ => tried.clone(),
        };
        let Some(choice) = choose(&st, &p.accepted, &exclude, id, attempt, now) else {
            let (reason, decision) = match &e.payload {
                EventPayload::SubmitFailed(f) => (
                    format!("every carrier failed; last {}: {}", f.carrier, f.reason),
                    "exhausted",
                ),
                EventPayload::DeliveryFailed(f) => (
                    format!("every carrier failed; last {}: {}", f.carrier, f.reason),
                    "exhausted",
                ),
                _ => ("no route for the destination".to_string(), "no_route"),
            };
            let receipt = receipt_of(e);
            return decide(
                snapshot,
                Command::GiveUp { reason, receipt },
                None,
                decision,
            );
        };
        let carrier = choice.carrier.clone();
        st.note_routed(id, attempt + 1);
        st.note_routed_here(id, attempt + 1);
        st.note_tried(id, attempt + 1, &carrier);
        let mut carriers_tried = tried;
        carriers_tried.push(carrier.clone());
        let dispatch = dispatch_request(id, &p, &carrier, attempt + 1, carriers_tried);
        let decision = if attempt == 0 { "routed" } else { "rerouted" };
        decide(
            snapshot,
            Command::Route {
                carrier,
                strategy: STRATEGY.into(),
                explain: choice.explain,
            },
            Some(dispatch),
            decision,
        )
    }
}

/// The dispatch work for `attempt` of message `id` on `carrier`.
fn dispatch_request(
    id: &str,
    p: &crate::state::Pending,
    carrier: &str,
    attempt: i32,
    carriers_tried: Vec<String>,
) -> DispatchRequested {
    let a = &p.accepted;
    DispatchRequested {
        message_id: id.to_string(),
        carrier: carrier.to_string(),
        attempt,
        carriers_tried,
        destination: a.destination.clone(),
        sender: a.sender.clone(),
        body: a.body.clone(),
        encoding: a.encoding.clone(),
        segments: a.segments,
        accepted_at: p.accepted_at,
        registered_delivery: a.registered_delivery,
        expires_at: a.expires_at,
        schedule_delivery_at: a.schedule_delivery_at,
        client_id: Some(a.client_id.clone()),
    }
}

/// The receipt (`stat`, `err`) that failed the last attempt, if one did.
fn receipt_of(e: &Event) -> Option<(String, Option<String>)> {
    match &e.payload {
        EventPayload::DeliveryFailed(f) => f.stat.clone().map(|s| (s, f.error_code.clone())),
        _ => None,
    }
}

/// The carrier for the next attempt: the best-scored untried one that passes every
/// constraint; else, if only open circuits stand in the way, the best of those; else none.
fn choose(
    st: &RouterState,
    a: &smsgw_domain::MessageAccepted,
    tried: &[String],
    id: &str,
    attempt: i32,
    now: i64,
) -> Option<crate::scoring::Choice> {
    let route = st.table.route(&a.destination)?;
    let candidates: Vec<Candidate<'_>> = route
        .carriers
        .iter()
        .map(|c| Candidate {
            carrier: c,
            excluded: tried.contains(c).then_some("tried"),
        })
        .collect();
    let mt = a.message_type.as_deref();
    let draw = crate::scoring::draw(id, attempt + 1);
    if let Some(c) = st
        .scorer
        .choose(&candidates, &route.prefix, &a.sender, mt, draw, now)
    {
        return Some(c);
    }
    // Every untried carrier that passes the other constraints has an open circuit:
    // queue on the best of them anyway (its dispatch topic holds the work until it
    // binds) rather than give up.
    st.scorer
        .ignoring_circuits()
        .choose(&candidates, &route.prefix, &a.sender, mt, 0.99, now)
}

impl Handler for RouterHandler {
    async fn handle(
        &mut self,
        input: &Incoming<'_>,
        now_ms: i64,
    ) -> Result<Vec<OutRecord>, HandleError> {
        let payload = input
            .payload
            .ok_or_else(|| HandleError::DeadLetter("event with no value".into()))?;
        let e = Event::decode(payload)
            .map_err(|err| HandleError::DeadLetter(format!("undecodable event: {err}")))?;
        let mut out = match &e.payload {
            EventPayload::Accepted(a)
                if a.send_at.is_some_and(|at| at > now_ms + HOLD_THRESHOLD_MS) =>
            {
                self.hold(&e, a, payload)?
            }
            _ => {
                self.process(&e, now_ms, Some((input.partition, input.offset)))
                    .await?
            }
        };
        // Held messages (send_at, quiet hours) are released, and receipt timeouts run,
        // by this partition's owner.
        crate::schedule::stamp_owner(&mut out, &self.topics.schedule(), input.partition);
        self.lock().note_partition(&e.message_id, input.partition);
        Ok(out)
    }

    /// The decision (`CarrierSelected`) is stored before the dispatch work that carries
    /// it out: killed in between, the next life finds the decision with no outcome and
    /// writes the work again ([`Plan::Redispatch`]). The other way round, the carrier
    /// could deliver a message whose log lacks the decision, so its events do not fold.
    fn ordered_outputs(&self) -> bool {
        true
    }
}

impl RouterHandler {
    /// Sends a message with a future `send_at` to the schedule topic instead of routing it.
    fn hold(
        &self,
        e: &Event,
        a: &smsgw_domain::MessageAccepted,
        payload: &[u8],
    ) -> Result<Vec<OutRecord>, HandleError> {
        let mut st = self.lock();
        if !st.remember(&e.message_id, a.clone(), e.occurred_at_ms)
            && st.get(&e.message_id).is_some_and(|p| p.attempt_routed > 0)
        {
            return Err(HandleError::Drop("held message already released"));
        }
        self.metrics
            .decisions
            .with_label_values(&["scheduled"])
            .inc();
        Ok(vec![OutRecord {
            topic: self.topics.schedule(),
            key: Some(e.message_id.clone().into_bytes()),
            partition: None,
            payload: payload.to_vec(),
            headers: vec![(
                smsgw_codec::CONTENT_TYPE_HEADER.to_string(),
                smsgw_codec::CONTENT_TYPE_AVRO.to_string(),
            )],
        }])
    }

    /// Routes a held message that fell due (or was cancelled) at `now_ms`: the outputs of
    /// its `MessageAccepted`, or none when it was already routed.
    pub async fn release(&self, e: &Event, now_ms: i64) -> Result<Vec<OutRecord>, HandleError> {
        self.metrics
            .decisions
            .with_label_values(&["released"])
            .inc();
        self.optout.fresh_after(now_ms).await;
        self.process(e, now_ms, None).await
    }

    /// Cancellations that arrived since the last call (the scheduler releases those
    /// messages at once, so they end as cancelled without waiting for `send_at`).
    pub fn take_recent_cancellations(&self) -> Vec<String> {
        self.lock().take_recent_cancellations()
    }

    /// Reads `e`'s message back from the event log (partition `partition`, before
    /// `offset`) and folds its events into the router's memory, so the failure can be
    /// re-routed as if the message had never been forgotten.
    async fn rebuild(&self, l: &ContextLookup, e: &Event, partition: i32, offset: i64) {
        let is_accepted = |p: &[u8]| {
            Event::decode(p).is_ok_and(|e| matches!(e.payload, EventPayload::Accepted(_)))
        };
        // A broker that fails the read is tried again for about a minute; then the
        // message ends as before (context lost), counted.
        let mut found = None;
        let mut delay = std::time::Duration::from_secs(1);
        for attempt in 0..6 {
            match smsgw_kafka::read_key_back(
                &l.kafka,
                &self.topics.events(),
                partition,
                offset,
                &e.message_id,
                l.max_records,
                is_accepted,
            )
            .await
            {
                Ok(f) => {
                    found = f;
                    break;
                }
                Err(err) => {
                    tracing::warn!(attempt, error = %err, "reading a message's context back failed");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        let outcome = if let Some(records) = found {
            let mut st = self.lock();
            for ev in records.iter().filter_map(|p| Event::decode(p).ok()) {
                observe(&mut st, &ev);
            }
            "context_rebuilt"
        } else {
            "context_not_found"
        };
        self.metrics.decisions.with_label_values(&[outcome]).inc();
        tracing::info!(message_id = %e.message_id, outcome, "re-route context read back from the log");
    }

    /// Decides on `e` and builds the outputs. `at` (partition, offset) is where `e` is in
    /// the event log, for reading a forgotten message's context back.
    async fn process(
        &self,
        e: &Event,
        now_ms: i64,
        at: Option<(i32, i64)>,
    ) -> Result<Vec<OutRecord>, HandleError> {
        if matches!(
            e.payload,
            EventPayload::Accepted(_)
                | EventPayload::SubmitFailed(_)
                | EventPayload::DeliveryFailed(_)
        ) {
            // Never route before every opt-out acknowledged before this event is known.
            self.optout.fresh_after(e.occurred_at_ms).await;
        }
        let mut plan = self.plan(e, self.lookup.is_some() && at.is_some());
        if let (Plan::LookUp, Some(l), Some((partition, offset))) = (&plan, &self.lookup, at) {
            self.rebuild(l, e, partition, offset).await;
            plan = self.plan(e, false);
        }
        {
            let st = self.lock();
            self.metrics.pending.set(st.pending_count() as i64);
            self.metrics.optouts.set(st.optout_count() as i64);
        }
        let d = match plan {
            Plan::Nothing | Plan::LookUp => return Ok(vec![]),
            Plan::Hold(held) => {
                self.metrics
                    .decisions
                    .with_label_values(&["quiet_hours"])
                    .inc();
                let rec = OutRecord::avro(self.topics.schedule(), held.message_id.clone(), &*held)
                    .map_err(|x| HandleError::DeadLetter(x.to_string()))?;
                return Ok(vec![rec]);
            }
            Plan::Redispatch(d) => {
                self.metrics
                    .decisions
                    .with_label_values(&["redispatched"])
                    .inc();
                tracing::info!(message_id = %d.message_id, attempt = d.attempt, carrier = %d.carrier, "routed by an earlier life with no outcome since: its dispatch work is written again");
                let rec =
                    OutRecord::avro(self.topics.dispatch(&d.carrier), d.message_id.clone(), &*d)
                        .map_err(|x| HandleError::DeadLetter(x.to_string()))?;
                return Ok(vec![rec]);
            }
            Plan::Decide(d) => d,
        };
        let Decision {
            snapshot,
            command,
            dispatch,
            decision,
        } = *d;
        let events = snapshot
            .decide(command, now_ms)
            .map_err(|err| HandleError::DeadLetter(format!("domain refused: {err}")))?;
        self.metrics.decisions.with_label_values(&[decision]).inc();
        let mut out = Vec::with_capacity(2);
        for ev in &events {
            out.push(
                OutRecord::avro(self.topics.events(), ev.message_id.clone(), ev)
                    .map_err(|x| HandleError::DeadLetter(x.to_string()))?,
            );
        }
        if let Some(d) = dispatch {
            out.push(
                OutRecord::avro(self.topics.dispatch(&d.carrier), d.message_id.clone(), &d)
                    .map_err(|x| HandleError::DeadLetter(x.to_string()))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Route;
    use futures::executor::block_on;
    use smsgw_domain::{MessageAccepted, SubmitFailed};

    fn handler() -> RouterHandler {
        let optout = Arc::new(TailState::default());
        optout.mark_fresh(i64::MAX);
        let table = crate::table::RouteTable::new(vec![Route {
            prefix: "+44".into(),
            carriers: vec!["a".into(), "b".into()],
        }]);
        RouterHandler {
            topics: Topics::with_prefix("t"),
            state: Arc::new(Mutex::new(RouterState::new(
                100,
                table,
                crate::scoring::ScoringConfig {
                    exploration: 0.0,
                    ..Default::default()
                },
            ))),
            optout,
            metrics: Metrics::new(),
            lookup: None,
        }
    }

    fn accepted(id: &str, to: &str) -> Event {
        Message::new(id)
            .decide(
                Command::Accept(MessageAccepted {
                    client_id: "c".into(),
                    idempotency_key: None,
                    client_ref: None,
                    destination: to.into(),
                    sender: "SHOP".into(),
                    body: "hi".into(),
                    encoding: "GSM7".into(),
                    segments: 1,
                    registered_delivery: None,
                    expires_at: None,
                    schedule_delivery_at: None,
                    callback_url: None,
                    message_type: None,
                    send_at: None,
                }),
                1,
            )
            .unwrap()
            .remove(0)
    }

    fn failed(id: &str, carrier: &str, attempt: i32, tried: &[&str], retryable: bool) -> Event {
        Event::new(
            id,
            EventPayload::SubmitFailed(SubmitFailed {
                carrier: carrier.into(),
                attempt,
                command_status: Some(0x45),
                reason: "ESME_RSUBMITFAIL".into(),
                retryable,
                ambiguous: false,
                carriers_tried: tried.iter().map(|s| s.to_string()).collect(),
            }),
            attempt,
            2,
        )
    }

    /// `e` as a record of the events topic (leaked: tests only).
    fn input_of(e: &Event) -> Incoming<'static> {
        let bytes: &'static [u8] = Box::leak(e.encode().unwrap().into_boxed_slice());
        Incoming {
            topic: "t.events",
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(bytes),
            headers: vec![],
            timestamp_ms: None,
        }
    }

    fn handle(h: &mut RouterHandler, e: &Event) -> Vec<(String, Option<Event>)> {
        block_on(h.handle(&input_of(e), 10))
            .unwrap()
            .into_iter()
            .map(|r| {
                let ev = (r.topic == "t.events" || r.topic == "t.schedule")
                    .then(|| Event::decode(&r.payload).unwrap());
                (r.topic, ev)
            })
            .collect()
    }

    /// The whole output, in order: each record's topic and, for an event, its kind
    /// (`-` for dispatch work). Tests compare it entirely, so an extra or missing record
    /// fails them, not only a wrong first one.
    fn shape(out: &[(String, Option<Event>)]) -> Vec<(&str, &'static str)> {
        out.iter()
            .map(|(t, e)| (t.as_str(), e.as_ref().map_or("-", |e| e.payload.kind())))
            .collect()
    }

    #[test]
    fn a_message_past_its_validity_expires_instead_of_being_routed() {
        let mut h = handler();
        let mut e = accepted("m1", "+447911123456");
        if let EventPayload::Accepted(a) = &mut e.payload {
            a.expires_at = Some(1_000); // long gone
        }
        let out = handle(&mut h, &e);
        assert_eq!(shape(&out), [("t.events", "MessageExpired")], "no dispatch");
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload, EventPayload::Expired(x) if x.reason.contains("validity")),
            "{:?}",
            out[0].1
        );
    }

    #[test]
    fn accepted_message_is_routed_to_the_first_carrier() {
        let mut h = handler();
        let out = handle(&mut h, &accepted("m1", "+447911123456"));
        // The decision first, written before its dispatch work (ordered outputs).
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.a", "-")]
        );
        assert!(h.ordered_outputs());
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload, EventPayload::CarrierSelected(c) if c.carrier == "a" && c.attempt == 1)
        );
    }

    #[test]
    fn duplicate_accepted_is_routed_once() {
        let mut h = handler();
        assert_eq!(handle(&mut h, &accepted("m1", "+447911123456")).len(), 2);
        assert!(handle(&mut h, &accepted("m1", "+447911123456")).is_empty());
    }

    #[test]
    fn a_routing_an_earlier_life_logged_without_an_outcome_is_dispatched_again_alone() {
        // Given a router warmed up from a log that shows m1 accepted and routed to b
        // (attempt 1) by an earlier life, and m2 the same but also submitted,
        let mut h = handler();
        let selected = |id: &str| {
            Event::new(
                id,
                EventPayload::CarrierSelected(smsgw_domain::CarrierSelected {
                    carrier: "b".into(),
                    attempt: 1,
                    strategy: STRATEGY.into(),
                    score: None,
                    factors: vec![],
                    alternatives: vec![],
                }),
                1,
                2,
            )
        };
        let submitted = Event::new(
            "m2",
            EventPayload::Submitted(smsgw_domain::MessageSubmitted {
                carrier: "b".into(),
                attempt: 1,
                carrier_message_id: "x".into(),
                segments: 1,
                possible_duplicate: false,
                later_part_ids: vec![],
            }),
            1,
            3,
        );
        {
            let mut st = h.state.lock().unwrap();
            for e in [
                accepted("m1", "+447911123456"),
                selected("m1"),
                accepted("m2", "+447911123457"),
                selected("m2"),
                submitted,
            ] {
                observe(&mut st, &e);
            }
        }
        // when their accepted events are read again (uncommitted inputs after a restart),
        // then m1's dispatch work, which may have died with that life, is written again
        // to the same carrier for the same attempt, with no second CarrierSelected;
        let out = block_on(h.handle(&input_of(&accepted("m1", "+447911123456")), 10)).unwrap();
        assert_eq!(
            out.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(),
            ["t.dispatch.b"]
        );
        let d = DispatchRequested::decode(&out[0].payload).unwrap();
        assert_eq!(
            (d.attempt, d.carriers_tried.clone()),
            (1, vec!["b".to_string()])
        );
        // m2's attempt has an outcome in the log: nothing;
        assert!(handle(&mut h, &accepted("m2", "+447911123457")).is_empty());
        // and a work item this life wrote itself is not written again.
        assert_eq!(handle(&mut h, &accepted("m3", "+447911123458")).len(), 2);
        assert!(handle(&mut h, &accepted("m3", "+447911123458")).is_empty());
    }

    #[test]
    fn opted_out_recipient_is_blocked_never_dispatched() {
        let mut h = handler();
        h.state
            .lock()
            .unwrap()
            .set_optout(&smsgw_codec::OptOutChanged {
                scope: "sender:SHOP".into(),
                number: "+447911123456".into(),
                opted_out: true,
                source: "api".into(),
                changed_at: 0,
                actor: None,
                reference: None,
            });
        let out = handle(&mut h, &accepted("m1", "+447911123456"));
        assert_eq!(shape(&out), [("t.events", "MessageBlocked")]);
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload, EventPayload::Blocked(b) if b.scope == "sender:SHOP")
        );
    }

    #[test]
    fn failed_attempt_goes_to_the_next_carrier_then_gives_up() {
        let mut h = handler();
        handle(&mut h, &accepted("m1", "+447911123456"));
        let out = handle(&mut h, &failed("m1", "a", 1, &["a"], true));
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.b", "-")]
        );
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload, EventPayload::CarrierSelected(c) if c.carrier == "b" && c.attempt == 2)
        );
        assert!(
            handle(&mut h, &failed("m1", "a", 1, &["a"], true)).is_empty(),
            "duplicate failure ignored"
        );
        let out = handle(&mut h, &failed("m1", "b", 2, &["a", "b"], true));
        assert_eq!(shape(&out), [("t.events", "MessageUndeliverable")]);
        assert!(matches!(
            &out[0].1.as_ref().unwrap().payload,
            EventPayload::Undeliverable(_)
        ));
    }

    #[test]
    fn a_submit_cut_mid_way_may_go_to_the_same_carrier_again() {
        let mut h = handler();
        handle(&mut h, &accepted("m1", "+447911123456"));
        handle(&mut h, &failed("m1", "a", 1, &["a"], true));
        // b's link broke mid-submit: b may have the message, so b is not ruled out.
        let mut cut = failed("m1", "b", 2, &["a", "b"], true);
        if let EventPayload::SubmitFailed(f) = &mut cut.payload {
            f.ambiguous = true;
        }
        let out = handle(&mut h, &cut);
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.b", "-")]
        );
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload, EventPayload::CarrierSelected(c) if c.carrier == "b" && c.attempt == 3)
        );
    }

    #[test]
    fn a_message_read_again_after_it_ended_is_not_routed_again() {
        // Given a message routed and delivered,
        let mut h = handler();
        handle(&mut h, &accepted("m1", "+447911123456"));
        let delivered = Event::new(
            "m1",
            EventPayload::Delivered(smsgw_domain::MessageDelivered {
                carrier: "a".into(),
                carrier_message_id: "1f".into(),
                stat: "DELIVRD".into(),
            }),
            1,
            3,
        );
        assert!(handle(&mut h, &delivered).is_empty());
        // when its events are read again (a broker restart rewinds the group to its
        // last commit), then nothing is routed and no second final state is written.
        assert!(handle(&mut h, &accepted("m1", "+447911123456")).is_empty());
        assert!(handle(&mut h, &failed("m1", "a", 1, &["a"], true)).is_empty());
    }

    #[test]
    fn permanent_failure_is_not_retried() {
        let mut h = handler();
        handle(&mut h, &accepted("m1", "+447911123456"));
        let out = handle(&mut h, &failed("m1", "a", 1, &["a"], false));
        assert_eq!(shape(&out), [("t.events", "MessageUndeliverable")]);
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload, EventPayload::Undeliverable(u) if u.reason.contains("permanent"))
        );
    }

    #[test]
    fn unknown_prefix_is_undeliverable() {
        let mut h = handler();
        let out = handle(&mut h, &accepted("m1", "+15551234567"));
        assert_eq!(shape(&out), [("t.events", "MessageUndeliverable")]);
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload, EventPayload::Undeliverable(u) if u.reason.contains("no route"))
        );
    }

    #[test]
    fn down_carrier_is_skipped() {
        let mut h = handler();
        h.state.lock().unwrap().set_carrier_up("a", None, false);
        let out = handle(&mut h, &accepted("m1", "+447911123456"));
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.b", "-")]
        );
    }

    #[test]
    fn when_every_carrier_is_down_the_message_still_queues_on_one() {
        let mut h = handler();
        {
            let mut st = h.state.lock().unwrap();
            st.set_carrier_up("a", None, false);
            st.set_carrier_up("b", None, false);
        }
        let out = handle(&mut h, &accepted("m1", "+447911123456"));
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.a", "-")]
        );
    }

    #[test]
    fn the_decision_event_explains_itself() {
        let mut h = handler();
        h.state.lock().unwrap().set_carrier_up("a", None, false);
        let out = handle(&mut h, &accepted("m1", "+447911123456"));
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.b", "-")]
        );
        let Some(EventPayload::CarrierSelected(c)) = out[0].1.as_ref().map(|e| &e.payload) else {
            panic!("{out:?}");
        };
        assert_eq!((c.carrier.as_str(), c.strategy.as_str()), ("b", STRATEGY));
        assert!(c.score.is_some_and(|s| s > 0.0 && s <= 1.0), "{c:?}");
        let names: Vec<_> = c.factors.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["success", "latency", "errors", "load", "price", "health"]
        );
        assert_eq!(c.alternatives[0].carrier, "a");
        assert_eq!(c.alternatives[0].excluded.as_deref(), Some("circuit_open"));
    }

    #[test]
    fn promotional_traffic_is_held_through_the_recipients_night() {
        let mut h = handler();
        // Quiet hours from this hour (UK time is UTC in standard time) to two hours on.
        let hour = (smsgw_kafka::now_ms().rem_euclid(86_400_000) / 3_600_000) as u32;
        {
            let mut st = h.state.lock().unwrap();
            let mut cfg = st.scorer.config().clone();
            cfg.quiet_start_hour = hour;
            cfg.quiet_end_hour = (hour + 2) % 24;
            st.scorer = crate::scoring::Scorer::new(cfg);
        }
        let mut e = accepted("m1", "+447911123456");
        if let EventPayload::Accepted(a) = &mut e.payload {
            a.message_type = Some("promotional".into());
        }
        let out = handle(&mut h, &e);
        assert_eq!(shape(&out), [("t.schedule", "MessageAccepted")], "{out:?}");
        let Some(EventPayload::Accepted(held)) = out[0].1.as_ref().map(|e| &e.payload) else {
            panic!("{out:?}");
        };
        let until = held.send_at.expect("held until the quiet hours end");
        assert_eq!(
            until.rem_euclid(86_400_000),
            i64::from((hour + 2) % 24) * 3_600_000
        );
        // A transactional message to the same number goes now.
        let out = handle(&mut h, &accepted("m2", "+447911123456"));
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.a", "-")]
        );
    }

    #[test]
    fn outcomes_in_the_log_teach_the_router() {
        let mut h = handler();
        for i in 0..30 {
            let id = format!("x{i}");
            handle(&mut h, &accepted(&id, "+447911123456"));
            let undeliv = Event::new(
                &id,
                EventPayload::Undeliverable(smsgw_domain::MessageUndeliverable {
                    carrier: Some("a".into()),
                    reason: "receipt".into(),
                    stat: Some("UNDELIV".into()),
                    error_code: None,
                }),
                1,
                smsgw_kafka::now_ms(),
            );
            handle(&mut h, &undeliv);
        }
        let out = handle(&mut h, &accepted("m1", "+447911123456"));
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.b", "-")],
            "a failed everything it was given"
        );
    }

    fn submitted(id: &str, carrier: &str, attempt: i32) -> Event {
        Event::new(
            id,
            EventPayload::Submitted(smsgw_domain::MessageSubmitted {
                carrier: carrier.into(),
                attempt,
                carrier_message_id: format!("{id}-{attempt}"),
                segments: 1,
                possible_duplicate: false,
                later_part_ids: vec![],
            }),
            attempt,
            smsgw_kafka::now_ms(),
        )
    }

    #[test]
    fn a_carrier_whose_receipts_fail_loses_traffic_even_when_the_next_one_delivers() {
        // Given 20 messages that a failed by receipt and b then delivered (success alone
        // weighs, so only the learned failures can move traffic),
        let mut h = handler();
        {
            let mut st = h.state.lock().unwrap();
            let mut cfg = st.scorer.config().clone();
            for c in ["a", "b"] {
                cfg.carriers.insert(
                    c.into(),
                    crate::scoring::CarrierProfile {
                        max_tps: 1e9,
                        ..Default::default()
                    },
                );
            }
            let w = &mut cfg.types.get_mut("transactional").unwrap().weights;
            (w.latency, w.errors, w.load, w.price, w.health) = (0.0, 0.0, 0.0, 0.0, 0.0);
            st.scorer = crate::scoring::Scorer::new(cfg);
        }
        for i in 0..20 {
            let id = format!("x{i}");
            let out = handle(&mut h, &accepted(&id, "+447911123456"));
            let Some(EventPayload::CarrierSelected(c)) =
                out.first().and_then(|o| o.1.as_ref()).map(|e| &e.payload)
            else {
                panic!("{out:?}");
            };
            if c.carrier == "b" {
                break; // learned already
            }
            handle(&mut h, &submitted(&id, "a", 1));
            let out = handle(&mut h, &delivery_failed(&id, "a", 1, false));
            assert_eq!(
                shape(&out),
                [("t.events", "CarrierSelected"), ("t.dispatch.b", "-")]
            );
            handle(&mut h, &submitted(&id, "b", 2));
            let delivered = Event::new(
                &id,
                EventPayload::Delivered(smsgw_domain::MessageDelivered {
                    carrier: "b".into(),
                    carrier_message_id: format!("{id}-2"),
                    stat: "DELIVRD".into(),
                }),
                2,
                smsgw_kafka::now_ms(),
            );
            handle(&mut h, &delivered);
        }
        // when the next message comes, then it goes to b first, and a's score fell below
        // the prior a carrier without evidence has (not only b's rose above it).
        let out = handle(&mut h, &accepted("m1", "+447911123456"));
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.b", "-")],
            "a failed every receipt"
        );
        let Some(EventPayload::CarrierSelected(c)) = out[0].1.as_ref().map(|e| &e.payload) else {
            panic!("{out:?}");
        };
        let prior = h.state.lock().unwrap().scorer.config().prior_success;
        let a = c.alternatives[0].score.unwrap();
        assert!(a < prior, "a scored {a}, the prior is {prior}: {c:?}");
    }

    #[test]
    fn a_failed_attempt_is_counted_once_when_the_message_then_ends() {
        // Given a message whose only carrier attempt failed by receipt,
        let mut h = handler();
        handle(&mut h, &accepted("m1", "+447911123456"));
        handle(&mut h, &submitted("m1", "a", 1));
        handle(&mut h, &delivery_failed("m1", "a", 1, false));
        handle(&mut h, &submitted("m1", "b", 2));
        // when b fails too and the router ends the message with b's receipt,
        let out = handle(&mut h, &delivery_failed("m1", "b", 2, false));
        let end = out[0].1.clone().unwrap();
        handle(&mut h, &end);
        // then each carrier has one finished attempt, none delivered.
        let rows = h
            .state
            .lock()
            .unwrap()
            .scorer
            .export("r", smsgw_kafka::now_ms());
        let finished = |c: &str| -> f64 {
            rows.iter()
                .filter(|r| r.carrier == c)
                .map(|r| r.finished)
                .sum()
        };
        assert!((finished("a") - 1.0).abs() < 0.01, "{rows:?}");
        assert!((finished("b") - 1.0).abs() < 0.01, "{rows:?}");
    }

    fn delivery_failed(id: &str, carrier: &str, attempt: i32, timed_out: bool) -> Event {
        Event::new(
            id,
            EventPayload::DeliveryFailed(smsgw_domain::DeliveryFailed {
                carrier: carrier.into(),
                attempt,
                reason: "carrier receipt UNDELIV".into(),
                stat: (!timed_out).then(|| "UNDELIV".into()),
                error_code: (!timed_out).then(|| "034".into()),
                timed_out,
                carriers_tried: vec![carrier.into()],
            }),
            attempt,
            smsgw_kafka::now_ms(),
        )
    }

    #[test]
    fn a_failure_receipt_reroutes_then_ends_with_the_receipts_error() {
        let mut h = handler();
        handle(&mut h, &accepted("m1", "+447911123456"));
        let out = handle(&mut h, &delivery_failed("m1", "a", 1, false));
        assert_eq!(
            shape(&out),
            [("t.events", "CarrierSelected"), ("t.dispatch.b", "-")]
        );
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload, EventPayload::CarrierSelected(c) if c.carrier == "b" && c.attempt == 2),
            "{out:?}"
        );
        // b fails too (its receipt names only b): a is not tried again; the end carries
        // the receipt's stat and error code.
        let out = handle(&mut h, &delivery_failed("m1", "b", 2, false));
        assert_eq!(shape(&out), [("t.events", "MessageUndeliverable")]);
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload,
                EventPayload::Undeliverable(u) if u.stat.as_deref() == Some("UNDELIV") && u.error_code.as_deref() == Some("034")),
            "{out:?}"
        );
    }

    #[test]
    fn attempts_stop_at_the_maximum() {
        let mut h = handler();
        {
            let mut st = h.state.lock().unwrap();
            let mut cfg = st.scorer.config().clone();
            cfg.max_attempts = 1;
            st.scorer = crate::scoring::Scorer::new(cfg);
        }
        handle(&mut h, &accepted("m1", "+447911123456"));
        let out = handle(&mut h, &delivery_failed("m1", "a", 1, true));
        assert_eq!(shape(&out), [("t.events", "MessageUndeliverable")]);
        assert!(
            matches!(&out[0].1.as_ref().unwrap().payload, EventPayload::Undeliverable(u) if u.reason.contains("most allowed")),
            "{out:?}"
        );
    }

    /// A router whose otp messages time out after 30 s, with message `id` of type `t`
    /// accepted, routed to carrier a at 1 s and submitted at 2 s.
    fn submitted_with_timeouts(h: &RouterHandler, messages: &[(&str, Option<&str>)]) {
        let mut st = h.state.lock().unwrap();
        let mut cfg = st.scorer.config().clone();
        cfg.types.get_mut("otp").unwrap().receipt_timeout_ms = Some(30_000);
        st.scorer = crate::scoring::Scorer::new(cfg);
        for (id, t) in messages {
            let mut e = accepted(id, "+447911123456");
            if let EventPayload::Accepted(a) = &mut e.payload {
                a.message_type = t.map(Into::into);
            }
            observe(&mut st, &e);
            let sel = Message::snapshot(*id, State::Accepted, 0, vec![])
                .decide(
                    Command::Route {
                        carrier: "a".into(),
                        strategy: STRATEGY.into(),
                        explain: Default::default(),
                    },
                    1_000,
                )
                .unwrap();
            observe(&mut st, &sel[0]);
            let sub = Event::new(
                id,
                EventPayload::Submitted(smsgw_domain::MessageSubmitted {
                    carrier: "a".into(),
                    attempt: 1,
                    carrier_message_id: "x".into(),
                    segments: 1,
                    possible_duplicate: false,
                    later_part_ids: vec![],
                }),
                1,
                2_000,
            );
            observe(&mut st, &sub);
        }
    }

    #[test]
    fn only_types_with_a_receipt_timeout_time_out() {
        let h = handler();
        submitted_with_timeouts(&h, &[("otp1", Some("otp")), ("tx1", None)]);
        let mut st = h.state.lock().unwrap();
        let all = |_| true;
        assert!(st.due_timeouts(31_999, all).is_empty());
        let due = st.due_timeouts(32_000, all);
        assert_eq!(due, vec![("otp1".to_string(), 1, vec!["a".to_string()])]);
        assert!(st.due_timeouts(99_999, all).is_empty(), "fires once");
    }

    #[test]
    fn a_receipt_timeout_fires_only_on_the_router_that_owns_the_message() {
        // Given the same submitted otp message known to two routers, its events on
        // event-log partition 1 (one consumed it, the other saw it in its warm-up),
        let fired: Vec<usize> = (0..2u32)
            .map(|instance| {
                let h = handler();
                submitted_with_timeouts(&h, &[("otp1", Some("otp"))]);
                let mut st = h.state.lock().unwrap();
                st.note_partition("otp1", 1);
                // when each checks its timers after the timeout, as instance i of 2,
                st.due_timeouts(40_000, |p| smsgw_kafka::owner_of(p, 2) == instance)
                    .len()
            })
            .collect();
        // then only the owner of partition 1 times the attempt out.
        assert_eq!(fired, [0, 1]);
    }
}
