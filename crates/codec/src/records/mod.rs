//! The records of each topic and their codecs.

use crate::avro::{union_value, Fields, SchemaSet};
use crate::{CodecError, CONTENT_TYPE_AVRO, CONTENT_TYPE_JSON};
use apache_avro::types::Value;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use smsgw_domain::{Event, EventPayload};
use std::collections::HashMap;
use std::sync::OnceLock;

/// A record type with an Avro schema set, encoded as a single object.
pub trait AvroRecord: Sized {
    /// The versions of this record's schema.
    fn schemas() -> &'static SchemaSet;
    /// Encodes as a single object with the current schema.
    fn encode(&self) -> Result<Vec<u8>, CodecError>;
    /// Decodes a single object written with any known version.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
}

fn encode_serde<T: Serialize>(set: &SchemaSet, value: &T) -> Result<Vec<u8>, CodecError> {
    set.encode(apache_avro::to_value(value)?)
}

fn decode_serde<T: DeserializeOwned>(set: &SchemaSet, bytes: &[u8]) -> Result<T, CodecError> {
    Ok(apache_avro::from_value(&set.decode(bytes)?.0)?)
}

macro_rules! schema_set {
    ($name:literal, $($file:literal),+) => {{
        static SET: OnceLock<SchemaSet> = OnceLock::new();
        SET.get_or_init(|| {
            SchemaSet::new($name, &[$(include_str!(concat!("../../../../schemas/", $file))),+])
                .expect(concat!("schemas/", $name, " must parse"))
        })
    }};
}

macro_rules! serde_record {
    ($ty:ty, $name:literal, $($file:literal),+) => {
        impl AvroRecord for $ty {
            fn schemas() -> &'static SchemaSet {
                schema_set!($name, $($file),+)
            }
            fn encode(&self) -> Result<Vec<u8>, CodecError> {
                encode_serde(Self::schemas(), self)
            }
            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                decode_serde(Self::schemas(), bytes)
            }
        }
    };
}

/// Which status callbacks of a message were made (compacted topic `smsgw.callbacks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackProgress {
    /// Message id (also the key).
    pub message_id: String,
    /// Where this message's callbacks go.
    pub url: String,
    /// The account (picks the signing secret).
    pub client_id: String,
    /// The sender id (picks the signing secret).
    pub sender: String,
    /// The client's reference, echoed in callbacks.
    #[serde(default)]
    pub client_ref: Option<String>,
    /// Parts of the message.
    pub segments: i32,
    /// The recipient (v2; SMPP receipts).
    #[serde(default)]
    pub destination: Option<String>,
    /// When the message was accepted, Unix ms (v2; SMPP receipts).
    #[serde(default)]
    pub accepted_at: Option<i64>,
    /// Event ids whose callback was made or dead-lettered.
    pub done: Vec<String>,
    /// When this record was written (Unix ms).
    pub updated_at: i64,
}
serde_record!(
    CallbackProgress,
    "callbacks",
    "callbacks/callback_progress.v1.avsc",
    "callbacks/callback_progress.v2.avsc"
);

/// A delivery receipt owed to an SMPP account (topic `smsgw.smpp.receipts.<system_id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmppReceipt {
    /// The gateway's id, as the `submit_sm_resp` gave it (also the key).
    pub message_id: String,
    /// The final event's id.
    pub event_id: String,
    /// The SMPP account that submitted the message.
    pub system_id: String,
    /// The message's account.
    pub client_id: String,
    /// `delivered`, `undelivered`, `failed`, `expired`, `blocked` or `cancelled`.
    pub status: String,
    /// The carrier's error code, when it gave one.
    #[serde(default)]
    pub error_code: Option<String>,
    /// The message's sender id.
    pub source: String,
    /// The message's recipient.
    pub destination: String,
    /// When the message was accepted (Unix ms).
    pub submitted_at: i64,
    /// When it reached its final state (Unix ms).
    pub done_at: i64,
}
serde_record!(SmppReceipt, "smpp", "smpp/smpp_receipt.v1.avsc");

