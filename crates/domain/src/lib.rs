//! The message aggregate of smsgw: a pure core with no I/O.
//!
//! Every service turns what it observes into a [`Command`], asks the aggregate to
//! [`Message::decide`] which [`Event`]s follow, and writes those events to the message
//! event log. A message's state is the fold of its events ([`Message::replay`]), so any
//! reader of the log (the HTTP status API, analytics) rebuilds the same state.
//!
//! Services that react to a single event, without the whole history, start from a
//! [`Message::snapshot`] of the state that event implies.
//!
//! Delivery between services is at-least-once, so the same event may be read twice.
//! Event ids are deterministic (`<message id>/<kind>/<attempt>`), which makes a duplicate
//! recognisable: [`Message::apply`] ignores it. An event that is illegal in the current
//! state is refused by `apply` and skipped (and counted) by `replay`.

mod events;
mod receipt;

pub use events::*;
pub use receipt::{classify_stat, ReceiptOutcome};

use std::collections::HashSet;
use thiserror::Error;

/// Lifecycle states of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing has happened yet.
    New,
    /// Validated and accepted by ingest; waiting for a route.
    Accepted,
    /// Refused by ingest (terminal).
    Rejected,
    /// A carrier was chosen; waiting for the dispatcher.
    Routed,
    /// The carrier acknowledged `submit_sm`; waiting for a receipt.
    Submitted,
    /// The attempt on the chosen carrier failed; the router picks another or gives up.
    SubmitFailed,
    /// The carrier took it but did not deliver (receipt or receipt timeout); the router
    /// picks another carrier or gives up.
    DeliveryFailed,
    /// The handset received it (terminal).
    Delivered,
    /// It will never be delivered (terminal).
    Undeliverable,
    /// Its validity ran out before delivery (terminal).
    Expired,
    /// The recipient opted out; nothing was sent (terminal).
    Blocked,
    /// The sender cancelled it before submission; nothing was sent (terminal).
    Cancelled,
}

impl State {
    /// True for states no event can leave.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Rejected
                | State::Delivered
                | State::Undeliverable
                | State::Expired
                | State::Blocked
                | State::Cancelled
        )
    }

    /// Lower-case name, as shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::Accepted => "accepted",
            State::Cancelled => "cancelled",
            State::Rejected => "rejected",
            State::Routed => "routed",
            State::Submitted => "submitted",
            State::SubmitFailed => "submit_failed",
            State::DeliveryFailed => "delivery_failed",
            State::Delivered => "delivered",
            State::Undeliverable => "undeliverable",
            State::Expired => "expired",
            State::Blocked => "blocked",
        }
    }
}

/// Why the aggregate refused a command or an event.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DomainError {
    /// The command or event does not fit the current state. Callers drop it and count it:
    /// it is the trace of a race or a replay, never a reason to stop.
    #[error("{what} is illegal in state {state:?}")]
    IllegalTransition {
        /// Current state.
        state: State,
        /// The event kind or command that was refused.
        what: &'static str,
    },
    /// The event belongs to another message. A bug in the caller: dead-letter the input.
    #[error("event for message {got} applied to message {expected}")]
    WrongMessage {
        /// This aggregate's id.
        expected: String,
        /// The event's message id.
        got: String,
    },
}

