//! The events of the message event log. Names are past tense; each maps to one record of
//! the `smsgw.events.MessageEvent` Avro union (see `schemas/events/`).

use serde::{Deserialize, Serialize};

/// One entry of the message event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Deterministic id: `<message id>/<kind>/<attempt>`. Duplicates share it.
    pub event_id: String,
    /// The message this event belongs to (also the Kafka key).
    pub message_id: String,
    /// When it happened, Unix milliseconds, from the deciding service's clock.
    pub occurred_at_ms: i64,
    /// What happened.
    pub payload: EventPayload,
}

impl Event {
    /// Builds an event with its deterministic id.
    pub fn new(message_id: &str, payload: EventPayload, attempt: i32, occurred_at_ms: i64) -> Self {
        Event {
            event_id: format!("{message_id}/{}/{attempt}", payload.kind()),
            message_id: message_id.to_string(),
            occurred_at_ms,
            payload,
        }
    }
}

/// The union of lifecycle events.
#[derive(Debug, Clone, PartialEq)]
pub enum EventPayload {
    /// See [`MessageAccepted`].
    Accepted(MessageAccepted),
    /// See [`MessageRejected`].
    Rejected(MessageRejected),
    /// See [`CarrierSelected`].
    CarrierSelected(CarrierSelected),
    /// See [`MessageBlocked`].
    Blocked(MessageBlocked),
    /// See [`MessageSubmitted`].
    Submitted(MessageSubmitted),
    /// See [`SubmitFailed`].
    SubmitFailed(SubmitFailed),
    /// See [`MessageDelivered`].
    Delivered(MessageDelivered),
    /// See [`MessageUndeliverable`].
    Undeliverable(MessageUndeliverable),
    /// See [`MessageExpired`].
    Expired(MessageExpired),
    /// See [`MessageCancelled`] (events schema v3).
    Cancelled(MessageCancelled),
    /// See [`DeliveryFailed`] (events schema v4).
    DeliveryFailed(DeliveryFailed),
}

impl EventPayload {
    /// The Avro record name of the event, also used in event ids and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            EventPayload::Accepted(_) => "MessageAccepted",
            EventPayload::Rejected(_) => "MessageRejected",
            EventPayload::CarrierSelected(_) => "CarrierSelected",
            EventPayload::Blocked(_) => "MessageBlocked",
            EventPayload::Submitted(_) => "MessageSubmitted",
            EventPayload::SubmitFailed(_) => "SubmitFailed",
            EventPayload::Delivered(_) => "MessageDelivered",
            EventPayload::Undeliverable(_) => "MessageUndeliverable",
            EventPayload::Expired(_) => "MessageExpired",
            EventPayload::Cancelled(_) => "MessageCancelled",
            EventPayload::DeliveryFailed(_) => "DeliveryFailed",
        }
    }

    /// The attempt the event names, for events tied to one attempt.
    pub fn attempt(&self) -> Option<i32> {
        match self {
            EventPayload::CarrierSelected(c) => Some(c.attempt),
            EventPayload::Submitted(s) => Some(s.attempt),
            EventPayload::SubmitFailed(f) => Some(f.attempt),
            EventPayload::DeliveryFailed(f) => Some(f.attempt),
            _ => None,
        }
    }
}

/// Ingest validated a request and took responsibility for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageAccepted {
    /// Upstream application that sent it.
    pub client_id: String,
    /// Client idempotency key, if one was given.
    pub idempotency_key: Option<String>,
    /// Client's own reference, echoed back.
    pub client_ref: Option<String>,
    /// Recipient in E.164, with the leading `+`.
    pub destination: String,
    /// Sender id: a number or an alphanumeric id.
    pub sender: String,
    /// Message text.
    pub body: String,
    /// `GSM7` or `UCS2`.
    pub encoding: String,
    /// Parts needed.
    pub segments: i32,
    /// Ask the carrier for a delivery receipt (unset: the carrier's setting). (v2)
    #[serde(default)]
    pub registered_delivery: Option<bool>,
    /// End of the validity period, Unix ms. (v2)
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Carrier-side scheduled delivery, Unix ms (SMPP `schedule_delivery_time`). (v2)
    #[serde(default)]
    pub schedule_delivery_at: Option<i64>,
    /// Where status callbacks for this message go (unset: the sender's or account's
    /// default). (v4)
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Held by the gateway until this time, Unix ms, then routed. (v4)
    #[serde(default)]
    pub send_at: Option<i64>,
    /// `transactional`, `promotional` or `otp` (unset: transactional). (v4)
    #[serde(default)]
    pub message_type: Option<String>,
}

/// Ingest refused a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRejected {
    /// Upstream application that sent it (may be empty when unknown).
    pub client_id: String,
    /// Client idempotency key, if one was given.
    pub idempotency_key: Option<String>,
    /// Machine-readable reason, for example `invalid_destination`.
    pub reason_code: String,
    /// Human-readable reason.
    pub reason: String,
}