/// An inbound message for one of an SMPP account's numbers (on the account's topic
/// `smsgw.smpp.receipts.<system_id>`, beside its receipts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmppMo {
    /// Unique id of the received PDU (also the key).
    pub inbound_id: String,
    /// The account whose number it was sent to.
    pub system_id: String,
    /// The handset.
    pub from: String,
    /// The account's number or short code.
    pub to: String,
    /// Text.
    pub body: String,
    /// When the gateway received it (Unix ms).
    pub received_at: i64,
}
serde_record!(SmppMo, "smpp", "smpp/smpp_mo.v1.avsc");

/// A request to send one SMS, as written to the ingest topic (Avro or JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Upstream application.
    pub client_id: String,
    /// Recipient.
    pub to: String,
    /// Sender id.
    pub from: String,
    /// Text.
    pub body: String,
    /// Idempotency key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Client reference.
    #[serde(default)]
    pub client_ref: Option<String>,
    /// Message id assigned by the HTTP API.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Ask for a delivery receipt (unset: the carrier's setting). (v2)
    #[serde(default)]
    pub registered_delivery: Option<bool>,
    /// Seconds the message stays worth delivering. (v2)
    #[serde(default)]
    pub validity_period_s: Option<i32>,
    /// Have the carrier deliver at this time, Unix ms (SMPP `schedule_delivery_time`). (v2)
    #[serde(default)]
    pub schedule_delivery_at: Option<i64>,
    /// Status callbacks for this message go here. (v3)
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Hold the message in the gateway until this time, Unix ms. (v3)
    #[serde(default)]
    pub send_at: Option<i64>,
    /// `transactional` (default), `promotional` or `otp`. (v3)
    #[serde(default)]
    pub message_type: Option<String>,
}
serde_record!(
    SubmitRequest,
    "ingest",
    "ingest/submit_request.v1.avsc",
    "ingest/submit_request.v2.avsc",
    "ingest/submit_request.v3.avsc"
);

/// Decodes an ingest record by its content type (Avro when absent).
pub fn decode_submit_request(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<SubmitRequest, CodecError> {
    let ct = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match ct.as_deref() {
        None | Some(CONTENT_TYPE_AVRO) | Some("avro/binary") => SubmitRequest::decode(bytes),
        Some(CONTENT_TYPE_JSON) => Ok(serde_json::from_slice(bytes)?),
        Some(other) => Err(CodecError::ContentType(other.to_string())),
    }
}

/// Work for one carrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchRequested {
    /// Message id.
    pub message_id: String,
    /// Carrier.
    pub carrier: String,
    /// Attempt.
    pub attempt: i32,
    /// Carriers tried, this one included.
    pub carriers_tried: Vec<String>,
    /// Recipient, E.164.
    pub destination: String,
    /// Sender id.
    pub sender: String,
    /// Text.
    pub body: String,
    /// `GSM7` or `UCS2`.
    pub encoding: String,
    /// Parts.
    pub segments: i32,
    /// When ingest accepted it (Unix ms).
    pub accepted_at: i64,
    /// Ask for a delivery receipt (unset: the carrier's setting). (v2)
    #[serde(default)]
    pub registered_delivery: Option<bool>,
    /// End of the validity period, Unix ms. (v2)
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Carrier-side scheduled delivery, Unix ms. (v2)
    #[serde(default)]
    pub schedule_delivery_at: Option<i64>,
    /// Upstream application, the account opt-out scope. (v2)
    #[serde(default)]
    pub client_id: Option<String>,
}
serde_record!(
    DispatchRequested,
    "dispatch",
    "dispatch/dispatch_request.v1.avsc",
    "dispatch/dispatch_request.v2.avsc"
);

/// A mobile-originated message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// Unique id of the received PDU.
    pub inbound_id: String,
    /// Carrier it came from.
    pub carrier: String,
    /// Handset number.
    pub from: String,
    /// Our number it was sent to.
    pub to: String,
    /// Text.
    pub body: String,
    /// When we received it (Unix ms).
    pub received_at: i64,
}
serde_record!(InboundMessage, "inbound", "inbound/inbound_message.v1.avsc");