/// What a service asks the aggregate to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Ingest validated the request.
    Accept(MessageAccepted),
    /// Ingest refused the request.
    Reject(MessageRejected),
    /// The router picked a carrier.
    Route {
        /// Carrier name.
        carrier: String,
        /// Strategy that chose it, for analytics.
        strategy: String,
        /// Score, factors and alternatives, for analytics.
        explain: RouteExplanation,
    },
    /// The recipient opted out.
    Block {
        /// Why (for example `opted_out`).
        reason: String,
        /// Opt-out scope that matched.
        scope: String,
    },
    /// The dispatcher got the outcome of `submit_sm`.
    RecordSubmit {
        /// Carrier the attempt went to.
        carrier: String,
        /// Attempt number it answers.
        attempt: i32,
        /// What happened.
        outcome: SubmitOutcome,
    },
    /// The receipt service correlated a delivery receipt.
    RecordReceipt {
        /// Carrier that sent it.
        carrier: String,
        /// The carrier's id for the message.
        carrier_message_id: String,
        /// Raw DLR `stat`.
        stat: String,
        /// Raw DLR `err`, if any.
        error_code: Option<String>,
    },
    /// No receipt arrived in time, or validity ran out.
    Expire {
        /// Why.
        reason: String,
    },
    /// The sender cancelled it (only before it is submitted).
    Cancel {
        /// Who asked.
        actor: Option<String>,
        /// `router` or `dispatcher`.
        stopped_by: String,
    },
    /// No carrier is left to try, or none is configured.
    GiveUp {
        /// Why.
        reason: String,
        /// The last receipt's `stat` and `err`, when a receipt ended it.
        receipt: Option<(String, Option<String>)>,
    },
    /// No final receipt came within the message type's receipt timeout.
    TimeOut {
        /// Why.
        reason: String,
    },
}

/// Outcome of one `submit_sm`.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// `submit_sm_resp` with status 0.
    Accepted {
        /// `message_id` from the response.
        carrier_message_id: String,
        /// Parts sent.
        segments: i32,
        /// Sent again after a dispatcher restart: an earlier copy may have reached the
        /// carrier before the crash.
        possible_duplicate: bool,
        /// The carrier's ids of parts 2 to n, in order (empty when whole).
        later_part_ids: Vec<String>,
    },
    /// Error status, timeout, or a broken link.
    Failed {
        /// `command_status`, when the carrier answered.
        command_status: Option<i32>,
        /// Human-readable reason.
        reason: String,
        /// Worth trying another carrier.
        retryable: bool,
        /// The link broke after the PDU may have left: the carrier may have it.
        ambiguous: bool,
    },
}

/// Whether [`Message::apply`] changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event moved the state machine.
    Changed,
    /// The event was seen before and ignored.
    Duplicate,
}

/// The message aggregate: its state and what the events so far established.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    id: String,
    state: State,
    attempt: i32,
    carrier: Option<String>,
    carriers_tried: Vec<String>,
    carrier_message_id: Option<String>,
    accepted: Option<MessageAccepted>,
    history: Vec<Event>,
    seen: HashSet<String>,
    skipped: u32,
}

impl Message {
    /// A message nothing has happened to.
    pub fn new(id: impl Into<String>) -> Self {
        Message {
            id: id.into(),
            state: State::New,
            attempt: 0,
            carrier: None,
            carriers_tried: Vec::new(),
            carrier_message_id: None,
            accepted: None,
            history: Vec::new(),
            seen: HashSet::new(),
            skipped: 0,
        }
    }

    /// The state a stateless service knows from one event it reacts to: used by the router
    /// (after `SubmitFailed`), the dispatcher (after routing) and the receipt service
    /// (after submission). `carriers_tried` includes the current carrier.
    pub fn snapshot(
        id: impl Into<String>,
        state: State,
        attempt: i32,
        carriers_tried: Vec<String>,
    ) -> Self {
        let mut m = Message::new(id);
        m.state = state;
        m.attempt = attempt;
        m.carrier = carriers_tried.last().cloned();
        m.carriers_tried = carriers_tried;
        m
    }

