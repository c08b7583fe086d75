//! The ingest-topic handler: decode, assign an id, dedupe, validate, decide.

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::validate::{rejected, reserved_client, validate, RESERVED_CLIENT_PREFIX};
use crate::view::Shared;
use smsgw_codec::{decode_submit_request, SubmitRequest, SYSTEM_CLIENT};
use smsgw_domain::{Command, Message};
use smsgw_kafka::{HandleError, Handler, Incoming, OutRecord, Topics};
use std::sync::Arc;
use uuid::Uuid;

/// Namespace of smsgw's name-based (v5) message ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x8f3c_6b1e_4d2a_4c7e_9a51_0e6d_2b7f_c413);

/// The message id for a client's idempotency key: the same key always gives the same id.
pub fn id_for_key(client_id: &str, key: &str) -> String {
    Uuid::new_v5(&ID_NAMESPACE, format!("key\0{client_id}\0{key}").as_bytes()).to_string()
}

/// The message id of a request: set by the HTTP API, derived from the idempotency key,
/// or derived from the record's position so that a re-read yields the same id.
pub fn message_id(req: &SubmitRequest, input: &Incoming<'_>) -> String {
    if let Some(id) = req.message_id.as_ref().filter(|s| !s.is_empty()) {
        return id.clone();
    }
    if let Some(key) = req.idempotency_key.as_ref().filter(|s| !s.is_empty()) {
        return id_for_key(&req.client_id, key);
    }
    let pos = format!(
        "pos\0{}\0{}\0{}",
        input.topic, input.partition, input.offset
    );
    Uuid::new_v5(&ID_NAMESPACE, pos.as_bytes()).to_string()
}

/// Handles ingest-topic and replies-topic records.
#[derive(Debug)]
pub struct IngestHandler {
    /// Topic names.
    pub topics: Topics,
    /// Validation limits.
    pub limits: Limits,
    /// Country for national numbers.
    pub default_country: Option<phonenumber::country::Id>,
    /// View and idempotency index.
    pub shared: Arc<Shared>,
    /// Metrics.
    pub metrics: Metrics,
}