/// One change of the opt-out log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptOutChanged {
    /// `global`, `sender:<id>` or `account:<name>`.
    pub scope: String,
    /// E.164 number.
    pub number: String,
    /// True after STOP, false after START.
    pub opted_out: bool,
    /// What caused it: `keyword`, `api`, `import` or `carrier`.
    pub source: String,
    /// When (Unix ms).
    pub changed_at: i64,
    /// Who (v2).
    #[serde(default)]
    pub actor: Option<String>,
    /// The inbound message, import or request behind it (v2).
    #[serde(default)]
    pub reference: Option<String>,
}
serde_record!(
    OptOutChanged,
    "optout",
    "optout/optout_changed.v1.avsc",
    "optout/optout_changed.v2.avsc"
);

impl OptOutChanged {
    /// The compaction key: `<scope>|<number>`.
    pub fn key(&self) -> String {
        optout_key(&self.scope, &self.number)
    }
}

/// The opt-out scope of one sender id (`sender:<id>`, a leading `+` ignored), so an MO
/// sent to `447700900000` and a message sent from `+447700900000` meet.
pub fn sender_scope(sender: &str) -> String {
    format!("sender:{}", sender.trim().trim_start_matches('+'))
}

/// The opt-out scope of an account (a pool of senders; messages carry it as `client_id`).
pub fn account_scope(account: &str) -> String {
    format!("account:{}", account.trim())
}

/// The client id of the gateway's own replies (STOP/START confirmations, HELP text):
/// the opt-out they confirm does not block them. Reserved: the HTTP API refuses it.
pub const SYSTEM_CLIENT: &str = "smsgw-optout";

/// The `client_ref` the SMPP server gives its messages: `smpp:<system_id>`, which routes
/// their delivery receipts back to that account. Reserved: the HTTP API refuses it.
pub const SMPP_CLIENT_REF_PREFIX: &str = "smpp:";

/// The scope of opt-outs that apply to every sender.
pub const GLOBAL_SCOPE: &str = "global";

/// A request to cancel a message before it is submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequested {
    /// The message.
    pub message_id: String,
    /// Who asked.
    #[serde(default)]
    pub actor: Option<String>,
    /// When (Unix ms).
    pub requested_at: i64,
}
serde_record!(
    CancelRequested,
    "cancellations",
    "cancellations/cancel_requested.v1.avsc"
);

/// The opt-outs in force, folded from the opt-out log. The router checks it before
/// routing and the dispatcher again before submitting, with the same rule.
#[derive(Debug, Clone, Default)]
pub struct OptOutIndex {
    keys: std::collections::HashSet<String>,
}

impl OptOutIndex {
    /// Applies one opt-out log record (the latest per key wins).
    pub fn apply(&mut self, c: &OptOutChanged) {
        if c.opted_out {
            self.keys.insert(c.key());
        } else {
            self.keys.remove(&c.key());
        }
    }

    /// The scope that blocks `sender` (of account `client_id`) from texting
    /// `destination`: global, then the sender, then the account. The gateway's own
    /// replies ([`SYSTEM_CLIENT`]) are never blocked: they confirm the opt-out.
    pub fn blocking_scope(
        &self,
        sender: &str,
        client_id: Option<&str>,
        destination: &str,
    ) -> Option<String> {
        if client_id == Some(SYSTEM_CLIENT) {
            return None;
        }
        let mut scopes = vec![GLOBAL_SCOPE.to_string(), sender_scope(sender)];
        scopes.extend(client_id.map(account_scope));
        scopes
            .into_iter()
            .find(|scope| self.keys.contains(&optout_key(scope, destination)))
    }