    /// Folds events into a message; illegal events are skipped and counted, duplicates ignored.
    pub fn replay<'a>(id: impl Into<String>, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut m = Message::new(id);
        for e in events {
            if m.apply(e).is_err() {
                m.skipped += 1;
            }
        }
        m
    }

    /// Message id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }
    /// Current attempt number (0 before the first route).
    pub fn attempt(&self) -> i32 {
        self.attempt
    }
    /// Carrier of the current attempt.
    pub fn carrier(&self) -> Option<&str> {
        self.carrier.as_deref()
    }
    /// Carriers tried so far, in order.
    pub fn carriers_tried(&self) -> &[String] {
        &self.carriers_tried
    }
    /// The carrier's id of the last accepted submission.
    pub fn carrier_message_id(&self) -> Option<&str> {
        self.carrier_message_id.as_deref()
    }
    /// The accepted request, once accepted.
    pub fn accepted(&self) -> Option<&MessageAccepted> {
        self.accepted.as_ref()
    }
    /// Events applied, in order, without duplicates.
    pub fn history(&self) -> &[Event] {
        &self.history
    }
    /// Events `replay` skipped as illegal.
    pub fn skipped(&self) -> u32 {
        self.skipped
    }

    /// Applies one event. Duplicates (same event id) are ignored; illegal ones refused.
    pub fn apply(&mut self, event: &Event) -> Result<Applied, DomainError> {
        if event.message_id != self.id {
            return Err(DomainError::WrongMessage {
                expected: self.id.clone(),
                got: event.message_id.clone(),
            });
        }
        if self.seen.contains(&event.event_id) {
            return Ok(Applied::Duplicate);
        }
        let next = self.transition(&event.payload)?;
        match &event.payload {
            EventPayload::Accepted(a) => self.accepted = Some(a.clone()),
            EventPayload::CarrierSelected(c) => {
                self.attempt = c.attempt;
                self.carrier = Some(c.carrier.clone());
                self.carriers_tried.push(c.carrier.clone());
            }
            EventPayload::Submitted(s) => {
                self.carrier_message_id = Some(s.carrier_message_id.clone())
            }
            _ => {}
        }
        self.state = next;
        self.seen.insert(event.event_id.clone());
        self.history.push(event.clone());
        Ok(Applied::Changed)
    }

    /// The state an event leads to from the current one, or why it cannot happen.
    fn transition(&self, payload: &EventPayload) -> Result<State, DomainError> {
        use EventPayload as P;
        use State as S;
        let illegal = || DomainError::IllegalTransition {
            state: self.state,
            what: payload.kind(),
        };
        let same_attempt = |carrier: &str, attempt: i32| {
            attempt == self.attempt && self.carrier.as_deref() == Some(carrier)
        };
        let next = match (self.state, payload) {
            (S::New, P::Accepted(_)) => S::Accepted,
            (S::New, P::Rejected(_)) => S::Rejected,
            (S::Accepted | S::SubmitFailed | S::DeliveryFailed, P::CarrierSelected(c))
                if c.attempt == self.attempt + 1 =>
            {
                S::Routed
            }
            (S::Accepted | S::SubmitFailed | S::DeliveryFailed | S::Routed, P::Blocked(_)) => {
                S::Blocked
            }
            (S::Routed, P::Submitted(s)) if same_attempt(&s.carrier, s.attempt) => S::Submitted,
            (S::Routed, P::SubmitFailed(f)) if same_attempt(&f.carrier, f.attempt) => {
                S::SubmitFailed
            }
            (S::Submitted, P::DeliveryFailed(f)) if same_attempt(&f.carrier, f.attempt) => {
                S::DeliveryFailed
            }
            // A late receipt from an earlier attempt's carrier also counts: the handset
            // has the message.
            (S::Submitted | S::DeliveryFailed | S::Routed, P::Delivered(_)) => S::Delivered,
            (
                S::Accepted | S::SubmitFailed | S::DeliveryFailed | S::Submitted,
                P::Undeliverable(_),
            ) => S::Undeliverable,
            (
                S::Accepted | S::SubmitFailed | S::DeliveryFailed | S::Routed | S::Submitted,
                P::Expired(_),
            ) => S::Expired,
            (S::Accepted | S::SubmitFailed | S::DeliveryFailed | S::Routed, P::Cancelled(_)) => {
                S::Cancelled
            }
            _ => return Err(illegal()),
        };
        Ok(next)
    }

    /// The carriers tried, ending with `carrier`.
    fn tried_with(&self, carrier: &str) -> Vec<String> {
        let mut tried = self.carriers_tried.clone();
        if tried.last().map(String::as_str) != Some(carrier) {
            tried.push(carrier.to_string());
        }
        tried
    }

    /// Decides which events a command produces, without changing the aggregate.
    /// `now_ms` is the injected clock (Unix milliseconds).
    pub fn decide(&self, command: Command, now_ms: i64) -> Result<Vec<Event>, DomainError> {
        let attempt = self.attempt;
        let payload = match command {
            Command::Accept(a) => EventPayload::Accepted(a),
            Command::Reject(r) => EventPayload::Rejected(r),
            Command::Route {
                carrier,
                strategy,
                explain,
            } => EventPayload::CarrierSelected(CarrierSelected {
                carrier,
                attempt: attempt + 1,
                strategy,
                score: explain.score,
                factors: explain.factors,
                alternatives: explain.alternatives,
            }),
            Command::Block { reason, scope } => {
                EventPayload::Blocked(MessageBlocked { reason, scope })
            }
            Command::RecordSubmit {
                carrier,
                attempt,
                outcome,
            } => match outcome {
                SubmitOutcome::Accepted {
                    carrier_message_id,
                    segments,
                    possible_duplicate,
                    later_part_ids,
                } => EventPayload::Submitted(MessageSubmitted {
                    later_part_ids,
                    carrier,
                    attempt,
                    carrier_message_id,
                    segments,
                    possible_duplicate,
                }),
                SubmitOutcome::Failed {
                    command_status,
                    reason,
                    retryable,
                    ambiguous,
                } => {
                    let carriers_tried = self.tried_with(&carrier);
                    EventPayload::SubmitFailed(SubmitFailed {
                        carrier,
                        attempt,
                        command_status,
                        reason,
                        retryable,
                        ambiguous,
                        carriers_tried,
                    })
                }
            },
            Command::RecordReceipt {
                carrier,
                carrier_message_id,
                stat,
                error_code,
            } => match classify_stat(&stat) {
                ReceiptOutcome::Delivered => EventPayload::Delivered(MessageDelivered {
                    carrier,
                    carrier_message_id,
                    stat,
                }),
                ReceiptOutcome::Undeliverable => EventPayload::DeliveryFailed(DeliveryFailed {
                    reason: format!("carrier receipt {stat}"),
                    stat: Some(stat),
                    error_code,
                    timed_out: false,
                    attempt,
                    carriers_tried: self.tried_with(&carrier),
                    carrier,
                }),
                ReceiptOutcome::Expired => EventPayload::Expired(MessageExpired {
                    carrier: Some(carrier),
                    reason: format!("carrier receipt {stat}"),
                }),
                ReceiptOutcome::Intermediate => return Ok(vec![]),
            },
            Command::Expire { reason } => EventPayload::Expired(MessageExpired {
                carrier: self.carrier.clone(),
                reason,
            }),
            Command::Cancel { actor, stopped_by } => {
                EventPayload::Cancelled(MessageCancelled { actor, stopped_by })
            }
            Command::GiveUp { reason, receipt } => {
                let (stat, error_code) = receipt.map_or((None, None), |(s, e)| (Some(s), e));
                EventPayload::Undeliverable(MessageUndeliverable {
                    carrier: self.carrier.clone(),
                    reason,
                    stat,
                    error_code,
                })
            }
            Command::TimeOut { reason } => {
                let carrier = self.carrier.clone().unwrap_or_default();
                EventPayload::DeliveryFailed(DeliveryFailed {
                    reason,
                    stat: None,
                    error_code: None,
                    timed_out: true,
                    attempt,
                    carriers_tried: self.tried_with(&carrier),
                    carrier,
                })
            }
        };
        let n = payload.attempt().unwrap_or(attempt);
        let event = Event::new(&self.id, payload, n, now_ms);
        // Decide is apply's dry run: whatever apply would refuse, decide refuses too.
        self.transition(&event.payload)?;
        Ok(vec![event])
    }
}

#[cfg(test)]
mod tests;