impl Handler for IngestHandler {
    async fn handle(
        &mut self,
        input: &Incoming<'_>,
        now_ms: i64,
    ) -> Result<Vec<OutRecord>, HandleError> {
        let payload = input
            .payload
            .ok_or_else(|| HandleError::DeadLetter("record has no value".into()))?;
        let req = decode_submit_request(payload, input.header(smsgw_codec::CONTENT_TYPE_HEADER))
            .map_err(|e| HandleError::DeadLetter(format!("undecodable submit request: {e}")))?;
        if req
            .message_id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > 64)
        {
            return Err(HandleError::DeadLetter(
                "message_id must be 1 to 64 characters".into(),
            ));
        }
        let from_gateway = input.topic == self.topics.replies();
        if from_gateway && req.client_id != SYSTEM_CLIENT {
            return Err(HandleError::DeadLetter(format!(
                "only the gateway's own client id may be used on the replies topic, not {:?}",
                smsgw_runtime::clip_str(&req.client_id, 64)
            )));
        }
        let id = message_id(&req, input);
        let fresh = self
            .shared
            .dedupe
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&id);
        if !fresh {
            self.metrics
                .messages
                .with_label_values(&["duplicate"])
                .inc();
            return Err(HandleError::Drop("duplicate message id"));
        }
        let verdict = if !from_gateway && req.client_id.starts_with(RESERVED_CLIENT_PREFIX) {
            // The gateway's identity (its opt-out replies are exempt from opt-outs) is
            // never taken from a record on the public topic.
            Err(reserved_client(&req.client_id))
        } else {
            validate(&req, &self.limits, self.default_country, now_ms)
        };
        let (command, result) = match verdict {
            Ok(accepted) => (Command::Accept(accepted), "accepted"),
            Err(r) => (Command::Reject(rejected(&req, r)), "rejected"),
        };
        let events = Message::new(&id)
            .decide(command, now_ms)
            .map_err(|e| HandleError::DeadLetter(format!("domain refused: {e}")))?;
        self.metrics.messages.with_label_values(&[result]).inc();
        events
            .iter()
            .map(|e| OutRecord::avro(self.topics.events(), id.clone(), e))
            .collect::<Result<_, _>>()
            .map_err(|e| HandleError::DeadLetter(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use smsgw_codec::AvroRecord;
    use smsgw_domain::{Event, EventPayload};

    fn handler() -> IngestHandler {
        IngestHandler {
            topics: Topics::with_prefix("t"),
            limits: Limits::default(),
            default_country: None,
            shared: Arc::new(Shared::new(10, 10)),
            metrics: Metrics::new(),
        }
    }

    fn input<'a>(payload: &'a [u8], offset: i64) -> Incoming<'a> {
        Incoming {
            topic: "t.ingest",
            partition: 0,
            offset,
            key: None,
            payload: Some(payload),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            timestamp_ms: None,
        }
    }

    fn decode(out: &[OutRecord]) -> Event {
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "t.events");
        Event::decode(&out[0].payload).unwrap()
    }

    #[test]
    fn valid_json_is_accepted() {
        let mut h = handler();
        let out = block_on(h.handle(
            &input(
                br#"{"client_id":"c","to":"+447911123456","from":"SHOP","body":"hi"}"#,
                1,
            ),
            5,
        ))
        .unwrap();
        let e = decode(&out);
        assert!(matches!(e.payload, EventPayload::Accepted(_)));
        assert_eq!(out[0].key.as_deref(), Some(e.message_id.as_bytes()));
    }

    #[test]
    fn invalid_request_is_rejected_with_reason() {
        let mut h = handler();
        let out = block_on(h.handle(
            &input(
                br#"{"client_id":"c","to":"nope","from":"SHOP","body":"hi"}"#,
                1,
            ),
            5,
        ))
        .unwrap();
        match decode(&out).payload {
            EventPayload::Rejected(r) => assert_eq!(r.reason_code, "invalid_destination"),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn same_idempotency_key_yields_one_message() {
        let mut h = handler();
        let body = br#"{"client_id":"c","to":"+447911123456","from":"SHOP","body":"hi","idempotency_key":"k"}"#;
        let first = block_on(h.handle(&input(body, 1), 5)).unwrap();
        assert_eq!(
            block_on(h.handle(&input(body, 2), 6)),
            Err(HandleError::Drop("duplicate message id"))
        );
        assert_eq!(decode(&first).message_id, id_for_key("c", "k"));
    }

    fn on(topic: &'static str, payload: &'static [u8]) -> Incoming<'static> {
        Incoming {
            topic,
            ..input(payload, 1)
        }
    }

    const AS_GATEWAY: &[u8] =
        br#"{"client_id":"smsgw-optout","to":"+447911123456","from":"SHOP","body":"STOP received","idempotency_key":"reply:1"}"#;

    #[test]
    fn given_the_public_topic_when_a_record_claims_the_gateways_client_id_then_it_is_rejected() {
        let mut h = handler();
        let out = block_on(h.handle(&on("t.ingest", AS_GATEWAY), 5)).unwrap();
        match decode(&out).payload {
            EventPayload::Rejected(r) => assert_eq!(r.reason_code, "reserved_client"),
            p => panic!("{p:?}"),
        }
        // Any reserved id, not only today's one.
        let other =
            br#"{"client_id":"smsgw-anything","to":"+447911123456","from":"SHOP","body":"x"}"#;
        let out = block_on(h.handle(&on("t.ingest", other), 5)).unwrap();
        assert!(
            matches!(decode(&out).payload, EventPayload::Rejected(r) if r.reason_code == "reserved_client")
        );
    }

    #[test]
    fn given_the_replies_topic_when_the_gateway_replies_then_it_is_accepted() {
        let mut h = handler();
        let out = block_on(h.handle(&on("t.replies", AS_GATEWAY), 5)).unwrap();
        match decode(&out).payload {
            EventPayload::Accepted(a) => assert_eq!(a.client_id, SYSTEM_CLIENT),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn given_the_replies_topic_when_a_customer_client_id_is_used_then_it_is_dead_lettered() {
        let mut h = handler();
        let body = br#"{"client_id":"shop","to":"+447911123456","from":"SHOP","body":"x"}"#;
        assert!(matches!(
            block_on(h.handle(&on("t.replies", body), 5)),
            Err(HandleError::DeadLetter(r)) if r.contains("replies topic")
        ));
    }

    #[test]
    fn given_an_over_long_key_on_the_topic_then_the_rejection_keeps_a_bounded_copy() {
        let mut h = handler();
        let huge = "k".repeat(500_000);
        let body = format!(
            r#"{{"client_id":"c","to":"+447911123456","from":"SHOP","body":"x","idempotency_key":"{huge}"}}"#
        );
        let out = block_on(h.handle(&input(body.as_bytes(), 1), 5)).unwrap();
        match decode(&out).payload {
            EventPayload::Rejected(r) => {
                assert_eq!(r.reason_code, "field_too_long");
                assert!(r
                    .idempotency_key
                    .is_some_and(|k| k.len() == crate::validate::REJECTED_ID_MAX));
            }
            p => panic!("{p:?}"),
        }
        assert!(
            out[0].payload.len() < 2_000,
            "{} bytes",
            out[0].payload.len()
        );
    }

    #[test]
    fn garbage_is_dead_lettered() {
        let mut h = handler();
        assert!(matches!(
            block_on(h.handle(&input(b"{not json", 1), 5)),
            Err(HandleError::DeadLetter(_))
        ));
    }

    #[test]
    fn ids_without_key_depend_on_position_only() {
        let req: SubmitRequest =
            serde_json::from_str(r#"{"client_id":"c","to":"+447911123456","from":"S","body":"b"}"#)
                .unwrap();
        assert_eq!(
            message_id(&req, &input(b"", 7)),
            message_id(&req, &input(b"", 7))
        );
        assert_ne!(
            message_id(&req, &input(b"", 7)),
            message_id(&req, &input(b"", 8))
        );
    }
}