    /// Opt-outs in force.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is in force.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The opt-out log key for a scope and number.
pub fn optout_key(scope: &str, number: &str) -> String {
    format!("{scope}|{number}")
}

/// A record that could not be processed, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Service that gave up.
    pub service: String,
    /// Why.
    pub reason: String,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Original key.
    #[serde(with = "serde_bytes")]
    pub key: Option<Vec<u8>>,
    /// Original value.
    #[serde(with = "serde_bytes")]
    pub payload: Option<Vec<u8>>,
    /// Original headers (values lossily as UTF-8).
    pub headers: HashMap<String, String>,
    /// When (Unix ms).
    pub failed_at: i64,
}
serde_record!(DeadLetter, "deadletter", "deadletter/dead_letter.v1.avsc");

/// Whether a carrier link is usable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarrierStatusChanged {
    /// Carrier.
    pub carrier: String,
    /// Bound and usable.
    pub up: bool,
    /// Why it changed.
    pub detail: String,
    /// When (Unix ms).
    pub changed_at: i64,
    /// The dispatcher instance whose links these are (v2; `None` from v1 writers).
    #[serde(default)]
    pub instance: Option<String>,
}
serde_record!(
    CarrierStatusChanged,
    "carrier_status",
    "carrier_status/carrier_status_changed.v1.avsc",
    "carrier_status/carrier_status_changed.v2.avsc"
);

impl CarrierStatusChanged {
    /// The compaction key: `<carrier>/<instance>`, so each instance's status survives
    /// compaction (v1 records: the carrier name).
    pub fn key(&self) -> String {
        match &self.instance {
            Some(i) => format!("{}/{i}", self.carrier),
            None => self.carrier.clone(),
        }
    }
}

/// A record of the receipts topic.
#[derive(Debug, Clone, PartialEq)]
pub struct CarrierRecord {
    /// Carrier.
    pub carrier: String,
    /// Normalised carrier message id.
    pub carrier_message_id: String,
    /// When (Unix ms).
    pub received_at: i64,
    /// Correlation or receipt.
    pub kind: CarrierRecordKind,
}

impl CarrierRecord {
    /// The Kafka key: `<carrier>:<carrier message id>`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.carrier, self.carrier_message_id)
    }
}

/// What a receipts-topic record says.
#[derive(Debug, Clone, PartialEq)]
pub enum CarrierRecordKind {
    /// The dispatcher learned the carrier's id for our message.
    SubmitCorrelated(SubmitCorrelated),
    /// The carrier sent a delivery receipt.
    ReceiptReceived(ReceiptReceived),
}

/// See the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitCorrelated {
    /// Our message id.
    pub message_id: String,
    /// Attempt.
    pub attempt: i32,
    /// Part of a concatenated message, from 1 (v2; 1 when read from v1).
    #[serde(default = "one")]
    pub part: i32,
    /// Parts of the message (v2; 1 when read from v1).
    #[serde(default = "one")]
    pub parts: i32,
}

fn one() -> i32 {
    1
}

/// See the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptReceived {
    /// DLR `stat`.
    pub stat: String,
    /// DLR `err`.
    pub error_code: Option<String>,
    /// The receipt text.
    pub raw_text: Option<String>,
}

impl AvroRecord for CarrierRecord {
    fn schemas() -> &'static SchemaSet {
        schema_set!(
            "receipts",
            "receipts/carrier_receipt.v1.avsc",
            "receipts/carrier_receipt.v2.avsc"
        )
    }

    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let set = Self::schemas();
        let (name, inner) = match &self.kind {
            CarrierRecordKind::SubmitCorrelated(c) => {
                ("SubmitCorrelated", apache_avro::to_value(c)?)
            }
            CarrierRecordKind::ReceiptReceived(r) => ("ReceiptReceived", apache_avro::to_value(r)?),
        };
        set.encode_resolved(Value::Record(vec![
            ("carrier".into(), Value::String(self.carrier.clone())),
            (
                "carrier_message_id".into(),
                Value::String(self.carrier_message_id.clone()),
            ),
            (
                "received_at".into(),
                Value::TimestampMillis(self.received_at),
            ),
            (
                "record".into(),
                union_value(set.current(), "record", name, inner)?,
            ),
        ]))
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let set = Self::schemas();
        let (value, writer) = set.decode(bytes)?;
        let mut f = Fields::from_value(value)?;
        let (name, inner) = f.union_record("record", writer)?;
        let kind = match name.as_str() {
            "SubmitCorrelated" => {
                CarrierRecordKind::SubmitCorrelated(apache_avro::from_value(&inner)?)
            }
            "ReceiptReceived" => {
                CarrierRecordKind::ReceiptReceived(apache_avro::from_value(&inner)?)
            }
            other => return Err(CodecError::Avro(format!("unknown receipts record {other}"))),
        };
        Ok(CarrierRecord {
            carrier: f.string("carrier")?,
            carrier_message_id: f.string("carrier_message_id")?,
            received_at: f.millis("received_at")?,
            kind,
        })
    }
}