/// The router chose a carrier for an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarrierSelected {
    /// Carrier name from config.
    pub carrier: String,
    /// 1 for the first attempt, then 2, 3, ...
    pub attempt: i32,
    /// Strategy that chose it.
    pub strategy: String,
    /// The chosen carrier's score (unset for strategies that do not score). (v4)
    #[serde(default)]
    pub score: Option<f64>,
    /// How the score was made. (v4)
    #[serde(default)]
    pub factors: Vec<ScoreFactor>,
    /// The other carriers considered. (v4)
    #[serde(default)]
    pub alternatives: Vec<RouteAlternative>,
}

/// Why the router chose a carrier, for analytics (the v4 fields of `CarrierSelected`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteExplanation {
    /// The chosen carrier's score (unset for strategies that do not score).
    pub score: Option<f64>,
    /// How the score was made.
    pub factors: Vec<ScoreFactor>,
    /// The other carriers considered.
    pub alternatives: Vec<RouteAlternative>,
}

/// One term of a carrier's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreFactor {
    /// `success`, `latency`, `errors`, `load`, `price`, `health` or `exploration`.
    pub name: String,
    /// The factor's value in [0, 1], 1 best.
    pub value: f64,
    /// Its weight for this message type.
    pub weight: f64,
}

/// A carrier the router considered and did not choose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteAlternative {
    /// Carrier.
    pub carrier: String,
    /// Its score; unset when a constraint excluded it.
    #[serde(default)]
    pub score: Option<f64>,
    /// The constraint that excluded it.
    #[serde(default)]
    pub excluded: Option<String>,
}

/// The recipient opted out; nothing will be sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageBlocked {
    /// Why, for example `opted_out`.
    pub reason: String,
    /// The opt-out scope that matched (`global` or `sender:<id>`).
    pub scope: String,
}

/// The carrier accepted `submit_sm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSubmitted {
    /// Carrier.
    pub carrier: String,
    /// Attempt number.
    pub attempt: i32,
    /// The carrier's id, normalised.
    pub carrier_message_id: String,
    /// Parts submitted.
    pub segments: i32,
    /// Sent again after a dispatcher restart: a copy sent before the crash may also have
    /// reached the carrier (counted by `smsgw_dispatcher_possible_duplicates_total`). (v4)
    #[serde(default)]
    pub possible_duplicate: bool,
    /// The carrier's ids of parts 2 to n of a concatenated message, in part order; empty
    /// when whole. With `carrier_message_id` every part's receipt can be correlated from
    /// this event alone (a restarted dispatcher rewrites lost correlations from it). (v5)
    #[serde(default)]
    pub later_part_ids: Vec<String>,
}

impl MessageSubmitted {
    /// Every part's carrier id, in part order.
    pub fn part_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.carrier_message_id.as_str())
            .chain(self.later_part_ids.iter().map(String::as_str))
    }
}

/// An attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitFailed {
    /// Carrier.
    pub carrier: String,
    /// Attempt number.
    pub attempt: i32,
    /// SMPP `command_status`, when the carrier answered.
    pub command_status: Option<i32>,
    /// Why.
    pub reason: String,
    /// Worth trying another carrier.
    pub retryable: bool,
    /// The link broke mid-submit: the carrier may have the message, so a retry may
    /// text the recipient twice. Counted by `smsgw_dispatcher_ambiguous_submits_total`.
    pub ambiguous: bool,
    /// Every carrier tried so far, this one included.
    pub carriers_tried: Vec<String>,
}

/// A submitted attempt did not deliver: the carrier's receipt said so, or no final
/// receipt came within the message type's receipt timeout. The router re-routes to
/// another carrier or ends the message. (v4)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFailed {
    /// Carrier of the attempt.
    pub carrier: String,
    /// Attempt number.
    pub attempt: i32,
    /// Why.
    pub reason: String,
    /// Raw DLR `stat`, when a receipt said so.
    pub stat: Option<String>,
    /// Raw DLR `err`, when a receipt said so.
    pub error_code: Option<String>,
    /// No final receipt came in time (a late one may still come).
    pub timed_out: bool,
    /// Every carrier tried so far, this one included.
    pub carriers_tried: Vec<String>,
}

/// The carrier reported delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDelivered {
    /// Carrier.
    pub carrier: String,
    /// The carrier's id.
    pub carrier_message_id: String,
    /// Raw DLR `stat`.
    pub stat: String,
}

/// The message will never be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageUndeliverable {
    /// Carrier of the last attempt, if any.
    pub carrier: Option<String>,
    /// Why.
    pub reason: String,
    /// Raw DLR `stat`, when a receipt said so.
    pub stat: Option<String>,
    /// Raw DLR `err`, when a receipt said so.
    pub error_code: Option<String>,
}

/// The sender cancelled it before it was submitted; nothing was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageCancelled {
    /// Who asked (the API key's name, or `api`).
    pub actor: Option<String>,
    /// Where it was stopped: `router` or `dispatcher`.
    pub stopped_by: String,
}

/// Validity ran out before delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageExpired {
    /// Carrier of the last attempt, if any.
    pub carrier: Option<String>,
    /// Why.
    pub reason: String,
}