impl AvroRecord for Event {
    fn schemas() -> &'static SchemaSet {
        schema_set!(
            "events",
            "events/message_event.v1.avsc",
            "events/message_event.v2.avsc",
            "events/message_event.v3.avsc",
            "events/message_event.v4.avsc",
            "events/message_event.v5.avsc"
        )
    }

    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let set = Self::schemas();
        let inner = match &self.payload {
            EventPayload::Accepted(e) => apache_avro::to_value(e)?,
            EventPayload::Rejected(e) => apache_avro::to_value(e)?,
            EventPayload::CarrierSelected(e) => apache_avro::to_value(e)?,
            EventPayload::Blocked(e) => apache_avro::to_value(e)?,
            EventPayload::Submitted(e) => apache_avro::to_value(e)?,
            EventPayload::SubmitFailed(e) => apache_avro::to_value(e)?,
            EventPayload::Delivered(e) => apache_avro::to_value(e)?,
            EventPayload::Undeliverable(e) => apache_avro::to_value(e)?,
            EventPayload::Expired(e) => apache_avro::to_value(e)?,
            EventPayload::Cancelled(e) => apache_avro::to_value(e)?,
            EventPayload::DeliveryFailed(e) => apache_avro::to_value(e)?,
        };
        set.encode_resolved(Value::Record(vec![
            ("event_id".into(), Value::String(self.event_id.clone())),
            ("message_id".into(), Value::String(self.message_id.clone())),
            (
                "occurred_at".into(),
                Value::TimestampMillis(self.occurred_at_ms),
            ),
            (
                "event".into(),
                union_value(set.current(), "event", self.payload.kind(), inner)?,
            ),
        ]))
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let set = Self::schemas();
        let (value, writer) = set.decode(bytes)?;
        let mut f = Fields::from_value(value)?;
        let (name, v) = f.union_record("event", writer)?;
        let payload = match name.as_str() {
            "MessageAccepted" => EventPayload::Accepted(apache_avro::from_value(&v)?),
            "MessageRejected" => EventPayload::Rejected(apache_avro::from_value(&v)?),
            "CarrierSelected" => EventPayload::CarrierSelected(apache_avro::from_value(&v)?),
            "MessageBlocked" => EventPayload::Blocked(apache_avro::from_value(&v)?),
            "MessageSubmitted" => EventPayload::Submitted(apache_avro::from_value(&v)?),
            "SubmitFailed" => EventPayload::SubmitFailed(apache_avro::from_value(&v)?),
            "MessageDelivered" => EventPayload::Delivered(apache_avro::from_value(&v)?),
            "MessageUndeliverable" => EventPayload::Undeliverable(apache_avro::from_value(&v)?),
            "MessageExpired" => EventPayload::Expired(apache_avro::from_value(&v)?),
            "MessageCancelled" => EventPayload::Cancelled(apache_avro::from_value(&v)?),
            "DeliveryFailed" => EventPayload::DeliveryFailed(apache_avro::from_value(&v)?),
            other => return Err(CodecError::Avro(format!("unknown event {other}"))),
        };
        let event = Event {
            event_id: f.string("event_id")?,
            message_id: f.string("message_id")?,
            occurred_at_ms: f.millis("occurred_at")?,
            payload,
        };
        if event.message_id.is_empty() {
            return Err(CodecError::Invalid("empty message_id".into()));
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests;
